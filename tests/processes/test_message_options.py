"""Message options of the wrong type, from any producer, through the app's middleware stack
under a real ``dramatiq`` process on Redis and PostgreSQL.

Each bad option is dropped with a WARNING naming it before any middleware acts
on it: every worker thread lives on, and every job's row tells the truth (a
failing job is ``failed`` after its configured retries, never ``success`` or
``retry_not_enqueued``).
"""

from __future__ import annotations

import json

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from middleware.job_log.row_values import shown
from models import EnrichmentLog
from models.job_log import FINAL_STATUSES

from linking_harness import wait_for
from process_harness import WorkerProcess
from services import REDIS_TEST_URL

pytestmark = pytest.mark.slow

THREADS = 4

# Every option a middleware reads from a message, with values of the wrong type or range.
BAD_OPTIONS = {
    "throws": ["TypeError", ["ValueError"], 1, {"class": "RuntimeError"}],
    "retry_when": ["lambda n, e: False", True],
    "max_retries": ["x", -1, 1.5, None, [2], 2**40, True],
    "min_backoff": ["x", -5, None, 1e300, float("inf")],
    "max_backoff": ["x", None, {}, -1],
    "time_limit": ["x", -1, [1], 1e30],
    "max_age": ["x", -1, {}],
    "notify_shutdown": ["yes", 1],
    "on_success": [1, "no_such_actor", ["succeeds"]],
    "on_failure": [1, "no_such_actor"],
    "on_retry_exhausted": ["no_such_actor", 5],
    "pipe_target": ["x", {"actor_name": "succeeds"}, 5, {"queue_name": 1, "actor_name": "succeeds", "args": [],
                    "kwargs": {}, "options": {}, "message_id": "m", "message_timestamp": 0}],
    "pipe_ignore": ["x", 2],
    "parent_job_id": [5, "", "x" * 200, "a\x00b"],
    "retries": ["x", -1, None, 2**40],
    "first_started_at": ["x", -1, 10**20, 1.5],
    "triggered_by": [5, "t" * 51],
    "started_by": ["x", 7],
}
CASES = [(name, value) for name, values in BAD_OPTIONS.items() for value in values]
MAX_RETRIES = 1


def _message(actor: str, args=(), kwargs=None, options=None, **fields) -> dramatiq.Message:
    return dramatiq.Message(queue_name="default", actor_name=actor, args=tuple(args), kwargs=kwargs or {},
                            options=options or {}, **fields)


@pytest.fixture
def worker(pg_db, pg_url, tmp_path):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    env = {"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url, "JOB_MAX_RETRIES": str(MAX_RETRIES),
           "RETRY_MIN_BACKOFF_MS": "50", "RETRY_MAX_BACKOFF_MS": "100", "LOG_FLUSH_MS": "0"}
    process = WorkerProcess("options_app", env, tmp_path / "worker.log", threads=THREADS)
    process.wait_ready()
    sender = RedisBroker(url=REDIS_TEST_URL)
    yield sender, process
    process.stop()
    sender.close()


def _final_row(job_id: str, timeout: float = 60) -> EnrichmentLog:
    return wait_for(lambda: EnrichmentLog.get_or_none(
        (EnrichmentLog.job_id == job_id) & EnrichmentLog.status.in_(FINAL_STATUSES)), timeout=timeout)


def _warnings(log_text: str) -> list[dict]:
    events = []
    for line in log_text.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("level") == "warning":
                events.append(event)
    return events


def test_every_bad_option_is_dropped_and_every_row_tells_the_truth(worker):
    sender, process = worker
    sent = []
    for name, value in CASES:
        for actor in ("succeeds", "fails"):
            message = _message(actor, options={name: value})
            sender.enqueue(message)
            sent.append((name, value, actor, message.message_id))
    # A message timestamp of the wrong type (read by AgeLimit) is no option, but comes from the producer too.
    for stamp in ("yesterday", None, -5, 2**70):
        message = _message("fails", message_timestamp=stamp)
        sender.enqueue(message)
        sent.append(("message_timestamp", stamp, "fails", message.message_id))

    for name, value, actor, job_id in sent:
        row = _final_row(job_id)
        case = (name, value, actor, row.status, row.retry_count, row.error_code, row.last_error)
        if actor == "succeeds":
            assert (row.status, row.reason, row.error_code) == ("success", "done", None), case
        else:
            # The option is ignored: the configured retries run, and the row says why the job failed.
            assert (row.status, row.retry_count, row.error_code) == ("failed", MAX_RETRIES, "runtime_error"), case
            assert row.last_error == "RuntimeError: always fails", case
        if name == "parent_job_id":
            assert row.is_root_job and row.parent_job_id is None, case
        if name == "triggered_by":
            assert row.triggered_by is None, case

    # Every worker thread is alive: THREADS jobs that each hold a thread run side by side.
    holders = [_message("holds", args=(2.0,)) for _ in range(THREADS)]
    for message in holders:
        sender.enqueue(message)
    rows = [_final_row(m.message_id) for m in holders]
    starts = sorted(r.started_at for r in rows)
    assert (starts[-1] - starts[0]).total_seconds() < 1.5, starts  # none waited for another to finish
    assert all(r.status == "success" for r in rows)

    log = process.log_path.read_text()
    assert "Exception in thread" not in log and '"level":"critical"' not in log
    dropped = {(e["option"], e["bad_value"]) for e in _warnings(log) if e["message"] == "ignoring bad message option"}
    for name, value in CASES:
        assert (name, shown(value)) in dropped, (name, value)


def test_valid_options_still_work(worker):
    """The checks do not drop what is right: no retries, a parent, and a pipeline."""
    sender, process = worker
    no_retry = _message("fails", options={"max_retries": 0})
    root = _message("succeeds")
    child = _message("succeeds", options={"parent_job_id": root.message_id})
    piped = _message("holds", args=(0.01,), options={"pipe_ignore": True})
    pipe_first = _message("succeeds", options={"pipe_target": piped.asdict()})
    for message in (no_retry, root, child, pipe_first):
        sender.enqueue(message)
    assert (_final_row(no_retry.message_id).status, _final_row(no_retry.message_id).retry_count) == ("failed", 0)
    assert _final_row(child.message_id).parent_job_id == root.message_id
    assert _final_row(pipe_first.message_id).status == "success"
    assert _final_row(piped.message_id).status == "success"
    assert _final_row(piped.message_id).parent_job_id == pipe_first.message_id
    assert "ignoring bad message option" not in process.log_path.read_text()


def test_arguments_that_do_not_fit_the_actor_fail_at_once_without_retries(worker):
    sender, process = worker
    bad = {
        "missing": ((), {}),
        "too many": (("a", "b", "c"), {}),
        "unknown keyword": (("a",), {"colour": "red"}),
        "twice": (("a",), {"album_id": "b"}),
    }
    sent = {}
    for case, (args, kwargs) in bad.items():
        message = _message("takes_one", args=args, kwargs=kwargs)
        sender.enqueue(message)
        sent[case] = message.message_id
    inside = _message("takes_one", args=("x",))  # a TypeError raised by the body is an ordinary failure
    sender.enqueue(inside)
    for case, job_id in sent.items():
        row = _final_row(job_id)
        assert (row.status, row.retry_count, row.error_code) == ("failed", 0, "bad_arguments"), (case, row.last_error)
        assert row.last_error.startswith("BadArguments: takes_one() called with arguments that do not fit"), case
    row = _final_row(inside.message_id)
    assert (row.status, row.retry_count, row.error_code) == ("failed", MAX_RETRIES, "type_error"), row.last_error
    dead = redis.Redis.from_url(REDIS_TEST_URL)  # the dead-letter queue keeps them for an operator

    def dead_ids() -> set:
        return {json.loads(data)["message_id"] for data in dead.hvals("dramatiq:default.XQ.msgs")}
    wait_for(lambda: dead_ids() >= set(sent.values()))


NOT_MESSAGES = {
    "not JSON": b"not json at all \x1b[2J",
    "bytes": b"\xff\xfe\x00\x01",
    "a mapping": b'{"just": "a mapping"}',
    "a list": b"[1, 2, 3]",
    "args not a list": json.dumps({"queue_name": "default", "actor_name": "succeeds", "args": 5, "kwargs": {},
                                   "options": {}, "message_id": "x", "message_timestamp": 0}).encode(),
}


def test_payloads_that_are_not_messages_go_to_the_dead_letter_queue_with_a_warning(worker):
    sender, process = worker
    for number, data in enumerate(NOT_MESSAGES.values()):
        sender.do_enqueue("default", f"garbage-{number}", data)
    after = _message("succeeds")
    sender.enqueue(after)
    assert _final_row(after.message_id).status == "success"  # the worker went on
    dead = redis.Redis.from_url(REDIS_TEST_URL)
    wait_for(lambda: len(dead.hkeys("dramatiq:default.XQ.msgs")) == len(NOT_MESSAGES))
    assert set(dead.hvals("dramatiq:default.XQ.msgs")) == set(NOT_MESSAGES.values())
    warnings = [e for e in _warnings(process.log_path.read_text())
                if e["message"] == "a payload that is not a message was moved to the dead-letter queue"]
    assert sorted(e["redis_message_id"] for e in warnings) == sorted(repr(f"garbage-{n}".encode())
                                                                   for n in range(len(NOT_MESSAGES)))
    assert all(e["dead_letter_queue"] == "default.XQ" for e in warnings)


@pytest.mark.parametrize("actor, went_to", [("succeeds", "nowhere: acked as done"), ("fails", "the dead-letter queue")])
def test_a_message_whose_id_cannot_key_a_row_is_named_in_a_warning(worker, actor, went_to):
    sender, process = worker
    bad_ids = ["a\x00b", "x" * 101, "line\nbreak"]
    for bad_id in bad_ids:
        sender.enqueue(_message(actor, message_id=bad_id, options={"max_retries": 0}))
    after = _message("succeeds")
    sender.enqueue(after)
    _final_row(after.message_id)

    def finished() -> list[dict]:
        return [e for e in _warnings(process.log_path.read_text()) if e["message"] == "job without a log row finished"]
    wait_for(lambda: len(finished()) == len(bad_ids))
    assert {e["bad_value"] for e in finished()} == {shown(bad_id) for bad_id in bad_ids}
    assert {e["message_went_to"] for e in finished()} == {went_to}
    assert EnrichmentLog.select().count() == 1  # only the good one
