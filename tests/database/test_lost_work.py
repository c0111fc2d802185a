"""The lost-work sweeper against a real Redis: what it marks lost, what it leaves alone, its lock."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.worker import Worker

from middleware import JobLinking, WorkerRegistry
from middleware.job_log.lost_work import LostWorkSweeper
from middleware.job_log.rows import ROW_COLUMNS
from middleware.worker_registry import running_job_ids
from models import EnrichmentLog
from models.base import utcnow

from linking_harness import wait_for
from services import REDIS_TEST_URL
from tree_actors import declare

Log = EnrichmentLog


@pytest.fixture
def broker(db):
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    # Running rows are swept only once Redis has been up for a heartbeat timeout (the workers' records are
    # complete by then): 1 s here, waited for when Redis has just started.
    broker = RedisBroker(url=REDIS_TEST_URL, heartbeat_timeout=1000)
    wait_for(lambda: client.info("server")["uptime_in_seconds"] >= 1, timeout=5)
    linking = JobLinking(lost_work_interval=0)  # the tests sweep by hand
    broker.add_middleware(linking)
    linking.job_log.bind(broker).drainer.start()  # as in a worker: the sweep waits for the journal to be applied
    broker.linking = linking
    broker.tree_root, broker.tree_leaf = declare(broker)
    broker.admin = client
    yield broker
    linking.job_log.stop()
    broker.close()


def sweeper_of(broker, **options) -> LostWorkSweeper:
    """A sweeper as a drainer has it: fenced on the broker's job-log journal."""
    return LostWorkSweeper(broker, journal=broker.linking.job_log.bind(broker).journal, **options)


def drop_message(broker, message, queue: str = "default") -> None:
    """What a Redis restarted without persistence does to one message."""
    ids = [key for key, body in broker.admin.hgetall(f"dramatiq:{queue}.msgs").items()
           if json.loads(body)["message_id"] == message.message_id]
    assert ids, "the message was not in Redis to begin with"
    broker.admin.hdel(f"dramatiq:{queue}.msgs", *ids)
    for redis_id in ids:
        broker.admin.lrem(f"dramatiq:{queue}", 0, redis_id)


def ended_root(broker, linking):
    """A root job whose row says it ended well (its message is still in Redis)."""
    root = broker.tree_root.send(1)
    assert linking.job_log.flush(10)  # its queued row, applied from the journal by the drainer
    Log.update(status="success", completed_at=Log.created_at).where(Log.job_id == root.message_id).execute()
    return root


def test_only_jobs_whose_message_is_gone_are_marked_lost_and_their_root_degraded(broker):
    root = ended_root(broker, broker.linking)
    # Children as the root would have sent them (same tree), by the root's job id.
    kept = broker.tree_leaf.send_with_options(args=(0.1,), parent_job_id=root.message_id)
    gone = broker.tree_leaf.send_with_options(args=(0.1,), parent_job_id=root.message_id)
    later = broker.tree_leaf.send_with_options(args=(0.1,), parent_job_id=root.message_id, delay=60_000)
    due_but_waiting = broker.tree_leaf.send_with_options(args=(0.1,), parent_job_id=root.message_id, delay=1)
    assert broker.linking.job_log.flush(10)  # their queued rows, from the journal
    drop_message(broker, gone)
    drop_message(broker, root)  # the root's own message is gone too, but its row has ended: not pending

    sweeper = sweeper_of(broker, grace_seconds=0)
    assert sweeper.run_once() == 1
    rows = {r.job_id: r for r in Log.select()}
    lost = rows[gone.message_id]
    assert (lost.status, lost.error_code) == ("lost", "message_lost")
    assert lost.completed_at is not None
    assert lost.last_error == ("message not found in Redis: not in queue 'default' nor in any worker's unacked set "
                               "(dramatiq:default.msgs), nor in its delay queue (dramatiq:default.DQ.msgs)")
    assert {rows[m.message_id].status for m in (kept, later, due_but_waiting)} == {"queued"}
    assert (rows[root.message_id].status, rows[root.message_id].failed_children) == ("degraded", 1)
    assert sweeper.run_once() == 0  # lost is final: never counted twice


def test_a_job_within_its_grace_or_not_due_yet_is_not_looked_for(broker):
    recent = broker.tree_root.send(1)
    delayed = broker.tree_root.send_with_options(args=(1,), delay=3_600_000)
    assert broker.linking.job_log.flush(10)
    drop_message(broker, recent)
    drop_message(broker, delayed, queue="default.DQ")
    assert sweeper_of(broker, grace_seconds=600).run_once() == 0
    assert sweeper_of(broker, grace_seconds=0).run_once() == 1  # the delayed one is not due for an hour
    assert Log.get(Log.job_id == delayed.message_id).status == "queued"


def acked_with_its_end_still_in_the_journal(broker):
    """A child whose message was processed and acked, its `success` write appended but not applied yet."""
    root = broker.tree_root.send(1)
    child = broker.tree_leaf.send_with_options(args=(0.1,), parent_job_id=root.message_id)
    linking = broker.linking
    linking.job_log.flush()
    linking.job_log.drainer.stop()  # the drainers are behind
    queued = Log.select().where(Log.job_id == child.message_id).dicts().get()
    now = utcnow()
    ended = {name: queued[name] for name in ROW_COLUMNS}
    ended.update(status="success", started_at=now, completed_at=now, updated_at=now, duration_ms=1)
    linking.job_log.append(ended)
    drop_message(broker, child)  # acked: the message has left Redis
    return linking, root, child


def test_a_job_whose_end_waits_in_the_journal_is_never_marked_lost(broker):
    linking, root, child = acked_with_its_end_still_in_the_journal(broker)
    assert Log.get(Log.job_id == child.message_id).status == "queued"  # what the database says at the sweep
    threading.Timer(1.0, linking.job_log.drainer.start).start()  # the drainer catches up during the sweep
    assert sweeper_of(broker, grace_seconds=0).run_once() == 0
    rows = {r.job_id: r for r in Log.select()}
    assert rows[child.message_id].status == "success"
    assert rows[root.message_id].failed_children == 0


def test_a_journal_that_stays_behind_skips_the_sweep(broker, caplog):
    linking, root, child = acked_with_its_end_still_in_the_journal(broker)
    assert sweeper_of(broker, grace_seconds=0, fence_seconds=0.5).run_once() == 0
    assert Log.get(Log.job_id == child.message_id).status == "queued"  # not lost: its end is on its way
    linking.job_log.drainer.start()
    assert linking.job_log.flush(10)
    assert Log.get(Log.job_id == child.message_id).status == "success"


def test_one_sweep_per_interval_across_processes(broker):
    gone = broker.tree_root.send(1)
    assert broker.linking.job_log.flush(10)
    drop_message(broker, gone)
    first = sweeper_of(broker, grace_seconds=0, interval_seconds=30)
    other_process = sweeper_of(broker, grace_seconds=0, interval_seconds=30)
    assert first.maybe_run() == 1
    assert other_process.maybe_run() is None  # the lock is held for the interval
    assert 0 < broker.admin.pttl("dramatiq:enrich:lost-work-sweep") <= 30_000


def test_brokers_other_than_redis_are_not_inspected(db):
    sweeper = LostWorkSweeper(StubBroker(), grace_seconds=0)
    assert not sweeper.supported
    assert sweeper.maybe_run() is None and sweeper.run_once() == 0


def test_the_drainers_sweep_at_their_interval_and_mark_what_redis_lost(db):
    """No sweeper by hand: JobLinking's drainer takes the lock, looks, drains, then marks."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    broker = RedisBroker(url=REDIS_TEST_URL)
    linking = JobLinking(lost_work_grace=0, lost_work_interval=0.5)
    broker.add_middleware(linking)
    broker.tree_root, broker.tree_leaf = declare(broker)
    broker.admin = client
    try:
        linking.job_log.bind(broker).drainer.start()
        root = ended_root(broker, linking)
        gone = broker.tree_leaf.send_with_options(args=(0.1,), parent_job_id=root.message_id)
        later = broker.tree_leaf.send_with_options(args=(0.1,), parent_job_id=root.message_id)
        assert linking.job_log.flush(10)
        drop_message(broker, gone)
        wait_for(lambda: Log.get(Log.job_id == gone.message_id).status == "lost", timeout=15, interval=0.1)
        assert Log.get(Log.job_id == later.message_id).status == "queued"
        root_row = Log.get(Log.job_id == root.message_id)
        assert (root_row.status, root_row.failed_children) == ("degraded", 1)
        drop_message(broker, later)  # the next interval's sweep finds this one
        wait_for(lambda: Log.get(Log.job_id == later.message_id).status == "lost", timeout=15, interval=0.1)
        assert Log.get(Log.job_id == root.message_id).failed_children == 2
    finally:
        linking.job_log.stop()
        broker.close()


def test_a_running_job_whose_end_was_lost_with_redis_is_marked_lost_but_not_one_a_worker_holds(broker):
    """A job that ended just before a Redis restart: its end never reached the database, its message is gone."""
    root = ended_root(broker, broker.linking)
    ended = broker.tree_leaf.send_with_options(args=(0.1,), parent_job_id=root.message_id)
    held = broker.tree_leaf.send_with_options(args=(0.1,), parent_job_id=root.message_id)
    broker.linking.job_log.flush()
    started = utcnow()
    Log.update(status="running", started_at=started, updated_at=started).where(
        Log.job_id.in_([ended.message_id, held.message_id])).execute()
    drop_message(broker, ended)  # `held` stays: a worker's unacked set keeps the body in <queue>.msgs

    assert sweeper_of(broker, grace_seconds=600).run_once() == 0  # within the grace from its start
    assert sweeper_of(broker, grace_seconds=0).run_once() == 1
    rows = {r.job_id: r for r in Log.select()}
    lost = rows[ended.message_id]
    assert (lost.status, lost.error_code) == ("lost", "message_lost")
    assert lost.last_error.startswith("started, but its end was never recorded, and its message not found in Redis")
    assert rows[held.message_id].status == "running"
    assert rows[root.message_id].status == "degraded"


def test_a_lost_child_whose_failed_end_arrives_later_is_counted_once(broker):
    """The sweeper marked a child lost (one failure on its root); then its worker's `failed` end is drained."""
    root = ended_root(broker, broker.linking)
    child = broker.tree_leaf.send_with_options(args=(0.1,), parent_job_id=root.message_id)
    linking = broker.linking
    assert linking.job_log.flush(10)
    queued = Log.select().where(Log.job_id == child.message_id).dicts().get()
    drop_message(broker, child)
    assert sweeper_of(broker, grace_seconds=0).run_once() == 1
    assert Log.get(Log.job_id == root.message_id).failed_children == 1

    now = utcnow()
    failed = {name: queued[name] for name in ROW_COLUMNS}
    failed.update(status="failed", error_code="upstream_error", last_error="UpstreamError: 503",
                  started_at=now, completed_at=now, updated_at=now, duration_ms=5)
    linking.job_log.append(failed, root.message_id)  # as JobLinking sends a child's failure: counted on its root
    assert linking.job_log.flush(10)

    rows = {r.job_id: r for r in Log.select()}
    assert (rows[child.message_id].status, rows[child.message_id].error_code) == ("failed", "upstream_error")
    assert (rows[root.message_id].status, rows[root.message_id].failed_children) == ("degraded", 1)


def test_a_legacy_row_stuck_running_is_marked_lost_after_the_grace(broker):
    """Rows from before job linking have no job id: nothing can look for their message, nothing ends them."""
    long_ago = utcnow() - dt.timedelta(hours=2)
    stuck = Log.create(job_id=None, operation="enrichment:track", is_root_job=True, status="running",
                       started_at=long_ago, created_at=long_ago, updated_at=long_ago)
    ended = Log.create(job_id=None, operation="enrichment:track", is_root_job=True, status="success",
                       completed_at=long_ago, created_at=long_ago, updated_at=long_ago)
    recent = Log.create(job_id=None, operation="enrichment:track", is_root_job=True, status="running")
    Log.update(updated_at=long_ago).where(Log.id.in_([stuck.id, ended.id])).execute()  # save() stamps now

    assert sweeper_of(broker, grace_seconds=600).run_once() == 1
    rows = {r.id: r for r in Log.select()}
    lost = rows[stuck.id]
    assert (lost.status, lost.error_code) == ("lost", "message_lost")
    assert lost.completed_at is not None
    assert lost.last_error.startswith("legacy row from before job linking, still running past the grace period")
    assert rows[ended.id].status == "success"
    assert rows[recent.id].status == "running"  # within the grace
    assert sweeper_of(broker, grace_seconds=600).run_once() == 0  # lost is final


def gone_worker_holding(broker, job_id: str) -> None:
    """The record a SIGKILLed worker leaves (``middleware/worker_registry.py``'s layout): an old heartbeat."""
    old = int(time.time() * 1000) - 3_600_000 + 60_000
    broker.admin.hset("dramatiq:enrich:worker:killed", mapping={
        "host": "elsewhere", "pid": 1, "queues": '["default"]', "threads": 1, "started_at_ms": old,
        "heartbeat_ms": old, "jobs": json.dumps([{"job_id": job_id, "actor": "tree_leaf", "started_at_ms": old}])})
    broker.admin.zadd("dramatiq:enrich:workers", {"killed": old})


def test_a_job_a_live_worker_runs_is_never_marked_lost_but_one_a_gone_worker_held_is(broker):
    """After a Redis restart without persistence: neither message is anywhere, both rows say running."""
    release = threading.Event()

    @dramatiq.actor(broker=broker, queue_name="held", actor_name="held_job")
    def held_job():
        release.wait(30)

    broker.add_middleware(WorkerRegistry(interval_seconds=0.1))
    worker = Worker(broker, queues={"held"}, worker_threads=1)
    worker.start()
    try:
        running = held_job.send()
        wait_for(lambda: (row := Log.get_or_none(Log.job_id == running.message_id)) and row.status == "running")
        wait_for(lambda: running.message_id in (running_job_ids(broker) or ()))
        drop_message(broker, running, queue="held")
        orphan = broker.tree_root.send(1)
        assert broker.linking.job_log.flush(10)
        Log.update(status="running").where(Log.job_id == orphan.message_id).execute()
        drop_message(broker, orphan)
        gone_worker_holding(broker, orphan.message_id)

        assert sweeper_of(broker, grace_seconds=0).run_once() == 1
        assert Log.get(Log.job_id == orphan.message_id).status == "lost"
        assert Log.get(Log.job_id == running.message_id).status == "running"
        release.set()
        wait_for(lambda: Log.get(Log.job_id == running.message_id).status == "success")
    finally:
        release.set()
        worker.stop()
    assert Log.select().where(Log.job_id == running.message_id).count() == 1


def test_for_a_heartbeat_timeout_after_redis_starts_no_running_row_is_marked(broker):
    """The workers write their records again within their interval; until then a running row may be theirs."""
    running, queued = broker.tree_root.send(1), broker.tree_root.send(1)
    assert broker.linking.job_log.flush(10)
    Log.update(status="running").where(Log.job_id == running.message_id).execute()
    drop_message(broker, running)
    drop_message(broker, queued)
    broker.heartbeat_timeout = 10 ** 12  # Redis has been up for less than that
    assert running_job_ids(broker) is None
    assert sweeper_of(broker, grace_seconds=0).run_once() == 1
    assert (Log.get(Log.job_id == queued.message_id).status, Log.get(Log.job_id == running.message_id).status) == (
        "lost", "running")
    broker.heartbeat_timeout = 1000
    assert sweeper_of(broker, grace_seconds=0).run_once() == 1  # no worker lists it: lost
    assert Log.get(Log.job_id == running.message_id).status == "lost"
