"""The whole app under `dramatiq workers.worker` (2 processes), real Redis, real PostgreSQL, the fake upstream."""

from __future__ import annotations

import subprocess

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from models import Album, EnrichmentLog, Track

from app_harness import add_album
from linking_harness import wait_for
from process_harness import WorkerProcess, procfile_command, shell_env
from services import REDIS_TEST_URL

pytestmark = pytest.mark.slow


@pytest.fixture
def workers_running(pg_db, pg_url, fake, tmp_path):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    env = {
        **fake.env(cloudflare=False),
        "REDIS_URL": REDIS_TEST_URL,
        "DATABASE_URL": pg_url,
        "COVERART_URL": fake.url + "/coverartarchive",
        "IMAGE_CACHE_DIR": str(tmp_path / "images"),
        "DISCOGS_MIN_INTERVAL": "0.05",
        "RETRY_MIN_BACKOFF_MS": "100",
    }
    env.pop("MUSICBRAINZ_MIN_INTERVAL", None)  # the production spacing: 1 request per second
    # Started with the Procfile's own worker line, as a deployment would.
    env.update(WORKER_PROCESSES="2", WORKER_THREADS="4")
    worker = WorkerProcess("workers.worker", env, tmp_path / "workers.log", command=procfile_command("worker"))
    worker.wait_ready(processes=2)
    sender = RedisBroker(url=REDIS_TEST_URL)
    yield sender, worker
    worker.stop()
    sender.close()


def test_the_procfile_release_line_migrates_a_new_database(fresh_database_url, tmp_path):
    import subprocess

    command = procfile_command("release")
    for run in ("first", "second"):  # a release runs on every deploy: the second one must be harmless
        result = subprocess.run(["bash", "-c", command], env=shell_env({"DATABASE_URL": fresh_database_url}),
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (run, result.stdout, result.stderr)
    from migrations import pending_migrations
    from models import bind_database

    db = bind_database(fresh_database_url)
    try:
        assert pending_migrations(db) == []
        assert EnrichmentLog.select().count() == 0
    finally:
        db.close()


def send_root(broker, actor_name: str, *args) -> str:
    message = dramatiq.Message(queue_name="default", actor_name=actor_name, args=args, kwargs={},
                               options={"triggered_by": "test"})
    broker.enqueue(message)
    return message.message_id


def all_acked() -> bool:
    """Every message, delayed retries included, processed and acked (rows are in the journal before the ack)."""
    r = redis.Redis.from_url(REDIS_TEST_URL)
    return r.hlen("dramatiq:default.msgs") == 0 and r.hlen("dramatiq:default.DQ.msgs") == 0


def test_two_albums_through_worker_processes_with_the_musicbrainz_limit(workers_running, fake):
    broker, worker = workers_running
    fake.reset_requests()
    albums = [add_album("Homogenic", ["Björk"]), add_album("Dummy", ["Portishead"])]
    roots = [send_root(broker, "check_album_enrichment", str(a.id), "test") for a in albums]
    wait_for(all_acked, timeout=120, interval=0.2)
    # The rows reach the database from the job-log journal, a moment after the acks.
    wait_for(lambda: not EnrichmentLog.select().where(
        EnrichmentLog.status.in_(("queued", "running", "retrying"))).exists(), timeout=30, interval=0.1)

    for root_id, album in zip(roots, albums):
        root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
        assert root.is_root_job and root.status == "success", (root.status, root.last_error)
        children = list(EnrichmentLog.select().where(EnrichmentLog.parent_job_id == root_id))
        ops = {r.operation for r in children}
        assert {"enrichment:album", "check:artist-enrichment", "enrichment:artist", "cache:album-cover-art"} <= ops
        assert all(r.status == "success" for r in children), [(r.operation, r.status, r.last_error) for r in children]
        assert Track.select().where(Track.album == album).count() == Album.get_by_id(album.id).track_count > 0
    assert EnrichmentLog.select().where(EnrichmentLog.job_id.is_null()).count() == 0

    starts = sorted(r["monotonic"] for r in fake.requests(service="musicbrainz"))
    assert len(starts) >= 8
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 1.0, f"MusicBrainz saw two requests {min(gaps):.3f} s apart"


def test_the_old_dramatiq_workers_command_refuses_in_one_line(tmp_path):
    # `dramatiq workers` used to load the app; now it would run workers with no actor at all.
    env = shell_env({"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    done = subprocess.run("dramatiq workers --processes 1 --threads 1", shell=True,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "enrich: `dramatiq workers` is now `dramatiq workers.worker`" in done.stderr
