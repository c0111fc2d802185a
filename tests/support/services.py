"""The test suite's PostgreSQL and Redis, and restarting them in fault tests.

By default the machine's own services: PostgreSQL cluster ``<version>/main``
on 127.0.0.1:5432 and Redis on 127.0.0.1:6379.  To run the suite against
services of its own (two checkouts testing at once must not restart each
other's services), set:

  TEST_POSTGRES_ADMIN_URL  postgresql://root@127.0.0.1:5433/postgres
  TEST_PG_CLUSTER          16/mine   (the cluster pg_ctlcluster restarts)
  TEST_REDIS_URL           redis://127.0.0.1:6380/15

Restarts always bring the service back, even when the test fails.
"""

from __future__ import annotations

import os
import subprocess
import time
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

_pg = urlparse(PG_ADMIN_URL)
PG_HOST, PG_PORT = _pg.hostname or "127.0.0.1", _pg.port or 5432
_redis = urlparse(REDIS_TEST_URL)
REDIS_HOST, REDIS_PORT = _redis.hostname or "127.0.0.1", _redis.port or 6379


def _pg_cluster() -> tuple[str, str]:
    given = os.environ.get("TEST_PG_CLUSTER")
    if given:
        version, name = given.split("/", 1)
        return version, name
    return sorted(os.listdir("/etc/postgresql"))[-1], "main"


def pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", PG_HOST, "-p", str(PG_PORT), "-q"]).returncode == 0


def pg_ctl(action: str) -> None:
    version, name = _pg_cluster()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
                   check=False, timeout=120, capture_output=True)


def wait_for_postgres(timeout: float = 60) -> None:
    """Wait until PostgreSQL answers, starting it again if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not pg_ready():
        if time.monotonic() > deadline:
            pg_ctl("start")
            deadline = time.monotonic() + timeout
        time.sleep(0.2)


def restart_postgres() -> float:
    """Restart the test PostgreSQL; returns the seconds it did not accept connections."""
    started = time.monotonic()
    try:
        pg_ctl("restart")
    finally:
        wait_for_postgres()
    return time.monotonic() - started


def redis_start_command() -> list[str]:
    """Start the test Redis as CI does: no persistence, so a restart forgets everything."""
    folder = "/var/lib/redis" if REDIS_PORT == 6379 else f"/tmp/redis-{REDIS_PORT}"
    os.makedirs(folder, exist_ok=True)
    logfile = "/var/log/redis/ci.log" if REDIS_PORT == 6379 else f"{folder}/redis.log"
    return ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(REDIS_PORT),
            "--save", "", "--appendonly", "no", "--dir", folder, "--logfile", logfile]


def admin_redis() -> redis.Redis:
    # No client-side retries: redis-py's default retries a refused connection for seconds.
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


def redis_up() -> bool:
    try:
        return admin_redis().ping()
    except redis.RedisError:
        return False


def _wait(predicate, timeout: float, interval: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate.__name__}")
        time.sleep(interval)


def stop_redis() -> None:
    try:
        admin_redis().shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the server hung up on its way down
    _wait(lambda: not redis_up(), timeout=10, interval=0.05)


def start_redis() -> None:
    if not redis_up():
        subprocess.run(redis_start_command(), check=False, timeout=30)
    _wait(redis_up, timeout=30, interval=0.1)


def restart_redis(down_for: float) -> None:
    """Stop the test Redis (it keeps nothing on disk), leave it down ``down_for`` s, start it again."""
    try:
        stop_redis()
        time.sleep(down_for)
    finally:
        start_redis()


class SeparateRedis:
    """A redis-server of a test's own with the given settings (``--appendonly no``...), on a free port,
    in ``folder``: for tests of what a Redis is set to, which must not change the suite's Redis."""

    def __init__(self, folder, port: int, *settings: str) -> None:
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                         "--dir", str(folder), *settings],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))

        def answers() -> bool:
            try:
                return client.ping()
            except redis.RedisError:
                return False

        _wait(answers, timeout=20, interval=0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
