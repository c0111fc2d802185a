"""``enrich demo``: the whole product on a fresh machine, with no server and no internet.

The command runs on the demo's settings (``demo_settings``: a fresh
``./enrichment-demo.db``, the in-memory broker, fast retries, none of the
real services or credentials of the environment).  It starts the fake
upstream server in a thread (SAMPLE DATA, never the real APIs), starts the
app on settings pointing every client at it, adds the sample albums with the
code of ``enrich add-album``, breaks two things on purpose (one request that
fails once, so a job retries; Discogs refusing one artist for good, so one
tree ends ``degraded``) and runs every tree through the real actors and
middleware on an in-process worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from models import Album, EnrichmentLog, Settings, Track
from models.job_log import DEGRADED
from models.timeline import list_roots

from .catalog import AlbumInput, add_album
from .common import migrate, open_database
from .run import print_trees, run_here
from .timeline import Style, root_labels, roots_lines

DEMO_DB = "enrichment-demo.db"
DEMO_LOG = "enrichment-demo.log"
IMAGE_DIR = "image_cache"
TIMEOUT = 100.0  # seconds; the demo takes well under a minute
FAKE_SPACING = 0.2  # seconds between two MusicBrainz (and two Discogs) requests

HOMOGENIC_MBID = "810272e0-aef1-3d85-b2d3-e512e87fc38c"
BJORK_DISCOGS_ID = "3272"

# The fake server's sample catalog (workers/fake_upstream/sample_data): some
# albums come with their MusicBrainz id, some are found by title and artist,
# and one is known to Spotify only.
SAMPLE_ALBUMS = (
    ("OK Computer", ("Radiohead",), "b1392450-e666-3926-a536-22c65f834433", None),
    ("Discovery", ("Daft Punk",), "48117b90-a16e-34ca-a514-19c702df1158", None),
    ("Homogenic", ("Björk",), HOMOGENIC_MBID, None),
    ("Dummy", ("Portishead",), None, None),
    ("Mezzanine", ("Massive Attack",), None, None),
    ("OK Computer OKNOTOK 1997 2017", ("Radiohead",), None, "0tzfI6NFJqcJkWb23R3lRZ"),
)

# Settings that would send the demo anywhere real: back to their defaults (the fake's URLs replace them).
UNSET = (
    "redis_url",
    "musicbrainz_url",
    "discogs_url",
    "discogs_token",
    "spotify_api_url",
    "spotify_accounts_url",
    "spotify_client_id",
    "spotify_client_secret",
    "cloudflare_api_url",
    "cloudflare_account_id",
    "cloudflare_api_token",
    "coverart_url",
)


def demo_settings(settings: Settings) -> Settings:
    """The environment's settings (logs, tracing...) on the demo's database, queue and timings."""
    here = Path.cwd()
    defaults = Settings()
    return dataclasses.replace(
        settings,
        **{name: getattr(defaults, name) for name in UNSET},
        database_url=f"sqlite:///{here / DEMO_DB}",
        image_cache_dir=str(here / IMAGE_DIR),
        job_max_retries=3,
        retry_min_backoff_ms=200,
        retry_max_backoff_ms=1000,
        # The fake server is local: the 1 request/s spacing real MusicBrainz and
        # Discogs ask for would only make the demo wait (about 30 s instead of 10).
        musicbrainz_interval=FAKE_SPACING,
        discogs_interval=FAKE_SPACING,
    )


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    """``enrich demo`` on ``demo_settings`` (``main`` bound the demo database, not yet opened)."""
    here = Path.cwd()
    for name in (DEMO_DB, DEMO_DB + "-wal", DEMO_DB + "-shm", DEMO_LOG):
        (here / name).unlink(missing_ok=True)
    return _demo(settings)


def _log_to_file(settings: Settings, path: Path) -> None:
    """The demo's JSON logs go to a file: the terminal is for the timelines."""
    from ..logging_setup import configure_logging

    configure_logging(settings, stream=open(path, "a", encoding="utf-8", buffering=1))


def _start_fake():
    from ..fake_upstream import FakeUpstream

    return FakeUpstream().start()


def _on_fake(settings: Settings, fake) -> Settings:
    """``settings`` pointing every client at the fake, with its sample credentials (no Cloudflare: the local cache)."""
    # The fake names its environment variables after the settings: MUSICBRAINZ_URL is musicbrainz_url.
    upstream = {name.lower(): value for name, value in fake.env(credentials=True, cloudflare=False).items()}
    return dataclasses.replace(settings, **upstream)


def _break_things(fake) -> None:
    from ..fake_upstream import DISCOGS, MUSICBRAINZ

    # Homogenic's release-group lookup gets a 503 once: enrichment:album retries, then succeeds.
    fake.fail(f"{MUSICBRAINZ}/release-group/{HOMOGENIC_MBID}", "server_error", times=1, retry_after=None)
    # Discogs refuses Björk's artist page for good: discogs:get-artist fails, the Homogenic tree is degraded.
    fake.fail(f"{DISCOGS}/artists/{BJORK_DISCOGS_ID}", "status", status=400, times=None)


def _banner(fake) -> None:
    here = Path.cwd()
    print("=" * 78)
    print("enrich demo: SAMPLE DATA from a local fake server, not the real APIs")
    print(f"  fake MusicBrainz, Discogs, Spotify and Cover Art Archive at {fake.url}")
    print(f"  database: {here / DEMO_DB} (recreated on every run)")
    print(f"  images:   {here / IMAGE_DIR} (no Cloudflare account: the local image cache)")
    print(f"  logs:     {here / DEMO_LOG} (JSON, one line per event)")
    print("  on purpose, under Homogenic: one MusicBrainz request fails once (a retry), and")
    print("  Discogs refuses Björk's artist page for good (a degraded tree)")
    real = Settings()
    print(f"  MusicBrainz and Discogs requests {FAKE_SPACING:g} s apart "
          f"(the real services get {real.musicbrainz_interval:g} s and {real.discogs_interval:g} s)")
    print("=" * 78, flush=True)


def _demo(settings: Settings) -> int:
    started = time.monotonic()
    _log_to_file(settings, Path.cwd() / DEMO_LOG)
    fake = _start_fake()
    settings = _on_fake(settings, fake)
    try:
        _banner(fake)
        migrate(open_database(settings))
        albums = [add_album(AlbumInput.parse(title, artists, mbid, spotify_id))[0]
                  for title, artists, mbid, spotify_id in SAMPLE_ALBUMS]
        print(f"added {len(albums)} sample albums; enriching them on an in-process worker (Ctrl-C stops it)")
        _break_things(fake)
        roots = [("check_album_enrichment", (str(album.id),), {}) for album in albums]
        run_here(roots, settings, timeout=TIMEOUT, show_trees=False)
        page = list_roots(limit=len(albums))
        print("\nroot jobs (enrich roots):")
        print("\n".join(roots_lines(page, root_labels(page), Style(sys.stdout))))
        print_trees([root.job_id for root in reversed(page.roots)])
        print("\n" + _summary(page, time.monotonic() - started))
    finally:
        fake.stop()
    return 0


def _summary(page, seconds: float) -> str:
    enriched = Album.select().where(Album.enrichment_status == "completed").count()
    tracks = Track.select().count()
    jobs = EnrichmentLog.select().count()
    retried = EnrichmentLog.select().where(EnrichmentLog.retry_count > 0).count()
    degraded = sum(root.status == DEGRADED for root in page.roots)
    return (
        f"demo finished in {seconds:.1f}s: {enriched} of {len(page.roots)} albums enriched, {tracks} tracks, "
        f"{jobs} jobs, {retried} retried, {degraded} degraded. "
        f"Look again with: DATABASE_URL=sqlite:///{DEMO_DB} enrich roots\n"
        f"Open it in a browser: DATABASE_URL=sqlite:///{DEMO_DB} enrich web, then http://127.0.0.1:8080/"
    )
