"""Each catalog field's history: the entity pages, the tree page, ``GET /api/entities/.../history`` and
``enrich history``, on both databases, on rows written by the real actors and on rows written as they would be."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid

import pytest
from test_dashboard import client, enrich

from models import Album, Artist, EnrichmentLog, utcnow
from models.database import is_postgres
from models.history import CHANGED_INDEX, changes_query

from app_harness import add_album, tree
from dashboard_data import album, insert, job


def change(field: str, before, after) -> dict:
    return {"field": field, "before": before, "after": after}


@pytest.fixture
def disputed(db):
    """OK Computer: MusicBrainz set its release date, then a Spotify fallback set another; a check changed nothing."""
    record = album("OK Computer", "Radiohead")
    now = utcnow()
    entity = ("album", record.id)
    insert(
        job("root-mb", at=now - dt.timedelta(hours=2), entity=entity),
        job("mb-album", "root-mb", at=now - dt.timedelta(hours=2), entity=entity, fields_enriched=["release_date", "title"],
            details={"release_id": "b1392450-e666-3926-a536-22c65f834433", "musicbrainz_id": "rg-1",
                     "field_changes": [change("release_date", None, "1997-05-21"),
                                       change("title", "Ok computer", "OK Computer")]}),
        job("root-sp", at=now - dt.timedelta(hours=1), entity=entity),
        job("sp-fallback", "root-sp", at=now - dt.timedelta(hours=1), entity=entity,
            operation="spotify:track-fallback", fields_enriched=["release_date"],
            details={"spotify_album_id": "6dVIqQ8qmQ5GBnJ9shOYGE",
                     "field_changes": [change("release_date", "1997-05-21", "1997-06-16")]}),
        job("root-check", at=now - dt.timedelta(minutes=5), entity=entity, reason="up to date"),
    )
    return record


def test_an_album_page_shows_each_fields_changes_newest_first_with_source_and_tree(disputed):
    page = client().get(f"/albums/{disputed.id}").text
    history = page[page.index("Field history"):page.index("Every tree that touched it")]
    release = history[history.index(">release date</h3>"):history.index(">title</h3>")]
    # Newest first: Spotify's date, then MusicBrainz's; each with its before, its source and its tree.
    assert release.index("1997-06-16") < release.index("b1392450")
    assert 'href="https://open.spotify.com/album/6dVIqQ8qmQ5GBnJ9shOYGE"' in release
    assert 'href="https://musicbrainz.org/release/b1392450-e666-3926-a536-22c65f834433"' in release
    assert re.findall(r'<td class="mono"><a class="tree" href="/trees/([^"]+)"', release) == ["root-sp", "root-mb"]
    assert "Ok computer" in history and "root-check" not in history  # a job that changed nothing is no change
    # The sources disagree on the release date, and the page says so, with each one's word.
    alert = history[history.index("The sources disagree"):history.index("</div>")]
    assert "release date" in alert and "1997-06-16" in alert and "1997-05-21" in alert
    assert "Spotify" in alert and "MusicBrainz" in alert and "title" not in alert


def test_the_api_answers_the_history_and_one_field_of_it(disputed):
    web = client()
    body = web.get(f"/api/entities/album/{disputed.id}/history").json()
    assert [(c["field"], c["after"], c["job_id"], c["root_job_id"]) for c in body["changes"]] == [
        ("release_date", "1997-06-16", "sp-fallback", "root-sp"),
        ("release_date", "1997-05-21", "mb-album", "root-mb"),
        ("title", "OK Computer", "mb-album", "root-mb"),
    ]
    newest = body["changes"][0]
    assert newest["before"] == "1997-05-21" and newest["operation"] == "spotify:track-fallback"
    assert newest["source"] == {"service": "Spotify", "kind": "album", "id": "6dVIqQ8qmQ5GBnJ9shOYGE",
                                "url": "https://open.spotify.com/album/6dVIqQ8qmQ5GBnJ9shOYGE"}
    assert newest["changed_at"].endswith("Z") and body["truncated"] is False
    [disagreement] = body["disagreements"]
    assert disagreement["field"] == "release_date"
    assert {c["source"]["service"]: c["after"] for c in disagreement["changes"]} == {
        "Spotify": "1997-06-16", "MusicBrainz": "1997-05-21"}
    title = web.get(f"/api/entities/album/{disputed.id}/history?field=title").json()
    assert title["field"] == "title" and [c["after"] for c in title["changes"]] == ["OK Computer"]
    assert title["disagreements"] == []
    one = web.get(f"/api/entities/album/{disputed.id}/history?limit=1").json()
    assert one["truncated"] is True and [c["job_id"] for c in one["changes"]] == ["sp-fallback"]


def test_older_changes_are_read_page_by_page_with_the_next_cursor(disputed, capsys):
    web, seen, cursor = client(), [], None
    while True:  # one changing job a page: every change once, newest first, then a last page
        query = f"?limit=1&cursor={cursor}" if cursor else "?limit=1"
        page = web.get(f"/api/entities/album/{disputed.id}/history{query}").json()
        seen += [(c["job_id"], c["field"]) for c in page["changes"]]
        cursor = page["next_cursor"]
        assert page["truncated"] is (cursor is not None)
        if cursor is None:
            break
    assert seen == [("sp-fallback", "release_date"), ("mb-album", "release_date"), ("mb-album", "title")]
    second = web.get(f"/api/entities/album/{disputed.id}/history?limit=1").json()["next_cursor"]
    page = web.get(f"/albums/{disputed.id}?changes={second}").text
    history = page[page.index("Field history"):page.index("Every tree that touched it")]
    assert "mb-album" in history and "sp-fallback" not in history and "« newest changes" in history
    assert enrich("history", "album", str(disputed.id), "--limit", "1") == 0
    hint = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"enrich history album {disputed.id} --cursor " in hint  # the command for the next page
    assert enrich("history", "album", str(disputed.id), "--limit", "1", "--cursor", hint.split("--cursor ")[1]) == 0
    assert "mb-album" in capsys.readouterr().out


def test_the_cli_prints_the_same_history_as_text_and_json(disputed, capsys):
    assert enrich("history", "album", str(disputed.id), "--json") == 0
    assert json.loads(capsys.readouterr().out) == client().get(f"/api/entities/album/{disputed.id}/history").json()
    assert enrich("history", "album", str(disputed.id), "--field", "release_date") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sources disagree on release_date: Spotify album 6dVIqQ8qmQ5GBnJ9shOYGE says 1997-06-16")
    assert lines[1] == "release_date:"
    assert "1997-05-21 → 1997-06-16  from Spotify album 6dVIqQ8qmQ5GBnJ9shOYGE  job sp-fallback (tree root-sp" in lines[2]
    assert "– → 1997-05-21  from MusicBrainz release b1392450-e666-3926-a536-22c65f834433  job mb-album" in lines[3]
    assert len(lines) == 4  # the title's change is another field's


@pytest.mark.parametrize("args, message", [
    (["album", "6f1c1d6e-0000-4000-8000-000000000000"], "no album with id 6f1c1d6e-0000-4000-8000-000000000000"),
    (["album", "not-a-uuid"], "album id 'not-a-uuid' is not a UUID"),
    (["track", "6f1c1d6e-0000-4000-8000-000000000000", "--field", "a;b"], "field 'a;b' is not a field name"),
    (["album", "6f1c1d6e-0000-4000-8000-000000000000", "--cursor", "nope"], "malformed cursor 'nope'"),
])
def test_the_cli_refuses_bad_input_in_one_line(db, capsys, args, message):
    assert enrich("history", *args) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("enrich history: ") and message in captured.err
    assert len(captured.err.splitlines()) == 1


@pytest.mark.parametrize("path, status, message", [
    ("/api/entities/album/not-a-uuid/history", 400, "is not a UUID"),
    ("/api/entities/planet/6f1c1d6e-0000-4000-8000-000000000000/history", 400, "entity type 'planet'"),
    ("/api/entities/album/6f1c1d6e-0000-4000-8000-000000000000/history", 404, "no album with id"),
    ("/api/entities/album/6f1c1d6e-0000-4000-8000-000000000000/history?field=x%20y", 400, "is not a field name"),
    ("/api/entities/album/6f1c1d6e-0000-4000-8000-000000000000/history?limit=0", 400, "limit 0 must be"),
    ("/api/entities/album/6f1c1d6e-0000-4000-8000-000000000000/history?limit=ten", 400, "limit 'ten'"),
    ("/api/entities/album/6f1c1d6e-0000-4000-8000-000000000000/history?limit=501", 400, "between 1 and 500"),
    ("/api/entities/album/6f1c1d6e-0000-4000-8000-000000000000/history?cursor=W1sx", 400, "malformed cursor"),
])
def test_the_api_refuses_bad_input_in_one_line(db, path, status, message):
    answer = client().get(path)
    assert answer.status_code == status and message in answer.json()["error"]


def test_an_entity_in_the_catalog_without_changes_has_an_empty_history(db):
    record = album("Dummy", "Portishead")
    assert client().get(f"/api/entities/album/{record.id}/history").json()["changes"] == []
    assert "No job has changed a field of it." in client().get(f"/albums/{record.id}").text


def test_values_and_sources_pass_through_the_logs_redaction(db, capsys):
    artist = Artist.create(name="Secretive")
    insert(job("root-img", at=utcnow(), entity=("artist", artist.id), operation="cache:artist-image",
               fields_enriched=["image_url"],
               details={"source_url": "https://cdn.example/a.jpg?token=tok-Image-991",
                        "field_changes": [change("image_url", "https://user:pw-Url-42@img.example/a.jpg",
                                                 "https://cdn.example/a.jpg?api_key=key-Img-17")]}))
    secrets = ("tok-Image-991", "pw-Url-42", "key-Img-17")
    web = client()
    for path in (f"/artists/{artist.id}", f"/api/entities/artist/{artist.id}/history", "/trees/root-img"):
        body = web.get(path).text
        assert "[REDACTED]" in body and not any(secret in body for secret in secrets), path
    assert enrich("history", "artist", str(artist.id)) == 0
    out = capsys.readouterr().out
    assert "[REDACTED]" in out and not any(secret in out for secret in secrets)


def test_the_history_is_read_through_the_index_of_rows_that_changed_a_field(disputed):
    db = EnrichmentLog._meta.database
    sql, params = changes_query("album", disputed.id, "release_date").limit(201).sql()
    if is_postgres(db):
        with db.atomic():
            db.execute_sql("SET LOCAL enable_seqscan = off")  # the table is tiny: show the index can answer
            plan = " ".join(row[0] for row in db.execute_sql("EXPLAIN " + sql, params).fetchall())
    else:
        plan = " ".join(str(row[-1]) for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall())
    assert CHANGED_INDEX in plan, plan


# -- rows written by the real actors ---------------------------------------------------------------


def test_a_real_album_tree_records_who_set_the_release_date_and_from_which_release(app):
    record = add_album("Homogenic", ["Björk"])
    root_id = app.run("check_album_enrichment", str(record.id), "test")
    record = Album.get_by_id(record.id)
    enriched = next(r for r in tree(root_id) if r.operation == "enrichment:album")
    web = client()

    body = web.get(f"/api/entities/album/{record.id}/history?field=release_date").json()
    [set_date] = body["changes"]
    assert set_date["after"] == record.release_date and set_date["before"] is None
    assert set_date["root_job_id"] == root_id and set_date["job_id"] == enriched.job_id
    assert set_date["source"]["service"] == "MusicBrainz" and set_date["source"]["kind"] == "release"
    assert set_date["source"]["id"] == enriched.details["release_id"] is not None

    # The artist's Discogs id came from Discogs' search: its source is that Discogs artist.
    artist = Artist.get(Artist.name == "Björk")
    [discogs] = web.get(f"/api/entities/artist/{artist.id}/history?field=discogs_id").json()["changes"]
    assert discogs["after"] == artist.discogs_id and discogs["source"]["service"] == "Discogs"
    assert discogs["source"]["id"] == artist.discogs_id

    # The tree page says what the tree changed: the album's fields and the artist's, each with its entity.
    page = web.get(f"/trees/{root_id}").text
    changed = page[page.index("What this tree changed"):]
    assert record.release_date in changed and "discogs id" in changed
    assert f'href="/albums/{record.id}"' in changed and f'href="/artists/{artist.id}"' in changed
    assert uuid.UUID(body["entity_id"]) == record.id


def test_a_big_trees_page_draws_its_first_changes_and_counts_them_all_by_field(db):
    record = album("Many Tracks", "Various")
    now = utcnow()
    rows = [job("root-big", at=now, entity=("album", record.id))]
    rows += [job(f"child-{n}", "root-big", at=now + dt.timedelta(milliseconds=n), entity=("album", record.id),
                 fields_enriched=["genres", "track_count"],
                 details={"field_changes": [change("genres", [], ["pop"]), change("track_count", n, n + 1)]})
             for n in range(60)]
    insert(*rows)
    page = client().get("/trees/root-big").text
    changed = page[page.index("What this tree changed"):]
    assert changed.count('<td class="before">') == 100
    assert "100 of 120 changes shown; all of them by field: genres 60, track count 60." in changed
