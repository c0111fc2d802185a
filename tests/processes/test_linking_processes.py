"""JobLinking with the Redis broker and a real `dramatiq` worker process, on PostgreSQL."""

from __future__ import annotations

import json
import time

import psycopg2
import pytest
import redis

from models import EnrichmentLog

from linking_harness import wait_for
from process_harness import WorkerProcess
from services import PG_ADMIN_URL, REDIS_TEST_URL

pytestmark = pytest.mark.slow


@pytest.fixture
def app(pg_db, pg_url, tmp_path, monkeypatch):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    monkeypatch.setenv("REDIS_URL", REDIS_TEST_URL)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    import importlib
    import sys

    sys.modules.pop("process_app", None)
    module = importlib.import_module("process_app")  # the same actors, for sending
    # JOB_LOG_LINES=finished: a line for every job's end (the default logs only failures), to count them.
    worker = WorkerProcess("process_app", {"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url,
                                           "JOB_LOG_LINES": "finished"}, tmp_path / "worker.log")
    worker.wait_ready()
    module.worker_log = worker.log_path
    module.worker_process = worker
    yield module
    worker.stop()
    module.broker.close()


def finished(count: int):
    return lambda: EnrichmentLog.select().where(EnrichmentLog.status.not_in(["queued", "running", "retrying"])).count() >= count


def test_chain_is_flat_through_redis_and_a_worker_process(app):
    root = app.chain_root.send(4)
    wait_for(finished(5), timeout=30)
    rows = list(EnrichmentLog.select())
    assert len(rows) == 5
    children = [r for r in rows if r.job_id != root.message_id]
    assert {r.parent_job_id for r in children} == {root.message_id}
    assert all(r.status == "success" for r in rows)


def test_retry_and_degraded_root_through_a_worker_process(app):
    flaky = app.flaky.send()
    parent = app.parent_of_doomed.send()
    wait_for(finished(3), timeout=30)
    rows = {r.job_id: r for r in EnrichmentLog.select()}
    assert rows[flaky.message_id].status == "success" and rows[flaky.message_id].retry_count == 1
    assert rows[parent.message_id].status == "degraded" and rows[parent.message_id].failed_children == 1


def _set_connections(db_name: str, allowed: bool) -> None:
    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
        if not allowed:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db_name,))
    conn.close()


def test_a_stopped_worker_has_written_every_jobs_log_lines(app):
    """Lines are written in batches; stopping the worker (SIGTERM) writes what was still waiting."""
    sent = [app.slow.send(0.01) for _ in range(30)]
    wait_for(finished(30), timeout=30)
    app.worker_process.stop()
    lines = [json.loads(line) for line in app.worker_log.read_text().splitlines() if line.startswith("{")]
    finished_ids = {line["job_id"] for line in lines if line["message"] == "job finished"}
    assert finished_ids == {m.message_id for m in sent}


def test_log_database_outage_mid_run_loses_no_row(app, pg_url):
    """The database refuses every connection for 3 s while jobs run; every row arrives afterwards."""
    db_name = pg_url.rsplit("/", 1)[1]
    first = [app.slow.send(0.05) for _ in range(20)]
    time.sleep(0.5)
    _set_connections(db_name, allowed=False)
    try:
        during = [app.slow.send(0.05) for _ in range(20)]
        time.sleep(3)
    finally:
        _set_connections(db_name, allowed=True)
    sent = {m.message_id for m in first + during}
    from models import database

    database.close_all() if hasattr(database, "close_all") else None
    wait_for(lambda: EnrichmentLog.select().where(EnrichmentLog.status == "success").count() == 40, timeout=60)
    rows = list(EnrichmentLog.select())
    assert {r.job_id for r in rows} == sent
    assert len(rows) == 40
    log = app.worker_log.read_text()
    assert "log database unavailable" in log and "job log drain resumed" in log
