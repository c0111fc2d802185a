"""Upstream faults through the real actors, on PostgreSQL and SQLite.

The fake upstream misbehaves (429 with Retry-After, 503 bursts, timeouts,
truncated and malformed JSON, a 10 MB body, an "image" that is HTML) while the
app's own broker, middleware and actors run an artist's whole tree:

    check:artist-enrichment (root)
      enrichment:artist       MusicBrainz /ws/2/artist (search, then lookup)
      discogs:search-artist   Discogs /database/search
      discogs:get-artist      Discogs /artists/3272
      cache:artist-image      an image on the fake image host

Each fault ends as the workers promise: a retryable one is retried on the same
row and then succeeds (``retry_count``, ``last_error``, ``error_code`` tell
what happened) or, when it lasts past the retries, fails with a clear
``error_code`` and the root turns ``degraded``; a permanent one fails at once
(``retry_count`` 0).  After every fault the same worker runs the next tree.
"""

from __future__ import annotations

import dramatiq
import pytest

from models import Artist, EnrichmentLog
from models.job_log import FINAL_STATUSES
from workers.fake_upstream import DISCOGS, IMAGES, MUSICBRAINZ

from app_harness import tree

MB_ARTIST = MUSICBRAINZ + "/artist"  # the search and the lookup of enrichment:artist
BJORK_MBID = "87c5dedd-371d-4a53-9f7f-80522fb7f3cb"
TEN_MB = 10 * 1024 * 1024


@pytest.fixture(autouse=True)
def app_broker_is_global(app):
    dramatiq.set_broker(app.broker)


@pytest.fixture
def max_retries():
    from workers import app

    return app.settings().job_max_retries


def run_artist_tree(app, name: str = "Björk") -> tuple[EnrichmentLog, dict[str, EnrichmentLog]]:
    """Run check_artist_enrichment for a new artist; (root row, {operation: child row})."""
    artist = Artist.create(name=name)
    root_id = app.run("check_artist_enrichment", str(artist.id), "test", timeout=60)
    root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
    children = tree(root_id)
    by_op: dict[str, EnrichmentLog] = {}
    for row in children:
        assert row.operation not in by_op, f"two rows for {row.operation}: {[(r.operation, r.status) for r in children]}"
        by_op[row.operation] = row
    # One row per job, every one finished, all under this root.
    job_ids = [root_id] + [r.job_id for r in children]
    assert EnrichmentLog.select().where(EnrichmentLog.job_id.in_(job_ids)).count() == len(children) + 1
    assert all(r.status in FINAL_STATUSES for r in [root, *children]), [(r.operation, r.status) for r in children]
    assert all(r.parent_job_id == root_id and not r.is_root_job for r in children)
    return root, by_op


def assert_worker_still_works(app) -> None:
    """The worker that met the fault runs a following tree, start to end."""
    app.fake.clear_faults()
    root, rows = run_artist_tree(app, "Radiohead")
    assert root.status == "success", (root.status, root.last_error)
    assert rows["enrichment:artist"].status == "success", rows["enrichment:artist"].last_error
    assert rows["enrichment:artist"].retry_count == 0


def requests_to(fake, prefix: str) -> list[dict]:
    return fake.requests(path=prefix)


# -- retryable faults: a burst, then success on the same row ------------------------------------------

RETRYABLE = [
    # (fault kind, fault options, error_code, text in last_error)
    ("rate_limit", {"retry_after": 1}, "rate_limited", "429"),
    ("server_error", {"retry_after": None}, "upstream_503", "503"),
    ("timeout", {"delay": 1.5}, "upstream_timeout", "timed out"),
    ("malformed_json", {}, "malformed_response", "not valid JSON"),
    ("truncated_json", {}, "malformed_response", "cut off"),
]
RETRYABLE_IDS = [r[0] for r in RETRYABLE]


@pytest.fixture
def short_timeout(app):
    # Timeouts come from HTTP_TIMEOUT; the fake's timeout fault waits longer than this.
    app.setenv("HTTP_TIMEOUT", "0.5")


@pytest.mark.parametrize("kind, options, code, text", RETRYABLE, ids=RETRYABLE_IDS)
def test_a_burst_is_retried_then_succeeds_on_one_row(app, fake, short_timeout, kind, options, code, text):
    burst = 1 if kind in ("rate_limit", "timeout") else 2
    fake.fail(MB_ARTIST, kind, times=burst, **options)
    root, rows = run_artist_tree(app)

    row = rows["enrichment:artist"]
    assert row.status == "success", (row.status, row.last_error)
    assert row.retry_count == burst
    assert row.error_code == code
    assert text in row.last_error
    assert row.completed_at and row.started_at <= row.completed_at
    assert root.status == "success" and root.failed_children == 0
    assert Artist.get(Artist.name == "Björk").musicbrainz_id == BJORK_MBID
    # The fault's requests and the successful ones all went to MusicBrainz.
    mb = requests_to(fake, MB_ARTIST)
    assert [r["fault"] for r in mb[:burst]] == [kind] * burst
    assert all(r["fault"] is None for r in mb[burst:]) and len(mb) >= burst + 2
    assert_worker_still_works(app)


def test_429_retry_after_is_honoured(app, fake):
    fake.fail(MB_ARTIST, "rate_limit", times=1, retry_after=1)
    root, rows = run_artist_tree(app)
    assert rows["enrichment:artist"].status == "success" and rows["enrichment:artist"].retry_count == 1
    limited, retried = requests_to(fake, MB_ARTIST)[:2]
    assert limited["status"] == 429 and retried["fault"] is None
    # The retry came no sooner than Retry-After (1 s; the backoff alone would be 100-400 ms).
    assert retried["monotonic"] - limited["monotonic"] >= 1.0


def test_503_with_retry_after_waits_for_it(app, fake):
    fake.fail(MB_ARTIST, "server_error", times=1, retry_after=1)
    root, rows = run_artist_tree(app)
    row = rows["enrichment:artist"]
    assert row.status == "success" and row.retry_count == 1 and row.error_code == "upstream_503"
    failed, retried = requests_to(fake, MB_ARTIST)[:2]
    assert failed["status"] == 503
    assert retried["monotonic"] - failed["monotonic"] >= 1.0


# -- retryable faults that outlast the retries ----------------------------------------------------------


@pytest.mark.parametrize("kind, options, code, text", RETRYABLE, ids=RETRYABLE_IDS)
def test_a_lasting_fault_fails_the_child_after_its_retries_and_degrades_the_root(
    app, fake, short_timeout, max_retries, kind, options, code, text
):
    if kind == "timeout":
        options = {"delay": 0.8}
    fake.fail(MB_ARTIST, kind, times=None, **options)
    root, rows = run_artist_tree(app)

    row = rows["enrichment:artist"]
    assert row.status == "failed"
    assert row.retry_count == max_retries
    assert row.error_code == code
    assert text in row.last_error
    assert len(requests_to(fake, MB_ARTIST)) == max_retries + 1  # one request per attempt
    # Nothing after the failed job was sent; the root finished well, so it is degraded.
    assert set(rows) == {"enrichment:artist"}
    assert root.status == "degraded" and root.failed_children == 1
    assert Artist.get(Artist.name == "Björk").musicbrainz_id is None
    assert_worker_still_works(app)


# -- permanent faults: failed at once ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["huge_body", "huge_body_declared"])
def test_a_10_mb_json_body_is_refused_at_once(app, fake, kind):
    fake.fail(MB_ARTIST, kind, times=None, size=TEN_MB)
    root, rows = run_artist_tree(app)
    row = rows["enrichment:artist"]
    assert row.status == "failed" and row.retry_count == 0
    assert row.error_code == "response_too_large" and "larger than" in row.last_error
    hits = requests_to(fake, MB_ARTIST)
    assert len(hits) == 1  # not retried
    assert hits[0]["bytes_sent"] < TEN_MB  # the client stopped reading at its cap
    assert root.status == "degraded" and root.failed_children == 1
    assert_worker_still_works(app)


def test_a_discogs_10_mb_body_fails_that_child_only(app, fake):
    fake.fail(DISCOGS + "/database/search", "huge_body", times=None, size=TEN_MB)
    root, rows = run_artist_tree(app)
    assert rows["enrichment:artist"].status == "success"
    row = rows["discogs:search-artist"]
    assert row.status == "failed" and row.retry_count == 0 and row.error_code == "response_too_large"
    assert "discogs:get-artist" not in rows
    assert root.status == "degraded" and root.failed_children == 1
    assert_worker_still_works(app)


def test_an_image_that_is_not_an_image_fails_at_once(app, fake):
    fake.fail(IMAGES, "not_an_image", times=None)
    root, rows = run_artist_tree(app)
    row = rows["cache:artist-image"]
    assert row.status == "failed" and row.retry_count == 0
    assert row.error_code == "not_an_image" and "not a PNG, JPEG, GIF or WebP" in row.last_error
    assert len(requests_to(fake, IMAGES)) == 1
    artist = Artist.get(Artist.name == "Björk")
    assert artist.image_url and artist.cached_image_path is None
    # Everything before the image cache worked.
    assert all(rows[op].status == "success" for op in ("enrichment:artist", "discogs:search-artist", "discogs:get-artist"))
    assert root.status == "degraded" and root.failed_children == 1
    assert_worker_still_works(app)


def test_an_image_larger_than_10_mb_fails_at_once(app, fake):
    fake.fail(IMAGES, "huge_body", times=None, size=TEN_MB + 1024 * 1024)
    root, rows = run_artist_tree(app)
    row = rows["cache:artist-image"]
    assert row.status == "failed" and row.retry_count == 0 and row.error_code == "response_too_large"
    assert Artist.get(Artist.name == "Björk").cached_image_path is None
    assert root.status == "degraded" and root.failed_children == 1
    assert_worker_still_works(app)


def test_a_timeout_on_the_image_host_is_retried(app, fake, short_timeout):
    fake.fail(IMAGES, "timeout", times=1, delay=1.5)
    root, rows = run_artist_tree(app)
    row = rows["cache:artist-image"]
    assert row.status == "success" and row.retry_count == 1 and row.error_code == "upstream_timeout"
    assert Artist.get(Artist.name == "Björk").cached_image_path
    assert root.status == "success"
