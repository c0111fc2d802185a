"""Every job visible from the moment it is sent, through real `dramatiq` worker processes, Redis and PostgreSQL:
queued -> running -> complete (``--follow`` and ``--wait`` end there), a delayed message queued until due,
and a Redis restarted without persistence in the middle of 20 trees: the lost jobs end ``lost``, their
roots ``degraded``, and ``enrich resend --tree`` completes them.

The sweeper's grace and interval are set low (LOST_WORK_GRACE_SECONDS, LOST_WORK_SWEEP_SECONDS); the
worker processes run it from their daemon thread, one sweep per interval across both (a Redis lock).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from middleware import JobLinking
from models import EnrichmentLog
from models.timeline import get_tree, list_roots

from app_harness import add_album
from linking_harness import wait_for
from process_harness import ROOT, WorkerProcess, shell_env
from services import REDIS_TEST_URL, restart_redis

pytestmark = pytest.mark.slow

Log = EnrichmentLog
PENDING = ("queued", "running", "retrying")


@pytest.fixture
def sender():
    """The test's producer: a Redis broker with JobLinking, so its sends get queued rows (as the CLI's do)."""
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    from tree_actors import declare

    broker = RedisBroker(url=REDIS_TEST_URL)
    linking = JobLinking()
    broker.add_middleware(linking)
    tree_root, tree_leaf = declare(broker)
    broker.tree_root, broker.tree_leaf = tree_root, tree_leaf
    broker.linking = linking
    yield broker
    linking.job_log.stop()
    broker.close()


def env_for(pg_url: str, **extra) -> dict:
    # JOB_LOG_LINES=all: a test tells the jobs that ran by their "job started" lines.
    return {"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url, "RETRY_MIN_BACKOFF_MS": "100",
            "RETRY_MAX_BACKOFF_MS": "300", "JOB_LOG_LINES": "all", **extra}


def upstream_env(fake, tmp_path: Path) -> dict:  # noqa: F811
    return {**fake.env(cloudflare=False), "COVERART_URL": fake.url + "/coverartarchive",
            "IMAGE_CACHE_DIR": str(tmp_path / "images"), "MUSICBRAINZ_MIN_INTERVAL": "0.02",
            "DISCOGS_MIN_INTERVAL": "0.02"}


# The enrich command with the test's tree actors declared too (resend refuses an actor it does not know).
ENRICH_WITH_TREE_ACTORS = "import sys, lifecycle_app; from workers.cli import main; sys.exit(main())"


def enrich(pg_url: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ENRICH_WITH_TREE_ACTORS, *args], env=shell_env(env_for(pg_url)),
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def pending_rows() -> list[tuple]:
    return list(Log.select(Log.job_id, Log.operation, Log.status).where(Log.status.in_(PENDING)).tuples())


def wait_until_none_pending(timeout: float) -> None:
    try:
        wait_for(lambda: not pending_rows(), timeout=timeout, interval=0.5)
    except AssertionError:
        raise AssertionError(f"rows still pending: {pending_rows()}") from None


@pytest.mark.timeout(180, method="signal")
def test_a_tree_is_queued_then_runs_then_completes_and_follow_and_wait_end_there(
        pg_db, pg_url, sender, fake, tmp_path):  # noqa: F811
    root = sender.tree_root.send(4, 0.3)
    # No worker yet, so no drainer: the queued row waits in the journal until one applies it (here, the test's).
    assert not Log.select().where(Log.job_id == root.message_id).exists()
    assert sender.linking.job_log.bind(sender).drainer.flush(15)
    row = Log.get(Log.job_id == root.message_id)
    assert row.status == "queued"
    shown = json.loads(enrich(pg_url, "timeline", root.message_id, "--json").stdout)
    assert (shown["complete"], shown["pending"]) == (False, {"queued": 1})

    env = env_for(pg_url, **upstream_env(fake, tmp_path))
    worker = WorkerProcess("lifecycle_app", env, tmp_path / "worker.log", processes=1, threads=2)
    try:
        follow = subprocess.Popen([sys.executable, "-m", "workers.cli", "timeline", root.message_id, "--follow"],
                                  env=shell_env(env_for(pg_url)), cwd=ROOT, stdout=subprocess.PIPE, text=True)
        worker.wait_ready()
        seen = set()
        wait_for(lambda: seen.update(s for (s,) in Log.select(Log.status).tuples()) or "running" in seen,
                 timeout=30, interval=0.02)
        out, _ = follow.communicate(timeout=60)  # --follow returns by itself once the tree is complete
        assert follow.returncode == 0
        last_head = [line for line in out.splitlines() if line.startswith(root.message_id)][-1]
        assert "complete" in last_head and "pending" not in last_head, out
        tree = get_tree(root.message_id)
        assert tree.complete and tree.completed_at is not None and len(tree.items) == 5
        assert all(item.status == "success" for item in tree.items)
        page = list_roots()
        assert page.roots[0].complete and page.roots[0].pending == {}
        roots_json = json.loads(enrich(pg_url, "roots", "--json").stdout)["roots"][0]
        assert roots_json["complete"] is True and roots_json["tree_completed_at"] is not None

        # enrich album --wait: the CLI's own send (a queued root), then it waits for the whole album tree.
        album = add_album("Dummy", ["Portishead"])
        waited = enrich(pg_url, "album", str(album.id), "--wait", "--timeout", "90")
        assert waited.returncode == 0, waited.stdout + waited.stderr
        job_id = waited.stdout.splitlines()[0]
        head = [line for line in waited.stdout.splitlines() if line.startswith(job_id) and "jobs" in line]
        assert head and "complete" in head[0], waited.stdout
        final = get_tree(job_id)
        assert final.complete and final.root.status == "success"
        assert {"enrichment:album", "enrichment:artist"} <= {item.operation for item in final.items}
        # A tree that ends degraded makes --wait exit 2, as enrich run does.
        fake.fail("/musicbrainz/ws/2/artist", "status", status=400, times=None)
        degraded = enrich(pg_url, "album", str(add_album("Mezzanine", ["Massive Attack"]).id), "--wait")
        assert degraded.returncode == 2, degraded.stdout + degraded.stderr
        assert "did not end well (1 degraded)" in degraded.stderr
    finally:
        worker.stop()


@pytest.mark.timeout(120, method="signal")
def test_a_delayed_message_stays_queued_until_due_and_is_not_swept(pg_db, pg_url, sender, tmp_path):
    # A grace of 3 s: past it for a message sent without a delay by the check at 4 s, and
    # longer than a loaded worker may take to run the job once due and drain its row (see the
    # README's note on the sweep and the journal's lag).
    env = env_for(pg_url, LOST_WORK_GRACE_SECONDS="3", LOST_WORK_SWEEP_SECONDS="0.5")
    worker = WorkerProcess("lifecycle_app", env, tmp_path / "worker.log", processes=1, threads=2)
    try:
        worker.wait_ready()
        delayed = sender.tree_leaf.send_with_options(args=(0.01,), delay=6000)
        time.sleep(4)  # several sweeps, each past the grace of a message sent without a delay
        row = Log.get(Log.job_id == delayed.message_id)
        assert row.status == "queued" and row.due_at > row.enqueued_at
        wait_for(lambda: Log.get(Log.job_id == delayed.message_id).status == "success", timeout=30)
    finally:
        worker.stop()
    assert "job marked lost" not in worker.log_path.read_text()


def _started(log: Path) -> set[str]:
    started = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("message") == "job started":
                started.add(entry["job_id"])
    return started


@pytest.mark.timeout(300, method="signal")
def test_redis_restart_in_the_middle_of_20_trees_lost_jobs_end_lost_and_resend_completes_them(
        pg_db, pg_url, sender, tmp_path):
    env = env_for(pg_url, LOST_WORK_GRACE_SECONDS="12", LOST_WORK_SWEEP_SECONDS="1")
    worker = WorkerProcess("lifecycle_app", env, tmp_path / "workers.log", processes=2, threads=4)
    try:
        worker.wait_ready(processes=2)
        roots = [sender.tree_root.send(6, 0.3).message_id for _ in range(20)]
        wait_for(lambda: Log.select().where(Log.status == "success").count() >= 30, timeout=60, interval=0.05)
        restart_redis(down_for=1.0)
        # The workers finish what they hold, then the sweeper finds the rest gone: nothing stays pending.
        wait_until_none_pending(timeout=120)
        rows = {r.job_id: r for r in Log.select()}
        started = _started(worker.log_path)
        lost = [r for r in rows.values() if r.status == "lost"]
        assert lost, "the restart lost nothing: no lost job to look at"
        print(f"{len(rows)} rows after the restart; {len(lost)} lost:",
              sorted((r.operation, r.retry_count) for r in lost))
        for row in lost:
            assert row.error_code == "message_lost" and "not found in Redis" in row.last_error
            # Never ran (or its retry never did); or it ran and its end, not yet drained, went with Redis.
            assert (row.job_id not in started or row.retry_count > 0
                    or row.last_error.startswith("started, but its end was never recorded")), row.last_error
            root = rows[row.parent_job_id] if row.parent_job_id else row
            # Never a good status: degraded by the loss, or lost or failed itself (a root whose
            # own sends or retry met the Redis restart fails with its own error).
            assert root.status in ("degraded", "lost", "failed"), (root.job_id, root.status)
            assert root.status != "failed" or root.error_code, (root.job_id, root.error_code)
        for root_id in roots:
            root, tree = rows[root_id], get_tree(root_id)
            assert tree.complete
            if root.status == "success":  # no success it did not have: all six leaves there, and done
                leaves = [r for r in rows.values() if r.parent_job_id == root_id]
                assert len(leaves) == 6 and all(r.status == "success" for r in leaves), root_id

        not_well = [r for r in roots if rows[r].status != "success"]
        for root_id in not_well:
            sent = enrich(pg_url, "resend", "--tree", root_id)
            assert sent.returncode == 0, sent.stderr
            assert sent.stdout.split()
        wait_until_none_pending(timeout=120)
    finally:
        worker.stop()
    rows = {r.job_id: r for r in Log.select()}
    for root_id in roots:
        root = rows[root_id]
        leaves = [r for r in rows.values() if r.parent_job_id == root_id]
        assert root.status == "success", (root_id, root.status, [(r.status, r.error_code) for r in leaves])
        assert len([r for r in leaves if r.status == "success"]) >= 6
        assert all(r.status == "success" for r in leaves)
    assert sum(1 for r in rows.values() if r.status == "lost") == 0
