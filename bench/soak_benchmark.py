"""Soak: two `dramatiq workers.worker` processes enrich 1,000 albums through the fake upstream for 10 minutes.

    .venv/bin/python bench/soak_benchmark.py [--minutes 10] [--albums 1000]

Creates a PostgreSQL database of its own and 1,000 albums that cycle over the
fake upstream's sample albums and artists, each with a unique title
("Dummy 17") that MusicBrainz searches still match (the fake scores a title
that contains the sample's at 80).  Only the first album of each release
group gets its MusicBrainz id (an id belongs to one album); the others are
enriched all the same.  Then it runs ``dramatiq workers.worker --processes 2
--threads 8`` (the real app) against the fake upstream served from this
process, sends one check per album (``check_album_enrichment``), and keeps
re-sending forced checks round-robin, topping the queue up whenever fewer
than ``--queue-depth`` messages wait, until the time is up; then it waits for
the queue to drain and prints:

* jobs per second, and p50/p95 job latency (``completed_at - enqueued_at``
  of the rows) and tree latency (a root's enqueue to its last job's end);
* each worker process's resident memory (VmRSS, peak VmHWM) when ready,
  after the warm-up and at the end, flagging growth beyond 10 % after warm-up;
* open connections to the benchmark database (``pg_stat_activity``);
* rows in each status against the jobs sent (roots by this script, every
  job as the worker log's ``job started`` lines).

MusicBrainz and Discogs spacing are set to ``--spacing`` (5 ms): the fake is
local; the production spacing (1.1 s) would make this a rate-limit test.
The database, the Redis database (``BENCH_REDIS_URL``, default 12) and the
image cache are removed at the end; ``--keep-log`` keeps the worker log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Importing the fake upstream imports the app package, which configures logging from the
# environment: keep this process's own log quiet (the workers get the production level).
os.environ.setdefault("LOG_LEVEL", "WARNING")

import dramatiq  # noqa: E402
import psycopg2  # noqa: E402
import redis  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402

from bench import postgres_admin  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
PG_ADMIN = os.environ.get("BENCH_POSTGRES_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
QUEUE = "dramatiq:default"


def admin(sql: str, params=None, fetch: bool = False):
    return postgres_admin.admin(PG_ADMIN, sql, params, fetch=fetch)


def open_connections(db_name: str) -> int:
    return admin("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db_name,), fetch=True)[0][0]


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def child_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(p) for p in f.read().split())


def create_albums(catalog, count: int) -> list[str]:
    """``count`` albums cycling over the sample release groups, each credited to its sample artist."""
    from models import Album, AlbumArtist, Artist, database
    from models.base import utcnow

    groups = sorted(catalog.release_groups.values(), key=lambda g: g["title"])
    artists = {}
    album_rows, credit_rows = [], []
    now = utcnow()
    for n in range(count):
        group = groups[n % len(groups)]
        name = group["artist-credit"][0]["name"]
        if name not in artists:
            artists[name] = Artist.create(name=name).id
        album_id = uuid.uuid4()
        album_rows.append({"id": album_id, "title": f"{group['title']} {n + 1}", "created_at": now, "updated_at": now})
        credit_rows.append({"id": uuid.uuid4(), "album": album_id, "artist": artists[name], "position": 0,
                            "created_at": now, "updated_at": now})
    with database.atomic():
        for start in range(0, count, 500):
            Album.insert_many(album_rows[start:start + 500]).execute()
            AlbumArtist.insert_many(credit_rows[start:start + 500]).execute()
    return [str(row["id"]) for row in album_rows]


JOB_LATENCY = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.95) WITHIN GROUP (ORDER BY s), max(s), count(*)
FROM (SELECT extract(epoch FROM completed_at - enqueued_at) AS s FROM enrichment_logs
      WHERE completed_at IS NOT NULL AND enqueued_at IS NOT NULL) AS t
"""
TREE_LATENCY = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.95) WITHIN GROUP (ORDER BY s), max(s), count(*)
FROM (SELECT extract(epoch FROM max(completed_at) - min(enqueued_at)) AS s FROM enrichment_logs
      GROUP BY coalesce(parent_job_id, job_id)) AS t
"""


def started_job_ids(log_path: str) -> set[str]:
    import json

    ids = set()
    with open(log_path, errors="replace") as log:
        for line in log:
            if '"job started"' not in line:
                continue
            try:
                ids.add(json.loads(line)["job_id"])
            except (ValueError, KeyError):
                pass
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to keep sending checks (default 10)")
    parser.add_argument("--albums", type=int, default=1000, help="albums in the catalog (default 1000)")
    parser.add_argument("--queue-depth", type=int, default=64,
                        help="top the queue up with forced checks when fewer messages wait (default 64)")
    parser.add_argument("--spacing", type=float, default=0.005,
                        help="MUSICBRAINZ_MIN_INTERVAL and DISCOGS_MIN_INTERVAL, seconds (default 0.005)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the 'after warm-up' memory reading")
    parser.add_argument("--keep-log", action="store_true", help="keep the worker log (its path is printed)")
    args = parser.parse_args()

    from migrations import apply_migrations
    from models import bind_database, database
    from workers.fake_upstream import FakeUpstream

    db_name = f"enrich_soak_{uuid.uuid4().hex[:8]}"
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db_name
    scratch = tempfile.mkdtemp(prefix="enrich-soak-")
    log_path = os.path.join(scratch, "workers.log")
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    admin(f'CREATE DATABASE "{db_name}"')
    fake = FakeUpstream().start()
    worker = None
    sender = RedisBroker(url=REDIS_URL)
    failed = False
    try:
        apply_migrations(bind_database(db_url))
        album_ids = create_albums(fake.state.catalog, args.albums)
        database.obj.close_all()  # a pooled connection would stay open (and be counted below)
        env = dict(
            os.environ,
            **fake.env(cloudflare=False),
            REDIS_URL=REDIS_URL,
            DATABASE_URL=db_url,
            COVERART_URL=fake.url + "/coverartarchive",
            IMAGE_CACHE_DIR=os.path.join(scratch, "images"),
            MUSICBRAINZ_MIN_INTERVAL=str(args.spacing),
            DISCOGS_MIN_INTERVAL=str(args.spacing),
            PYTHONPATH=ROOT,
        )
        for name in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "LOG_LEVEL", "LOG_FORMAT"):
            env.pop(name, None)
        print(f"soak: {args.albums} albums, 2 worker processes x 8 threads, {args.minutes:g} min of checks; "
              f"fake upstream (SAMPLE DATA) at {fake.url}; MusicBrainz/Discogs spacing {args.spacing * 1000:g} ms "
              f"(the fake is local; production spacing is 1.1 s / 1.05 s)", flush=True)
        with open(log_path, "w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "dramatiq", "workers.worker", "--processes", "2", "--threads", "8", "--skip-logging"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while open(log_path, errors="replace").read().count("ready for action") < 2:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not start; see {log_path}")
            time.sleep(0.05)
        pids = child_pids(worker.pid)
        mem_ready = {pid: memory(pid) for pid in pids}

        roots_sent = 0
        started = time.monotonic()
        stop_sending = started + args.minutes * 60
        mem_warm = conns_warm = None
        conns_max = 0
        next_sample = started
        next_report = started + 60
        last_report = (started, 0)
        while time.monotonic() < stop_sending:
            if r.llen(QUEUE) < args.queue_depth:
                for _ in range(args.queue_depth):
                    album_id = album_ids[roots_sent % len(album_ids)]
                    force = roots_sent >= len(album_ids)  # the first pass checks; later passes force
                    sender.enqueue(dramatiq.Message(queue_name="default", actor_name="check_album_enrichment",
                                                    args=(album_id, "soak", force), kwargs={},
                                                    options={"triggered_by": "soak"}))
                    roots_sent += 1
            now = time.monotonic()
            if now >= next_sample:
                conns_max = max(conns_max, open_connections(db_name))
                next_sample = now + 5
                if mem_warm is None and now - started >= min(args.warmup, args.minutes * 60 / 2):
                    mem_warm = {pid: memory(pid) for pid in pids}
                    conns_warm = open_connections(db_name)
            if now >= next_report:
                rows = admin_count(db_name)
                rate = (rows - last_report[1]) / (now - last_report[0])
                print(f"  {now - started:6.0f} s  roots sent {roots_sent:7d}  rows {rows:8d}  "
                      f"({rate:.1f} rows/s in the last minute)", flush=True)
                last_report = (now, rows)
                next_report = now + 60
            time.sleep(0.05)
        sending_seconds = time.monotonic() - started

        drain_deadline = time.monotonic() + 600
        while r.hlen(QUEUE + ".msgs") or r.hlen(QUEUE + ".DQ.msgs"):
            if time.monotonic() > drain_deadline:
                raise RuntimeError("the queue did not drain within 10 minutes")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        mem_end = {pid: memory(pid) for pid in pids}
        conns_end = open_connections(db_name)
        conns_max = max(conns_max, conns_end)

        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(120)

        statuses = dict(admin_query(db_name, "SELECT status, count(*) FROM enrichment_logs GROUP BY status ORDER BY 2 DESC"))
        by_operation = admin_query(db_name, "SELECT operation, status, count(*) FROM enrichment_logs GROUP BY 1, 2 ORDER BY 1, 2")
        root_rows = admin_query(db_name, "SELECT count(*) FROM enrichment_logs WHERE is_root_job")[0][0]
        total_rows = sum(statuses.values())
        job_p50, job_p95, job_max, _ = admin_query(db_name, JOB_LATENCY)[0]
        tree_p50, tree_p95, tree_max, trees = admin_query(db_name, TREE_LATENCY)[0]
        started_ids = started_job_ids(log_path)
        duplicate_rows = admin_query(db_name, "SELECT count(*) - count(DISTINCT job_id) FROM enrichment_logs")[0][0]
        enriched = admin_query(db_name, "SELECT count(*) FILTER (WHERE last_enriched_at IS NOT NULL), "
                                        "count(*) FILTER (WHERE musicbrainz_id IS NOT NULL), count(*) FROM albums")[0]
        tracks = admin_query(db_name, "SELECT count(*), count(DISTINCT album_id) FROM tracks")[0]
        unsaved = sum(1 for line in open(log_path, errors="replace") if "could not be saved" in line)

        print()
        print(f"ran {sending_seconds / 60:.1f} min sending + {elapsed - sending_seconds:.1f} s draining")
        print(f"throughput      {total_rows / elapsed:8.1f} jobs/s  ({total_rows} jobs, {trees} trees in {elapsed:.0f} s; "
              f"{trees / elapsed:.1f} trees/s)")
        print(f"(latency includes the wait in the queue, which is topped up whenever fewer than {args.queue_depth} "
              f"messages wait; the fake upstream runs in this process, on the same {os.cpu_count()} cores)")
        print(f"job latency     p50 {job_p50:.3f} s   p95 {job_p95:.3f} s   max {job_max:.3f} s   (completed_at - enqueued_at)")
        print(f"tree latency    p50 {tree_p50:.3f} s   p95 {tree_p95:.3f} s   max {tree_max:.3f} s"
              "   (root enqueued -> last job done)")
        print("worker memory (kB)       VmRSS ready   VmRSS warm    VmRSS end   VmHWM warm    VmHWM end   growth after warm-up")
        for pid in pids:
            warm = mem_warm[pid] if mem_warm else mem_ready[pid]
            growth = (mem_end[pid]["VmRSS"] - warm["VmRSS"]) / warm["VmRSS"] * 100
            hwm_growth = (mem_end[pid]["VmHWM"] - warm["VmHWM"]) / warm["VmHWM"] * 100
            flag = "  <-- grew more than 10 %" if max(growth, hwm_growth) > 10 else ""
            print(f"  pid {pid:<8}       {mem_ready[pid]['VmRSS']:>11} {warm['VmRSS']:>12} {mem_end[pid]['VmRSS']:>12} "
                  f"{warm['VmHWM']:>12} {mem_end[pid]['VmHWM']:>12}   RSS {growth:+.1f} %, HWM {hwm_growth:+.1f} %{flag}")
        print(f"db connections  after warm-up {conns_warm}   end {conns_end}   max sampled {conns_max}   "
              f"(pg_stat_activity for {db_name}; the benchmark holds none)")
        print(f"jobs sent       {roots_sent} roots by the benchmark ({root_rows} root rows); "
              f"{len(started_ids)} distinct jobs started per the worker log; {total_rows} rows "
              f"({duplicate_rows} duplicate job ids, {unsaved} rows logged as unsaved)")
        print("rows by status  " + "   ".join(f"{status} {count}" for status, count in statuses.items()))
        width = max(len(op) for op, _, _ in by_operation)
        per_op: dict[str, Counter] = {}
        for operation, status, count in by_operation:
            per_op.setdefault(operation, Counter())[status] = count
        for operation, counts in per_op.items():
            print(f"  {operation:<{width}}  " + "  ".join(f"{s} {c}" for s, c in sorted(counts.items())))
        print(f"catalog         {enriched[0]} of {enriched[2]} albums enriched, {enriched[1]} with a MusicBrainz id "
              f"(one album per sample release group can hold it); {tracks[0]} tracks on {tracks[1]} albums")
        lost = roots_sent - root_rows
        missing = len(started_ids - set(admin_column(db_name, "SELECT job_id FROM enrichment_logs")))
        not_final = statuses.get("running", 0) + statuses.get("retrying", 0)
        print(f"check           {'OK' if lost == 0 and missing == 0 and not_final == 0 and not duplicate_rows else 'PROBLEM'}: "
              f"{lost} roots without a row, {missing} started jobs without a row, {not_final} rows not final")
    except BaseException:
        failed = True
        raise
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
        sender.close()
        fake.stop()
        if database.obj is not None:
            database.obj.close_all()
        admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        r.flushdb()
        if args.keep_log or failed:
            print(f"worker log kept: {log_path}", file=sys.stderr)
            shutil.rmtree(os.path.join(scratch, "images"), ignore_errors=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def admin_query(db_name: str, sql: str) -> list[tuple]:
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db_name
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def admin_column(db_name: str, sql: str) -> list:
    return [row[0] for row in admin_query(db_name, sql)]


def admin_count(db_name: str) -> int:
    return admin_query(db_name, "SELECT count(*) FROM enrichment_logs")[0][0]


if __name__ == "__main__":
    sys.exit(main())
