"""The job-log row's state machine, property-tested on the real write path (PostgreSQL and SQLite).

Each example makes up a small tree: a root and a few children, each with a
true history of attempts.  A job may first be written ``queued`` when it is
sent (retry_count 0; never started if it has no attempt yet).  Attempt N writes ``running`` (retry_count N) when
it starts and ends with ``retrying`` (retry_count N+1) or, on the last
attempt, a final status (success, partial_success, no_data, skipped or
failed), or not at all (the job is still running).  Any write may be
applied again (an entry claimed twice, a redelivered attempt with the same
verdict: later timestamps).  A redelivered attempt that ends otherwise (its
worker died before the ack) is a later delivery (``delivery``): its writes
carry a later ``attempt_started_ms`` and win, whenever the dead worker's arrive.

The writes are then delivered in any order, in batches of any size, through
the real journal and drainer: each batch is appended to a journal and applied
by one ``Drainer.drain_once`` (writes of one job in one batch are folded into
one row, then the real ``upsert_rows`` / ``stored_rows`` /
``count_failed_child`` statements run in one transaction).  Nothing orders the
root's rows before its children's: several drainers apply batches in any
order, and a child's failure waits for its root's row.

Whatever the order, the table must say what really happened:

* one row per job;
* its status and retry_count are those of the last write of its last attempt;
* its started_at is the first attempt's;
* completed_at is set exactly when the status is final;
* the root's failed_children is the number of distinct children that failed
  for good, however often their failure was delivered;
* the root is ``degraded`` iff it finished well and a child failed for good.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass
from typing import Optional

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from middleware.job_log import upsert
from middleware.job_log.drainer import Drainer
from middleware.job_log.journal import MemoryJournal
from middleware.job_log.rows import ROW_COLUMNS
from models import EnrichmentLog
from models.job_log import DEGRADABLE_STATUSES, DEGRADED, FAILED, QUEUED, RETRYING, RUNNING

PENDING = (QUEUED, RUNNING, RETRYING)

# STATE_MACHINE_EXAMPLES=2000 for a deeper search than the suite's.
EXAMPLES = int(os.environ.get("STATE_MACHINE_EXAMPLES", "100"))
FINALS = ("success", "partial_success", "no_data", "skipped", "failed")
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)
T0_MS = int(T0.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


@dataclass(frozen=True)
class Write:
    """One write as JobLinking would submit it; ``copy`` > 0 for one applied again, ``delivery`` > 0
    for one of a later delivery of the attempt (its message delivered again after its worker died)."""

    job: int  # 0 is the root
    attempt: int
    status: str
    retry_count: int
    copy: int = 0
    delivery: int = 0

    @property
    def attempt_started_ms(self) -> int:
        """When the delivery that made this write started its attempt (0: the write made at send)."""
        if self.status == QUEUED:
            return 0
        return T0_MS + self.attempt * 60_000 + self.delivery * 1000

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.retry_count, self.attempt_started_ms, upsert.phase_rank(self.status))


def job_id(job: int) -> str:
    return "root-job" if job == 0 else f"child-{job}"


def started_at(write: Write) -> dt.datetime:
    # JobLinking keeps the first attempt's start in the message's options, and Retries
    # re-enqueues those options: every attempt's writes carry it.  A redelivery of the
    # first attempt (the broker's own copy, without that option) starts later.
    return T0 + dt.timedelta(seconds=write.copy if write.attempt == 0 else 0, milliseconds=7 * write.job)


def make_row(write: Write) -> dict:
    """The row dict JobLinking._row builds for this write (every key of ROW_COLUMNS)."""
    status = write.status
    final = status not in PENDING
    ending = status not in (QUEUED, RUNNING)
    start = started_at(write) if status != QUEUED else None
    now = (start or T0) + dt.timedelta(milliseconds=250 if ending else 1)
    error = status in (RETRYING, FAILED)
    row = {
        "id": uuid.uuid4(),
        "job_id": job_id(write.job),
        "parent_job_id": None if write.job == 0 else job_id(0),
        "is_root_job": write.job == 0,
        "operation": "check:album-enrichment" if write.job == 0 else "enrichment:album",
        "entity_type": "album",
        "entity_id": str(uuid.UUID(int=write.job + 1)),
        "status": status,
        "reason": f"{status} on attempt {write.attempt}" if ending else None,
        "sources": ["musicbrainz"] if ending else [],
        "fields_enriched": ["release_date"] if status == "success" else [],
        "data_quality_before": "low",
        "data_quality_after": "medium" if final else None,
        "retry_count": write.retry_count,
        "attempt_started_ms": write.attempt_started_ms,
        "last_error": f"RuntimeError: attempt {write.attempt} failed" if error else None,
        "error_code": "runtime_error" if error else None,
        "api_call_count": 1 if ending else 0,
        "enqueued_at": T0 - dt.timedelta(seconds=1),
        "started_at": start,
        "completed_at": now if final else None,
        "duration_ms": 250 if ending else None,
        "details": {"attempt": write.attempt, "copy": write.copy} if ending else None,
        "triggered_by": None,
        "message": {"actor": "enrich_album", "queue": "default", "args": [write.job], "kwargs": {}, "options": {},
                    "resendable": True} if status == QUEUED else None,
        "due_at": T0 if status == QUEUED else None,
        "created_at": now,
        "updated_at": now,
    }
    assert set(row) == set(ROW_COLUMNS)
    return row


def failed_child_of(write: Write) -> Optional[str]:
    # JobLinking counts a permanent failure against the root of a child only.
    return job_id(0) if write.status == FAILED and write.job != 0 else None


# -- histories -------------------------------------------------------------------------------------------


@st.composite
def job_history(draw, job: int) -> list[Write]:
    """A job's true writes, in the order they happened."""
    queued = draw(st.booleans())  # written when sent (every send since migration 0008)
    attempts = draw(st.integers(0 if queued else 1, 3))
    # None: the last attempt has not ended.  Failures are drawn more often: they are what the root counts.
    last_end = draw(st.sampled_from(FINALS + (FAILED, FAILED, None)))
    writes = [Write(job, 0, QUEUED, 0)] if queued else []
    for attempt in range(attempts):
        writes.append(Write(job, attempt, RUNNING, attempt))
        if attempt < attempts - 1:
            writes.append(Write(job, attempt, RETRYING, attempt + 1))
        elif last_end is not None:
            writes.append(Write(job, attempt, last_end, attempt))
    return writes


@st.composite
def scenarios(draw):
    children = draw(st.integers(1, 3))
    histories = [draw(job_history(job)) for job in range(children + 1)]
    true_writes = [w for history in histories for w in history]
    # Redeliveries: some writes again, as a redelivered attempt makes them (later timestamps).
    redelivered = draw(st.lists(st.sampled_from(true_writes), max_size=4))
    if draw(st.booleans()):  # every child's failure delivered twice (or more)
        redelivered += [w for w in true_writes if w.status == FAILED and w.job != 0]
    copies = [Write(w.job, w.attempt, w.status, w.retry_count, copy=n + 1) for n, w in enumerate(redelivered)]
    order = draw(st.permutations(true_writes + copies))
    cuts = draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    batches, batch = [], []
    for write, cut in zip(order, cuts):
        batch.append(write)
        if cut:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return histories, batches


# -- the property ---------------------------------------------------------------------------------------------


def deliver(drainer: Drainer, batches: list[list[Write]]) -> None:
    for batch in batches:
        for write in batch:
            drainer.journal.append(make_row(write), failed_child_of(write))
        drainer.batch_size = len(batch)
        drainer.drain_once(block_ms=0)
    drainer.batch_size = 1000
    while drainer.journal.oldest_id() is not None:  # failures that waited for their root's row
        drainer.drain_once(block_ms=0)


def expected_state(history: list[Write]) -> tuple[str, int, Optional[dt.datetime]]:
    last = max(history, key=lambda w: w.key)
    assert last == history[-1]
    started = [w for w in history if w.status != QUEUED]
    return last.status, last.retry_count, started_at(started[0]) if started else None


def check_started_at(row, job: int, first_start: dt.datetime, batches: list[list[Write]]) -> None:
    """started_at is the first attempt's, when that attempt's first write was delivered first.

    When a later write of the job is delivered before it (another process's
    writes, flushed after an outage), the row keeps the start time of the
    write delivered first: see test_started_at_when_the_first_attempts_write_arrives_late.
    """
    delivered = [w for batch in batches for w in batch if w.job == job and w.status != QUEUED]
    if not delivered:
        assert row.started_at is None, job_id(job)
    elif started_at(delivered[0]) == first_start:
        assert row.started_at == first_start, job_id(job)
    else:
        assert row.started_at in {started_at(w) for w in delivered}, job_id(job)


@pytest.fixture
def writer(db):
    # Its thread is never started: batches are applied by the test.  A failure whose root
    # row is missing is tried again at the next pass.
    drainer = Drainer(MemoryJournal(), db, root_retry=0)
    yield drainer
    drainer.stop()  # closes its connection


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_any_delivery_order_ends_in_the_true_state(db, writer, scenario):
    histories, batches = scenario
    note(f"batches: {[[(job_id(w.job), w.status, w.retry_count, w.copy) for w in b] for b in batches]}")
    EnrichmentLog.delete().execute()  # one example's rows never meet another's

    deliver(writer, batches)
    delivered = [w for batch in batches for w in batch]
    if any(w.status == FAILED and w.copy for w in delivered if w.job):
        event("a child's failure delivered twice")
    if any(len({w.job for w in b}) < len(b) for b in batches):
        event("writes of one job merged in a batch")
    if any(max(h, key=lambda w: w.key).status == FAILED for h in histories[1:]):
        event(f"root ends {max(histories[0], key=lambda w: w.key).status} with a failed child")

    rows = {r.job_id: r for r in EnrichmentLog.select()}
    assert set(rows) == {job_id(j) for j in range(len(histories))}
    assert EnrichmentLog.select().count() == len(histories)  # one row per job

    failed_for_good = 0
    for job, history in enumerate(histories):
        row = rows[job_id(job)]
        status, retry_count, first_start = expected_state(history)
        if job == 0:
            continue  # the root is checked below, once its children are known
        failed_for_good += status == FAILED
        assert (row.status, row.retry_count) == (status, retry_count), job_id(job)
        check_started_at(row, job, first_start, batches)
        assert (row.completed_at is not None) == (status not in PENDING), job_id(job)
        assert row.parent_job_id == job_id(0) and not row.is_root_job
        assert row.failed_children == 0

    root = rows[job_id(0)]
    status, retry_count, first_start = expected_state(histories[0])
    if status in DEGRADABLE_STATUSES and failed_for_good:
        status = DEGRADED
    assert root.failed_children == failed_for_good
    assert (root.status, root.retry_count) == (status, retry_count)
    check_started_at(root, 0, first_start, batches)
    assert (root.completed_at is not None) == (status not in PENDING)
    assert root.is_root_job and root.parent_job_id is None


# -- a known gap, pinned -------------------------------------------------------------------------------------

LATE_FIRST_ATTEMPT = [
    # Attempt 1 of a child is delivered before attempt 0's writes (e.g. attempt 0 ran in a
    # process whose log database was down; attempt 1 ran elsewhere and was written first).
    ("in one batch (folded by the drainer)", [[Write(0, 0, RUNNING, 0)],
                                           [Write(1, 1, RUNNING, 1), Write(1, 0, RUNNING, 0)]]),
    ("in two batches (upsert_rows)", [[Write(0, 0, RUNNING, 0)],
                                      [Write(1, 1, RUNNING, 1)], [Write(1, 0, RUNNING, 0)]]),
]


@pytest.mark.parametrize("batches", [b for _, b in LATE_FIRST_ATTEMPT], ids=[name for name, _ in LATE_FIRST_ATTEMPT])
def test_started_at_when_the_first_attempts_write_arrives_late(db, writer, batches):
    deliver(writer, batches)
    row = EnrichmentLog.get(EnrichmentLog.job_id == job_id(1))
    assert (row.status, row.retry_count) == (RUNNING, 1)
    assert row.started_at == started_at(Write(1, 0, RUNNING, 0))  # the first attempt's


def test_a_failed_child_whose_redelivery_succeeds_is_no_longer_counted(db, writer):
    # The child's last attempt failed and was written, but the broker never saw the nack (the
    # worker died): the message is delivered again with the same retries option, and succeeds.
    deliver(writer, [
        [Write(0, 0, RUNNING, 0)],
        [Write(1, 0, RUNNING, 0)],
        [Write(1, 0, FAILED, 0)],
        [Write(0, 0, "success", 0)],
        [Write(1, 0, RUNNING, 0, copy=1, delivery=1)],
        [Write(1, 0, "success", 0, copy=1, delivery=1)],
    ])
    child = EnrichmentLog.get(EnrichmentLog.job_id == job_id(1))
    root = EnrichmentLog.get(EnrichmentLog.job_id == job_id(0))
    assert (child.status, child.retry_count) == ("success", 0)
    assert (root.status, root.failed_children) == ("success", 0)


def test_a_root_stays_degraded_while_another_child_is_still_failed(db, writer):
    deliver(writer, [
        [Write(0, 0, RUNNING, 0)],
        [Write(1, 0, RUNNING, 0), Write(2, 0, RUNNING, 0)],
        [Write(1, 0, FAILED, 0), Write(2, 0, FAILED, 0)],
        [Write(0, 0, "partial_success", 0)],
        [Write(1, 0, "success", 0, copy=1, delivery=1)],  # child 1 delivered again, and this time it works
    ])
    root = EnrichmentLog.get(EnrichmentLog.job_id == job_id(0))
    assert (root.status, root.failed_children) == (DEGRADED, 1)
    deliver(writer, [[Write(2, 0, "success", 0, copy=1, delivery=1)]])
    root = EnrichmentLog.get(EnrichmentLog.job_id == job_id(0))
    assert (root.status, root.failed_children) == ("partial_success", 0)  # its own status, not success


# A killed worker's last entry, applied late: its drainer had read it, and another drainer claims it
# about 10 s later, after the redelivered attempt (the same retry_count) has written its row.
LATE_FAILURE = {
    "after the redelivery's end": [
        [Write(0, 0, "success", 0)],
        [Write(1, 0, RUNNING, 0)],
        [Write(1, 0, RUNNING, 0, delivery=1)],
        [Write(1, 0, "success", 0, delivery=1)],
        [Write(1, 0, FAILED, 0)],
    ],
    "while the redelivery runs": [
        [Write(0, 0, "success", 0), Write(1, 0, RUNNING, 0)],
        [Write(1, 0, RUNNING, 0, delivery=1)],
        [Write(1, 0, FAILED, 0)],
        [Write(1, 0, "success", 0, delivery=1)],
    ],
    "folded with the redelivery's end in one batch": [
        [Write(0, 0, "success", 0), Write(1, 0, RUNNING, 0)],
        [Write(1, 0, "success", 0, delivery=1), Write(1, 0, FAILED, 0)],
    ],
    "folded, arriving first": [
        [Write(0, 0, "success", 0), Write(1, 0, RUNNING, 0)],
        [Write(1, 0, FAILED, 0), Write(1, 0, "success", 0, delivery=1)],
    ],
}


@pytest.mark.parametrize("batches", list(LATE_FAILURE.values()), ids=list(LATE_FAILURE))
def test_a_dead_workers_late_failure_never_replaces_its_redelivered_success(db, writer, batches):
    deliver(writer, batches)
    child = EnrichmentLog.get(EnrichmentLog.job_id == job_id(1))
    root = EnrichmentLog.get(EnrichmentLog.job_id == job_id(0))
    assert (child.status, child.retry_count) == ("success", 0)
    assert child.attempt_started_ms == Write(1, 0, "success", 0, delivery=1).attempt_started_ms
    assert (root.status, root.failed_children) == ("success", 0)


def test_a_redelivered_failure_after_a_dead_workers_success_counts_once(db, writer):
    deliver(writer, [
        [Write(0, 0, "success", 0)],
        [Write(1, 0, "success", 0)],  # applied; its worker died before the ack
        [Write(1, 0, FAILED, 0, delivery=1)],  # the redelivery fails for good
        [Write(1, 0, "success", 0), Write(1, 0, FAILED, 0, delivery=1)],  # both claimed and applied again
    ])
    child = EnrichmentLog.get(EnrichmentLog.job_id == job_id(1))
    root = EnrichmentLog.get(EnrichmentLog.job_id == job_id(0))
    assert child.status == FAILED
    assert (root.status, root.failed_children) == (DEGRADED, 1)
