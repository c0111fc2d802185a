"""The journal under real faults: PostgreSQL stopped, a worker SIGKILLed, PostgreSQL started.

Restarts this checkout's own PostgreSQL (``TEST_PG_CLUSTER``) and always
brings it back, even when the test fails.
"""

from __future__ import annotations

import importlib
import sys
import time

import psycopg2
import psycopg2.extras
import pytest
import redis

from models import EnrichmentLog

from linking_harness import wait_for
from process_harness import WorkerProcess
from services import REDIS_TEST_URL, pg_ctl, wait_for_postgres

pytestmark = pytest.mark.slow

FINAL = ("success", "partial_success", "no_data", "skipped", "failed", "degraded")


def final_ids(url: str) -> set[str]:
    """Job ids with a final row, over a connection of its own (the pool's were cut by the stop)."""
    conn = psycopg2.connect(url, connect_timeout=2)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT job_id FROM enrichment_logs WHERE status = ANY(%s)", [list(FINAL)])
            return {job_id for (job_id,) in cur.fetchall()}
    finally:
        conn.close()


def fresh_connections(db) -> None:
    """Drop this process's connections (the stop broke them)."""
    db._state.closed, db._state.conn = True, None  # the thread's own, broken: forget it
    for close in (db.close_all,):
        try:
            close()
        except Exception:  # broken by the stop: thrown away either way
            pass


@pytest.mark.timeout(300, method="signal")
def test_postgres_down_then_a_worker_killed_loses_no_row_of_an_acked_job(pg_db, pg_url, tmp_path, monkeypatch):
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    monkeypatch.setenv("REDIS_URL", REDIS_TEST_URL)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    sys.modules.pop("process_app", None)
    app = importlib.import_module("process_app")  # the same actors, for sending
    # Entries a dead drainer read are claimed by another after 1 s idle.
    env = {"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url, "TEST_CLAIM_IDLE": "1"}
    first = WorkerProcess("process_app", env, tmp_path / "first.log", threads=4)
    second = None
    try:
        first.wait_ready()
        sent = [app.slow.send(0.02) for _ in range(150)] + [app.parent_of_doomed.send() for _ in range(30)]
        wait_for(lambda: EnrichmentLog.select().where(EnrichmentLog.status.in_(FINAL)).count() >= 20, timeout=60)
        final_before = {r.job_id for r in EnrichmentLog.select(EnrichmentLog.job_id)
                        .where(EnrichmentLog.status.in_(FINAL))}
        fresh_connections(pg_db)
        pg_ctl("stop")
        try:
            time.sleep(4)  # the worker goes on acking; the rows wait in Redis
            first.kill()  # SIGKILL: no shutdown hook, its drainer's batch never acknowledged
            unacked = set(client.hkeys("dramatiq:default.msgs"))
        finally:
            pg_ctl("start")
            wait_for_postgres()
        fresh_connections(pg_db)
        acked = {m.message_id for m in sent if m.options["redis_message_id"].encode() not in unacked}
        assert acked - final_before, "no job was acked while PostgreSQL was down: nothing was tested"

        second = WorkerProcess("process_app", env, tmp_path / "second.log", threads=4)
        second.wait_ready()

        def every_acked_job_final():
            try:
                return final_ids(pg_url) >= acked
            except psycopg2.Error:
                return False  # PostgreSQL is still starting

        wait_for(every_acked_job_final, timeout=90, interval=0.2)
    finally:
        for worker in (first, second):
            if worker is not None and worker.proc.poll() is None:
                worker.stop()
        app.broker.close()
    conn = psycopg2.connect(pg_url, cursor_factory=psycopg2.extras.NamedTupleCursor)
    with conn.cursor() as cur:
        cur.execute("SELECT job_id, parent_job_id, is_root_job, operation, status, failed_children FROM enrichment_logs")
        found = cur.fetchall()
    conn.close()
    rows = {r.job_id: r for r in found}
    assert len(found) == len(rows)  # one row per job
    assert all(rows[job_id].status in FINAL for job_id in acked)
    # Every root counts exactly its children that failed for good, however often their entries were applied.
    for root in (r for r in rows.values() if r.is_root_job):
        failed = sum(1 for r in rows.values() if r.parent_job_id == root.job_id and r.status == "failed")
        assert root.failed_children == failed, (root.job_id, root.failed_children, failed)
    assert sum(1 for r in rows.values() if r.operation == "doomed" and r.status == "failed") > 0
    log = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    assert "log database unavailable" in log
