"""The stop the docs recommend (docs/operations.md, systemd ``KillMode=mixed``, supervisord
``stopasgroup=false``): SIGTERM to the ``dramatiq`` parent only.  It forwards one SIGTERM to each worker
process, which finishes the jobs it runs and hands back the messages it holds; none is killed.

(A SIGTERM to the whole process group makes each worker process get two, its supervisor's and the
parent's: Dramatiq then kills it at once, "Killing worker process...".)
"""

from __future__ import annotations

import os
import signal

import pytest
import redis
from test_lifecycle_processes import env_for, pending_rows, sender, wait_until_none_pending  # noqa: F401

from models import EnrichmentLog

from linking_harness import wait_for
from process_harness import WorkerProcess
from services import REDIS_TEST_URL

pytestmark = pytest.mark.slow

Log = EnrichmentLog


def unacked_messages() -> int:
    """Messages held in any worker's unacked set: a worker that stopped well holds none."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    return sum(client.zcard(key) for key in client.scan_iter("dramatiq:__acks__.*"))


@pytest.mark.timeout(240, method="signal")
def test_sigterm_to_the_dramatiq_parent_only_finishes_or_hands_back_every_job(pg_db, pg_url, sender, tmp_path):  # noqa: F811
    roots = [sender.tree_root.send(4, 1.0).message_id for _ in range(6)]
    worker = WorkerProcess("lifecycle_app", env_for(pg_url), tmp_path / "stopped.log", processes=2, threads=2)
    try:
        worker.wait_ready(processes=2)
        wait_for(lambda: Log.select().where((Log.operation == "tree:leaf") & (Log.status == "running")).count() >= 2,
                 timeout=60, interval=0.05)
        os.kill(worker.proc.pid, signal.SIGTERM)  # the parent only, as KillMode=mixed does
        assert worker.proc.wait(120) == 0
    finally:
        worker.stop()
    log = (tmp_path / "stopped.log").read_text()
    assert "Killing worker process" not in log and "Traceback" not in log, log[-3000:]
    assert unacked_messages() == 0  # every message it held went back to its queue
    left = pending_rows()
    assert left and not [row for row in left if row[2] == "running"]  # nothing ran on past the stop
    assert not Log.select().where(Log.status.in_(("failed", "lost"))).exists()

    # The next worker takes what was handed back: every tree completes, every job once.
    again = WorkerProcess("lifecycle_app", env_for(pg_url), tmp_path / "again.log", processes=2, threads=2)
    try:
        again.wait_ready(processes=2)
        wait_until_none_pending(timeout=120)
    finally:
        again.stop()
    assert Log.select().count() == len(roots) * 5
    assert {status for (status,) in Log.select(Log.status).tuples()} == {"success"}
