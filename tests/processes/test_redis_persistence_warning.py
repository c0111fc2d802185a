"""A worker and `enrich drain` say once, at start, when the broker's Redis keeps nothing across a restart.

Each case starts a Redis of its own (never the suite's: its settings are
what is tested), with or without an append-only file and RDB saves.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import dramatiq
import pytest
import redis
import structlog
from dramatiq.brokers.redis import RedisBroker

from middleware import DatabaseConnections, JobLinking

from linking_harness import wait_for
from process_harness import ROOT, free_port, shell_env
from services import SeparateRedis

WARNING = "Redis keeps nothing across a restart"


@pytest.fixture
def own_redis(tmp_path):
    """start(*settings) -> the URL of a new redis-server with those settings; all stopped at the end."""
    servers = []

    def start(*settings: str) -> str:
        port = free_port()
        folder = tmp_path / f"redis-{port}"
        folder.mkdir()
        servers.append(SeparateRedis(folder, port, *settings))
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()


def worker_boot_logs(url: str, pg_db) -> list[dict]:
    """What a worker process logs while it boots on this Redis."""
    broker = RedisBroker(url=url)
    linking = JobLinking(pg_db, lost_work_interval=0)
    broker.add_middleware(DatabaseConnections(pg_db))
    broker.add_middleware(linking)
    worker = dramatiq.Worker(broker, worker_threads=1)
    with structlog.testing.capture_logs() as logs:
        worker.start()
    worker.stop()
    linking.job_log.stop()
    broker.close()
    return [e for e in logs if e["event"].startswith(WARNING)]


KEEPS_NOTHING = ("--appendonly", "no", "--save", "")


@pytest.mark.parametrize("settings", [("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
                                      ("--appendonly", "no", "--save", "3600 1 300 100")],
                         ids=["aof", "rdb-only"])
def test_a_worker_on_a_redis_with_persistence_says_nothing(own_redis, pg_db, settings):
    assert worker_boot_logs(own_redis(*settings), pg_db) == []


def test_a_worker_on_a_redis_that_keeps_nothing_warns_once_naming_the_docs(own_redis, pg_db):
    [warning] = worker_boot_logs(own_redis(*KEEPS_NOTHING), pg_db)
    assert warning["log_level"] == "warning" and warning["process"] == "worker"
    assert warning["see"] == "docs/operations.md#redis-settings"
    assert "set appendonly yes" in warning["event"]


def test_a_redis_that_refuses_config_is_not_judged(own_redis, pg_db):
    """A managed Redis may refuse CONFIG: nothing is known, so nothing is said."""
    url = own_redis(*KEEPS_NOTHING)
    admin = redis.Redis.from_url(url)
    admin.acl_setuser("app", enabled=True, passwords=["+secret"], keys=["*"], channels=["*"],
                      commands=["+@all", "-config"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(url.replace("//", "//app:secret@")).config_get("appendonly")
    assert worker_boot_logs(url.replace("//", "//app:secret@"), pg_db) == []


def test_enrich_drain_on_a_redis_that_keeps_nothing_warns_once(own_redis, pg_url, pg_db, tmp_path):
    env = shell_env({"REDIS_URL": own_redis(*KEEPS_NOTHING), "DATABASE_URL": pg_url, "DRAIN_PROMETHEUS_PORT": "0"})
    log_path = tmp_path / "drain.log"
    with open(log_path, "w") as log:
        drain = subprocess.Popen([sys.executable, "-m", "workers.cli", "drain"], env=env, cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "draining the job-log journal" in log_path.read_text(), timeout=30, interval=0.1)
    finally:
        drain.send_signal(signal.SIGTERM)
        drain.wait(20)
    output = log_path.read_text()
    assert drain.returncode == 0, output
    lines = [line for line in output.splitlines() if WARNING in line]
    assert len(lines) == 1, output
    assert "docs/operations.md#redis-settings" in lines[0] and "Traceback" not in output
