"""The Spotify, Discogs and image cache actors, run for real: the app broker with JobLinking,
a Dramatiq worker, the fake upstream server, on PostgreSQL and SQLite.

Assertions are on what a user sees: the job rows and the catalog.
"""

from __future__ import annotations

from pathlib import Path

import dramatiq
import pytest

from middleware import record
from models import Album, AlbumArtist, Artist, EnrichmentLog, Track, album_artists
from workers.actors.discogs import score_result
from workers.actors.images import largest_image
from workers.actors.spotify import release_date
from workers.fake_upstream import DISCOGS, IMAGES, SPOTIFY_ACCOUNTS, SPOTIFY_API
from workers.upstream.tolerant import Reader

from app_harness import tree
from linking_harness import rows

OKNOTOK = "0tzfI6NFJqcJkWb23R3lRZ"  # Spotify only, 23 tracks on two discs: two pages of 20 on the fake
BJORK_DISCOGS = "3272"
HOMOGENIC_MBID = "810272e0-aef1-3d85-b2d3-e512e87fc38c"


@pytest.fixture(autouse=True)
def app_broker_is_global(app):
    # Actors send by name on the global broker; another test module may have set its own.
    dramatiq.set_broker(app.broker)


def run(app, actor_name: str, *args) -> EnrichmentLog:
    """Send one job as a root, run everything it leads to, and return its row."""
    return EnrichmentLog.get(EnrichmentLog.job_id == app.run(actor_name, *args))


def children(root: EnrichmentLog) -> list[EnrichmentLog]:
    return tree(root.job_id)


def stub_actor(app, monkeypatch, actor_name: str, fn, **options) -> None:
    """Declare ``fn`` under an app actor's name for this test only (a copy of the registry is patched)."""
    monkeypatch.setattr(app.broker, "actors", {k: v for k, v in app.broker.actors.items() if k != actor_name})
    dramatiq.actor(fn, actor_name=actor_name, broker=app.broker, **options)


# -- pure helpers ----------------------------------------------------------------------------


def test_helpers():
    assert [release_date(v) for v in ("1997", "1997-05", "1997-05-21", "0000", "97", None)] == [
        "1997", "1997-05", "1997-05-21", None, None, None]
    read = Reader("spotify")
    assert largest_image([{"url": "a", "width": 640, "height": 640}, {"url": "b", "width": 300, "height": 300}], read) == "a"
    assert largest_image([{"uri": "wide", "width": 600, "height": 400}, {"uri": "square", "width": "500", "height": "500"}],
                         read, "images", "uri") == "square"
    assert largest_image([], read) is None and largest_image(None, read) is None
    assert score_result("Björk", "Björk") == 1.0
    assert 0.85 <= score_result("Björk", "Björk (2)") < 1.0


# -- spotify:track-fallback ---------------------------------------------------------------------


def test_track_fallback_creates_every_page_of_tracks_once(app, fake):
    album = Album.create(title="OK Computer OKNOTOK 1997 2017", spotify_id=OKNOTOK, enrichment_status="completed")
    # A track MusicBrainz already gave: matched by position; Spotify fills its gaps, its title stays.
    Track.create(album=album, title="Air Bag", disc_number=1, track_number=1)

    first = run(app, "spotify_track_fallback", str(album.id))
    assert first.status == "success" and first.operation == "spotify:track-fallback"
    assert (first.entity_type, str(first.entity_id)) == ("album", str(album.id))
    assert first.details["spotify_album_id"] == OKNOTOK
    assert (first.details["tracks_found"], first.details["tracks_created"], first.details["tracks_updated"]) == (23, 22, 1)
    assert first.fields_enriched == ["track_count"] and first.sources == ["spotify"]
    assert len(fake.requests("spotify", SPOTIFY_API + f"/albums/{OKNOTOK}/tracks")) == 2  # both pages
    tracks = list(Track.select().where(Track.album == album).order_by(Track.disc_number, Track.track_number))
    assert [(t.disc_number, t.track_number) for t in tracks] == [(1, n) for n in range(1, 13)] + [(2, n) for n in range(1, 12)]
    assert all(t.spotify_id and t.duration_ms for t in tracks)
    assert (tracks[0].title, tracks[1].title) == ("Air Bag", "Paranoid Android")
    reloaded = Album.get_by_id(album.id)
    assert reloaded.track_count == 23 and reloaded.enrichment_status == "completed"

    second = run(app, "spotify_track_fallback", str(album.id))  # a redelivered message
    assert second.status == "success" and second.fields_enriched == []
    assert (second.details["tracks_created"], second.details["tracks_updated"]) == (0, 0)
    assert Track.select().where(Track.album == album).count() == 23


def test_track_fallback_skips_without_spotify_id_and_reports_no_tracks(app, fake, monkeypatch):
    plain = Album.create(title="Dummy")
    empty = Album.create(title="Silence", spotify_id="emptyalbum00000000000")
    albums = fake.state.catalog.spotify_albums
    monkeypatch.setitem(albums, "emptyalbum00000000000", {**albums[OKNOTOK], "tracks": {"items": []}})

    app.send("spotify_track_fallback", str(plain.id))
    app.run("spotify_track_fallback", str(empty.id))
    by_album = {str(r.entity_id): r for r in EnrichmentLog.select()}
    assert by_album[str(plain.id)].status == "skipped" and "spotify_id" in by_album[str(plain.id)].reason
    assert by_album[str(empty.id)].status == "no_data" and by_album[str(empty.id)].details["tracks_found"] == 0


def test_track_fallback_waits_out_a_spotify_429_on_one_row(app, fake):
    album = Album.create(title="OK Computer OKNOTOK 1997 2017", spotify_id=OKNOTOK, enrichment_status="completed")
    fake.fail(SPOTIFY_API + f"/albums/{OKNOTOK}/tracks", "rate_limit", times=1, retry_after=1)

    row = run(app, "spotify_track_fallback", str(album.id))
    assert row.status == "success" and row.retry_count == 1
    assert row.error_code == "rate_limited" and "429" in row.last_error
    assert EnrichmentLog.select().where(EnrichmentLog.job_id == row.job_id).count() == 1
    assert Track.select().where(Track.album == album).count() == 23  # the retry added no second copy
    limited, retried = fake.requests("spotify", SPOTIFY_API + f"/albums/{OKNOTOK}/tracks")[:2]
    assert limited["status"] == 429 and retried["fault"] is None
    assert retried["monotonic"] - limited["monotonic"] >= 1.0  # Retry-After, not the shorter backoff


def test_track_fallback_with_refused_client_credentials_fails_at_once_without_the_secret(app, fake):
    album = Album.create(title="OK Computer OKNOTOK 1997 2017", spotify_id=OKNOTOK, enrichment_status="completed")
    fake.fail(SPOTIFY_ACCOUNTS + "/api/token", "unauthorized", times=None)

    row = run(app, "spotify_track_fallback", str(album.id))
    assert row.status == "failed" and row.retry_count == 0  # retrying cannot fix credentials
    assert row.error_code == "upstream_401"
    credentials = fake.state.credentials
    for secret in (credentials.spotify_client_id, credentials.spotify_client_secret):
        assert secret not in row.last_error
    assert Track.select().where(Track.album == album).count() == 0


# -- spotify:sync-new-releases -------------------------------------------------------------------


def test_sync_new_releases_adds_albums_and_starts_one_tree_each(app, fake, monkeypatch):
    existing = Artist.create(name="RADIOHEAD")  # found by name, case-insensitively

    def check_album_enrichment(album_id, source="manual", force=False):
        record(details={"source": source})

    # The check only records here: the trees it really grows are test_enrichment_chain's business.
    stub_actor(app, monkeypatch, "check_album_enrichment", check_album_enrichment,
               operation="check:album-enrichment", entity=("album", "album_id"))
    sync = run(app, "sync_spotify_new_releases", 50)

    assert sync.status == "success" and sync.is_root_job and sync.operation == "spotify:sync-new-releases"
    assert sync.details == {"albums_seen": 3, "albums_created": 3, "albums_updated": 0, "trees_started": 3}
    albums = {a.spotify_id: a for a in Album.select()}
    assert set(albums) == {OKNOTOK, "6dVIqQ8qmQ5GBnJ9shOYGE", "2noRn2Aes5aoNVsU6iWThc"}
    discovery = albums["2noRn2Aes5aoNVsU6iWThc"]
    assert (discovery.title, discovery.release_date, discovery.release_type, discovery.track_count) == (
        "Discovery", "2001-03-07", "Album", 14)
    assert discovery.cover_art_url.endswith("/images/spotify/2noRn2Aes5aoNVsU6iWThc-640.jpg")
    assert discovery.last_enriched_at is None  # added, not enriched: the check still sees "never enriched"
    radiohead = Artist.get_by_id(existing.id)
    assert radiohead.spotify_id == "4Z8W4fKeB5YxbusRsdQVPb"
    assert Artist.select().count() == 2  # Radiohead (twice credited) and Daft Punk
    assert [a.name for a in album_artists(albums[OKNOTOK])] == ["RADIOHEAD"]
    assert [a.name for a in album_artists(discovery)] == ["Daft Punk"]

    checks = [r for r in rows().values() if r.operation == "check:album-enrichment"]
    assert len(checks) == 3 and children(sync) == []
    for check in checks:  # each album its own tree, saying which sync started it
        assert check.is_root_job and check.parent_job_id is None
        assert check.triggered_by == sync.job_id
        assert check.details["started_by"] == {"job_id": sync.job_id, "operation": "spotify:sync-new-releases"}
        assert check.details["source"] == "spotify:new-releases"
    assert {str(c.entity_id) for c in checks} == {str(a.id) for a in albums.values()}

    again = run(app, "sync_spotify_new_releases", 50)
    assert (again.details["albums_created"], again.details["albums_updated"]) == (0, 0)
    assert Album.select().count() == 3 and AlbumArtist.select().count() == 3


# -- discogs ---------------------------------------------------------------------------------------


def test_discogs_search_accepts_bjork_and_chains_to_the_image_cache(app, fake):
    artist = Artist.create(name="Björk")
    search = run(app, "discogs_search_artist", str(artist.id))

    assert search.status == "success" and search.is_root_job
    assert search.details["discogs_id"] == BJORK_DISCOGS and search.details["matched_name"] == "Björk"
    assert search.details["confidence"] == 1.0 and search.details["search_query"] == "Björk"
    assert search.details["results_count"] == 3
    scores = {c["name"]: c["score"] for c in search.details["candidates"]}
    assert scores["Björk (2)"] < scores["Björk"]
    assert search.fields_enriched == ["discogs_id"]

    chain = children(search)
    assert [c.operation for c in chain] == ["discogs:get-artist", "cache:artist-image"]
    assert all(c.status == "success" and not c.is_root_job for c in chain)
    get, cache = chain
    assert get.details["images_found"] == 1 and get.details["profile"].startswith("Icelandic singer")
    assert get.fields_enriched == ["image_url"]
    assert cache.details["cache_location"] == "local" and cache.details["width"] == 500
    reloaded = Artist.get_by_id(artist.id)
    assert reloaded.discogs_id == BJORK_DISCOGS
    assert reloaded.image_url.endswith("/images/discogs/3272-primary.jpg")
    assert Path(reloaded.cached_image_path).is_file()


def test_discogs_search_without_a_good_match_is_no_data(app, fake):
    artist = Artist.create(name="Björk Trio")
    search = run(app, "discogs_search_artist", str(artist.id))
    assert search.status == "no_data" and children(search) == []
    assert "Björk Guðmundsdóttir & Tríó Guðmundar Ingólfssonar" in search.reason and "below 0.85" in search.reason
    assert Artist.get_by_id(artist.id).discogs_id is None


def test_discogs_permanent_failure_is_not_retried(app, fake):
    artist = Artist.create(name="Björk", discogs_id=BJORK_DISCOGS)
    fake.fail(DISCOGS + f"/artists/{BJORK_DISCOGS}", "status", status=400, times=None)
    row = run(app, "discogs_get_artist", str(artist.id))
    assert (row.status, row.error_code, row.retry_count) == ("failed", "upstream_400", 0)
    assert "HTTP 400" in row.last_error
    assert len(fake.requests("discogs")) == 1


def test_discogs_503_then_success_is_one_row_retried_once(app, fake):
    artist = Artist.create(name="Björk", discogs_id=BJORK_DISCOGS)
    fake.fail(DISCOGS + f"/artists/{BJORK_DISCOGS}", "server_error", times=1, retry_after=None)
    row = run(app, "discogs_get_artist", str(artist.id))
    assert (row.status, row.retry_count, row.error_code) == ("success", 1, "upstream_503")
    assert EnrichmentLog.select().where(EnrichmentLog.operation == "discogs:get-artist").count() == 1
    assert row.api_call_count == 1  # the successful attempt's own calls


def test_discogs_without_token_is_skipped_naming_the_variable(app, fake):
    app.delenv("DISCOGS_TOKEN")  # clients are rebuilt when the settings change
    artist = Artist.create(name="Björk")
    row = run(app, "discogs_search_artist", str(artist.id))
    assert (row.status, row.error_code) == ("skipped", "missing_credentials")
    assert "DISCOGS_TOKEN" in row.reason
    assert fake.requests("discogs") == []


# -- image cache --------------------------------------------------------------------------------------


def test_cover_art_goes_to_the_local_cache_once(app, fake, tmp_path):
    album = Album.create(title="Homogenic", cover_art_url=fake.cover_art_url(HOMOGENIC_MBID))
    first = run(app, "cache_album_cover_art", str(album.id))

    assert first.status == "success" and first.operation == "cache:album-cover-art"
    details = first.details
    path = Path(details["cache_path"])
    assert path.is_file() and path.parent == (tmp_path / "images").resolve()
    assert (details["format"], details["width"], details["height"]) == ("jpeg", 500, 500)
    assert details["file_size"] == path.stat().st_size and details["cache_location"] == "local"
    assert details["source_url"] == details["before_url"] == album.cover_art_url
    assert details["after_url"] == path.as_uri()
    assert first.fields_enriched == ["cached_image_path"]
    assert Album.get_by_id(album.id).cached_image_path == str(path)

    second = run(app, "cache_album_cover_art", str(album.id))
    assert second.status == "skipped" and second.reason.startswith("already cached")
    assert list(path.parent.iterdir()) == [path]


def test_image_goes_to_cloudflare_when_configured(app, fake):
    for name, value in fake.env(cloudflare=True).items():
        app.setenv(name, value)
    artist = Artist.create(name="Björk", image_url=fake.url + IMAGES + "/discogs/3272-primary.jpg")
    row = run(app, "cache_artist_image", str(artist.id))
    assert row.status == "success" and row.details["cache_location"] == "cloudflare_images"
    assert row.details["cloudflare_id"] in fake.uploads and row.sources == ["image", "cloudflare"]
    assert Artist.get_by_id(artist.id).cloudflare_image_id == row.details["cloudflare_id"]
    assert row.details["after_url"].endswith(f"/{row.details['cloudflare_id']}/public")


def test_image_that_is_not_an_image_fails_at_once(app, fake):
    artist = Artist.create(name="Björk", image_url=fake.url + IMAGES + "/discogs/3272-primary.jpg")
    fake.fail(IMAGES + "/discogs/3272-primary.jpg", "not_an_image", times=None)
    no_url = Artist.create(name="Nobody")
    row = run(app, "cache_artist_image", str(artist.id))
    assert (row.status, row.error_code, row.retry_count) == ("failed", "not_an_image", 0)
    assert Artist.get_by_id(artist.id).cached_image_path is None
    assert run(app, "cache_artist_image", str(no_url.id)).status == "skipped"
