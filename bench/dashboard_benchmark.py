"""Is the web dashboard fast on a big job log? Server time per page, p50/p95, on PostgreSQL.

Uses the timeline benchmark's data (``--trees`` trees of 10 rows, 10,000,000
rows by default; built by ``bench.timeline_benchmark`` when not kept from an
earlier run) and adds what the dashboard also reads: an album for every
album id the trees name (200,000) and an artist for the artist ids of the
first ``--artists`` trees' jobs, all with generated titles and names, plus
one tree of 1,000 jobs.  Migration 0010's trigram indexes are built on them.

The app is called in-process through ASGI; "server time" is from the
request entering the app to the last byte of its answer (no network).  The
pages are timed interleaved, in 3 rounds; every round is printed, then the
median of the rounds.  Targets: roots page and /api/roots p95 < 50 ms, a
tree of 1,000 jobs (with what it changed) < 150 ms, the text search and the field history of an album touched
by 1,000 trees p95 < 100 ms, the roots page
with its script and style < 100 KB.

    .venv/bin/python -m bench.dashboard_benchmark [--trees 1000000] [--calls 100] [--admin-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

import httpx

from bench.backfill_benchmark import ADMIN_URL, create_database, database_url, drop_database, p50_p95
from bench.timeline_benchmark import DEFAULT_DATABASE, load, loaded_trees
from dashboard import create_app
from migrations import apply_migrations
from models import Settings, bind_database
from models.timeline import encode_cursor

ROUNDS = 3
BIG_TREE = "bench-tree-of-1000-jobs"

# Albums named after the trees' album ids (md5('e' || m), m < 200,000), artists after the artist
# jobs' ids (md5('e' || n), n = 10t + 2, 4, 8); titles and names are two made-up words.
LOAD_CATALOG = """
INSERT INTO albums (id, title, data_quality, enrichment_status, genres, secondary_types, created_at, updated_at)
SELECT md5('e' || m)::uuid, initcap(substr(md5('a' || m), 1, 7) || ' ' || substr(md5('b' || m), 1, 5)),
       'low', 'completed', '[]', '[]', now(), now()
FROM generate_series(0, 199999) AS m;
INSERT INTO artists (id, name, data_quality, enrichment_status, genres, created_at, updated_at)
SELECT md5('e' || n)::uuid, initcap(substr(md5('n' || n), 1, 6) || ' ' || substr(md5('s' || n), 1, 8)),
       'low', 'completed', '[]', now(), now()
FROM generate_series(0, %s - 1) AS t, unnest(ARRAY[2, 4, 8]) AS k, LATERAL (SELECT 10 * t + k) AS x(n);
"""

LOAD_BIG_TREE = """
INSERT INTO enrichment_logs (id, job_id, parent_job_id, is_root_job, operation, entity_type, entity_id, status,
    reason, sources, fields_enriched, api_call_count, retry_count, failed_children, enqueued_at, started_at,
    completed_at, duration_ms, details, created_at, updated_at)
SELECT md5('big' || k)::uuid, CASE WHEN k = 0 THEN %s ELSE md5('bigjob' || k)::uuid::text END,
       CASE WHEN k > 0 THEN %s END, k = 0,
       CASE WHEN k = 0 THEN 'spotify:sync-new-releases' ELSE 'check:album-enrichment' END,
       'album', md5('e' || mod(k, 200000))::uuid, CASE WHEN mod(k, 97) = 0 THEN 'failed' ELSE 'success' END,
       'bench', '["spotify"]', '["genres"]', 1, mod(k, 3), 0,
       now() - interval '1 hour' + k * interval '40 ms', now() - interval '1 hour' + k * interval '50 ms',
       now() - interval '1 hour' + k * interval '50 ms' + interval '300 ms', 300,
       json_build_object('n', 1, 'field_changes', json_build_array(json_build_object(
           'field', 'genres', 'before', json_build_array('rock'), 'after', json_build_array('rock', 'pop')))),
       now() - interval '1 hour' + k * interval '40 ms', now()
FROM generate_series(0, 999) AS k
"""


# One album touched by 1,000 trees, a day apart: each a check (no change), the album job (MusicBrainz
# release; 3 fields), the Spotify fallback (2 fields, its release date one day off: the sources
# disagree), the cover cache (1 field) and two jobs of the album's artist.  And 1,000,000 rows that
# changed a field of the 200,000 other albums (5 each), so that the index of changing rows is big too.
HISTORY_ALBUM = "6b1d0000-0000-4000-8000-00000000b1d0"
LOAD_HISTORY = """
INSERT INTO albums (id, title, data_quality, enrichment_status, genres, secondary_types, created_at, updated_at)
VALUES (%(album)s, 'Touched A Thousand Times', 'high', 'completed', '[]', '[]', now(), now());
INSERT INTO enrichment_logs (id, job_id, parent_job_id, is_root_job, operation, entity_type, entity_id, status,
    sources, fields_enriched, api_call_count, retry_count, failed_children, enqueued_at, started_at,
    completed_at, duration_ms, details, created_at, updated_at)
SELECT md5('hist' || t || '-' || k)::uuid, md5('histjob' || t || '-' || k)::uuid::text,
       CASE WHEN k > 0 THEN md5('histjob' || t || '-0')::uuid::text END, k = 0,
       (ARRAY['check:album-enrichment', 'enrichment:album', 'spotify:track-fallback', 'cache:album-cover-art',
              'check:artist-enrichment', 'enrichment:artist'])[k + 1],
       CASE WHEN k < 4 THEN 'album' ELSE 'artist' END,
       CASE WHEN k < 4 THEN %(album)s::uuid ELSE md5('histartist')::uuid END, 'success', '[]',
       (ARRAY['[]', '["release_date", "genres", "data_quality"]', '["release_date", "track_count"]',
              '["cached_image_path"]', '[]', '["genres"]'])[k + 1]::json, 1, 0, 0,
       day + k * interval '1 s', day + k * interval '1 s' + interval '40 ms', day + k * interval '1 s' + interval '300 ms',
       260,
       CASE k WHEN 1 THEN json_build_object('release_id', md5('rel' || t)::uuid, 'field_changes', json_build_array(
                  json_build_object('field', 'release_date', 'before', '1997-06-1' || mod(t, 10), 'after', '1997-06-16'),
                  json_build_object('field', 'genres', 'before', json_build_array('rock'),
                                    'after', json_build_array('rock', 'art rock')),
                  json_build_object('field', 'data_quality', 'before', 'medium', 'after', 'high')))
              WHEN 2 THEN json_build_object('spotify_album_id', '6dVIqQ8qmQ5GBnJ9shOYGE', 'field_changes', json_build_array(
                  json_build_object('field', 'release_date', 'before', '1997-06-16', 'after', '1997-06-1' || mod(t, 10)),
                  json_build_object('field', 'track_count', 'before', 11, 'after', 12)))
              WHEN 3 THEN json_build_object('source_url', 'https://coverartarchive.org/release/' || md5('rel' || t),
                  'field_changes', json_build_array(json_build_object('field', 'cached_image_path', 'before', null,
                                                                      'after', '/cache/' || md5('img' || t))))
              ELSE '{"decision": "enrich"}'::json END,
       day + k * interval '1 s', now()
FROM generate_series(0, 999) AS t, generate_series(0, 5) AS k,
     LATERAL (SELECT timestamp '2024-01-01' + t * interval '1 day') AS d(day);
INSERT INTO enrichment_logs (id, job_id, parent_job_id, is_root_job, operation, entity_type, entity_id, status,
    sources, fields_enriched, api_call_count, retry_count, failed_children, started_at, completed_at, details,
    created_at, updated_at)
SELECT md5('chg' || n)::uuid, md5('chgjob' || n)::uuid::text, md5('j' || (10 * (n / 5)))::uuid::text, false,
       'enrichment:album', 'album', md5('e' || mod(n, 200000))::uuid, 'success', '["musicbrainz"]',
       '["genres"]', 1, 0, 0, start, start + interval '300 ms',
       json_build_object('release_id', md5('rel' || n)::uuid, 'field_changes', json_build_array(
           json_build_object('field', 'genres', 'before', '[]'::json, 'after', json_build_array('rock')))),
       start, start
FROM generate_series(0, 999999) AS n, LATERAL (SELECT timestamp '2024-01-01' + n * interval '6 s') AS s(start);
"""


def prepare(db, args) -> None:
    """The timeline benchmark's rows (loaded unless kept), the catalog, the big tree, migration 0010."""
    if loaded_trees(args.admin_url, args.database) != args.trees:
        drop_database(args.admin_url, args.database)
        create_database(args.admin_url, args.database)
        print(f"loading {args.trees:,} trees ({args.trees * 10:,} rows) into {args.database}", flush=True)
        load(db, args.trees)
    apply_migrations(db)  # 0010 and anything newer than the kept data
    if db.execute_sql("SELECT count(*) FROM albums").fetchone()[0] == 0:
        started = time.perf_counter()
        with db.atomic():
            db.execute_sql(LOAD_CATALOG, (min(args.artists, args.trees),))
            db.execute_sql(LOAD_BIG_TREE, (BIG_TREE, BIG_TREE))
            db.execute_sql(LOAD_HISTORY, {"album": HISTORY_ALBUM})
        db.execute_sql("VACUUM ANALYZE enrichment_logs")
        db.execute_sql("VACUUM ANALYZE albums")
        db.execute_sql("VACUUM ANALYZE artists")
        print(f"  catalog and the tree of 1,000 jobs loaded in {time.perf_counter() - started:.0f} s", flush=True)


def scenarios(db, seed: int) -> dict[str, callable]:
    """Label -> a function returning the next request path for it."""
    rng = random.Random(seed)
    sample = db.execute_sql(
        "SELECT job_id, created_at, id, is_root_job FROM enrichment_logs TABLESAMPLE SYSTEM (0.2)").fetchall()
    jobs = [job for job, _, _, _ in sample if job]
    deep = [encode_cursor(created_at, row_id) for _, created_at, row_id, is_root in sample if is_root]
    titles = [t for (t,) in db.execute_sql("SELECT title FROM albums TABLESAMPLE SYSTEM (1)").fetchall()]
    names = [n for (n,) in db.execute_sql("SELECT name FROM artists TABLESAMPLE SYSTEM (0.3)").fetchall()]
    # The history's second page of 500 changing jobs (a keyset cursor, as the API gives it).
    older = db.execute_sql(
        "SELECT created_at, id FROM enrichment_logs WHERE entity_type = 'album' AND entity_id = %s "
        "AND fields_enriched::text <> '[]' ORDER BY created_at DESC, id DESC OFFSET 499 LIMIT 1",
        (HISTORY_ALBUM,)).fetchone()
    older_page = encode_cursor(*older)

    def piece(text: str) -> str:  # 4 to 6 characters of one word of a real title or name
        word = max(text.split(), key=len) if rng.random() < 0.5 else rng.choice(text.split())
        length = min(len(word), rng.randint(4, 6))
        start = rng.randint(0, len(word) - length)
        return word[start:start + length]

    return {
        "GET / (first page)": lambda: "/",
        "GET / (deep page, random cursor)": lambda: "/?cursor=" + rng.choice(deep),
        "GET /?status=degraded": lambda: "/?status=degraded",
        "GET /api/roots": lambda: "/api/roots",
        "GET /api/roots (random cursor)": lambda: "/api/roots?cursor=" + rng.choice(deep),
        "GET /?q= (album title)": lambda: "/?q=" + piece(rng.choice(titles)),
        "GET /?q= (artist name)": lambda: "/?q=" + piece(rng.choice(names)),
        "GET /trees/ (random job, 10 jobs)": lambda: "/trees/" + rng.choice(jobs),
        "GET /trees/ (1,000 jobs)": lambda: "/trees/" + BIG_TREE,
        "GET /api/.../history (1,000 trees)": lambda: f"/api/entities/album/{HISTORY_ALBUM}/history",
        "GET /api/.../history?limit=500": lambda: f"/api/entities/album/{HISTORY_ALBUM}/history?limit=500",
        "GET /api/.../history?limit=500&cursor=": lambda: (f"/api/entities/album/{HISTORY_ALBUM}/history"
                                                            f"?limit=500&cursor={older_page}"),
        "GET /api/.../history?field=": lambda: f"/api/entities/album/{HISTORY_ALBUM}/history?field=release_date",
        "GET /albums/ (1,000 trees)": lambda: f"/albums/{HISTORY_ALBUM}",
    }


class ServerTimer:
    """ASGI wrapper recording each request's time from entering the app to its last byte."""

    def __init__(self, app):
        self.app, self.last = app, 0.0

    async def __call__(self, scope, receive, send):
        started = time.perf_counter()
        await self.app(scope, receive, send)
        self.last = time.perf_counter() - started


async def run_rounds(timer: ServerTimer, cases: dict, calls: int, weigh: bool = True) -> list[dict[str, list[float]]]:
    rounds = []
    transport = httpx.ASGITransport(app=timer)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
        for path in [make() for make in cases.values() for _ in range(5)]:  # warm up
            (await web.get(path)).raise_for_status()
        for _ in range(ROUNDS):
            seconds: dict[str, list[float]] = {label: [] for label in cases}
            for _ in range(calls):  # interleaved: one call of each page in turn
                for label, make in cases.items():
                    answer = await web.get(make())
                    if answer.status_code != 200:
                        raise SystemExit(f"{label}: HTTP {answer.status_code}: {answer.text[:200]}")
                    seconds[label].append(timer.last)
            rounds.append(seconds)
        if weigh:
            weight = sum([len((await web.get(p)).content) for p in ("/", "/static/style.css", "/static/live.js")])
            verdict = "ok" if weight < 100_000 else "OVER 100 KB"
            print(f"\nroots page with its script and style: {weight / 1000:.1f} KB ({verdict})")
    return rounds


TARGETS = {"GET /trees/ (1,000 jobs)": 0.150, "GET /api/.../history (1,000 trees)": 0.100,
           "GET /api/.../history?limit=500": 0.100, "GET /api/.../history?limit=500&cursor=": 0.100,
           "GET /api/.../history?field=": 0.100,
           "GET /albums/ (1,000 trees)": 0.100, "GET /?q= (album title)": 0.100, "GET /?q= (artist name)": 0.100}


def report(rounds: list[dict[str, list[float]]], targets: dict[str, float] = TARGETS) -> None:
    """Each page's p50/p95 per round and the median p95 against its target (``targets``, else 50 ms)."""
    print(f"\nserver time, ms ({len(rounds)} rounds, interleaved; p50 / p95 per round, then the median of the rounds):")
    for label in rounds[0]:
        per_round = [p50_p95(r[label]) for r in rounds]
        cells = "   ".join(f"{p50 * 1000:6.1f} / {p95 * 1000:6.1f}" for p50, p95 in per_round)
        median95 = statistics.median(p95 for _, p95 in per_round)
        target = targets.get(label, 0.050)
        verdict = "ok" if median95 < target else f"OVER {target * 1000:.0f} ms"
        print(f"  {label:<36} {cells}   median p95 {median95 * 1000:6.1f}  (target {target * 1000:.0f})  {verdict}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=int, default=1_000_000, help="trees of 10 rows (default 1,000,000)")
    parser.add_argument("--artists", type=int, default=100_000, help="trees whose 3 artist ids get an artist row")
    parser.add_argument("--calls", type=int, default=100, help="calls per page per round (default 100)")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help=f"database name (default {DEFAULT_DATABASE})")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="a PostgreSQL URL allowed to CREATE DATABASE")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    db = bind_database(database_url(args.admin_url, args.database), max_connections=8)
    try:
        prepare(db, args)
        rows = db.execute_sql("SELECT reltuples::bigint FROM pg_class WHERE relname = 'enrichment_logs'").fetchone()[0]
        print(f"{rows:,} job-log rows; {args.calls} calls per page per round")
        timer = ServerTimer(create_app(Settings()))
        report(asyncio.run(run_rounds(timer, scenarios(db, args.seed), args.calls)))
    finally:
        db.close_all()


if __name__ == "__main__":
    main()
