"""Worker records under real `dramatiq` processes (``fault_app``: the product's stack plus two test actors).

* ``enrich workers`` and ``GET /api/workers`` list a live worker with the slow job it runs; after a SIGKILL the
  worker shows as gone, with the job it held.
* A job a live worker runs across a Redis restart without persistence is never marked ``lost`` and ends with
  one row (the lost-work sweeper reads the records), while a row no worker runs is.
* Retries waiting for their backoff in a worker's memory when Redis (AOF on) is SIGKILLed and restarted all
  run again and every tree completes (issue 23, item 1).

Each test starts its services back, even when it fails: the suite's Redis through ``services.restart_redis``,
a Redis of the test's own otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dramatiq
import httpx
import pytest
import redis

from models import EnrichmentLog

from linking_harness import wait_for
from process_harness import ROOT, WorkerProcess, free_port, shell_env
from services import REDIS_TEST_URL, SeparateRedis, restart_redis

pytestmark = pytest.mark.slow
Log = EnrichmentLog
FINAL = ("success", "partial_success", "no_data", "skipped", "failed", "degraded", "lost")
# The bound the README states for a retry held in memory through a Redis restart: the consumer
# reconnects within Dramatiq's 3 s restart delay of Redis being back, then the retry runs at its eta.
RECOVERY_BOUND_SECONDS = 30


def send(client_url: str, actor_name: str, *args) -> str:
    broker = dramatiq.brokers.redis.RedisBroker(url=client_url)
    try:
        sent = dramatiq.Message(queue_name="default", actor_name=actor_name, args=args, kwargs={}, options={})
        broker.enqueue(sent)
        return sent.message_id
    finally:
        broker.close()


def enrich_workers(env: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", "workers.cli", "workers", "--json"], env=shell_env(env), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def status(job_id: str):
    row = Log.get_or_none(Log.job_id == job_id)
    return row.status if row else None


@pytest.mark.timeout(180, method="signal")
def test_a_worker_lists_its_slow_job_and_shows_as_gone_with_it_after_sigkill(pg_db, pg_url, tmp_path):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    env = {"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url, "REDIS_HEARTBEAT_TIMEOUT_MS": "3000"}
    worker = WorkerProcess("fault_app", env, tmp_path / "worker.log", threads=2)
    web_port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "workers.cli", "web", "--port", str(web_port)],
                           env=shell_env(env), cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        worker.wait_ready()
        job_id = send(REDIS_TEST_URL, "fault_sleep", 60)

        def listed() -> dict:
            answer = enrich_workers(env)
            return next((w for w in answer["workers"] if any(j["job_id"] == job_id for j in w["jobs"])), None)

        live = wait_for(listed, timeout=30, interval=0.2)
        assert live["state"] == "live" and live["queues"] == ["default"] and live["threads"] == 2
        [job] = live["jobs"]
        assert (job["actor"], job["operation"], job["tree_id"], job["attempt"]) == (
            "fault_sleep", "fault:sleep", job_id, 0)
        pids = {int(p) for p in subprocess.run(["pgrep", "-g", str(worker.proc.pid)], capture_output=True,
                                               text=True).stdout.split()}
        assert live["pid"] in pids  # the worker process itself, under the `dramatiq` parent

        def api() -> dict:
            try:
                return httpx.get(f"http://127.0.0.1:{web_port}/api/workers", timeout=5).json()
            except httpx.TransportError:
                return None  # enrich web is still starting

        answer = wait_for(api, timeout=30, interval=0.2)
        assert answer["heartbeat_timeout_ms"] == 3000
        assert [w["worker_id"] for w in answer["workers"]] == [live["worker_id"]]
        assert [j["job_id"] for j in answer["workers"][0]["jobs"]] == [job_id]

        worker.kill()  # SIGKILL: no shutdown hook removes the record
        gone = wait_for(lambda: (w := listed()) and w["state"] == "gone" and w, timeout=30, interval=0.2)
        assert [j["job_id"] for j in gone["jobs"]] == [job_id]  # the job it held when it went
        # Gone: its heartbeat is over 3,000 ms old, which the API shows rounded to a tenth (3.0 from 3,001 ms).
        assert gone["heartbeat_age_seconds"] >= 3.0
    finally:
        if worker.proc.poll() is None:
            worker.kill()
        web.terminate()
        web.wait(10)


@pytest.mark.timeout(180, method="signal")
def test_a_clean_stop_removes_the_record(pg_db, pg_url, tmp_path):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    env = {"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url}
    worker = WorkerProcess("fault_app", env, tmp_path / "worker.log", processes=2, threads=2)
    try:
        worker.wait_ready(processes=2)
        wait_for(lambda: len(enrich_workers(env)["workers"]) == 2, timeout=30, interval=0.2)
        # SIGTERM to the `dramatiq` parent only, as the README's stop does (KillMode=mixed): it forwards one to
        # each worker, which finishes and removes its record.  (One to the whole group kills them at once.)
        os.kill(worker.proc.pid, signal.SIGTERM)
        assert worker.proc.wait(60) == 0
    finally:
        worker.stop()
    assert enrich_workers(env)["workers"] == []


@pytest.mark.timeout(240, method="signal")
def test_a_job_a_live_worker_runs_across_a_redis_restart_without_persistence_is_not_marked_lost(
        pg_db, pg_url, tmp_path):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    # The sweep looks every half second for jobs running for more than a second: only the workers' records
    # can spare the running job.  A 3 s heartbeat timeout: no running row is marked within 3 s of a restart.
    env = {"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url, "REDIS_HEARTBEAT_TIMEOUT_MS": "3000",
           "LOST_WORK_GRACE_SECONDS": "1", "LOST_WORK_SWEEP_SECONDS": "0.5"}
    worker = WorkerProcess("fault_app", env, tmp_path / "worker.log", threads=2)
    try:
        worker.wait_ready()
        held = send(REDIS_TEST_URL, "fault_sleep", 15)
        wait_for(lambda: status(held) == "running", timeout=30, interval=0.1)
        restart_redis(down_for=1.0)  # no persistence: the message, its unacked set and the records are gone
        # A row no worker runs, started long ago, whose message is nowhere: the sweep must mark it.
        orphan = Log.create(job_id="0f6b2c1e-4c3a-4f7e-9a0d-6a1b2c3d4e5f", operation="fault:sleep",
                            is_root_job=True, status="running")
        wait_for(lambda: status(orphan.job_id) == "lost", timeout=60, interval=0.2)
        assert status(held) == "running"  # swept (the orphan) while it ran, and spared
        wait_for(lambda: status(held) == "success", timeout=60, interval=0.2)
    finally:
        worker.stop()
    assert Log.select().where(Log.job_id == held).count() == 1
    assert not [line for line in worker.log_path.read_text().splitlines() if "job marked lost" in line and held in line]


@pytest.mark.timeout(300, method="signal")
def test_retries_held_in_memory_run_after_redis_with_aof_is_killed_and_restarted(pg_db, pg_url, tmp_path):
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    aof = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")  # what was written survives a SIGKILL
    server = SeparateRedis(folder, port, *aof)
    url = server.url
    # Each job fails once (a retryable error) and is retried 6-8 s later: Redis is killed during the backoff.
    env = {"REDIS_URL": url, "DATABASE_URL": pg_url, "RETRY_MIN_BACKOFF_MS": "6000", "RETRY_MAX_BACKOFF_MS": "8000"}
    worker = WorkerProcess("fault_app", env, tmp_path / "worker.log", threads=4)
    client = redis.Redis.from_url(url)
    try:
        worker.wait_ready()
        sent = [send(url, "fault_flaky", 0.05) for _ in range(8)]

        def all_waiting() -> bool:
            held = sum(client.scard(k) for k in client.scan_iter("dramatiq:__acks__.*.default.DQ"))
            return held == len(sent) and all(status(j) == "retrying" for j in sent)

        wait_for(all_waiting, timeout=30, interval=0.1)  # each retry is held in the worker's delay queue
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        time.sleep(4)  # long enough for the consumers to lose their connection
        server = SeparateRedis(folder, port, *aof)  # back on the same port, from its append-only file
        back = time.monotonic()
        wait_for(lambda: all(status(j) == "success" for j in sent), timeout=RECOVERY_BOUND_SECONDS, interval=0.2)
        print(f"every retry ran and its tree completed {time.monotonic() - back:.1f} s after Redis was back")
    finally:
        worker.stop()
        server.stop()
    rows = {r.job_id: r for r in Log.select()}
    assert sorted(rows) == sorted(sent)  # one row per job
    assert all((r.status, r.retry_count) == ("success", 1) for r in rows.values())
    log = worker.log_path.read_text()
    assert "were put back on their delay queue" in log  # the consumer did drop them: the fix was exercised
