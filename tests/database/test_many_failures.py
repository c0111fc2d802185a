"""A thousand children failing at once under one root, on PostgreSQL.

A real Dramatiq worker (several threads) on the StubBroker with JobLinking:
the root sends 1,000 children that all fail for good, and finishes while they
are failing, so some failures land before the root's own final write and
some after it.  Whatever the order, the root counts each child exactly once
and ends ``degraded``; redelivered failures are not counted again.
"""

from __future__ import annotations

import time

import pytest

from middleware import JobLinking
from models import EnrichmentLog

from linking_harness import Harness, rows

CHILDREN = 1_000
WORKER_THREADS = 8


class PermanentError(Exception):
    error_code = "permanent"


@pytest.fixture
def harness(pg_db):
    # Small drain batches: the children's failures reach the database while others still run.
    h = Harness(JobLinking(root_wait=0.3, batch_size=50), threads=WORKER_THREADS)
    yield h
    h.stop()


def _failed_children(root_id: str) -> int:
    return (
        EnrichmentLog.select()
        .where((EnrichmentLog.parent_job_id == root_id) & (EnrichmentLog.status == "failed"))
        .count()
    )


def test_a_thousand_children_failing_at_once_are_each_counted_once(harness):
    sent = []

    @harness.actor(max_retries=0, throws=(PermanentError,))
    def doomed(i):
        # Half fail through ``throws``, half through exhausted retries (max_retries=0).
        time.sleep(0.005)  # long enough for the root to finish while children still fail
        raise PermanentError(f"child {i}") if i % 2 else RuntimeError(f"child {i}")

    @harness.actor(operation="check:many")
    def root_job():
        for i in range(CHILDREN):
            sent.append(doomed.send(i))
        # Finish while the children are failing: some are counted before the
        # root's final write, the rest after it.
        deadline = time.monotonic() + 30
        while _failed_children(root_msg.message_id) < CHILDREN // 3 and time.monotonic() < deadline:
            time.sleep(0.01)

    started = time.monotonic()
    root_msg = root_job.send()
    harness.start().drain(timeout=90)
    elapsed = time.monotonic() - started

    all_rows = rows()
    root = all_rows[root_msg.message_id]
    children = [r for r in all_rows.values() if r.job_id != root_msg.message_id]
    assert len(sent) == CHILDREN and len(children) == CHILDREN  # one row per job
    assert all(r.status == "failed" and r.retry_count == 0 for r in children)
    assert all(r.parent_job_id == root.job_id and not r.is_root_job for r in children)
    assert {r.error_code for r in children} == {"permanent", "runtime_error"}
    assert root.is_root_job and root.completed_at is not None
    assert root.failed_children == CHILDREN
    assert root.status == "degraded"
    assert elapsed < 60, f"took {elapsed:.1f} s"
    # Both orders happened: children that failed before the root finished, and after.
    before = sum(r.completed_at <= root.completed_at for r in children)
    assert CHILDREN // 3 <= before < CHILDREN, before

    # The same failures delivered again (a broker redelivering after a lost ack): not counted twice.
    for message in sent[:100]:
        harness.broker.enqueue(message)
    harness.drain(timeout=60)
    root = EnrichmentLog.get(EnrichmentLog.job_id == root_msg.message_id)
    assert root.failed_children == CHILDREN and root.status == "degraded"
    assert EnrichmentLog.select().count() == CHILDREN + 1
