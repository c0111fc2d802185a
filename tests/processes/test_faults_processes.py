"""Faults under real `dramatiq` worker processes: a worker killed mid-tree, PostgreSQL
restarted during a run, Redis restarted during a run.  Each test asserts that no
job was lost, that no row is left ``running``, and how long the recovery may take.

They restart the machine's shared PostgreSQL and Redis (a few seconds each) and
always bring the service back up, even when the test fails.  Run them alone:

    .venv/bin/python -m pytest tests/test_faults_processes.py

The worker processes use Redis database 15 (``TEST_REDIS_URL``), flushed first.
Time limits use pytest-timeout's ``signal`` method: a test that runs out of time
raises in its own thread, so its ``finally`` still restarts the service.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import dramatiq
import peewee
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from middleware.job_log.drainer import Drainer
from middleware.job_log.journal import GROUP, decode, redis_journal
from models import Album, Artist, EnrichmentLog, Track

from app_harness import add_album
from linking_harness import wait_for
from process_harness import WorkerProcess
from services import REDIS_TEST_URL, restart_postgres, restart_redis, start_redis, stop_redis

pytestmark = pytest.mark.slow

NOT_FINAL = ("queued", "running", "retrying")
# Dramatiq's maintenance chance is counted per MILLION fetches (dramatiq.brokers.redis.MAINTENANCE_SCALE):
# 1,000,000 makes every fetch look for dead workers, so a killed worker's messages come back
# as soon as its heartbeat is REDIS_HEARTBEAT_TIMEOUT_MS old.
EVERY_FETCH = str(1_000_000)


# -- plumbing --------------------------------------------------------------------------


@pytest.fixture
def sender():
    """A broker of the test's own on the (flushed) test Redis, for sending messages to the workers."""
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    broker = RedisBroker(url=REDIS_TEST_URL)
    yield broker
    broker.close()


def worker_env(pg_url: str, **extra) -> dict:
    # JOB_LOG_LINES=all: the tests count each job's runs by its "job started" lines.
    return {"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url, "RETRY_MIN_BACKOFF_MS": "100",
            "JOB_LOG_LINES": "all", **extra}


def upstream_env(fake, tmp_path: Path) -> dict:  # noqa: F811
    return {
        **fake.env(cloudflare=False),
        "COVERART_URL": fake.url + "/coverartarchive",
        "IMAGE_CACHE_DIR": str(tmp_path / "images"),
        "MUSICBRAINZ_MIN_INTERVAL": "0.02",
        "DISCOGS_MIN_INTERVAL": "0.02",
    }


def message(actor_name: str, *args) -> dramatiq.Message:
    return dramatiq.Message(queue_name="default", actor_name=actor_name, args=args, kwargs={},
                            options={"triggered_by": "test"})


def send_root(broker, actor_name: str, *args) -> str:
    sent = message(actor_name, *args)
    broker.enqueue(sent)
    return sent.message_id


def all_acked() -> bool:
    """Every message, delayed retries included, processed and acked (rows are final before the ack)."""
    r = redis.Redis.from_url(REDIS_TEST_URL)
    return r.hlen("dramatiq:default.msgs") == 0 and r.hlen("dramatiq:default.DQ.msgs") == 0


def journal_pending() -> dict:
    """The job-log journal's undrained entries and who holds them (for a failure message)."""
    r = redis.Redis.from_url(REDIS_TEST_URL)
    stream = "dramatiq:job-log"
    return {"entries": r.xlen(stream),
            "consumers": [{k: c[k] for k in ("name", "pending", "idle")} for c in r.xinfo_consumers(stream, "drainers")]
            if r.exists(stream) else []}


def rows_by_job() -> dict[str, EnrichmentLog]:
    return {r.job_id: r for r in EnrichmentLog.select()}


def not_final() -> list[tuple]:
    return list(
        EnrichmentLog.select(EnrichmentLog.job_id, EnrichmentLog.operation, EnrichmentLog.status)
        .where(EnrichmentLog.status.in_(NOT_FINAL))
        .tuples()
    )


def log_events(path: Path, event: str) -> list[dict]:
    """The JSON log lines of one worker log whose message is ``event``."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == event or entry.get("event") == event:
            found.append(entry)
    return found


def started_job_ids(*logs: Path) -> set[str]:
    return {e["job_id"] for path in logs for e in log_events(path, "job started")}


def fresh_connections(db) -> None:
    """Drop this process's pooled connections (a restarted server broke them)."""
    try:
        db.close_all()
    except Exception:
        pass


# -- 1. a worker killed in the middle of a tree ------------------------------------------


@pytest.mark.timeout(240, method="signal")
def test_worker_killed_mid_tree_every_job_finishes_once(pg_db, pg_url, fake, sender, tmp_path):  # noqa: F811
    """SIGKILL the only worker in the middle of two album trees.

    One album's enrichment:album waits on its MusicBrainz release lookup, the
    other album's cover download waits on the Cover Art Archive (neither is
    answered for 30 s); other jobs of the trees are done, running or queued.
    Redis gives the dead worker's unacked messages to a second worker once its
    heartbeat is 2 s old; the redelivered jobs run again under the same job id.
    Afterwards: every job either worker started has exactly one row, none is
    left running, both trees are complete, and the catalog has no duplicate
    track and the image cache one file per image.
    """
    albums = [add_album("Homogenic", ["Björk"]), add_album("Dummy", ["Portishead"])]
    # Hang the first release lookup and the first cover download: the kill lands while they are in flight.
    fake.fail("/musicbrainz/ws/2/release/", "timeout", delay=30, times=1)
    fake.fail("/coverartarchive/", "timeout", delay=30, times=1)
    # LOG_FLUSH_MS=0: the "job started" lines are read back from the killed worker's log, and
    # a SIGKILL loses the last LOG_FLUSH_MS of them (a short job started and finished in that
    # window, such as Portishead's cache:artist-image, would have a row and no line).
    env = {**worker_env(pg_url, REDIS_HEARTBEAT_TIMEOUT_MS="2000", REDIS_MAINTENANCE_CHANCE=EVERY_FETCH,
                        LOG_FLUSH_MS="0"),
           **upstream_env(fake, tmp_path)}
    first = WorkerProcess("workers.worker", env, tmp_path / "first.log", processes=1, threads=4)
    try:
        first.wait_ready()
        roots = [send_root(sender, "check_album_enrichment", str(a.id), "test") for a in albums]

        def both_hanging():
            if any(f["hits"] < 1 for f in fake.faults.list()):
                return False
            running = {op for op, in EnrichmentLog.select(EnrichmentLog.operation)
                       .where(EnrichmentLog.status == "running").tuples()}
            return {"enrichment:album", "cache:album-cover-art"} <= running

        wait_for(both_hanging, timeout=60, interval=0.05)
    finally:
        first.kill()  # SIGKILL to the whole process group: no shutdown hook runs
    killed_at = time.monotonic()
    at_kill = rows_by_job()
    # The two jobs held on an unanswered request were surely running at the kill.  (Another row
    # may still say `running` there while its end waits in the journal, its message already acked.)
    running_at_kill = {job_id for job_id, r in at_kill.items()
                       if r.status == "running" and r.operation in ("enrichment:album", "cache:album-cover-art")}
    assert len(running_at_kill) >= 2
    print("at the kill:", sorted(f"{r.operation} {r.status}" for r in at_kill.values()))
    assert not all_acked(), "the killed worker's messages must still be in Redis"

    second = WorkerProcess("workers.worker", env, tmp_path / "second.log", processes=2, threads=4)
    try:
        second.wait_ready(processes=2)
        wait_for(all_acked, timeout=120, interval=0.2)
        recovered_in = time.monotonic() - killed_at
        print(f"the second worker finished the trees {recovered_in:.1f} s after the kill")
        # Rows reach the database through the journal, a moment after the ack; the entries the
        # killed worker's drainer had read but not applied are claimed once 10 s idle (claim_idle).
        try:
            wait_for(lambda: not not_final(), timeout=30, interval=0.2)
        except AssertionError:
            pass  # the assertion below names the rows and the journal's state
    finally:
        second.stop()

    rows = rows_by_job()
    assert not_final() == [], (not_final(), journal_pending())
    # Every job either worker started has exactly one row, and every row is such a job.
    started = started_job_ids(first.log_path, second.log_path)
    assert set(rows) == started
    assert EnrichmentLog.select().count() == len(rows)
    # The jobs that were running at the kill ran again on the second worker, under the same id.
    assert running_at_kill <= started_job_ids(second.log_path)
    # A row still shows `running` while its end waits in the journal: a cache job killed after
    # storing its image (before its ack) finds the file on its rerun and ends `skipped`.
    assert all(rows[j].status == "success" or (rows[j].status == "skipped" and rows[j].operation.startswith("cache:"))
               for j in running_at_kill), [
        (rows[j].operation, rows[j].status, rows[j].last_error) for j in running_at_kill]

    expected = {"enrichment:album", "check:artist-enrichment", "enrichment:artist", "cache:album-cover-art"}
    for root_id in roots:
        root = rows[root_id]
        assert root.is_root_job and root.status == "success", (root.status, root.last_error)
        children = [r for r in rows.values() if r.parent_job_id == root_id]
        assert expected <= {r.operation for r in children}
        assert all(r.status in ("success", "skipped") for r in children), [
            (r.operation, r.status, r.last_error) for r in children]
    assert {r.parent_job_id for r in rows.values() if not r.is_root_job} <= set(roots)

    for album in albums:
        album = Album.get_by_id(album.id)
        tracks = list(Track.select().where(Track.album == album))
        assert len(tracks) == album.track_count > 0
        assert len({(t.disc_number, t.track_number) for t in tracks}) == len(tracks)
        assert album.cached_image_path
    cached = {Path(p) for p in [a.cached_image_path for a in Album.select()] +
              [a.cached_image_path for a in Artist.select()] if p}
    # (A kill between the write of a temporary ".incoming-*" file and its rename may leave that
    # temporary file behind; it is never referenced, so it is not counted as an image.)
    files = {p for p in (tmp_path / "images").iterdir() if not p.name.startswith(".")}
    assert files == cached, (sorted(f.name for f in files), sorted(c.name for c in cached))
    assert recovered_in < 60, recovered_in


# -- 2. PostgreSQL restarted while 500 jobs run -------------------------------------------


@pytest.mark.timeout(300, method="signal")
def test_postgres_restart_during_500_jobs_loses_no_row(pg_db, pg_url, fake, sender, tmp_path):  # noqa: F811
    """Restart PostgreSQL (a real restart: every connection is cut) while 500 jobs run.

    The rows wait in the Redis journal while the database is gone and the
    drainers apply them when it is back, so every job ends with one final row:
    the 450 plain jobs ``success`` on their first attempt, the 50 that fail
    their first attempt on purpose ``success`` after one retry.  The jobs
    themselves never touch the database, so none of them fails because of the
    outage: what is tested is the job log.  Then the same workers (their
    pooled connections cut by the restart) enrich two albums, whose actors do
    read and write the catalog.
    """
    env = {**worker_env(pg_url), **upstream_env(fake, tmp_path)}
    worker = WorkerProcess("fault_app", env, tmp_path / "workers.log", processes=2, threads=4)
    try:
        worker.wait_ready(processes=2)
        sent = [message("fault_flaky" if i % 10 == 9 else "fault_sleep", 0.15) for i in range(500)]
        for m in sent:
            sender.enqueue(m)
        wait_for(lambda: EnrichmentLog.select().where(EnrichmentLog.status == "success").count() >= 60,
                 timeout=60, interval=0.1)
        fresh_connections(pg_db)
        down_for = restart_postgres()
        fresh_connections(pg_db)
        left_in_queue = redis.Redis.from_url(REDIS_TEST_URL).hlen("dramatiq:default.msgs")
        print(f"PostgreSQL restart took {down_for:.1f} s; {left_in_queue} messages still queued after it")
        assert left_in_queue > 50, "the run ended before the restart: nothing was tested"

        wait_for(all_acked, timeout=180, interval=0.2)

        def all_final():
            try:
                return EnrichmentLog.select().where(EnrichmentLog.status.not_in(NOT_FINAL)).count() == 500
            except (peewee.OperationalError, peewee.InterfaceError):
                fresh_connections(pg_db)
                return False

        # Acks do not wait for commits while the database is down: the rows may land a little later.
        wait_for(all_final, timeout=60, interval=0.2)
        rows = rows_by_job()

        albums = [add_album("Homogenic", ["Björk"]), add_album("Dummy", ["Portishead"])]
        roots = [send_root(sender, "check_album_enrichment", str(a.id), "test") for a in albums]
        wait_for(all_acked, timeout=120, interval=0.2)
        # Rows reach the database through the journal, a moment after the ack.
        wait_for(lambda: not not_final(), timeout=15, interval=0.2)
    finally:
        worker.stop()

    assert set(rows) == {m.message_id for m in sent}
    assert len(rows) == 500
    assert {r.status for r in rows.values()} == {"success"}
    flaky = {m.message_id for m in sent if m.actor_name == "fault_flaky"}
    assert {rows[j].retry_count for j in flaky} == {1}
    assert {rows[j].retry_count for j in set(rows) - flaky} == {0}
    assert all(r.completed_at and r.started_at and r.enqueued_at for r in rows.values())

    log = worker.log_path.read_text()
    assert "log database unavailable" in log and "job log drain resumed" in log
    assert "could not be saved" not in log and "rejected by the database" not in log
    assert down_for < 60

    assert not_final() == []
    for root_id in roots:
        root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
        children = list(EnrichmentLog.select().where(EnrichmentLog.parent_job_id == root_id))
        assert root.status == "success" and len(children) >= 4, (root.status, root.last_error)
        assert all(c.status == "success" for c in children), [(c.operation, c.status, c.last_error) for c in children]


# -- 3. Redis restarted while jobs run ------------------------------------------------------


@pytest.mark.timeout(300, method="signal")
def test_redis_restart_workers_reconnect_and_finish_the_work(pg_db, pg_url, fake, tmp_path):  # noqa: F811
    """Restart Redis while 4 jobs run, 4 wait in the worker's memory and 52 in Redis; the same workers carry on.

    What a user can rightly expect, and what not:

    * This Redis keeps nothing on disk: the messages it holds when it stops
      are gone, by Redis's own doing.  JobLinking writes a job's row when a
      worker STARTS the job, so a lost message leaves no row at all: the log
      shows no phantom job, and the lost work is exactly the sent messages
      without a row.  Re-sending those same messages (same message ids) runs
      each once, with one row.
    * Jobs a worker holds when Redis goes away (running, or fetched and waiting
      for a thread) are finished: their rows end final (``success``).  Their ack
      waits until Redis is back; nothing is left ``running``.
    * The worker processes reconnect by themselves (same processes, no
      restart) and finish work sent after the restart: here two whole album
      trees, whose MusicBrainz spacing also lives in Redis.
    * Not covered: jobs that retry.  A retry waiting in Redis when it stops is
      lost with it (the lost-work sweep marks it); a retry enqueued while Redis
      is down is the next test's.  This test sends no job that can fail around
      the restart.
    """
    r = redis.Redis.from_url(REDIS_TEST_URL)
    r.flushdb()
    env = {**worker_env(pg_url), **upstream_env(fake, tmp_path)}
    worker = WorkerProcess("fault_app", env, tmp_path / "workers.log", processes=1, threads=4)
    sender = RedisBroker(url=REDIS_TEST_URL)
    try:
        worker.wait_ready()
        pids_before = worker_pids(worker)
        batch = [message("fault_sleep", 1.0) for _ in range(60)]
        for m in batch:
            sender.enqueue(m)
        wait_for(lambda: EnrichmentLog.select().where(EnrichmentLog.status == "running").count() == 4,
                 timeout=30, interval=0.05)
        running_before = {j for j, row in rows_by_job().items() if row.status == "running"}

        restart_redis(down_for=2.0)

        # The held jobs finish; their acks are retried every 5 s until Redis answers, and only then do
        # the threads take the jobs fetched before the restart: idle means no new row for 8 s.
        quiet = QuietRows(seconds=8.0)
        wait_for(lambda: not not_final() and quiet(), timeout=90, interval=0.5)
        rows = rows_by_job()
        assert running_before <= set(rows)
        assert all(rows[j].status == "success" for j in running_before)
        assert not_final() == []
        lost = [m for m in batch if m.message_id not in rows]
        assert lost, "every message was already taken by the worker: the restart lost nothing to re-send"
        assert all(row.status == "success" for row in rows.values())

        # Redis came back empty: re-send the lost messages (same ids), and send new trees.
        print(f"held by the worker at the restart and finished: {len(rows)}; lost with Redis and re-sent: {len(lost)}")
        for m in lost:
            sender.enqueue(m)
        albums = [add_album("Homogenic", ["Björk"]), add_album("Dummy", ["Portishead"])]
        roots = [send_root(sender, "check_album_enrichment", str(a.id), "test") for a in albums]
        wait_for(all_acked, timeout=120, interval=0.2)
        # Rows reach the database through the journal, a moment after the ack.
        wait_for(lambda: not not_final(), timeout=15, interval=0.2)
        assert worker.proc.poll() is None and worker_pids(worker) == pids_before
    finally:
        sender.close()
        worker.stop()

    rows = rows_by_job()
    assert not_final() == []
    assert {m.message_id for m in batch} <= set(rows)
    assert all(rows[m.message_id].status == "success" for m in batch)
    assert EnrichmentLog.select().where(EnrichmentLog.operation == "fault:sleep").count() == len(batch)
    starts = Counter(e["job_id"] for e in log_events(worker.log_path, "job started"))
    assert {starts[m.message_id] for m in batch} == {1}  # each ran once: before the restart, or re-sent
    for root_id, album in zip(roots, albums):
        assert rows[root_id].status == "success", (rows[root_id].status, rows[root_id].last_error)
        children = [row for row in rows.values() if row.parent_job_id == root_id]
        assert {"enrichment:album", "enrichment:artist", "cache:album-cover-art"} <= {c.operation for c in children}
        assert all(c.status == "success" for c in children), [(c.operation, c.status, c.last_error) for c in children]
        album = Album.get_by_id(album.id)
        assert Track.select().where(Track.album == album).count() == album.track_count > 0
    log = worker.log_path.read_text()
    assert "connection error" in log  # the consumer saw Redis go away, and carried on


def worker_pids(worker: WorkerProcess) -> set[int]:
    """The dramatiq parent and its worker processes."""
    children = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children")
    return {worker.proc.pid, *(int(p) for p in children.read_text().split())}


class QuietRows:
    """True once the number of rows has not changed for ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.count = None
        self.since = time.monotonic()

    def __call__(self) -> bool:
        count = EnrichmentLog.select().count()
        now = time.monotonic()
        if count != self.count:
            self.count, self.since = count, now
            return False
        return now - self.since >= self.seconds


# -- 4. Redis down just as a retry is enqueued -------------------------------------------------


def row_of(job_id: str):
    return EnrichmentLog.get_or_none(EnrichmentLog.job_id == job_id)


def child_of(root_id: str):
    return EnrichmentLog.get_or_none(EnrichmentLog.parent_job_id == root_id)


@pytest.mark.timeout(300, method="signal")
def test_a_retry_refused_by_a_restarting_redis_is_enqueued_once_it_is_back(pg_db, pg_url, sender, tmp_path):
    """Stop Redis while a child job runs; its attempt then fails, and Retries cannot enqueue the retry.

    The worker holds the ack and enqueues the retry again every 5 s (Dramatiq's
    ack retry) until Redis is back: the retry runs, the child ends ``success``
    with one retry, and its root is not degraded.  This Redis keeps nothing on
    disk, so the retry enqueued after the restart is all there is of the job.
    """
    gate = tmp_path / "fail-now"
    worker = WorkerProcess("fault_app", worker_env(pg_url, LOG_FLUSH_MS="0"), tmp_path / "worker.log", threads=2)
    try:
        worker.wait_ready()
        root_id = send_root(sender, "fault_parent", "fault_gated", str(gate))
        # The root's end and the child's start are in the database (not only in the journal Redis loses).
        wait_for(lambda: (row_of(root_id) is not None and row_of(root_id).status == "success"
                          and child_of(root_id) is not None and child_of(root_id).status == "running"),
                 timeout=60, interval=0.05)
        child_id = child_of(root_id).job_id
        try:
            stop_redis()
            gate.touch()  # the child fails now: its retry meets a Redis that is down
            wait_for(lambda: log_events(worker.log_path, RETRY_WAITS), timeout=90, interval=0.1)
        finally:
            start_redis()
        wait_for(lambda: row_of(child_id).status not in NOT_FINAL, timeout=90, interval=0.1)
    finally:
        worker.stop()

    child, root = row_of(child_id), row_of(root_id)
    assert (child.status, child.retry_count, child.error_code) == ("success", 1, "connection_error")
    assert (root.status, root.failed_children) == ("success", 0)
    assert not_final() == []
    waits = log_events(worker.log_path, RETRY_WAITS)
    assert {e["job_id"] for e in waits} == {child_id}
    assert "retry_not_enqueued" not in worker.log_path.read_text()


RETRY_WAITS = "retry not enqueued: the broker is unavailable; the ack waits and the enqueue is tried again"


# -- 5. a worker killed after writing a job's failure, before the broker heard of it -------------


@pytest.mark.timeout(300, method="signal")
def test_a_killed_workers_late_start_never_replaces_the_redelivered_success(pg_db, pg_url, sender, tmp_path):
    """SIGKILL a worker while a child job runs, its ``running`` start appended to the journal.

    Its drainer had read the tree's entries (the test reads them under the dead
    drainer's name, as the worker's thread would have): they stay pending until
    another drainer claims them.  The child's message comes back to a second
    worker, which runs it again and succeeds; that row is applied first, then the
    dead drainer's entries are claimed and applied.  The child stays ``success``,
    its root is ``success`` and not degraded.  (A job's end goes to Redis with its
    ack or nack, in one script: no end is left behind by a worker killed before its ack.)
    """
    mark = tmp_path / "first-delivery-ran"
    env = worker_env(pg_url, REDIS_HEARTBEAT_TIMEOUT_MS="2000", REDIS_MAINTENANCE_CHANCE=EVERY_FETCH,
                     JOB_LOG_DRAIN_IN_WORKERS="0")  # the test drains, so it chooses the order
    client = redis.Redis.from_url(REDIS_TEST_URL)
    journal = redis_journal(client)

    def entries() -> list:
        return [decode(i.decode(), f[b"e"]) for i, f in client.xrange(journal.key)]

    first = WorkerProcess("fault_app", env, tmp_path / "first.log", threads=2)
    try:
        first.wait_ready()
        root_id = send_root(sender, "fault_parent", "fault_dies_running", str(mark))

        def child_started() -> list:
            return [e for e in entries() if e.row["status"] == "running" and e.row["parent_job_id"] == root_id]

        [stale] = wait_for(child_started, timeout=60, interval=0.05)
        # What the worker's drainer thread would have read before the kill: it stays pending under that name.
        read = [e.id for e in journal.read("killed-worker:1", 100, 0)]
        assert stale.id in read  # with the root's end and the child's queued row
    finally:
        first.kill()
    assert mark.exists()
    child_id = stale.row["job_id"]

    drainer = Drainer(journal, pg_db, claim_idle=3600)  # applies new entries, claims none
    second = WorkerProcess("fault_app", env, tmp_path / "second.log", threads=2)
    try:
        second.wait_ready()
        wait_for(all_acked, timeout=60, interval=0.1)

        def applied() -> bool:
            drainer.drain_once(block_ms=0)
            row = row_of(child_id)
            return row is not None and row.status == "success"

        wait_for(applied, timeout=30, interval=0.05)
    finally:
        second.stop()
        drainer.stop(timeout=0)
    [pending] = client.xpending(journal.key, GROUP)["consumers"]
    assert (pending["name"].decode(), pending["pending"]) == ("killed-worker:1", len(read))  # still to come

    late = Drainer(journal, pg_db, claim_idle=0.01)
    try:
        wait_for(lambda: late.drain_once(block_ms=0) or journal.oldest_id() is None, timeout=30, interval=0.05)
    finally:
        late.stop(timeout=0)
    assert journal.oldest_id() is None  # applied (and so deleted)
    child, root = row_of(child_id), row_of(root_id)
    assert (child.status, child.last_error) == ("success", None)
    assert child.attempt_started_ms > stale.row["attempt_started_ms"]
    assert (root.status, root.failed_children) == ("success", 0)
    assert not_final() == []
