"""Discogs and Spotify answers of the real shapes, fed through the clients and the real actors.

The app broker with JobLinking, a Dramatiq worker and the fake upstream, on
PostgreSQL and SQLite.  The shapes are the fake's sample documents (each
names its source in ``_source``) or a sample document changed the way a real
answer was seen to be.  Assertions are on what a user sees: the catalog, the
cached image, the job rows and their reasons and error codes.
"""

from __future__ import annotations

import dramatiq
import pytest

from models import Album, Artist, EnrichmentLog, Track
from workers.fake_upstream import DISCOGS, SPOTIFY_API

from app_harness import tree

MASSIVE_ATTACK = "5265"  # 22 images; the primary, 600x399, is not the largest (a secondary 600x1142)
PERSUADER = "1"  # discogs_client's recorded artist 1: one secondary image, no primary
PAPER_LANTERN = "7700901"  # sizes as strings, the primary listed last
QUIET_MERIDIAN = "7700789"  # every optional field null
YEAR_ALBUM, MONTH_ALBUM, OLDER_ALBUM, NULL_ALBUM = (
    "4yP0hdKOZPNshxUOjY0cZj", "0mVjWcZ0nBvS8mVNfGdDvB", "7aDBFWp72Pz4NZEtVBANi9", "2rJ4tAa4HGEzXq0vMXQXn4")


@pytest.fixture(autouse=True)
def app_broker_is_global(app):
    dramatiq.set_broker(app.broker)


def run(app, actor_name: str, *args) -> EnrichmentLog:
    """Send one job as a root, run everything it leads to, and return its row."""
    return EnrichmentLog.get(EnrichmentLog.job_id == app.run(actor_name, *args))


def only_child(root: EnrichmentLog, operation: str) -> EnrichmentLog:
    rows = [row for row in tree(root.job_id) if row.operation == operation]
    assert len(rows) == 1, [(r.operation, r.status) for r in tree(root.job_id)]
    return rows[0]


# -- Discogs: the image is the one Discogs marks primary ---------------------------------------------


def test_discogs_takes_the_primary_image_even_when_a_secondary_is_larger(app, fake):
    artist = Artist.create(name="Massive Attack", discogs_id=MASSIVE_ATTACK)
    row = run(app, "discogs_get_artist", str(artist.id))
    assert row.status == "success"
    assert row.details["images_found"] == 22 and row.details["image_chosen"] == "primary"
    assert Artist.get_by_id(artist.id).image_url.endswith("/images/discogs/A-5265-04.jpg")
    cached = only_child(row, "cache:artist-image")
    assert cached.status == "success" and "600x399" in cached.reason  # not the 600x1142 secondary


def test_discogs_takes_the_largest_secondary_only_when_there_is_no_primary(app, fake):
    artist = Artist.create(name="Persuader, The", discogs_id=PERSUADER)
    row = run(app, "discogs_get_artist", str(artist.id))
    assert row.status == "success" and row.details["image_chosen"] == "largest secondary (no primary)"
    assert Artist.get_by_id(artist.id).image_url.endswith("/images/discogs/A-1-1138987958.jpeg")
    assert "600x450" in only_child(row, "cache:artist-image").reason


def test_discogs_sizes_sent_as_strings_are_read(app, fake):
    artist = Artist.create(name="Paper Lantern Choir", discogs_id=PAPER_LANTERN)
    row = run(app, "discogs_get_artist", str(artist.id))
    assert (row.status, row.retry_count) == ("success", 0), row.last_error
    assert Artist.get_by_id(artist.id).image_url.endswith("/images/discogs/A-7700901-02.jpg")


def test_discogs_artist_that_is_mostly_null_is_no_data(app, fake):
    artist = Artist.create(name="Quiet Meridian")
    search = run(app, "discogs_search_artist", str(artist.id))
    assert search.status == "success" and search.details["discogs_id"] == QUIET_MERIDIAN
    page = only_child(search, "discogs:get-artist")
    assert page.status == "no_data" and page.reason == f"Discogs artist {QUIET_MERIDIAN} has no profile, genres or images"
    assert page.details["images_found"] == 0 and page.details["image"] is None
    after = Artist.get_by_id(artist.id)
    assert after.discogs_id == QUIET_MERIDIAN and after.image_url is None


def test_discogs_404_fails_once_as_not_found(app, fake):
    artist = Artist.create(name="Nobody", discogs_id="999999999")
    row = run(app, "discogs_get_artist", str(artist.id))
    assert (row.status, row.error_code, row.retry_count) == ("failed", "not_found", 0)
    assert "404" in row.last_error
    assert len(fake.requests("discogs", DISCOGS + "/artists/999999999")) == 1


def test_discogs_429_is_retried_after_its_retry_after(app, fake):
    fake.fail(DISCOGS + f"/artists/{MASSIVE_ATTACK}", "rate_limit", times=1, retry_after=1)
    artist = Artist.create(name="Massive Attack", discogs_id=MASSIVE_ATTACK)
    row = run(app, "discogs_get_artist", str(artist.id))
    assert (row.status, row.retry_count) == ("success", 1)
    first, second = fake.requests("discogs", DISCOGS + f"/artists/{MASSIVE_ATTACK}")
    assert first["status"] == 429 and second["status"] == 200 and second["time"] - first["time"] >= 1


def test_discogs_answer_that_cannot_be_read_fails_once_naming_service_and_field(app, fake):
    """Cause 6: an object where the profile text belongs crashed with an AttributeError, retried like an outage."""
    fake.state.catalog.discogs_artists[int(MASSIVE_ATTACK)]["profile"] = {"text": "English trip hop group"}
    artist = Artist.create(name="Massive Attack", discogs_id=MASSIVE_ATTACK)
    row = run(app, "discogs_get_artist", str(artist.id))
    assert (row.status, row.error_code, row.retry_count) == ("failed", "bad_upstream_data", 0)
    assert row.reason == "discogs answered an unreadable profile: expected text, got {'text': 'English trip hop group'}"
    assert row.details["bad_upstream_data"] == {"service": "discogs", "field": "profile"}
    assert len(fake.requests("discogs", DISCOGS + f"/artists/{MASSIVE_ATTACK}")) == 1  # never asked again
    assert Artist.get_by_id(artist.id).image_url is None


def test_discogs_search_answer_without_results_is_no_data(app, fake):
    fake.fail(DISCOGS + "/database/search", "status", status=200, times=None)  # {"message": ...}, no "results"
    artist = Artist.create(name="Massive Attack")
    row = run(app, "discogs_search_artist", str(artist.id))
    assert (row.status, row.retry_count) == ("no_data", 0)
    assert row.reason == "Discogs found no artist named 'Massive Attack'"


# -- Spotify ---------------------------------------------------------------------------------------


def sync(app, fake, *album_ids: str) -> EnrichmentLog:
    fake.state.catalog.new_release_ids = list(album_ids)
    return run(app, "sync_spotify_new_releases", 50)


def test_spotify_dates_follow_their_precision_and_older_payloads_lack_fields(app, fake):
    row = sync(app, fake, YEAR_ALBUM, MONTH_ALBUM, OLDER_ALBUM, NULL_ALBUM)
    assert row.status == "success" and row.details["albums_created"] == 4
    albums = {a.spotify_id: a for a in Album.select()}
    assert albums[YEAR_ALBUM].release_date == "1979" and albums[YEAR_ALBUM].track_count == 3
    assert albums[MONTH_ALBUM].release_date == "1983-04"
    # Image sizes null: still the album's cover.
    assert albums[MONTH_ALBUM].cover_art_url.endswith(f"/images/spotify/{MONTH_ALBUM}-640.jpg")
    older = albums[OLDER_ALBUM]
    # No total_tracks in the payload: the count comes from the tracks the album's check fetched.
    assert older.title == "Songs from the Archive" and older.release_date is None and older.track_count == 4
    assert Track.select().where(Track.album == older).count() == 4
    empty = albums[NULL_ALBUM]
    assert (empty.release_date, empty.release_type, empty.cover_art_url) == ("2020-02-02", None, None)
    assert [a.name for a in Artist.select()] == ["The Hollow Lanes"]


def test_spotify_tracks_with_numbers_as_strings_get_their_positions(app, fake):
    album = Album.create(title="Songs from the Archive", spotify_id=OLDER_ALBUM)
    row = run(app, "spotify_track_fallback", str(album.id))
    assert (row.status, row.retry_count) == ("success", 0), row.last_error
    tracks = list(Track.select().where(Track.album == album).order_by(Track.track_number))
    assert [(t.disc_number, t.track_number, t.title, t.duration_ms) for t in tracks] == [
        (1, 1, "Archive One", 150000), (1, 2, "Archive Two", 151000),
        (1, 3, "Archive Three", 152000), (1, 4, "Archive Four", 153000)]
    assert Album.get_by_id(album.id).track_count == 4


def test_spotify_image_sizes_as_strings_are_read(app, fake):
    """Cause 6: width and height as strings crashed with a TypeError, and the sync was retried like an outage."""
    fake.state.catalog.spotify_albums[YEAR_ALBUM]["images"] = [
        {"url": fake.url + "/images/spotify/0tzfI6NFJqcJkWb23R3lRZ-300.jpg", "width": "300", "height": "300"},
        {"url": fake.url + "/images/spotify/0tzfI6NFJqcJkWb23R3lRZ-640.jpg", "width": "640", "height": "640"},
    ]
    row = sync(app, fake, YEAR_ALBUM)
    assert (row.status, row.retry_count) == ("success", 0), row.last_error
    assert Album.get(Album.spotify_id == YEAR_ALBUM).cover_art_url.endswith("0tzfI6NFJqcJkWb23R3lRZ-640.jpg")


def test_spotify_track_that_cannot_be_read_fails_once_naming_service_and_field(app, fake):
    """Cause 6: an object where a track number belongs crashed with a TypeError, retried like an outage."""
    album = Album.create(title="Songs from the Archive", spotify_id=OLDER_ALBUM)
    fake.state.catalog.spotify_albums[OLDER_ALBUM]["tracks"]["items"][2]["track_number"] = {"number": 3}
    row = run(app, "spotify_track_fallback", str(album.id))
    assert (row.status, row.error_code, row.retry_count) == ("failed", "bad_upstream_data", 0)
    assert row.reason == "spotify answered an unreadable tracks[2].track_number: expected a number, got {'number': 3}"
    assert len(fake.requests("spotify", SPOTIFY_API + f"/albums/{OLDER_ALBUM}/tracks")) == 1
    assert not Track.select().where(Track.album == album).exists()  # nothing half-written


def test_spotify_404_and_401_bodies_are_the_real_ones(app, fake):
    import httpx

    token = httpx.post(fake.url + "/spotify-accounts/api/token", data={"grant_type": "client_credentials"},
                       auth=(fake.env()["SPOTIFY_CLIENT_ID"], fake.env()["SPOTIFY_CLIENT_SECRET"])).json()["access_token"]
    missing = httpx.get(fake.url + SPOTIFY_API + "/albums/0000000000000000000000", headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 404 and missing.json() == {"error": {"status": 404, "message": "Resource not found"}}
    expired = httpx.get(fake.url + SPOTIFY_API + "/albums/x", headers={"Authorization": "Bearer stale"})
    assert expired.status_code == 401 and set(expired.json()["error"]) == {"status", "message"}
    fake.fail(SPOTIFY_API + "/browse", "rate_limit", times=1, retry_after=2)
    limited = httpx.get(fake.url + SPOTIFY_API + "/browse/new-releases", headers={"Authorization": f"Bearer {token}"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert limited.json() == {"error": {"status": 429, "message": "API rate limit exceeded"}}
    fake.fail(DISCOGS + "/artists", "rate_limit", times=1)
    discogs_auth = {"Authorization": "Discogs token=" + fake.env()["DISCOGS_TOKEN"]}
    discogs = httpx.get(fake.url + DISCOGS + "/artists/1", headers=discogs_auth)
    assert discogs.status_code == 429 and discogs.json() == {"message": "You are making requests too quickly."}
    gone = httpx.get(fake.url + DISCOGS + "/artists/999999999", headers=discogs_auth)
    assert gone.status_code == 404 and gone.json() == {"message": "Artist not found."}
