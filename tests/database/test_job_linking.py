"""JobLinking through a real Dramatiq worker on the StubBroker, on PostgreSQL and SQLite."""

from __future__ import annotations

import threading

import dramatiq
import dramatiq.worker
import pytest
import structlog
from dramatiq.middleware import Middleware, SkipMessage

from middleware import JobLinking, current_job, new_tree, record
from middleware.job_context import NotInJob
from models import EnrichmentLog

from linking_harness import Harness, rows, wait_for


@pytest.fixture
def harness(db):
    h = Harness(JobLinking(root_wait=0.3, secrets=lambda: ["hunter2-secret-token"]))
    yield h
    h.stop()


def test_three_level_chain_is_flat(harness):
    seen = {}

    @harness.actor
    def cache_image():
        seen["cache"] = current_job().job_id

    @harness.actor
    def discogs_get():
        cache_image.send()

    @harness.actor
    def discogs_search():
        discogs_get.send()

    @harness.actor(operation="enrichment:artist")
    def enrich_artist():
        discogs_search.send()

    @harness.actor(operation="enrichment:album")
    def enrich_album():
        enrich_artist.send()

    root = enrich_album.send()
    harness.start().drain()

    all_rows = rows()
    assert len(all_rows) == 5
    assert all_rows[root.message_id].is_root_job is True
    assert all_rows[root.message_id].parent_job_id is None
    assert all_rows[root.message_id].operation == "enrichment:album"
    children = [r for r in all_rows.values() if r.job_id != root.message_id]
    assert {r.parent_job_id for r in children} == {root.message_id}
    assert not any(r.is_root_job for r in children)
    assert {r.operation for r in children} == {"enrichment:artist", "discogs_search", "discogs_get", "cache_image"}
    assert all(r.status == "success" for r in all_rows.values())
    assert all(r.started_at and r.completed_at and r.duration_ms is not None for r in all_rows.values())
    # Start order is chain order.
    ordered = EnrichmentLog.select().where(EnrichmentLog.parent_job_id == root.message_id).order_by(
        EnrichmentLog.started_at, EnrichmentLog.created_at)  # started_at has millisecond precision
    assert [r.operation for r in ordered] == ["enrichment:artist", "discogs_search", "discogs_get", "cache_image"]


def test_explicit_parent_passes_through(harness):
    @harness.actor
    def leaf():
        pass

    @harness.actor
    def middle(root_id):
        leaf.send_with_options(parent_job_id=root_id)

    @harness.actor
    def top():
        pass

    first = top.send()
    harness.start().drain()
    msg = middle.send_with_options(args=(first.message_id,), parent_job_id=first.message_id)
    harness.drain()
    all_rows = rows()
    assert all_rows[msg.message_id].parent_job_id == first.message_id
    leaf_row = next(r for r in all_rows.values() if r.operation == "leaf")
    assert leaf_row.parent_job_id == first.message_id


def test_new_tree_from_inside_an_actor(harness):
    @harness.actor(operation="check:album-enrichment")
    def check_album():
        pass

    @harness.actor(operation="spotify:sync-new-releases")
    def sync():
        with new_tree():
            check_album.send()
            check_album.send()

    sync_msg = sync.send()
    harness.start().drain()
    new_roots = [r for r in rows().values() if r.operation == "check:album-enrichment"]
    assert len(new_roots) == 2
    for r in new_roots:
        assert r.is_root_job is True and r.parent_job_id is None
        assert r.triggered_by == sync_msg.message_id
        assert r.details["started_by"] == {"job_id": sync_msg.message_id, "operation": "spotify:sync-new-releases"}


def test_retried_job_keeps_one_row_and_ends_success(harness):
    attempts = []

    @harness.actor(max_retries=3)
    def flaky():
        attempts.append(current_job().attempt)
        if len(attempts) < 3:
            raise ConnectionError("upstream 503 (token=hunter2-secret-token)")
        record(status="success", sources=["musicbrainz"], api_call_count=1)

    msg = flaky.send()
    harness.start().drain()
    assert attempts == [0, 1, 2]
    all_rows = rows()
    assert len(all_rows) == 1
    row = all_rows[msg.message_id]
    assert row.status == "success"
    assert row.retry_count == 2
    assert row.last_error.startswith("ConnectionError: upstream 503")
    assert "hunter2-secret-token" not in row.last_error
    assert row.error_code == "connection_error"
    assert row.sources == ["musicbrainz"] and row.api_call_count == 1


def test_a_due_retry_or_delayed_message_writes_no_second_queued_row(harness, monkeypatch):
    """The worker's consumer thread moves a due message to its queue: its row was written when it was sent."""
    job_log = harness.linking.job_log
    queued_writes, applied_at_once = [], []
    append, apply_now = job_log.append, job_log.apply_now

    def counting_append(row, *args, **kwargs):
        if getattr(row, "status", None) == "queued":
            queued_writes.append(row.job_id)
        return append(row, *args, **kwargs)

    def counting_apply_now(written):
        applied_at_once.extend(written)
        return apply_now(written)

    monkeypatch.setattr(job_log, "append", counting_append)
    monkeypatch.setattr(job_log, "apply_now", counting_apply_now)
    attempts = []

    @harness.actor(max_retries=3)
    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("upstream 503")

    @harness.actor
    def later():
        pass

    retried, delayed = flaky.send(), later.send_with_options(delay=50)
    harness.start().drain()
    assert len(attempts) == 3
    # One write each, at send: applied at once outside any job, so not appended again (that would be
    # one more update per job); never written again by the consumer thread's moves.
    assert sorted(row.job_id for row in applied_at_once) == sorted([retried.message_id, delayed.message_id])
    assert queued_writes == []
    assert {r.status for r in rows().values()} == {"success"}


def test_retrying_status_is_visible_between_attempts(harness):
    gate = threading.Event()

    @harness.actor(max_retries=1, min_backoff=1500, max_backoff=1500)
    def slow_retry():
        if current_job().attempt == 0:
            raise TimeoutError("read timeout")
        gate.set()

    msg = slow_retry.send()
    harness.start()
    row = wait_for(lambda: (r := rows().get(msg.message_id)) and r.status == "retrying" and r)
    assert row.retry_count == 1 and row.last_error == "TimeoutError: read timeout"
    harness.drain()
    final = rows()[msg.message_id]
    assert final.status == "success" and final.retry_count == 1


def _failing_child_tree(harness, child_first: bool):
    child_failed = threading.Event()

    @harness.actor(max_retries=1)
    def doomed():
        raise RuntimeError("discogs says no")

    @harness.actor
    def root_job():
        doomed.send()
        if child_first:
            wait_for(lambda: rows().get(doomed_id()) is not None and rows()[doomed_id()].status == "failed")
            child_failed.set()

    def doomed_id():
        return next((r.job_id for r in EnrichmentLog.select().where(EnrichmentLog.operation == "doomed")), None)

    msg = root_job.send()
    harness.start().drain()
    return msg, child_failed


@pytest.mark.parametrize("child_first", [True, False], ids=["child-fails-while-root-runs", "child-fails-after-root"])
def test_exhausted_retries_fail_the_child_and_degrade_the_root(harness, child_first):
    msg, child_failed = _failing_child_tree(harness, child_first)
    all_rows = rows()
    child = next(r for r in all_rows.values() if r.operation == "doomed")
    assert child.status == "failed"
    assert child.retry_count == 1  # tried twice
    assert child.last_error == "RuntimeError: discogs says no"
    root = all_rows[msg.message_id]
    assert root.failed_children == 1
    assert root.status == "degraded"
    if child_first:
        assert child_failed.is_set()


def test_a_failed_root_stays_failed(harness):
    @harness.actor(max_retries=0)
    def doomed():
        raise RuntimeError("child")

    @harness.actor(max_retries=0)
    def root_job():
        doomed.send()
        wait_for(lambda: EnrichmentLog.get_or_none(EnrichmentLog.operation == "doomed", EnrichmentLog.status == "failed"))
        raise RuntimeError("root")

    msg = root_job.send()
    harness.start().drain()
    root = rows()[msg.message_id]
    assert root.status == "failed" and root.failed_children == 1


def test_fifty_children_failing_at_once_are_all_counted(harness):
    @harness.actor(max_retries=0)
    def doomed(i):
        raise ValueError(f"child {i}")

    @harness.actor
    def root_job():
        for i in range(50):
            doomed.send(i)

    msg = root_job.send()
    harness.start().drain(timeout=60)
    root = rows()[msg.message_id]
    assert root.failed_children == 50
    assert root.status == "degraded"
    assert EnrichmentLog.select().where(EnrichmentLog.status == "failed").count() == 50


def test_throws_fails_at_once_without_retrying(harness):
    class NotFound(Exception):
        error_code = "not_found"

    calls = []

    @harness.actor(max_retries=5, throws=(NotFound,))
    def lookup():
        calls.append(1)
        raise NotFound("album 42 does not exist")

    msg = lookup.send()
    harness.start().drain()
    row = rows()[msg.message_id]
    assert calls == [1]
    assert row.status == "failed" and row.retry_count == 0 and row.error_code == "not_found"


def test_skip_message_is_logged_as_skipped(harness):
    class SkipOdd(Middleware):
        def before_process_message(self, broker, message):
            if message.args and message.args[0] % 2:
                raise SkipMessage("odd")

    harness.broker.add_middleware(SkipOdd(), before=JobLinking)

    @harness.actor
    def work(n):
        pass

    skipped, done = work.send(1), work.send(2)
    harness.start().drain()
    all_rows = rows()
    assert all_rows[skipped.message_id].status == "skipped"
    assert all_rows[done.message_id].status == "success"


def test_age_limit_is_a_permanent_failure(harness):
    @harness.actor(max_age=1)
    def stale():
        pass

    msg = stale.send()
    import time

    time.sleep(0.05)
    harness.start().drain()
    row = rows()[msg.message_id]
    assert row.status == "failed" and row.error_code == "age_limit_exceeded"


def test_redelivered_message_keeps_one_row(harness):
    runs = []

    @harness.actor
    def once():
        runs.append(1)
        record(status="no_data", reason="nothing found")

    message = once.message()
    harness.broker.enqueue(message)
    harness.start().drain()
    harness.broker.enqueue(message)  # the same id, delivered again
    harness.drain()
    assert len(runs) == 2
    all_rows = rows()
    assert len(all_rows) == 1
    assert all_rows[message.message_id].status == "no_data"
    assert all_rows[message.message_id].reason == "nothing found"


@pytest.mark.parametrize(
    "bad_value, problem",
    [(12345, "not a string"), ("x" * 101, "longer than 100"), ("abc\x00def", "control characters")],
    ids=["int", "too-long", "control-chars"],
)
def test_bad_parent_option_runs_the_job_as_a_root_and_warns(harness, bad_value, problem):
    ran = []

    @harness.actor
    def job():
        ran.append(1)

    with structlog.testing.capture_logs() as logs:
        msg = job.send_with_options(parent_job_id=bad_value)
        harness.start().drain()
    row = rows()[msg.message_id]
    assert ran == [1]
    assert row.is_root_job is True and row.parent_job_id is None and row.status == "success"
    warning = next(e for e in logs if e["event"] == "ignoring bad message option")
    assert warning["option"] == "parent_job_id" and warning["log_level"] == "warning"
    assert problem in warning["problem"]
    assert repr(bad_value)[:20] in warning["bad_value"]


def test_record_details_and_entity(harness):
    import uuid

    album_id = str(uuid.uuid4())

    @harness.actor(operation="enrichment:album", entity=("album", "album_id"))
    def enrich(album_id):
        record(
            status="partial_success",
            fields_enriched=["release_date"],
            sources=["musicbrainz"],
            details={"musicbrainz_id": "abc", "match_score": 0.93},
            data_quality_before="low",
            data_quality_after="medium",
        )

    msg = enrich.send(album_id=album_id)
    harness.start().drain()
    row = rows()[msg.message_id]
    assert (row.entity_type, str(row.entity_id)) == ("album", album_id)
    assert row.status == "partial_success"
    assert row.details == {"musicbrainz_id": "abc", "match_score": 0.93}
    assert row.fields_enriched == ["release_date"]
    assert (row.data_quality_before, row.data_quality_after) == ("low", "medium")


def test_record_outside_a_job_is_an_error():
    with pytest.raises(NotInJob):
        record(status="success")


def test_record_rejects_an_unknown_status(harness):
    @harness.actor(max_retries=0)
    def job():
        record(status="great")

    msg = job.send()
    harness.start().drain()
    row = rows()[msg.message_id]
    assert row.status == "failed" and "record(status='great')" in row.last_error


def test_child_of_a_missing_root_is_written_with_a_warning(harness):
    @harness.actor(max_retries=0)
    def orphan():
        raise RuntimeError("boom")

    with structlog.testing.capture_logs() as logs:
        msg = orphan.send_with_options(parent_job_id="legacy-root-that-is-not-here")
        harness.start().drain()
    row = rows()[msg.message_id]
    assert row.status == "failed" and row.parent_job_id == "legacy-root-that-is-not-here"
    assert any(e["event"].startswith("root job row not found") for e in logs)


def test_unknown_actor_gets_a_failed_row(harness):
    harness.start()
    message = dramatiq.Message(queue_name="default", actor_name="no_such_actor", args=(), kwargs={}, options={})
    harness.broker.declare_queue("default")
    harness.broker.enqueue(message)
    harness.drain()
    row = wait_for(lambda: rows().get(message.message_id))
    assert row.status == "failed" and row.error_code == "unknown_actor"


def test_log_lines_carry_job_ids_and_by_default_only_failures_get_a_line(harness):
    @harness.actor(max_retries=0)
    def child():
        structlog.get_logger("test").info("inside child")
        raise ValueError("no such release")

    @harness.actor
    def parent():
        structlog.get_logger("test").info("inside parent")
        child.send()

    with structlog.testing.capture_logs() as logs:
        msg = parent.send()
        harness.start().drain()
    inside = {e["event"]: e for e in logs if e["event"].startswith("inside")}
    assert set(inside) == {"inside parent", "inside child"}
    # capture_logs does not run merge_contextvars, so check the state-change lines
    [finished] = [e for e in logs if e["event"] == "job finished"]  # the parent's success has its row only
    assert not [e for e in logs if e["event"] == "job started"]
    assert (finished["parent_job_id"], finished["status"], finished["error"]) == (
        msg.message_id, "failed", "ValueError: no such release")
    [child_row] = [r for r in rows().values() if r.parent_job_id == msg.message_id]
    assert finished["job_id"] == child_row.job_id and "duration_ms" in finished


@pytest.mark.parametrize("lines, logged", [("finished", ["success"]), ("all", ["running", "success"]),
                                           ("none", []), ("failures", [])])
def test_job_log_lines_choose_which_lines_a_job_writes(harness, lines, logged):
    harness.linking.log_lines = lines

    @harness.actor
    def job():
        pass

    with structlog.testing.capture_logs() as logs:
        job.send()
        harness.start().drain()
    assert [e["status"] for e in logs if e["event"] in ("job started", "job finished")] == logged


def test_nul_characters_in_an_outcome_do_not_lose_the_row(harness):
    @harness.actor(max_retries=0)
    def odd():
        record(status="no_data", reason="nothing for 'Bj\x00rk'", details={"matched_name": "a\x00b"})

    msg = odd.send()
    harness.start().drain()
    row = rows()[msg.message_id]
    assert row.status == "no_data" and row.reason == "nothing for 'Bjrk'"
    assert row.details == {"matched_name": "ab"}


def test_details_of_any_json_shape_are_kept(harness):
    """Integer keys, the largest 64-bit integer and values JSON has no type for still reach the row
    (a number beyond 64 bits is refused by record(): tests/test_record_checks.py)."""
    import decimal

    @harness.actor(max_retries=0)
    def odd():
        record(status="success", details={"counts": {1: "one"}, "big": 2**63 - 1, "score": decimal.Decimal("0.5")})

    msg = odd.send()
    harness.start().drain()
    row = rows()[msg.message_id]
    assert row.status == "success"
    assert row.details == {"counts": {"1": "one"}, "big": 2**63 - 1, "score": "0.5"}


@pytest.mark.parametrize("bad_id", ["x" * 150, "ctl\x00\x1b"], ids=["too-long", "control-chars"])
def test_a_message_id_that_cannot_key_a_row_runs_without_one(harness, bad_id):
    ran = []

    @harness.actor
    def job():
        ran.append(1)

    message = job.message()._replace(message_id=bad_id)
    with structlog.testing.capture_logs() as logs:
        harness.broker.enqueue(message)
        harness.start().drain()
    assert ran == [1]
    assert rows() == {}
    assert any(e["event"].startswith("message id cannot be a job id") for e in logs)
    unsaved = next(e for e in logs if e["event"] == "job without a log row finished")
    assert (unsaved["status"], unsaved["message_went_to"]) == ("success", "nowhere: acked as done")


def test_pipelines_and_groups_sent_from_a_job_join_its_tree(harness):
    @harness.actor
    def step(x=None):
        return None

    @harness.actor
    def fan(n):
        pass

    @harness.actor
    def root_job():
        dramatiq.pipeline([step.message(), step.message(), step.message()], broker=harness.broker).run()
        dramatiq.group([fan.message(i) for i in range(3)], broker=harness.broker).run()

    msg = root_job.send()
    harness.start().drain()
    all_rows = rows()
    children = [r for r in all_rows.values() if r.job_id != msg.message_id]
    # The 2nd and 3rd pipeline steps are sent by the steps before them, still under the root.
    assert sorted(r.operation for r in children) == ["fan"] * 3 + ["step"] * 3
    assert {r.parent_job_id for r in children} == {msg.message_id}
    assert all(r.status == "success" for r in all_rows.values())


def _delay_queue_refusing(harness, monkeypatch, error: Exception, times: int) -> list:
    """The broker's delay queue refuses its next ``times`` messages with ``error``, as a RedisBroker
    does when Redis is down (after the ``before_enqueue`` hooks ran); returns the refusals made."""
    queue = harness.broker.queues["default.DQ"]
    real_put, refused = queue.put, []

    def put(item, *args, **kwargs):
        if len(refused) < times:
            refused.append(item)
            raise error
        return real_put(item, *args, **kwargs)

    monkeypatch.setattr(queue, "put", put)
    return refused


def test_a_retry_refused_while_redis_is_down_is_enqueued_once_it_is_back(harness, monkeypatch):
    """Retries' enqueue and the next try fail (Redis down); the ack waits, and the retry goes out
    on the try after: the job retries and succeeds, it never ends ``failed``."""
    monkeypatch.setattr(dramatiq.worker, "POST_PROCESS_MESSAGE_RETRY_DELAY_SECS", 0.05)
    attempts = []

    @harness.actor(max_retries=3)
    def uses_upstream():
        attempts.append(current_job().attempt)
        if len(attempts) == 1:
            raise TimeoutError("slow upstream")

    class SeesVerdicts(Middleware):
        """A middleware that reads the attempt's verdict before JobLinking acks it (CatalogStatus, JobMetrics)."""

        seen: list = []

        def before_ack(self, broker, message):
            self.seen.append(current_job().verdict(failed=False))

    harness.broker.add_middleware(SeesVerdicts(), before=JobLinking)
    refused = _delay_queue_refusing(harness, monkeypatch, ConnectionError("Error 111: Connection refused."), 2)
    with structlog.testing.capture_logs() as logs:
        msg = uses_upstream.send()
        harness.start().drain()
    row = rows()[msg.message_id]
    assert len(refused) == 2 and attempts == [0, 1]
    # Both tries of the first attempt's ack (the first while "Redis" was down) showed it retrying, never failed.
    assert SeesVerdicts.seen == [("retrying", 1)] * 2 + [("success", 1)]
    assert (row.status, row.retry_count, row.error_code) == ("success", 1, "timeout_error")  # retried after it
    waits = [e for e in logs if e["event"].startswith("retry not enqueued: the broker is unavailable")]
    assert len(waits) == 1 and waits[0]["job_id"] == msg.message_id


def test_a_retry_the_broker_refuses_for_another_reason_is_a_failure_not_a_row_retrying_for_ever(
        harness, monkeypatch):
    attempts = []

    @harness.actor(max_retries=3)
    def uses_upstream():
        attempts.append(1)
        raise TimeoutError("slow upstream")

    _delay_queue_refusing(harness, monkeypatch, ValueError("message too large"), 10)
    msg = uses_upstream.send()
    harness.start().drain()
    row = rows()[msg.message_id]
    assert attempts == [1]
    assert row.status == "failed" and row.error_code == "retry_not_enqueued"
    assert row.last_error.startswith("TimeoutError")


def test_a_retried_row_keeps_its_first_attempts_start(harness):
    starts = []

    @harness.actor(max_retries=2)
    def flaky():
        starts.append(current_job().started_at)
        if len(starts) < 3:
            raise TimeoutError("slow upstream")

    msg = flaky.send()
    harness.start().drain()
    row = rows()[msg.message_id]
    assert len(starts) == 3 and len(set(starts)) == 1
    assert abs((row.started_at - starts[0]).total_seconds()) < 0.001
    assert row.completed_at > row.started_at
    assert row.retry_count == 2 and row.status == "success"


def test_row_ids_differ_between_a_worker_process_and_its_forked_children():
    """Row ids come from ``random``: a forked worker process must not repeat its parent's."""
    import os
    import uuid

    from middleware.job_context import random_uuid

    random_uuid()  # the parent's generator is in use before the fork, as in a dramatiq worker
    read_end, write_end = os.pipe()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            os.write(write_end, random_uuid().bytes)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    ids = {random_uuid()} | {uuid.UUID(bytes=os.read(read_end, 16)) for _ in children}
    os.close(read_end)
    os.close(write_end)
    assert len(ids) == 3
    assert {row_id.version for row_id in ids} == {4}
