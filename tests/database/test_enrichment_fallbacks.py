"""Enrichment that must arrive by another road, through the real actors against the fake upstream.

An album only Spotify knows gets Spotify's tracks and album fields; an artist
whose MusicBrainz page links Discogs gets its Discogs image; a failed Discogs
lookup is asked again after its cooldown when asking again can help (a 404 or
403), and never on its own after a 400.  Each on PostgreSQL and SQLite.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from models import Album, Artist, ConfigError, EnrichmentLog, Track, load_settings
from workers.fake_upstream import DISCOGS

from app_harness import add_album, tree

LANTERNS = "3fVq8LrQ2sKx9TnW7bYc1D"  # on Spotify only: MusicBrainz has no such release group
ORCHARD_DISCOGS = "7700123"  # linked from Velvet Orchard's MusicBrainz relations
HARBOUR_DISCOGS = "7700456"  # Glass Harbour: on Discogs only, MusicBrainz has no such artist


def root_of(job_id: str) -> EnrichmentLog:
    return EnrichmentLog.get(EnrichmentLog.job_id == job_id)


def by_operation(job_id: str) -> dict[str, EnrichmentLog]:
    rows = tree(job_id)
    found = {row.operation: row for row in rows}
    assert len(found) == len(rows), [r.operation for r in rows]  # one job of each type in these trees
    return found


def days_ago(operation: str, entity_id, days: float) -> None:
    """Move this operation's rows on the entity ``days`` into the past, as if a later run came then."""
    shift = dt.timedelta(days=days)
    rows = EnrichmentLog.select().where((EnrichmentLog.operation == operation) & (EnrichmentLog.entity_id == entity_id))
    for row in rows:
        EnrichmentLog.update(created_at=row.created_at - shift, completed_at=row.completed_at - shift).where(
            EnrichmentLog.id == row.id).execute()


def discogs_page_requests(fake) -> int:
    return len(fake.requests("discogs", DISCOGS + f"/artists/{ORCHARD_DISCOGS}"))


def discogs_searches(fake) -> int:
    return len(fake.requests("discogs", DISCOGS + "/database/search"))


# -- an album MusicBrainz does not know, but Spotify does -------------------------------------


def test_album_only_spotify_knows_gets_spotifys_tracks_and_fields(app, fake):
    album = add_album("Lanterns on the Fjord", ["Velvet Orchard"], spotify_id=LANTERNS)
    root_id = app.run("check_album_enrichment", str(album.id), "test")

    assert root_of(root_id).status == "success"
    ops = by_operation(root_id)
    order = [r.operation for r in tree(root_id)]
    assert order.index("enrichment:album") < order.index("spotify:track-fallback") < order.index("cache:album-cover-art")
    mb = ops["enrichment:album"]
    assert mb.status == "no_data" and mb.details["spotify_fallback"] is True
    assert mb.reason.startswith("no MusicBrainz release group scored above 0.8")
    assert mb.reason.endswith("asked Spotify for the tracks and album fields")

    spotify = ops["spotify:track-fallback"]
    assert spotify.status == "success", spotify.last_error
    assert spotify.reason == ("9 tracks on Spotify: 9 created, 0 updated; MusicBrainz found no release group, "
                              "so from Spotify also: release_date, release_type, cover_art_url")
    assert spotify.fields_enriched == ["release_date", "release_type", "cover_art_url", "track_count"]
    assert spotify.details["album_fields_from_spotify"] == ["release_date", "release_type", "cover_art_url"]
    assert spotify.details["cover_cache_sent"] is True and spotify.sources == ["spotify"]
    assert ops["cache:album-cover-art"].status == "success"

    album = Album.get_by_id(album.id)
    assert (album.release_date, album.release_type, album.track_count) == ("2019-10-04", "Album", 9)
    assert album.cover_art_url.endswith(f"/images/spotify/{LANTERNS}-640.jpg")
    assert album.cached_image_path and Path(album.cached_image_path).is_file()
    tracks = list(Track.select().where(Track.album == album).order_by(Track.track_number))
    assert [t.track_number for t in tracks] == list(range(1, 10))
    assert tracks[1].title == "Lanterns on the Fjord" and all(t.spotify_id and t.duration_ms for t in tracks)

    # Spotify delivered: a later check is not held back 90 days as "no data".
    again = app.run("check_album_enrichment", str(album.id), "test")
    check = root_of(again)
    assert check.status == "success" and "found no data" not in check.reason
    assert check.reason == (f"no MusicBrainz id; spotify:track-fallback (sent by enrichment:album) delivered on "
                            f"{spotify.completed_at:%Y-%m-%d %H:%M}: no cooldown")
    assert by_operation(again)["spotify:track-fallback"].details["tracks_created"] == 0
    assert Track.select().where(Track.album == album).count() == 9


def test_album_spotify_cannot_serve_either_waits_out_the_failed_cooldown(app, fake):
    album = add_album("Lanterns on the Fjord", ["Velvet Orchard"], spotify_id="0000000000000000000000")
    first = app.run("check_album_enrichment", str(album.id), "test")
    spotify = by_operation(first)["spotify:track-fallback"]
    assert (spotify.status, spotify.error_code) == ("failed", "not_found")
    assert root_of(first).status == "degraded" and Track.select().count() == 0

    again = root_of(app.run("check_album_enrichment", str(album.id), "test"))
    assert again.status == "skipped" and again.reason.startswith(
        "spotify:track-fallback failed on ") and "(not_found), worth another try: next try after " in again.reason


def test_no_data_cooldown_is_configurable(app):
    album = add_album("An Album Nobody Has Heard Of", ["Nobody Known"])
    app.run("check_album_enrichment", str(album.id), "test")
    days_ago("enrichment:album", album.id, 2)
    held = root_of(app.run("check_album_enrichment", str(album.id), "test"))
    assert held.status == "skipped" and "enrichment:album found no data on " in held.reason

    app.setenv("NO_DATA_COOLDOWN_DAYS", "1.5")
    asked = app.run("check_album_enrichment", str(album.id), "test")
    assert root_of(asked).reason.endswith("; the 1.5-day cooldown is over")
    assert by_operation(asked)["enrichment:album"].status == "no_data"


# -- an artist whose MusicBrainz page links Discogs ------------------------------------------


def test_artist_linked_to_discogs_gets_its_image_without_a_search(app, fake):
    artist = Artist.create(name="Velvet Orchard")
    root_id = app.run("check_artist_enrichment", str(artist.id), "test")

    assert root_of(root_id).status == "success"
    assert [r.operation for r in tree(root_id)] == ["enrichment:artist", "discogs:get-artist", "cache:artist-image"]
    ops = by_operation(root_id)
    assert ops["enrichment:artist"].reason == (
        f"matched by search; no image: sent discogs:get-artist for Discogs id {ORCHARD_DISCOGS}")
    assert ops["enrichment:artist"].fields_enriched[:1] == ["country_code"]
    assert "discogs_id" in ops["enrichment:artist"].fields_enriched
    assert ops["discogs:get-artist"].fields_enriched == ["image_url"]
    assert all(r.status == "success" for r in ops.values())
    assert fake.requests("discogs", DISCOGS + "/database/search") == []

    artist = Artist.get_by_id(artist.id)
    assert artist.discogs_id == ORCHARD_DISCOGS and artist.country_code == "NO"
    assert artist.image_url.endswith(f"/images/discogs/{ORCHARD_DISCOGS}-primary.jpg")
    assert Path(artist.cached_image_path).is_file()

    # Nothing is missing any more: a later check does not run the enrichment again for nothing.
    again = root_of(app.run("check_artist_enrichment", str(artist.id), "test"))
    assert again.status == "skipped" and again.reason.endswith("nothing to gain")


# -- an artist MusicBrainz does not know ----------------------------------------------------------


def test_artist_only_discogs_knows_is_searched_there_and_gets_its_image(app, fake):
    artist = Artist.create(name="Glass Harbour")
    root_id = app.run("check_artist_enrichment", str(artist.id), "test")

    assert root_of(root_id).status == "success"
    assert [r.operation for r in tree(root_id)] == [
        "enrichment:artist", "discogs:search-artist", "discogs:get-artist", "cache:artist-image"]
    ops = by_operation(root_id)
    mb = ops["enrichment:artist"]
    # MusicBrainz found nothing: that job stays no_data, and says what it sent instead.
    assert mb.status == "no_data" and mb.sources == ["musicbrainz"]
    assert mb.reason == "no MusicBrainz artist scored above 0.8; no image: sent discogs:search-artist"
    assert mb.details["image_step"] == "no image: sent discogs:search-artist" and mb.fields_enriched == []
    search = ops["discogs:search-artist"]
    assert search.status == "success" and search.fields_enriched == ["discogs_id"]
    assert search.reason == f"matched Discogs artist 'Glass Harbour' (id {HARBOUR_DISCOGS}) with score 1.00"
    assert ops["discogs:get-artist"].status == "success" and ops["discogs:get-artist"].fields_enriched == ["image_url"]
    assert ops["cache:artist-image"].status == "success"

    artist = Artist.get_by_id(artist.id)
    assert artist.discogs_id == HARBOUR_DISCOGS and artist.musicbrainz_id is None
    assert artist.image_url.endswith(f"/images/discogs/{HARBOUR_DISCOGS}-primary.jpg")
    assert Path(artist.cached_image_path).is_file()

    # MusicBrainz's "no data" still holds back a later check (Discogs has given what it has)...
    held = root_of(app.run("check_artist_enrichment", str(artist.id), "test"))
    assert held.status == "skipped" and held.reason.startswith("enrichment:artist found no data on ")
    assert "next try after " in held.reason and held.details["reasons"] == ["no MusicBrainz id", "no country"]
    # ...until its cooldown is over: MusicBrainz is asked again, Discogs is not (the image is there).
    days_ago("enrichment:artist", artist.id, 91)
    later = app.run("check_artist_enrichment", str(artist.id), "test")
    assert root_of(later).reason.endswith("the 90-day cooldown is over")
    assert [(r.operation, r.status, r.reason) for r in tree(later)] == [
        ("enrichment:artist", "no_data", "no MusicBrainz artist scored above 0.8")]
    assert discogs_searches(fake) == 1


def test_artist_neither_knows_waits_out_both_no_data_cooldowns(app, fake):
    artist = Artist.create(name="Nobody Known")
    first = app.run("check_artist_enrichment", str(artist.id), "test")
    assert root_of(first).status == "success"
    assert [(r.operation, r.status) for r in tree(first)] == [
        ("enrichment:artist", "no_data"), ("discogs:search-artist", "no_data")]
    ops = by_operation(first)
    assert ops["enrichment:artist"].reason.endswith("; no image: sent discogs:search-artist")
    assert ops["discogs:search-artist"].reason == "Discogs found no artist named 'Nobody Known'"
    artist = Artist.get_by_id(artist.id)
    assert (artist.discogs_id, artist.image_url, artist.cached_image_path) == (None, None, None)
    assert discogs_searches(fake) == 1

    # A month later: neither is asked again, and the check says why for both.
    days_ago("enrichment:artist", artist.id, 30)
    days_ago("discogs:search-artist", artist.id, 30)
    held = root_of(app.run("check_artist_enrichment", str(artist.id), "test"))
    assert held.status == "skipped" and held.reason.startswith("enrichment:artist found no data on ")
    assert held.details["held_back"]["no image"].startswith("discogs:search-artist found no data on ")
    assert discogs_searches(fake) == 1 and len(fake.requests("musicbrainz")) == 1

    # Past the 90-day cooldown: both are asked again, once.
    days_ago("enrichment:artist", artist.id, 61)
    days_ago("discogs:search-artist", artist.id, 61)
    later = app.run("check_artist_enrichment", str(artist.id), "test")
    check = root_of(later)
    assert check.status == "success" and "no image (discogs:search-artist found no data on " in check.reason
    assert check.reason.endswith("the 90-day cooldown is over")
    assert [(r.operation, r.status) for r in tree(later)] == [
        ("enrichment:artist", "no_data"), ("discogs:search-artist", "no_data")]
    assert discogs_searches(fake) == 2

    # --force asks both at once, whatever the cooldowns say.
    forced = by_operation(app.run("check_artist_enrichment", str(artist.id), "test", True))
    assert forced["enrichment:artist"].reason.endswith("; no image: sent discogs:search-artist (forced)")
    assert forced["discogs:search-artist"].status == "no_data" and discogs_searches(fake) == 3


def test_artist_musicbrainz_does_not_know_with_a_discogs_id_gets_its_page_without_a_search(app, fake):
    artist = Artist.create(name="Glass Harbour", discogs_id=HARBOUR_DISCOGS)
    root_id = app.run("check_artist_enrichment", str(artist.id), "test")
    assert [(r.operation, r.status) for r in tree(root_id)] == [
        ("enrichment:artist", "no_data"), ("discogs:get-artist", "success"), ("cache:artist-image", "success")]
    assert by_operation(root_id)["enrichment:artist"].reason.endswith(
        f"; no image: sent discogs:get-artist for Discogs id {HARBOUR_DISCOGS}")
    assert discogs_searches(fake) == 0 and Path(Artist.get_by_id(artist.id).cached_image_path).is_file()


def test_discogs_failure_for_an_artist_musicbrainz_does_not_know_is_retried_after_its_own_cooldown(app, fake):
    fake.fail(DISCOGS + f"/artists/{HARBOUR_DISCOGS}", "status", status=404, times=1)
    artist = Artist.create(name="Glass Harbour")
    first = app.run("check_artist_enrichment", str(artist.id), "test")
    assert [(r.operation, r.status) for r in tree(first)] == [
        ("enrichment:artist", "no_data"), ("discogs:search-artist", "success"), ("discogs:get-artist", "failed")]
    assert Artist.get_by_id(artist.id).discogs_id == HARBOUR_DISCOGS

    days_ago("discogs:get-artist", artist.id, 1)
    held = root_of(app.run("check_artist_enrichment", str(artist.id), "test"))
    assert held.status == "skipped" and held.reason.startswith("enrichment:artist found no data on ")
    assert "(not_found), worth another try: next try after " in held.details["held_back"]["no image"]

    # Past Discogs' 7-day wait, inside MusicBrainz's 90 days: only Discogs is asked again.
    days_ago("discogs:get-artist", artist.id, 7)
    musicbrainz_calls = len(fake.requests("musicbrainz"))
    later = app.run("check_artist_enrichment", str(artist.id), "test")
    check = root_of(later)
    assert check.status == "success" and check.details["decision"] == "image only"
    assert check.reason.startswith("no image (discogs:get-artist failed on ")
    assert "(not_found), worth another try: the 7-day cooldown is over); enrichment:artist found no data on " in check.reason
    assert check.reason.endswith(": sent discogs:get-artist only")
    assert [(r.operation, r.status) for r in tree(later)] == [
        ("discogs:get-artist", "success"), ("cache:artist-image", "success")]
    assert len(fake.requests("musicbrainz")) == musicbrainz_calls
    assert Path(Artist.get_by_id(artist.id).cached_image_path).is_file()


def test_artist_musicbrainz_does_not_know_is_searched_on_discogs_once_a_token_is_set(app, fake):
    token = app.env["DISCOGS_TOKEN"]
    app.delenv("DISCOGS_TOKEN")
    artist = Artist.create(name="Glass Harbour")
    first = app.run("check_artist_enrichment", str(artist.id), "test")
    search = by_operation(first)["discogs:search-artist"]
    assert search.status == "skipped" and "DISCOGS_TOKEN" in search.reason

    # A skipped search sets no cooldown: the next check asks Discogs alone, MusicBrainz still waits.
    app.setenv("DISCOGS_TOKEN", token)
    later = app.run("check_artist_enrichment", str(artist.id), "test")
    check = root_of(later)
    assert check.details["decision"] == "image only" and check.reason.startswith("no image; enrichment:artist found no data on ")
    assert check.reason.endswith(": sent discogs:search-artist only")
    assert [(r.operation, r.status) for r in tree(later)] == [
        ("discogs:search-artist", "success"), ("discogs:get-artist", "success"), ("cache:artist-image", "success")]
    assert len(fake.requests("musicbrainz")) == 1
    assert Artist.get_by_id(artist.id).discogs_id == HARBOUR_DISCOGS


# -- a failed discogs:get-artist, asked again or not -------------------------------------------


@pytest.mark.parametrize("status, code", [(404, "not_found"), (403, "upstream_403")])
def test_discogs_lookup_refused_for_an_id_is_retried_after_the_failed_cooldown(app, fake, status, code):
    fake.fail(DISCOGS + f"/artists/{ORCHARD_DISCOGS}", "status", status=status, times=1)
    artist = Artist.create(name="Velvet Orchard")
    first = app.run("check_artist_enrichment", str(artist.id), "test")
    failed = by_operation(first)["discogs:get-artist"]
    assert (failed.status, failed.error_code, failed.retry_count) == ("failed", code, 0)
    assert root_of(first).status == "degraded"
    assert discogs_page_requests(fake) == 1

    # The next day: the image is held back, and the check says why and until when.
    days_ago("discogs:get-artist", artist.id, 1)
    held = root_of(app.run("check_artist_enrichment", str(artist.id), "test"))
    assert held.status == "skipped" and held.details["decision"] == "cooldown"
    assert held.reason.startswith("no image, but discogs:get-artist failed on ")
    assert f"({code}), worth another try: next try after " in held.reason
    assert discogs_page_requests(fake) == 1

    # Eight days later the 7-day cooldown is over: asked again, and this time Discogs answers.
    days_ago("discogs:get-artist", artist.id, 7)
    later = app.run("check_artist_enrichment", str(artist.id), "test")
    check = root_of(later)
    assert check.status == "success"
    assert check.reason.startswith("no image (discogs:get-artist failed on ")
    assert check.reason.endswith(f"({code}), worth another try: the 7-day cooldown is over)")
    assert [r.operation for r in tree(later)] == ["enrichment:artist", "discogs:get-artist", "cache:artist-image"]
    assert all(r.status == "success" for r in tree(later))
    assert discogs_page_requests(fake) == 2
    assert Path(Artist.get_by_id(artist.id).cached_image_path).is_file()


def test_discogs_400_is_never_retried_by_a_later_run_only_by_force(app, fake):
    fake.fail(DISCOGS + f"/artists/{ORCHARD_DISCOGS}", "status", status=400, times=1)
    artist = Artist.create(name="Velvet Orchard")
    first = app.run("check_artist_enrichment", str(artist.id), "test")
    assert by_operation(first)["discogs:get-artist"].error_code == "upstream_400"

    # A month later, long after the failed cooldown: still not asked, and the check says why.
    days_ago("discogs:get-artist", artist.id, 30)
    held = root_of(app.run("check_artist_enrichment", str(artist.id), "test"))
    assert held.status == "skipped"
    assert held.reason.startswith("no image, but discogs:get-artist failed on ") and held.reason.endswith(
        "(upstream_400): Discogs called the request malformed, and the same request fails the same way; "
        "not retried without --force")
    # An enrichment run for another reason does not ask Discogs either, and its row says so.
    enrich = root_of(app.run("enrich_artist", str(artist.id)))
    assert enrich.status == "success" and "no image; discogs:get-artist not sent: " in enrich.reason
    assert tree(enrich.job_id) == [] and discogs_page_requests(fake) == 1

    forced = app.run("check_artist_enrichment", str(artist.id), "test", True)
    assert root_of(forced).reason.startswith("forced (")
    ops = by_operation(forced)
    assert ops["enrichment:artist"].reason.endswith(f"sent discogs:get-artist for Discogs id {ORCHARD_DISCOGS} (forced)")
    assert ops["discogs:get-artist"].status == "success" and ops["cache:artist-image"].status == "success"
    assert discogs_page_requests(fake) == 2


# -- settings ---------------------------------------------------------------------------------------


def test_cooldown_settings():
    assert (load_settings({}).no_data_cooldown_days, load_settings({}).failed_cooldown_days) == (90, 7)
    settings = load_settings({"NO_DATA_COOLDOWN_DAYS": "30", "FAILED_COOLDOWN_DAYS": "0.5"})
    assert (settings.no_data_cooldown_days, settings.failed_cooldown_days) == (30, 0.5)
    assert load_settings({"FAILED_COOLDOWN_DAYS": "0"}).failed_cooldown_days == 0
    for raw, said in (("soon", "is not a number of days"), ("-1", "from 0 to 36500"), ("nan", "from 0 to 36500")):
        with pytest.raises(ConfigError, match=f"FAILED_COOLDOWN_DAYS='{raw}' .*{said}"):
            load_settings({"FAILED_COOLDOWN_DAYS": raw})

