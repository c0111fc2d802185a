"""Rows from the moment a job is sent (queued), and `resend` of failed and lost jobs (StubBroker, both databases)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from middleware import JobLinking
from middleware.job_log.root_status import count_failed_child
from models import EnrichmentLog, utcnow
from workers.resend import ResendRefused, resend_job, resend_tree

from linking_harness import Harness, rows, wait_for

Log = EnrichmentLog


@pytest.fixture
def harness(db):
    h = Harness(JobLinking(root_wait=0.3))
    yield h
    h.stop()


def test_a_root_sent_outside_any_job_is_queued_before_a_worker_runs_it(harness):
    @harness.actor(operation="enrichment:album", entity=("album", "album_id"), max_retries=2)
    def enrich_album(album_id, force=False):
        pass

    album_id = str(uuid.uuid4())
    sent = enrich_album.send_with_options(args=(album_id,), kwargs={"force": True}, triggered_by="cli")
    row = Log.get(Log.job_id == sent.message_id)  # committed before send() returned
    assert (row.status, row.is_root_job, row.parent_job_id, row.retry_count) == ("queued", True, None, 0)
    assert (row.operation, row.entity_type, str(row.entity_id), row.triggered_by) == (
        "enrichment:album", "album", album_id, "cli")
    assert row.enqueued_at is not None and row.due_at == row.enqueued_at and row.started_at is None
    assert row.message == {"actor": "enrich_album", "queue": "default", "args": [album_id], "kwargs": {"force": True},
                           "options": {}, "resendable": True}

    harness.start().drain()
    row = Log.get(Log.job_id == sent.message_id)
    assert row.status == "success" and row.started_at is not None
    assert row.message["args"] == [album_id]  # later writes keep it
    assert Log.select().count() == 1


def test_children_are_queued_in_their_tree_and_a_delayed_one_stays_queued_until_due(harness):
    @harness.actor(operation="cache:album-cover-art")
    def later(n):
        pass

    @harness.actor(operation="check:album-enrichment")
    def root():
        later.send_with_options(args=(1,), delay=60_000)

    sent = root.send()
    harness.start()
    child = wait_for(lambda: Log.get_or_none(Log.parent_job_id == sent.message_id))
    wait_for(lambda: Log.get(Log.job_id == sent.message_id).status == "success")
    child = Log.get(Log.id == child.id)
    assert (child.status, child.is_root_job, child.operation) == ("queued", False, "cache:album-cover-art")
    due_in = (child.due_at - child.enqueued_at).total_seconds()
    assert 59 <= due_in <= 61
    assert child.message["options"] == {}  # eta, redis ids and the tree are rebuilt, not stored


def test_a_message_over_64_kb_is_kept_without_its_arguments_and_refused_by_resend(harness):
    @harness.actor(max_retries=0)
    def big(blob):
        raise RuntimeError("no")

    sent = big.send("x" * 70_000)
    harness.start().drain()
    row = Log.get(Log.job_id == sent.message_id)
    assert row.status == "failed"
    assert row.message["resendable"] is False and row.message["args"] is None and row.message["size_bytes"] > 65_536
    with pytest.raises(ResendRefused, match="over the 64 KB"):
        resend_job(harness.broker, sent.message_id)


@pytest.mark.parametrize("args, problem", [
    ((float("nan"),), "message['args'][0] is nan: JSON has no NaN or infinity"),
    ((1, {"x": [float("-inf"), 2**70, None]}), "message['args'][1]['x'][0] is -inf: JSON has no NaN or infinity"),
], ids=["NaN", "infinity, an integer beyond 64 bits and null"])
def test_a_message_with_a_value_no_json_column_keeps_is_kept_without_its_arguments(harness, args, problem):
    """A producer's NaN stalled the SQLite journal (malformed JSON) and was refused by PostgreSQL."""
    @harness.actor(max_retries=0)
    def odd(*values):
        raise RuntimeError("no")

    sent = odd.send(*args)
    harness.start().drain()
    row = Log.get(Log.job_id == sent.message_id)
    assert (row.status, row.error_code) == ("failed", "runtime_error"), row.last_error
    assert row.message["resendable"] is False and row.message["args"] is None
    assert row.message["problem"] == problem
    with pytest.raises(ResendRefused, match="cannot keep as it is"):
        resend_job(harness.broker, sent.message_id)


def test_a_message_with_an_integer_beyond_64_bits_is_kept_exactly(harness):
    @harness.actor(max_retries=0)
    def big(value):
        raise RuntimeError("no")

    sent = big.send(-(2**200))
    harness.start().drain()
    row = Log.get(Log.job_id == sent.message_id)
    assert row.message["resendable"] is True and row.message["args"] == [-(2**200)]


def test_resend_of_a_failed_child_same_id_same_tree_and_the_root_takes_the_failure_back(harness):
    outcomes = {"runs": 0, "fail": True}

    @harness.actor(operation="enrichment:artist", max_retries=0)
    def artist(name):
        outcomes["runs"] += 1
        if outcomes["fail"]:
            raise RuntimeError(f"{name} is gone")

    @harness.actor(operation="check:album-enrichment")
    def album():
        artist.send("Björk")

    root = album.send()
    harness.start().drain()
    child = Log.get(Log.parent_job_id == root.message_id)
    assert (child.status, child.retry_count) == ("failed", 0)
    assert Log.get(Log.job_id == root.message_id).status == "degraded"

    with pytest.raises(ResendRefused, match="is degraded: only failed or lost jobs are sent again"):
        resend_job(harness.broker, root.message_id)  # the root's own work succeeded

    harness.worker.stop()  # hold the resent message: the pending state is visible
    outcomes["fail"] = False
    assert resend_tree(harness.broker, root.message_id) == [child.job_id]
    pending = Log.get(Log.job_id == child.job_id)
    assert (pending.status, pending.retry_count, pending.parent_job_id) == ("queued", 1, root.message_id)
    assert pending.completed_at is None
    root_row = Log.get(Log.job_id == root.message_id)
    assert (root_row.status, root_row.failed_children) == ("success", 0)  # the failure taken back while pending

    from dramatiq import Worker
    harness.worker = Worker(harness.broker, worker_timeout=50, worker_threads=2)
    harness.start().drain()
    done = Log.get(Log.job_id == child.job_id)
    assert (done.status, done.retry_count, done.parent_job_id) == ("success", 1, root.message_id)
    assert Log.select().count() == 2 and outcomes["runs"] == 2


def test_a_resent_job_that_fails_again_degrades_its_root_again(harness):
    @harness.actor(max_retries=0)
    def doomed():
        raise RuntimeError("still gone")

    @harness.actor
    def parent():
        doomed.send()

    root = parent.send()
    harness.start().drain()
    child = Log.get(Log.parent_job_id == root.message_id)
    resend_job(harness.broker, child.job_id)
    harness.drain()
    child = Log.get(Log.id == child.id)
    assert (child.status, child.retry_count) == ("failed", 1)
    root_row = Log.get(Log.job_id == root.message_id)
    assert (root_row.status, root_row.failed_children) == ("degraded", 1)


def test_resend_of_a_lost_job(harness):
    @harness.actor(operation="enrichment:album")
    def work(n):
        pass

    @harness.actor
    def parent():
        work.send(7)

    root = parent.send()
    harness.start().drain()
    child = Log.get(Log.parent_job_id == root.message_id)
    # What the sweeper does to a job whose message vanished (tests/test_lost_work.py runs the real one).
    Log.update(status="lost", error_code="message_lost", completed_at=utcnow()).where(Log.id == child.id).execute()
    count_failed_child(root.message_id)
    assert Log.get(Log.job_id == root.message_id).status == "degraded"

    assert resend_job(harness.broker, child.job_id) == child.job_id
    harness.drain()
    child = Log.get(Log.id == child.id)
    assert (child.status, child.retry_count) == ("success", 1)
    assert Log.get(Log.job_id == root.message_id).status == "success"


@pytest.mark.parametrize("job_id, message", [
    ("no-such-job", "no job with id no-such-job"),
])
def test_resend_refuses_an_unknown_job(harness, job_id, message):
    with pytest.raises(ResendRefused, match=message):
        resend_job(harness.broker, job_id)


def test_resend_refuses_a_job_without_a_stored_message(harness):
    Log.create(job_id="legacy", operation="enrichment:album", status="failed", is_root_job=True,
               created_at=utcnow() - dt.timedelta(days=1))
    with pytest.raises(ResendRefused, match="has no stored message"):
        resend_job(harness.broker, "legacy")
    with pytest.raises(ResendRefused, match="nothing sent: job legacy has no stored message"):
        resend_tree(harness.broker, "legacy")
    assert rows()["legacy"].status == "failed"


def test_enrich_resend_refuses_a_succeeded_job_in_one_line(pg_db, pg_url):
    import subprocess
    import sys

    from process_harness import ROOT, shell_env
    from services import REDIS_TEST_URL

    Log.create(job_id="done-job", operation="enrichment:album", status="success", is_root_job=True,
               message={"actor": "check_album_enrichment", "queue": "default", "args": [], "kwargs": {},
                        "options": {}, "resendable": True})
    env = shell_env({"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url})
    result = subprocess.run([sys.executable, "-m", "workers.cli", "resend", "done-job"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "enrich resend: job done-job is success: only failed or lost jobs are sent again"]
    assert Log.get(Log.job_id == "done-job").status == "success"
