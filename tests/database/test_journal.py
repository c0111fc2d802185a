"""The job-log journal on a real Redis and the drainers on a real PostgreSQL.

A drainer killed between its commit and its acknowledgement, two drainers on
one stream, a row the database refuses, Redis refusing a job's final write:
each time every job ends with one row and every root counts each failed child
exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import dramatiq
import dramatiq.worker
import pytest
import redis
import structlog
from dramatiq.brokers.redis import RedisBroker

from middleware import DatabaseConnections, JobLinking
from middleware.job_context import JobState, set_current
from middleware.job_log.drainer import DatabaseDown, Drainer
from middleware.job_log.journal import RedisJournal
from middleware.job_log.rows import REJECTED_CODE
from models import EnrichmentLog

from linking_harness import journal_row as row
from linking_harness import rows, wait_for
from process_harness import ROOT, TESTS
from services import REDIS_TEST_URL

STREAM = "test:job-log"


@pytest.fixture
def client():
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def append_tree(journal: RedisJournal, root: str, children: int, failing: int) -> None:
    journal.append(row(root, "running"))
    for n in range(children):
        child = f"{root}-c{n}"
        journal.append(row(child, "running", root))
        failed = n < failing
        journal.append(row(child, "failed" if failed else "success", root), root if failed else None)
    journal.append(row(root, "success"))


def drain_all(drainer: Drainer, timeout: float = 30) -> None:
    """Drain passes until the journal is empty (as ``Drainer.run`` does, a kept batch is tried again)."""
    deadline = time.monotonic() + timeout
    while drainer.journal.oldest_id() is not None:
        assert time.monotonic() < deadline, "the journal was not drained"
        try:
            drainer.drain_once(block_ms=10)
        except DatabaseDown:
            time.sleep(0.05)


def test_two_drainers_on_one_stream_count_a_thousand_failed_children_once(pg_db, client):
    journal = RedisJournal(client, STREAM)
    append_tree(journal, "root-a", children=1000, failing=1000)
    append_tree(journal, "root-b", children=300, failing=30)
    drainers = [Drainer(RedisJournal(client, STREAM), pg_db, batch_size=150) for _ in range(2)]
    threads = [threading.Thread(target=drain_all, args=(d,)) for d in drainers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for drainer in drainers:
        drainer.stop(timeout=0)
    found = rows()
    assert len(found) == 1302
    assert found["root-a"].failed_children == 1000 and found["root-a"].status == "degraded"
    assert found["root-b"].failed_children == 30 and found["root-b"].status == "degraded"
    assert client.xlen(STREAM) == 0  # acknowledged entries are deleted
    assert sum(d.journal.drained_total for d in drainers) == 1000 * 2 + 300 * 2 + 4


_KILLED_BEFORE_ACK = """
import os, signal, sys, redis
sys.path[:0] = [{tests!r}, {root!r}]
from models import bind_database
from middleware.job_log.drainer import Drainer
from middleware.job_log.journal import RedisJournal
journal = RedisJournal(redis.Redis.from_url({redis_url!r}), {stream!r})
journal.ack = lambda ids: os.kill(os.getpid(), signal.SIGKILL)  # committed, never acknowledged
Drainer(journal, bind_database({pg_url!r}), batch_size=100000).drain_once()
"""


def test_a_drainer_killed_after_its_commit_has_its_batch_claimed_and_counted_once(pg_db, pg_url, client):
    journal = RedisJournal(client, STREAM)
    append_tree(journal, "root", children=200, failing=50)
    script = _KILLED_BEFORE_ACK.format(tests=str(TESTS), root=str(ROOT), redis_url=REDIS_TEST_URL,
                                       stream=STREAM, pg_url=pg_url)
    killed = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert killed.returncode == -9
    assert EnrichmentLog.get(EnrichmentLog.job_id == "root").failed_children == 50  # its commit happened
    assert client.xpending(STREAM, "drainers")["pending"] == 402  # and its entries wait for another drainer

    survivor = Drainer(RedisJournal(client, STREAM), pg_db, claim_idle=0.2)
    time.sleep(0.3)
    drain_all(survivor)
    survivor.stop(timeout=0)
    root = EnrichmentLog.get(EnrichmentLog.job_id == "root")
    assert root.failed_children == 50 and root.status == "degraded"
    assert EnrichmentLog.select().count() == 201
    assert client.xpending(STREAM, "drainers")["pending"] == 0 and client.xlen(STREAM) == 0


def test_a_drainer_retrying_through_an_outage_keeps_its_entries_and_a_silent_one_loses_them(pg_db, client):
    """Entries a live drainer holds (its database down) are not claimed by another; a dead one's are."""
    import peewee

    down = peewee.PostgresqlDatabase("enrich", host="127.0.0.1", port=1, connect_timeout=1)  # nothing listens
    journal = RedisJournal(client, STREAM)
    for n in range(5):
        journal.append(row(f"job-{n}", "success"))
    holder = Drainer(RedisJournal(client, STREAM), down, claim_idle=0.5)
    other = Drainer(RedisJournal(client, STREAM), pg_db, claim_idle=0.5)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # 4 x claim_idle of retrying, a pass every 0.3 s
        with pytest.raises(DatabaseDown):
            holder.drain_once(block_ms=0)
        next_pass = time.monotonic() + 0.3
        while time.monotonic() < next_pass:  # the other drainer looks far more often
            assert other.drain_once(block_ms=0) == 0  # nothing of the holder's is idle
            time.sleep(0.02)
    assert EnrichmentLog.select().count() == 0

    time.sleep(0.6)  # the holder falls silent (as if killed): its entries become idle
    drain_all(other)
    other.stop(timeout=0)
    assert sorted(rows()) == [f"job-{n}" for n in range(5)]
    assert client.xpending(STREAM, "drainers")["pending"] == 0 and client.xlen(STREAM) == 0


def test_dead_drainers_names_are_forgotten_once_they_hold_nothing(pg_db, client):
    journal = RedisJournal(client, STREAM)
    journal.append(row("done", "success"))
    journal.append(row("held", "success"))
    journal.ack([e.id for e in journal.read("dead-and-done", 1, 0)])
    journal.read("dead-holding-one", 1, 0)  # killed before its ack
    names = lambda: sorted(c["name"].decode() for c in client.xinfo_consumers(STREAM, "drainers"))  # noqa: E731
    assert names() == ["dead-and-done", "dead-holding-one"]
    time.sleep(0.7)
    drainer = Drainer(RedisJournal(client, STREAM), pg_db, claim_idle=0.1)  # forgets after 0.6 s of silence
    drain_all(drainer)
    assert names() == [drainer.consumer]  # the one holding an entry is forgotten once it was claimed
    assert sorted(rows()) == ["held"]
    time.sleep(0.7)
    drainer.drain_once(block_ms=0)
    assert names() == []  # a live drainer silent as long, holding nothing, too
    journal.append(row("later", "success"))
    drain_all(drainer)  # and it goes on draining under the same name
    assert sorted(rows()) == ["held", "later"] and names() == [drainer.consumer]
    drainer.stop(timeout=0)


class FlakyJournal(RedisJournal):
    """A journal whose first read fails with an error nobody expects (a bug, not an outage)."""

    failed = False

    def read(self, consumer, count, block_ms):
        if not self.failed:
            self.failed = True
            raise RuntimeError("unexpected failure in a drain pass")
        return super().read(consumer, count, block_ms)


def test_a_drainer_thread_logs_an_unexpected_error_and_drains_on(pg_db, client):
    """A pass that fails for a reason nobody foresaw is logged with its traceback; the thread never dies."""
    journal = FlakyJournal(client, STREAM)
    append_tree(journal, "root", children=2, failing=1)
    drainer = Drainer(journal, pg_db)
    with structlog.testing.capture_logs() as logs:
        drainer.start()
        assert drainer.flush(15), "the drainer stopped draining after the failed pass"
    drainer.stop(timeout=0)
    failure = next(e for e in logs if e["log_level"] == "error")
    assert "job-log-drainer" in failure["event"] and failure["exc_info"] is True
    found = rows()
    assert set(found) == {"root", "root-c0", "root-c1"} and found["root"].status == "degraded"


def test_a_row_the_database_refuses_is_put_aside_and_the_job_still_ends(pg_db, client):
    journal = RedisJournal(client, STREAM)
    append_tree(journal, "root", children=3, failing=1)
    # data_quality_after is a VARCHAR(10): PostgreSQL refuses this row, whatever the batch.
    journal.append(row("root-c1", "success", "root", data_quality_after="x" * 50))
    journal.append(row("after", "success"))
    drainer = Drainer(journal, pg_db)
    drain_all(drainer)
    found = rows()
    assert set(found) == {"root", "root-c0", "root-c1", "root-c2", "after"}  # nothing blocked behind it
    refused = found["root-c1"]
    assert refused.status == "success" and refused.error_code == REJECTED_CODE
    assert STREAM + ":rejected" in refused.last_error
    assert found["root"].failed_children == 1
    [(_, entry, error)] = journal.rejected()
    assert entry.row["job_id"] == "root-c1" and "too long" in error
    assert journal.stats()["refused_total"] == 1 and journal.stats()["entries"] == 0

    assert journal.replay_rejected() == 1  # after a fix: here it is refused again, and kept again
    drain_all(drainer)
    drainer.stop(timeout=0)
    assert len(journal.rejected()) == 1 and journal.rejected_count() == 1


def test_the_minimal_row_of_a_refused_write_lands_whatever_the_producer_sent(pg_db, client):
    """A write from a worker without the option checks: a parent PostgreSQL cannot store, NULs, a bad count."""
    journal = RedisJournal(client, STREAM)
    bad_parent = "p" * 500
    journal.append(row("hostile", "failed", bad_parent, operation="op\x00", retry_count=-3,
                       last_error="boom\x00"), bad_parent)
    drainer = Drainer(journal, pg_db, root_wait=0)  # no such root will come
    drain_all(drainer)
    drainer.stop(timeout=0)
    [refused] = rows().values()
    assert (refused.job_id, refused.status, refused.error_code) == ("hostile", "failed", REJECTED_CODE)
    assert (refused.is_root_job, refused.parent_job_id, refused.retry_count) == (True, None, 0)
    assert refused.operation == "op"
    [(_, entry, _)] = journal.rejected()
    assert entry.row["parent_job_id"] == bad_parent  # the full write is kept as it came


@pytest.fixture
def redis_app(pg_db, client, monkeypatch):
    """A RedisBroker with JobLinking and an in-process worker; the ack is retried every 0.2 s."""
    monkeypatch.setattr(dramatiq.worker, "POST_PROCESS_MESSAGE_RETRY_DELAY_SECS", 0.2)
    broker = RedisBroker(url=REDIS_TEST_URL)
    linking = JobLinking(pg_db)
    broker.add_middleware(DatabaseConnections(pg_db))
    broker.add_middleware(linking)
    dramatiq.set_broker(broker)

    @dramatiq.actor(broker=broker, max_retries=0)
    def job():
        pass

    worker = dramatiq.Worker(broker, worker_threads=1)
    yield broker, linking, job, worker
    worker.stop()
    broker.close()


def test_redis_refusing_the_final_write_holds_the_ack_until_it_is_written(redis_app, client):
    broker, linking, job, worker = redis_app
    message = job.send()
    assert linking.job_log.drainer.flush(15)  # its queued row, from the journal
    client.delete("dramatiq:job-log")
    client.set("dramatiq:job-log", "not a stream")  # every XADD now fails: WRONGTYPE
    try:
        worker.start()
        time.sleep(1.5)
        queued_as = message.options["redis_message_id"]
        assert client.hexists("dramatiq:default.msgs", queued_as), "acked without its row"
        assert rows()[message.message_id].status == "queued"  # its row as sent
    finally:
        client.delete("dramatiq:job-log")  # Redis takes writes again
    wait_for(lambda: not client.hexists("dramatiq:default.msgs", queued_as), timeout=15)
    assert linking.job_log.flush(15)
    assert rows()[message.message_id].status == "success"


def test_a_send_whose_queued_row_redis_refuses_raises_and_sends_nothing(redis_app, client):
    broker, linking, job, worker = redis_app
    client.set("dramatiq:job-log", "not a stream")  # every XADD now fails: WRONGTYPE
    try:
        with pytest.raises(dramatiq.errors.BrokerConnectionError, match="queued row could not be written.*WRONGTYPE"):
            job.send()
        assert client.hlen("dramatiq:default.msgs") == 0 and client.llen("dramatiq:default") == 0
    finally:
        client.delete("dramatiq:job-log")
    sent = job.send()  # Redis takes it again: sent, and its row is in the database once drained
    assert client.hlen("dramatiq:default.msgs") == 1
    assert linking.job_log.drainer.flush(15)
    assert [(r.job_id, r.status) for r in rows().values()] == [(sent.message_id, "queued")]


def _round_trips(monkeypatch) -> list:
    """Counts the replies this thread reads from Redis: one per round trip (a script's inner commands are none)."""
    counted, thread = [], threading.current_thread()
    read = redis.connection.AbstractConnection.read_response

    def counting(self, *args, **kwargs):
        if threading.current_thread() is thread:
            counted.append(1)
        return read(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", counting)
    return counted


def test_a_send_and_a_job_end_are_one_redis_round_trip_each(redis_app, client, monkeypatch):
    broker, linking, job, worker = redis_app
    job.send()  # the first send loads the scripts
    counted = _round_trips(monkeypatch)
    message = job.send()
    assert len(counted) == 1, "the queued row did not ride with the enqueue"
    assert client.xlen("dramatiq:job-log") == 2 and client.llen("dramatiq:default") == 2
    entry = client.xrange("dramatiq:job-log")[-1][1][b"e"]
    assert message.message_id.encode() in entry and b'"queued"' in entry
    # The end: the worker's ack carries the final row (checked on the worker's thread, where it is read).
    consumer = broker.consume("default")
    fetched = next(m for m in consumer if m is not None)
    set_current(JobState(job_id=fetched.message_id, root_id=None, operation="job", attempt=0))
    counted.clear()
    broker.emit_before("ack", fetched)
    consumer.ack(fetched)
    assert len(counted) == 1, "the final row did not ride with the ack"
    assert client.xlen("dramatiq:job-log") == 3
    assert b'"success"' in client.xrange("dramatiq:job-log")[-1][1][b"e"]
    consumer.close()


class _RefuseFlagged(dramatiq.Middleware):
    def before_enqueue(self, broker, message, delay):
        if message.kwargs.get("refuse"):
            raise dramatiq.middleware.MiddlewareError("refused by a later middleware")


def test_a_row_whose_send_a_later_middleware_stopped_is_never_written(pg_db, client):
    broker = RedisBroker(url=REDIS_TEST_URL)
    linking = JobLinking(pg_db)
    broker.add_middleware(linking)
    broker.add_middleware(_RefuseFlagged())  # after JobLinking: the queued row is already handed over

    @dramatiq.actor(broker=broker)
    def job(refuse=False):
        pass

    try:
        with pytest.raises(dramatiq.middleware.MiddlewareError):
            job.send(refuse=True)
        sent = job.send()
        assert client.xlen("dramatiq:job-log") == 1 and client.llen("dramatiq:default") == 1
        assert linking.job_log.drainer.flush(15)
        assert [(r.job_id, r.status) for r in rows().values()] == [(sent.message_id, "queued")]
    finally:
        linking.job_log.stop(timeout=0)
        broker.close()


def test_stats_show_the_backlog_and_what_was_drained(pg_db, client):
    journal = RedisJournal(client, STREAM)
    append_tree(journal, "root", children=2, failing=0)
    time.sleep(0.05)
    before = journal.stats()
    assert before["entries"] == 6 and before["oldest_age_seconds"] >= 0.05
    drainer = Drainer(journal, pg_db)
    drain_all(drainer)
    drainer.stop(timeout=0)
    assert journal.stats() == {"entries": 0, "oldest_age_seconds": None, "drained_total": 6, "refused_total": 0}


@pytest.mark.slow
@pytest.mark.parametrize("database", ["unset", "missing", "unmigrated"])
def test_a_worker_without_a_usable_database_refuses_to_start_and_consumes_nothing(
        database, client, pg_url, tmp_path):
    from conftest import create_pg_database, drop_pg_database

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(REDIS_URL=REDIS_TEST_URL, PYTHONPATH=f"{TESTS}{os.pathsep}{ROOT}")
    created = None
    if database == "missing":
        env["DATABASE_URL"] = pg_url.rsplit("/", 1)[0] + "/enrich_no_such_database"
    elif database == "unmigrated":
        created = env["DATABASE_URL"] = create_pg_database("enrich_unmigrated")
    try:
        broker = RedisBroker(url=REDIS_TEST_URL)
        sent = dramatiq.Message(queue_name="default", actor_name="job", args=(), kwargs={}, options={})
        sent = broker.enqueue(sent)
        worker = subprocess.run(
            [sys.executable, "-m", "dramatiq", "unbound_app", "--processes", "1", "--threads", "1", "--skip-logging"],
            env=env, cwd=TESTS, capture_output=True, text=True, timeout=60,
        )
        broker.close()
    finally:
        if created:
            drop_pg_database(created)
    refusals = [line for line in worker.stderr.splitlines() if line.startswith("JobLinking: refusing to start")]
    assert worker.returncode != 0
    assert len(refusals) == 1, worker.stderr[-3000:]
    expected = {"unset": "set DATABASE_URL", "missing": "does not exist", "unmigrated": "enrich migrate"}[database]
    assert expected in refusals[0]
    # Still queued, untouched (the queue holds the id Redis gave it).
    assert client.lrange("dramatiq:default", 0, -1) == [sent.options["redis_message_id"].encode()]
