"""Enrichment through the real actors and JobLinking, against the fake upstream (PostgreSQL and SQLite)."""

from __future__ import annotations

import os

import pytest

from models import Album, Artist, EnrichmentLog, Track

from app_harness import add_album, tree

HOMOGENIC_MBID = "810272e0-aef1-3d85-b2d3-e512e87fc38c"


def by_operation(rows):
    found = {}
    for row in rows:
        found.setdefault(row.operation, []).append(row)
    return found


def test_album_enrichment_builds_one_flat_tree(app):
    album = add_album("Homogenic", ["Björk"])
    root_id = app.run("check_album_enrichment", str(album.id), "test")

    root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
    assert root.is_root_job and root.operation == "check:album-enrichment"
    assert root.status == "success", root.last_error
    children = tree(root_id)
    ops = by_operation(children)
    # Every operation whose condition holds, all under this one root.
    assert set(ops) == {
        "enrichment:album",
        "cache:album-cover-art",
        "check:artist-enrichment",
        "enrichment:artist",
        "discogs:search-artist",
        "discogs:get-artist",
        "cache:artist-image",
    }
    assert all(r.parent_job_id == root_id and not r.is_root_job for r in children)
    assert all(r.status == "success" for r in children), [(r.operation, r.status, r.last_error) for r in children]
    starts = [r.started_at for r in children]
    assert starts == sorted(starts)
    # A job starts after the job that sent it.
    order = [r.operation for r in children]
    assert order.index("enrichment:artist") < order.index("discogs:search-artist") < order.index("discogs:get-artist")
    assert order.index("discogs:get-artist") < order.index("cache:artist-image")

    album = Album.get_by_id(album.id)
    assert album.musicbrainz_id == HOMOGENIC_MBID
    assert album.cover_art_url == app.fake.cover_art_url(HOMOGENIC_MBID)  # COVERART_URL from fake.env()
    assert album.release_date and album.data_quality in ("medium", "high")
    assert album.enrichment_status == "completed"
    assert album.cached_image_path and os.path.exists(album.cached_image_path)
    tracks = list(Track.select().where(Track.album == album).order_by(Track.disc_number, Track.track_number))
    assert len(tracks) == album.track_count > 0
    assert all(t.musicbrainz_id and t.duration_ms for t in tracks)

    enrich_row = ops["enrichment:album"][0]
    assert enrich_row.details["musicbrainz_id"] == HOMOGENIC_MBID
    assert enrich_row.details["match_score"] > 0.8
    changed = {c["field"] for c in enrich_row.details["field_changes"]}
    assert set(enrich_row.fields_enriched) == changed and "release_date" in changed
    assert enrich_row.sources == ["musicbrainz"] and enrich_row.api_call_count == 3

    artist = Artist.get(Artist.name == "Björk")
    assert artist.country_code == "IS" and artist.discogs_id and artist.cached_image_path


def test_second_run_creates_no_duplicate_tracks_and_lists_no_unchanged_field(app):
    album = add_album("OK Computer", ["Radiohead"])
    app.run("check_album_enrichment", str(album.id), "test")
    first = Track.select().where(Track.album == album).count()
    assert first > 0

    again = app.run("check_album_enrichment", str(album.id), "test", True)  # force
    assert Track.select().where(Track.album == album).count() == first
    row = next(r for r in tree(again) if r.operation == "enrichment:album")
    assert row.fields_enriched == [] and row.details["tracks_created"] == 0


def test_recently_enriched_album_is_skipped_with_a_reason(app):
    album = add_album("Dummy", ["Portishead"])
    app.run("check_album_enrichment", str(album.id), "test")
    root_id = app.run("check_album_enrichment", str(album.id), "test")
    root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
    assert root.status == "skipped"
    assert "nothing to gain" in root.reason
    assert tree(root_id) == []


def test_no_data_cooldown_blocks_only_the_same_operation(app):
    album = add_album("An Album Nobody Has Heard Of", ["Nobody Known"])
    first = app.run("check_album_enrichment", str(album.id), "test")
    enrich = next(r for r in tree(first) if r.operation == "enrichment:album")
    assert enrich.status == "no_data" and "no MusicBrainz release group" in enrich.reason

    second = app.run("check_album_enrichment", str(album.id), "test")
    root = EnrichmentLog.get(EnrichmentLog.job_id == second)
    assert root.status == "skipped" and "found no data" in root.reason


def test_a_503_then_success_is_one_row_with_one_retry(app):
    app.fake.fail("/musicbrainz/ws/2/release-group/", "server_error", times=1)
    album = add_album("Mezzanine", ["Massive Attack"])
    root_id = app.run("check_album_enrichment", str(album.id), "test")
    rows = [r for r in tree(root_id) if r.operation == "enrichment:album"]
    assert len(rows) == 1
    assert rows[0].status == "success" and rows[0].retry_count == 1
    assert rows[0].error_code == "upstream_503" and "503" in rows[0].last_error


def test_permanent_discogs_failure_degrades_the_root(app):
    app.fake.fail("/discogs/artists/", "status", status=400, times=None)
    album = add_album("Homogenic", ["Björk"])
    root_id = app.run("check_album_enrichment", str(album.id), "test")
    failed = [r for r in tree(root_id) if r.status == "failed"]
    assert [r.operation for r in failed] == ["discogs:get-artist"]
    assert failed[0].retry_count == 0 and failed[0].error_code == "upstream_400"
    root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
    assert root.status == "degraded" and root.failed_children == 1


def test_missing_spotify_credentials_skip_the_fallback(app):
    app.delenv("SPOTIFY_CLIENT_ID")
    album = add_album("OK Computer OKNOTOK 1997 2017", ["Radiohead"], spotify_id="0tzfI6NFJqcJkWb23R3lRZ")
    root_id = app.run("check_album_enrichment", str(album.id), "test")
    fallback = [r for r in tree(root_id) if r.operation == "spotify:track-fallback"]
    assert len(fallback) == 1
    assert fallback[0].status == "skipped" and "SPOTIFY_CLIENT_ID" in fallback[0].reason
    assert EnrichmentLog.get(EnrichmentLog.job_id == root_id).status == "success"


def test_unknown_album_id_fails_at_once_with_a_clear_code(app):
    root_id = app.run("check_album_enrichment", "00000000-0000-0000-0000-000000000000", "test")
    root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
    assert root.status == "failed" and root.retry_count == 0
    assert root.error_code == "entity_not_found" and "no album with id" in root.last_error


@pytest.mark.parametrize("bad", ["not-a-uuid", "'; DROP TABLE albums; --"])
def test_malformed_album_id_fails_without_touching_sql(app, bad):
    root_id = app.run("check_album_enrichment", bad, "test")
    root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
    assert root.status == "failed" and root.error_code == "invalid_id"
    assert Album.select().count() == 0 or True  # the table is still there
    assert Album.table_exists()


def test_track_enrichment_by_isrc(app):
    album = add_album("OK Computer", ["Radiohead"])
    track = Track.create(album=album, title="Paranoid Android", track_number=2, isrc="GBAYE9700002")
    root_id = app.run("check_track_enrichment", str(track.id), "test")
    row = next(r for r in tree(root_id) if r.operation == "enrichment:track")
    assert row.status == "success" and row.reason == "matched by ISRC"
    track = Track.get_by_id(track.id)
    assert track.musicbrainz_id and track.duration_ms
