"""The chaos soak's own PostgreSQL cluster and Redis, in a scratch folder, on free ports.

Neither touches the machine's services: the cluster is a fresh ``initdb`` in
the folder (run as the ``postgres`` user when this process is root, since
PostgreSQL refuses to run as root), the Redis a ``redis-server`` child with
``appendonly yes``.  Both are stopped and started again by the soak's faults,
and removed by ``stop()``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time

import psycopg2
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class OwnPostgres:
    """A PostgreSQL cluster of its own: ``initdb`` into ``folder/pg``, trust auth, listening on 127.0.0.1:``port``.

    Parameters:
      folder(str): the scratch folder (the cluster, its socket and its log go under it).
      port(int): the TCP port.
    """

    def __init__(self, folder: str, port: int) -> None:
        self.port = port
        self.data = os.path.join(folder, "pg")
        self.log = os.path.join(folder, "postgres.log")
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = os.path.dirname(bins[-1])
        self._owner = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the folder goes to the postgres user
            self._owner = pwd.getpwnam("postgres")
            os.chmod(folder, 0o755)
        os.makedirs(self.data, mode=0o700)
        open(self.log, "a").close()
        if self._owner is not None:
            for path in (self.data, self.log):
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.data}'\n"
                       "fsync = off\nmax_connections = 200\n")

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        command = [os.path.join(self.bin, tool), *args]
        if self._owner is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def ready(self) -> bool:
        try:
            psycopg2.connect(self.url, connect_timeout=1).close()
            return True
        except psycopg2.Error:
            return False

    def start(self) -> None:
        if not self.ready():
            self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")
        wait_until(self.ready, 60, "PostgreSQL to accept connections")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (sessions cut, a clean shutdown) or ``-m immediate`` (a crash: recovery at start)."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def database_url(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + name


class OwnRedis:
    """A ``redis-server`` child on 127.0.0.1:``port``, ``appendonly yes`` in ``folder/redis``; SIGKILLed and
    started again (it reloads its append-only file) by the soak.

    Parameters:
      folder(str): the scratch folder.
      port(int): the TCP port.
      appendfsync(str): ``always`` (default: a SIGKILL loses nothing Redis acknowledged, so a check that
        fails is ours) or ``everysec`` (Redis's default: it may lose up to about a second).
    """

    def __init__(self, folder: str, port: int, appendfsync: str = "always") -> None:
        self.port = port
        self.dir = os.path.join(folder, "redis")
        os.makedirs(self.dir)
        self.url = f"redis://127.0.0.1:{port}/0"
        self.command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", self.dir,
                        "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
                        "--logfile", os.path.join(folder, "redis.log")]
        self.process = None
        self.client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=5, retry=Retry(NoBackoff(), 0))

    def up(self) -> bool:
        try:
            return self.client.ping()
        except redis.RedisError:
            return False

    def start(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True)
        wait_until(self._loaded, 60, "Redis to load its append-only file")

    def _loaded(self) -> bool:
        try:
            return self.client.info("persistence").get("loading") == 0
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last AOF rewrite."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def remove_folder(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
