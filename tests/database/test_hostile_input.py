"""Hostile input: odd text in the catalog, malformed messages, unknown actors and ids.

Catalog text (quotes, SQL fragments, emoji, right-to-left scripts, very long
strings) goes in through the ``enrich add-album`` command, run as a real
process against the test database, and is enriched by the real actors.
Messages with options of the wrong type or size, for actors that do not exist
or ids that do not exist, go through the app's broker and worker.

Every case ends in a clear error or a clean row: never a crashed worker, a
job stuck ``running``, or a row that is not the job's own.
"""

from __future__ import annotations

import subprocess
import uuid

import dramatiq
import pytest
import structlog

from models import ALL_MODELS, Album, Artist, EnrichmentLog, Track, album_artists, utcnow
from models.job_log import FINAL_STATUSES
from workers.fake_upstream import MUSICBRAINZ

from app_harness import tree
from linking_harness import drain, wait_for
from test_cli import enrich as run_enrich

MISSING = "5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d"


@pytest.fixture(autouse=True)
def app_broker_is_global(app):
    dramatiq.set_broker(app.broker)


def enrich(*args: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m workers.cli ARGS`` against the test database at ``url``."""
    return run_enrich(*args, env={"DATABASE_URL": url}, timeout=timeout)


def snapshot() -> dict[str, set]:
    """Every row of every table, as comparable tuples."""
    return {
        model._meta.table_name: {tuple(str(v) for v in row) for row in model.select().tuples()}
        for model in ALL_MODELS
    }


def assert_only_new_log_rows(before: dict[str, set], job_ids: set[str]) -> None:
    """Nothing changed but the new job-log rows of ``job_ids``."""
    after = snapshot()
    for table, rows in before.items():
        if table == EnrichmentLog._meta.table_name:
            assert rows <= after[table], "an existing job-log row was changed or removed"
            new = after[table] - rows
            new_jobs = {r.job_id for r in EnrichmentLog.select().where(EnrichmentLog.job_id.in_(list(job_ids)))}
            assert len(new) == len(job_ids) and new_jobs == job_ids
        else:
            assert after[table] == rows, f"{table} was touched"


# -- catalog text through the CLI and the actors -----------------------------------------------------

HOSTILE_TEXT = {
    "quotes": ('He said "Hi" & it\'s `fine` \\ ok', 'Sinéad O\'Connor "The" \'Band\''),
    "sql": ("'; DROP TABLE albums; --", "Robert'); DROP TABLE artists;-- "),
    "emoji": ("🎸🔥 Rock ❤️‍🔥 👩‍👩‍👧 ∑ 𝄞", "🤖 Ünïcødé Bänd 🦄"),
    "arabic": ("أغاني الحب والسلام", "فيروز"),
    "hebrew": ("שירים עבריים (גרסה מורחבת)", "עמיר בניון"),
    "bidi": ("abc \u202eevil\u202c def \u200f\u200e", "\u202bمختلط Mixed\u202c"),
    "1000 chars": ("x" * 999 + "é", "Ω" * 1000),
}


@pytest.mark.parametrize("title, artist", list(HOSTILE_TEXT.values()), ids=list(HOSTILE_TEXT))
def test_hostile_text_is_kept_exactly_and_enriched_cleanly(app, url, title, artist):
    artist = artist.strip()
    added = enrich("add-album", title, "--artist", artist, url=url)
    assert added.returncode == 0, added.stderr
    assert "Traceback" not in added.stderr
    album_id = added.stdout.strip()
    assert str(uuid.UUID(album_id)) == album_id
    # Adding it again finds the same album (the lookup by title survives the text, too).
    again = enrich("add-album", title, "--artist", artist, url=url)
    assert again.returncode == 0 and again.stdout.strip() == album_id, again.stderr

    album = Album.get_by_id(album_id)
    assert album.title == title
    assert [a.name for a in album_artists(album)] == [artist]
    assert Album.select().count() == 1 and Artist.select().count() == 1
    assert Album.table_exists() and Artist.table_exists()

    root_id = app.run("check_album_enrichment", album_id, "test")
    root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
    rows = [root, *tree(root_id)]
    assert root.status == "success", (root.status, root.last_error)
    by_op = {r.operation: r for r in rows}
    assert len(by_op) == len(rows)  # one row per job
    assert {"check:album-enrichment", "enrichment:album", "check:artist-enrichment", "enrichment:artist"} <= set(by_op)
    for row in rows:
        assert row.status in ("success", "no_data", "partial_success"), (row.operation, row.status, row.last_error)
        assert row.error_code is None and row.last_error is None
    assert by_op["enrichment:album"].details["search_query"] == {"title": title, "artist": artist}
    # The catalog still has the exact text after enrichment.
    assert Album.get_by_id(album_id).title == title
    assert Artist.get(Artist.id == album_artists(album)[0].id).name == artist


def test_a_10000_character_title_is_refused_by_the_cli_and_enriched_cleanly_when_stored(app, url):
    long_title = "Ä" * 9_999 + "!"
    refused = enrich("add-album", long_title, "--artist", "A", url=url)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "at most 1,000" in refused.stderr
    assert Album.select().count() == 0 and Artist.select().count() == 0  # nothing half-written
    refused = enrich("add-artist", "🎵" * 10_000, url=url)
    assert refused.returncode == 1 and "at most 1,000" in refused.stderr
    assert Artist.select().count() == 0

    # Text that long can still reach the catalog (another writer, an import): the actors cope.
    album = Album.create(title=long_title)
    artist = Artist.create(name="ש" * 10_000)
    from models import AlbumArtist

    AlbumArtist.create(album=album, artist=artist, position=0)
    root_id = app.run("check_album_enrichment", str(album.id), "test")
    root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
    rows = {r.operation: r for r in tree(root_id)}
    assert set(rows) == {"enrichment:album", "check:artist-enrichment", "enrichment:artist", "discogs:search-artist"}
    # The artist search fits in a URL and finds nothing, on MusicBrainz and then on Discogs.
    assert rows["check:artist-enrichment"].status == "success"
    assert rows["enrichment:artist"].status == "no_data"
    discogs = rows["discogs:search-artist"]
    assert discogs.status == "no_data" and discogs.reason.startswith("Discogs found no artist named 'ששש")
    # The album search (title and artist, percent-encoded) is longer than any URL may be:
    # refused before sending, once, with a clear code; not retried.
    album_row = rows["enrichment:album"]
    assert (album_row.status, album_row.retry_count, album_row.error_code) == ("failed", 0, "invalid_url")
    assert "the request URL cannot be built" in album_row.last_error and len(album_row.last_error) < 300
    assert root.status == "degraded" and root.failed_children == 1
    assert Album.get_by_id(album.id).title == long_title
    assert Artist.get_by_id(artist.id).name == "ש" * 10_000


# -- message options of the wrong type or size ------------------------------------------------------------


def _nobody() -> Artist:
    """An artist whose check sends one enrichment job that finds nothing (a two-row tree).

    It has an image already: without one, enrichment:artist would also ask Discogs.
    """
    return Artist.create(name="Nobody Anyone Has Heard Of", cloudflare_image_id="nobody-image")


BAD_PARENTS = {
    "int": 12345,
    "dict": {"job_id": "x"},
    "list": ["a", "b"],
    "200 chars": "p" * 200,
    "control chars": "abc\x00\x1b[31mdef\n",
    "lone surrogate": "parent\ud800",  # half a UTF-16 pair: text neither database encodes
    "empty": "",
    "bool": True,
    "float": 1.5,
}


@pytest.mark.parametrize("bad", list(BAD_PARENTS.values()), ids=list(BAD_PARENTS))
def test_bad_parent_job_id_option_runs_the_job_as_a_root(app, bad):
    artist = _nobody()
    before = snapshot()
    message = app.broker.get_actor("check_artist_enrichment").send_with_options(
        args=(str(artist.id), "test"), parent_job_id=bad
    )
    drain(app.broker, app.worker, 30)
    root = EnrichmentLog.get(EnrichmentLog.job_id == message.message_id)
    assert root.is_root_job is True and root.parent_job_id is None
    assert root.status == "success", (root.status, root.last_error)
    children = tree(message.message_id)
    assert [(c.operation, c.status) for c in children] == [("enrichment:artist", "no_data")]
    assert EnrichmentLog.select().count() == 2
    # Only the artist's enrichment bookkeeping and the two rows changed.
    after = Artist.get_by_id(artist.id)
    assert after.name == artist.name and after.enrichment_status == "no_data"
    assert before[EnrichmentLog._meta.table_name] == set()


BAD_TRIGGERED_BY = {"oversized": "t" * 500, "int": 7, "dict": {"a": 1}, "control chars": "cli\x00\x07",
                    "lone surrogate": "cli\udc80"}


@pytest.mark.parametrize("bad", list(BAD_TRIGGERED_BY.values()), ids=list(BAD_TRIGGERED_BY))
def test_bad_triggered_by_is_left_out_of_the_row(app, bad):
    artist = _nobody()
    message = app.broker.get_actor("check_artist_enrichment").send_with_options(
        args=(str(artist.id), "test"),
        triggered_by=bad,
        started_by={"job_id": "s" * 5000, "operation": bad, "k" * 1000: "\x00" * 1000},
    )
    drain(app.broker, app.worker, 30)
    root = EnrichmentLog.get(EnrichmentLog.job_id == message.message_id)
    assert root.status == "success" and root.is_root_job
    assert root.triggered_by is None
    started_by = root.details["started_by"]
    assert set(started_by) == {"job_id", "operation"} and len(started_by["job_id"]) == 100
    assert not any(ch < " " for ch in started_by["operation"])
    assert [c.status for c in tree(message.message_id)] == ["no_data"]


BAD_RETRIES = {
    "string": "2",
    "word": "many",
    "negative": -1,
    "float": 1.5,
    "bool": True,
    "list": [1],
    "null": None,
    "huge": 10**12,  # more than retry_count (an INTEGER) holds
    "INTEGER maximum": 2**31 - 1,  # a retry of it would count one more than retry_count holds
}


@pytest.mark.parametrize("bad", list(BAD_RETRIES.values()), ids=list(BAD_RETRIES))
def test_bad_retries_option_on_a_job_that_succeeds(app, bad):
    artist = _nobody()
    message = app.broker.get_actor("enrich_artist").send_with_options(args=(str(artist.id),), retries=bad)
    drain(app.broker, app.worker, 30)
    row = EnrichmentLog.get(EnrichmentLog.job_id == message.message_id)
    assert row.status == "no_data" and row.is_root_job
    assert row.retry_count == 0 and row.last_error is None
    assert EnrichmentLog.select().count() == 1
    assert Artist.get_by_id(artist.id).enrichment_status == "no_data"


@pytest.mark.parametrize("bad", list(BAD_RETRIES.values()), ids=list(BAD_RETRIES))
def test_bad_retries_option_on_a_job_that_fails_then_succeeds(app, fake, bad):
    """A retryable failure must still end in one final row, never stuck running or retrying."""
    fake.fail(MUSICBRAINZ + "/artist", "server_error", times=1, retry_after=None)
    artist = _nobody()
    message = app.broker.get_actor("enrich_artist").send_with_options(args=(str(artist.id),), retries=bad)
    drain(app.broker, app.worker, 30)
    row = EnrichmentLog.get(EnrichmentLog.job_id == message.message_id)
    assert EnrichmentLog.select().count() == 1
    assert row.status in FINAL_STATUSES, (row.status, row.retry_count, row.last_error)
    # The bad option is read as "first attempt": one retry, then the job's own result.
    assert (row.status, row.retry_count) == ("no_data", 1), (row.status, row.retry_count, row.last_error)
    assert row.error_code == "upstream_503"
    assert row.completed_at is not None


@pytest.mark.parametrize("bad", list(BAD_RETRIES.values()), ids=list(BAD_RETRIES))
def test_bad_retries_option_on_a_child_that_recovers_does_not_degrade_the_root(app, fake, bad):
    root_id = app.run("check_artist_enrichment", str(_nobody().id), "test")
    assert EnrichmentLog.get(EnrichmentLog.job_id == root_id).status == "success"
    fake.fail(MUSICBRAINZ + "/artist", "server_error", times=1, retry_after=None)
    other = Artist.create(name="Another Nobody")
    child = app.broker.get_actor("enrich_artist").send_with_options(
        args=(str(other.id),), retries=bad, parent_job_id=root_id
    )
    drain(app.broker, app.worker, 30)
    row = EnrichmentLog.get(EnrichmentLog.job_id == child.message_id)
    assert row.parent_job_id == root_id
    assert row.status == "no_data", (row.status, row.retry_count, row.last_error)
    root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
    assert root.status == "success" and root.failed_children == 0


# -- unknown actors -------------------------------------------------------------------------------------------


def _raw_message(actor_name, args=(), options=None) -> dramatiq.Message:
    return dramatiq.Message(queue_name="default", actor_name=actor_name, args=args, kwargs={}, options=options or {})


@pytest.mark.parametrize("name, operation", [
    ("no_such_actor", "no_such_actor"),
    ("'; DROP TABLE enrichment_logs; --", "'; DROP TABLE enrichment_logs; --"),
    ("🦄" * 300, "🦄" * 100),
    ("no\x00such\ud800actor", "nosuch\ufffdactor"),  # NUL and a lone surrogate: text no database takes
], ids=["plain", "sql", "oversized", "nul and lone surrogate"])
def test_a_message_for_an_unknown_actor_is_a_failed_row(app, name, operation):
    before = snapshot()
    message = _raw_message(name, args=(MISSING,))
    app.broker.enqueue(message)
    drain(app.broker, app.worker, 30)
    row = wait_for(lambda: EnrichmentLog.get_or_none(EnrichmentLog.job_id == message.message_id))
    assert row.status == "failed" and row.error_code == "unknown_actor" and row.retry_count == 0
    assert row.is_root_job and row.operation == operation
    assert "no actor named" in row.last_error
    assert_only_new_log_rows(before, {message.message_id})
    assert EnrichmentLog.table_exists()
    # The worker goes on with the next message.
    artist = _nobody()
    after = app.run("enrich_artist", str(artist.id))
    assert EnrichmentLog.get(EnrichmentLog.job_id == after).status == "no_data"


def test_an_unknown_actor_under_a_root_degrades_it_once(app):
    artist = _nobody()
    root_id = app.run("check_artist_enrichment", str(artist.id), "test")
    assert EnrichmentLog.get(EnrichmentLog.job_id == root_id).status == "success"
    message = _raw_message("retired_actor", options={"parent_job_id": root_id})
    app.broker.enqueue(message)
    drain(app.broker, app.worker, 30)
    row = wait_for(lambda: EnrichmentLog.get_or_none(EnrichmentLog.job_id == message.message_id))
    assert row.status == "failed" and row.error_code == "unknown_actor" and row.parent_job_id == root_id
    app.broker.enqueue(message)  # delivered again: still one row, counted once
    drain(app.broker, app.worker, 30)
    root = EnrichmentLog.get(EnrichmentLog.job_id == root_id)
    assert root.status == "degraded" and root.failed_children == 1
    assert EnrichmentLog.select().where(EnrichmentLog.job_id == message.message_id).count() == 1


# -- ids that do not exist or are not ids ----------------------------------------------------------------------

ENTITY_ACTORS = {
    "check_album_enrichment": "album",
    "check_artist_enrichment": "artist",
    "check_track_enrichment": "track",
    "enrich_album": "album",
    "enrich_artist": "artist",
    "enrich_track": "track",
    "spotify_track_fallback": "album",
    "discogs_search_artist": "artist",
    "discogs_get_artist": "artist",
    "cache_album_cover_art": "album",
    "cache_artist_image": "artist",
}
BAD_IDS = {
    "malformed": ("not-a-uuid", "invalid_id"),
    "sql": ("'; DROP TABLE albums; --", "invalid_id"),
    "int": (12345, "invalid_id"),
    "none": (None, "invalid_id"),
    "dict": ({"id": MISSING}, "invalid_id"),
    "list": ([MISSING], "invalid_id"),
    "10000 chars": ("9" * 10_000, "invalid_id"),
    "control chars": ("\x00\x1b" + MISSING, "invalid_id"),
    "emoji": ("🦄", "invalid_id"),
    "lone surrogate": ("\ud800" + MISSING, "invalid_id"),
    "missing": (MISSING, "entity_not_found"),
    "missing upper-case": (MISSING.upper(), "entity_not_found"),
}


def test_unknown_and_malformed_ids_fail_at_once_on_every_actor(app, fake):
    # A catalog the bad ids must not touch, including entities of the other kinds.
    album = Album.create(title="Homogenic")
    artist = Artist.create(name="Björk")
    Track.create(album=album, title="Jóga", track_number=2)
    EnrichmentLog.create(job_id="older-root", is_root_job=True, operation="check:album-enrichment",
                         status="success", started_at=utcnow(), completed_at=utcnow())
    before = snapshot()

    sent = {}
    for actor_name in ENTITY_ACTORS:
        for case, (bad, code) in BAD_IDS.items():
            message = app.broker.get_actor(actor_name).send(bad)
            sent[message.message_id] = (actor_name, case, code)
    # Another entity type's real id is "not found" too, for the actors of another kind.
    for actor_name, kind in ENTITY_ACTORS.items():
        other = str(artist.id) if kind != "artist" else str(album.id)
        message = app.broker.get_actor(actor_name).send(other)
        sent[message.message_id] = (actor_name, "another kind's id", "entity_not_found")
    drain(app.broker, app.worker, 60)

    rows = {r.job_id: r for r in EnrichmentLog.select().where(EnrichmentLog.job_id.in_(list(sent)))}
    assert set(rows) == set(sent)
    wrong = []
    for job_id, (actor_name, case, code) in sent.items():
        row = rows[job_id]
        if not (row.status == "failed" and row.error_code == code and row.retry_count == 0 and row.is_root_job):
            wrong.append((actor_name, case, row.status, row.error_code, row.retry_count, row.last_error))
        elif code == "invalid_id":
            assert row.entity_id is None and "is not a UUID" in row.last_error
            assert len(row.last_error) < 300
        else:
            assert row.last_error.startswith(f"JobInputError: no {ENTITY_ACTORS[actor_name]} with id")
    assert wrong == []
    assert fake.requests() == []  # no upstream was asked about a bad id
    assert_only_new_log_rows(before, set(sent))
    # Kept for a resend as text both databases take: the lone surrogate became U+FFFD.
    assert {tuple(row.message["args"]) for row in rows.values() if sent[row.job_id][1] == "lone surrogate"} == {
        ("\ufffd" + MISSING,)}


def test_a_message_id_with_a_lone_surrogate_runs_without_a_row_and_the_log_goes_on(app):
    """Such an id cannot key a row on either database: a WARNING names it, no write is tried and refused."""
    message = _raw_message("enrich_artist", args=(str(_nobody().id),))
    message = message.copy(message_id="job\ud800")
    with structlog.testing.capture_logs() as logs:
        app.broker.enqueue(message)
        drain(app.broker, app.worker, 30)
    assert EnrichmentLog.select().count() == 0
    events = [e["event"] for e in logs if e["log_level"] in ("warning", "error")]
    assert "message id cannot be a job id; the job runs without a log row" in events
    assert not [e for e in events if "refused" in e or "drainer" in e], events
    after = app.run("enrich_artist", str(Artist.create(name="Someone Else").id))
    assert EnrichmentLog.get(EnrichmentLog.job_id == after).status == "no_data"
