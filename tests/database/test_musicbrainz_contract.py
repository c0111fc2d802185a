"""MusicBrainz's real shapes through the client and the real actors (issue 21), on PostgreSQL and SQLite.

Each recorded shape of the fake's sample data (``_source`` in
``workers/fake_upstream/sample_data/musicbrainz_*.json``) goes through the
client and the actors; the tests check the catalog fields, the tracks with
their positions, and the job-log rows with their reasons.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from dramatiq.rate_limits.backends import StubBackend

from migrations import apply_migrations
from models import Album, Artist, EnrichmentLog, Track, bind_database
from models.settings import load_settings
from workers.upstream import BadUpstreamData, MusicBrainzClient, SpacingLimiter
from workers.upstream.musicbrainz_answers import partial_date
from workers.upstream.tolerant import Reader

from app_harness import add_album, tree

LANTERN_SEASON = "baa1b877-b8cd-55d8-b7b3-2418f1d6dedf"  # many releases, partial dates
LANTERN_US = "2d1a6763-8a64-5681-8377-8bf5f9cdb5a3"  # the original: dated as the group's first release
THOUSAND_NIGHTS = "a753e653-5f79-501b-bc75-c485f648e59f"  # Ed Sheeran feat. Meek Mill & A Boogie Wit da Hoodie
STATIC_BLOOM = "85084e21-75a8-5a55-b63e-93080ca12a12"  # scores and lengths sent as strings, nulls
SOLSTICE_DOOM = "30b1a304-78f3-5217-8059-2ae9b1cafcc8"
SOLSTICE_PROG = "ba13d8ca-df81-5341-9e0d-27661ccb404b"


def only(root_id: str, operation: str) -> EnrichmentLog:
    (row,) = [r for r in tree(root_id) if r.operation == operation]
    return row


def root_status(root_id: str) -> str:
    return EnrichmentLog.get(EnrichmentLog.job_id == root_id).status


def tracks_of(album: Album) -> list[tuple[int, int, str, int]]:
    query = Track.select().where(Track.album == album).order_by(Track.disc_number, Track.track_number)
    return [(t.disc_number, t.track_number, t.title, t.duration_ms) for t in query]


@pytest.fixture
def mb(fake):
    settings = load_settings(fake.env(cloudflare=False))
    with MusicBrainzClient(settings, rate_limiter=SpacingLimiter(StubBackend(), f"t-{uuid.uuid4()}", interval=0.001)) as client:
        yield client


# -- cause 1: one release ------------------------------------------------------------------


def test_album_takes_date_country_and_tracklist_from_one_release(app):
    # The JP edition is dated "1973" (sorts first as a string) and has two bonus tracks.
    album = add_album("Lantern Season", ["Meridian Tide"], musicbrainz_id=LANTERN_SEASON)
    root_id = app.run("check_album_enrichment", str(album.id), "test")
    row = only(root_id, "enrichment:album")
    assert root_status(root_id) == "success"
    assert row.status == "success", row.last_error

    album = Album.get_by_id(album.id)
    assert (album.release_date, album.release_country, album.release_status) == ("1973-03-01", "US", "Official")
    assert album.track_count == 8
    tracks = tracks_of(album)
    assert [t[1] for t in tracks] == list(range(1, 9))
    assert not [t for t in tracks if "Demo" in t[2] or "Live" in t[2]]
    assert row.details["release_id"] == LANTERN_US
    assert row.details["release_choice"] == "Official, dated as the group's first release (1973-03-01); 1 of 6 releases"


# -- cause 2: joint credits ----------------------------------------------------------------


def test_joint_credit_matches_the_first_credited_artist(app):
    album = add_album("1000 Nights", ["Ed Sheeran"])
    root_id = app.run("check_album_enrichment", str(album.id), "test")
    row = only(root_id, "enrichment:album")
    assert root_status(root_id) == "success"
    # Exact title, exact first artist, MusicBrainz score 100: scored 0.797 against the joined credit.
    assert row.status == "success" and row.reason == "matched by search", row.reason
    assert row.details["match_score"] == 1.0
    album = Album.get_by_id(album.id)
    assert album.musicbrainz_id == THOUSAND_NIGHTS and album.data_quality == "high"
    assert tracks_of(album) == [(1, 1, "1000 Nights", 195000)]


# -- cause 3: pregap, data tracks, video ---------------------------------------------------


def test_pregap_is_track_zero_and_data_tracks_and_video_are_left_out(app):
    album = add_album("Hidden Rooms", ["Paper Satellites"])
    root_id = app.run("check_album_enrichment", str(album.id), "test")
    row = only(root_id, "enrichment:album")
    assert root_status(root_id) == "success"
    assert row.status == "success", row.last_error
    assert row.reason == "matched by search; left out 1 video medium, 1 data track, 1 video recording"
    assert row.details["tracks_skipped"] == {"video_media": 1, "data_tracks": 1, "video_recordings": 1}

    album = Album.get_by_id(album.id)
    assert tracks_of(album) == [
        (1, 0, "Before the Door", 88000),
        (1, 1, "First Room", 211000),
        (1, 2, "Stairwell", 187000),
        (1, 3, "Attic Light", 243000),
    ]
    assert album.track_count == 4 and row.details["tracks_created"] == 4
    # A second run matches the pregap by its recording: nothing doubles.
    again = only(app.run("check_album_enrichment", str(album.id), "test", True), "enrichment:album")
    assert again.details["tracks_created"] == 0 and len(tracks_of(album)) == 4


# -- cause 6: tolerant reading, and what cannot be read ------------------------------------


def test_numbers_as_strings_and_null_objects_are_read(app, fake):
    album = add_album("Static Bloom", ["Northern Relay"])
    root_id = app.run("check_album_enrichment", str(album.id), "test")
    enrich_album, enrich_artist = only(root_id, "enrichment:album"), only(root_id, "enrichment:artist")
    # The search score came as the string "100"; it crashed with a TypeError, retried like an outage.
    for row in (enrich_album, enrich_artist):
        assert row.status == "success" and row.retry_count == 0, (row.operation, row.last_error)
    album = Album.get_by_id(album.id)
    assert album.musicbrainz_id == STATIC_BLOOM and album.release_date == "2011" and album.release_country is None
    assert tracks_of(album) == [(1, 1, "Carrier Wave", 201000), (1, 2, "Low Orbit", 187500), (1, 3, "Static Bloom", 244000)]
    assert not album.cover_art_url  # "front": null is no cover
    artist = Artist.get(Artist.name == "Northern Relay")
    assert artist.musicbrainz_id and artist.country_code is None and artist.formed_year is None and artist.area is None
    searches = [r for r in fake.requests("musicbrainz") if r["path"] == "/musicbrainz/ws/2/release-group"]
    assert len(searches) == 1  # read at once, not retried


def test_an_unreadable_answer_fails_once_naming_the_field(app, fake):
    album = add_album("True North", ["Broken Compass"])
    row = only(app.run("check_album_enrichment", str(album.id), "test"), "enrichment:album")
    assert row.status == "failed" and row.retry_count == 0
    assert row.error_code == "bad_upstream_data"
    assert "musicbrainz answered an unreadable release.media[0].tracks[1].length: expected a number, got '3:45'" in row.last_error
    assert len(fake.requests("musicbrainz", path="/musicbrainz/ws/2/release/")) == 1  # asked once, not retried
    assert Track.select().where(Track.album == album).count() == 0  # nothing half-written


def test_a_release_group_musicbrainz_does_not_know_fails_once_as_not_found(app):
    album = add_album("Nowhere", ["Nobody"], musicbrainz_id=str(uuid.uuid4()))
    row = only(app.run("check_album_enrichment", str(album.id), "test"), "enrichment:album")
    assert row.status == "failed" and row.retry_count == 0 and row.error_code == "not_found"
    assert "HTTP 404" in row.last_error


# -- the two decisions ---------------------------------------------------------------------


def test_a_person_has_no_formed_year_a_group_has(app):
    bjork, radiohead = Artist.create(name="Björk"), Artist.create(name="Radiohead")
    rows = [only(app.run("check_artist_enrichment", str(a.id), "test"), "enrichment:artist") for a in (bjork, radiohead)]
    assert [r.status for r in rows] == ["success", "success"]
    bjork, radiohead = Artist.get_by_id(bjork.id), Artist.get_by_id(radiohead.id)
    assert (bjork.artist_type, bjork.formed_year) == ("Person", None)  # life-span begins 1965-11-21: her birth
    assert (radiohead.artist_type, radiohead.formed_year) == ("Group", 1985)
    assert "formed_year" not in rows[0].fields_enriched


def test_namesakes_make_the_match_ambiguous(app):
    artist = Artist.create(name="Solstice")
    row = only(app.run("check_artist_enrichment", str(artist.id), "test"), "enrichment:artist")
    assert row.status == "success"
    assert row.reason.startswith("matched by search, ambiguous: 2 MusicBrainz artists named 'Solstice'")
    assert row.details["ambiguous"] is True
    candidates = {c["id"]: c["disambiguation"] for c in row.details["candidates"]}
    assert candidates == {SOLSTICE_DOOM: "UK doom metal band", SOLSTICE_PROG: "UK progressive rock band"}
    artist = Artist.get_by_id(artist.id)
    assert artist.data_quality == "low" and artist.musicbrainz_id is None  # never claimed high, no id to trust
    assert artist.country_code == "GB" and row.data_quality_after == "low"


def test_migration_clears_the_birth_year_stored_as_a_persons_formed_year(fresh_database_url):
    db = bind_database(fresh_database_url)
    apply_migrations(db, "0011_unlinked_rows_index")
    person = Artist.create(name="Björk", artist_type="Person", formed_year=1965)
    group = Artist.create(name="Radiohead", artist_type="Group", formed_year=1985)
    assert apply_migrations(db, "0012_person_has_no_formed_year") == ["0012_person_has_no_formed_year"]
    assert Artist.get_by_id(person.id).formed_year is None
    assert Artist.get_by_id(group.id).formed_year == 1985
    db.close_all()


# -- the client on the recorded shapes -----------------------------------------------------


def test_client_reads_string_scores_and_null_lists(mb):
    (hit,) = mb.search_release_groups("Static Bloom", "Northern Relay")
    assert hit["score"] == 100 and hit["secondary-types"] == [] and hit["genres"] == []
    (artist,) = mb.search_artists("Northern Relay")
    assert artist["score"] == 100 and artist["relations"] == [] and artist["life-span"]["begin"] is None
    release = mb.get_release(hit["releases"][0]["id"])
    medium = release["media"][0]
    assert medium["position"] == 1 and [t["position"] for t in medium["tracks"]] == [1, 2, 3]
    assert [t["recording"]["length"] for t in medium["tracks"]] == [201000, 187500, 244000]
    assert release["cover-art-archive"]["front"] is False


def test_client_reads_a_pregap_data_tracks_and_video_flags(mb):
    (hit,) = mb.search_release_groups("Hidden Rooms", "Paper Satellites")
    release = mb.get_release(hit["releases"][0]["id"])
    cd, dvd = release["media"]
    assert (cd["format"], cd["pregap"]["position"], cd["pregap"]["number"]) == ("Enhanced CD", 0, "0")
    assert [t["recording"]["video"] for t in cd["tracks"]] == [False, False, False, True]
    assert [t["title"] for t in cd["data-tracks"]] == ["Multimedia Section"]
    assert dvd["format"] == "DVD-Video" and dvd["pregap"] is None


def test_client_sees_the_joint_credit_with_its_join_phrases(mb):
    (hit,) = mb.search_release_groups("1000 Nights", "Ed Sheeran")
    assert hit["score"] == 100
    assert [(c["name"], c["joinphrase"]) for c in hit["artist-credit"]] == [
        ("Ed Sheeran", " feat. "), ("Meek Mill", " & "), ("A Boogie Wit da Hoodie", "")]


def test_fake_answers_with_musicbrainz_error_bodies(fake):
    headers = {"User-Agent": "contract-test/1.0 (tests@example.org)"}
    missing = httpx.get(f"{fake.url}/musicbrainz/ws/2/release-group/{uuid.uuid4()}?fmt=json", headers=headers)
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found", "help": "For usage, please see: https://musicbrainz.org/development/mmd"}
    fake.fail("/musicbrainz/ws/2/artist", "server_error", times=1)
    limited = httpx.get(f"{fake.url}/musicbrainz/ws/2/artist/{SOLSTICE_DOOM}?fmt=json", headers=headers)
    assert limited.status_code == 503 and "exceeding the allowable rate limit" in limited.json()["error"]


# -- the reading rules themselves ----------------------------------------------------------


def test_reader_takes_what_can_be_read_and_names_what_cannot():
    read = Reader("musicbrainz")
    assert [read.number(v, "x") for v in ("100", " 42 ", 7, 7.6, None, "")] == [100, 42, 7, 8, None, None]
    assert read.items(None, "x") == [] and read.mapping(None, "x") == {} and read.strings([None, "a"], "x") == ["a"]
    assert read.flag("true", "x") is True and read.flag(None, "x") is False
    for call, value in ((read.number, "n/a"), (read.number, True), (read.items, "none"), (read.mapping, [1]),
                        (read.flag, "maybe"), (read.required_text, None)):
        with pytest.raises(BadUpstreamData) as caught:
            call(value, "release-groups[0].score")
        assert caught.value.error_code == "bad_upstream_data"
        assert str(caught.value).startswith("musicbrainz answered an unreadable release-groups[0].score: ")
    with pytest.raises(BadUpstreamData) as caught:
        read.number(2**32, "release.media[0].tracks[0].length", stored=True)
    assert str(caught.value).endswith("unreadable release.media[0].tracks[0].length: 4294967296 is out of range")
    assert read.number(-5, "x") == -5  # only a stored number is bounded
    assert partial_date("1973-03", "d") == "1973-03" and partial_date("", "d") is None
    for bad in ("1973-13", "73", "1973-02-30"):
        with pytest.raises(BadUpstreamData):
            partial_date(bad, "release.date")
