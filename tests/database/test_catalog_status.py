"""The catalog's enrichment_status follows the enrichment job's final outcome (completed, no_data, failed),
and what depends on it: ``enrich run --pending`` picks a failed album up again once its cooldown is over.

On PostgreSQL and SQLite, through the real actors and the fake upstream.
"""

from __future__ import annotations

import datetime as dt

import dramatiq
import pytest

from models import Album, Artist, EnrichmentLog, Track
from workers.fake_upstream import FakeUpstream

from app_harness import tree
from test_cli import enrich, in_process_env

OLDER_ALBUM = "7aDBFWp72Pz4NZEtVBANi9"  # Spotify only: MusicBrainz does not know it


@pytest.fixture
def url(db, request):
    """DATABASE_URL of the migrated, emptied test database of this back end."""
    return request.getfixturevalue("pg_url" if request.node.callspec.params["db"] == "postgres" else "sqlite_url")


def run(app, actor_name: str, *args) -> EnrichmentLog:
    """Send one job as a root, run everything it leads to, and return its row."""
    dramatiq.set_broker(app.broker)
    return EnrichmentLog.get(EnrichmentLog.job_id == app.run(actor_name, *args))


def only_child(root: EnrichmentLog, operation: str) -> EnrichmentLog:
    rows = [row for row in tree(root.job_id) if row.operation == operation]
    assert len(rows) == 1, [(r.operation, r.status) for r in tree(root.job_id)]
    return rows[0]


UNKNOWN_MBID = "00000000-0000-4000-8000-000000000404"


def test_an_album_that_fails_for_good_is_failed_in_the_catalog(app, fake):
    """Cause 4: the job ended failed but the album stayed queued, so nothing ever picked it up again."""
    album = Album.create(title="Gone Missing", musicbrainz_id=UNKNOWN_MBID)
    check = run(app, "check_album_enrichment", str(album.id))
    job = only_child(check, "enrichment:album")
    assert (job.status, job.error_code, job.retry_count) == ("failed", "not_found", 0)
    after = Album.get_by_id(album.id)
    assert after.enrichment_status == "failed" and after.last_enriched_at is not None


def test_statuses_follow_outcomes_for_album_artist_and_track(app, fake):
    album = Album.create(title="Discovery", musicbrainz_id="48117b90-a16e-34ca-a514-19c702df1158")
    nobody = Artist.create(name="Zzyzx Qwv Nobody")
    track = Track.create(album=album, title="Zzyzx Qwv Nothing", track_number=99)
    for actor_name, row_id in (("check_album_enrichment", album.id), ("check_artist_enrichment", nobody.id),
                               ("check_track_enrichment", track.id)):
        run(app, actor_name, str(row_id))
    assert Album.get_by_id(album.id).enrichment_status == "completed"
    assert Artist.get_by_id(nobody.id).enrichment_status == "no_data"
    assert Track.get_by_id(track.id).enrichment_status == "no_data"
    assert all(row.last_enriched_at is not None for row in (Album.get_by_id(album.id), Artist.get_by_id(nobody.id),
                                                            Track.get_by_id(track.id)))


def test_the_spotify_fallback_has_the_later_word_on_an_album_musicbrainz_does_not_know(app, fake):
    album = Album.create(title="Songs from the Archive", spotify_id=OLDER_ALBUM)
    check = run(app, "check_album_enrichment", str(album.id))
    assert only_child(check, "enrichment:album").status == "no_data"
    assert only_child(check, "spotify:track-fallback").status == "success"
    assert Album.get_by_id(album.id).enrichment_status == "completed"  # tracks came, from Spotify


def test_run_pending_picks_up_an_album_that_failed_for_good_once_its_cooldown_is_over(url, tmp_path):
    """An album whose enrichment failed for good (MusicBrainz 404 for its id) is 'failed' in the catalog:
    ``--pending`` lists it, its check holds it back for FAILED_COOLDOWN_DAYS, then enriches it again."""
    with FakeUpstream() as fake:
        env = {**in_process_env(fake, tmp_path), "DATABASE_URL": url, "FAILED_COOLDOWN_DAYS": "7"}
        album = Album.create(title="Gone Missing", musicbrainz_id="00000000-0000-4000-8000-000000000404")

        def rows(operation: str) -> list[EnrichmentLog]:
            return list(EnrichmentLog.select().where((EnrichmentLog.operation == operation)
                                                     & (EnrichmentLog.entity_id == album.id))
                        .order_by(EnrichmentLog.created_at))

        def enrichments() -> list[EnrichmentLog]:
            return rows("enrichment:album")

        def checks() -> list[EnrichmentLog]:
            return rows("check:album-enrichment")

        first = enrich("run", "--album", str(album.id), env=env, timeout=120)
        assert first.returncode == 2, first.stderr  # the tree ended degraded: its enrichment failed
        [failed] = enrichments()
        assert (failed.status, failed.error_code) == ("failed", "not_found")
        assert Album.get_by_id(album.id).enrichment_status == "failed"

        cooling = enrich("run", "--pending", env=env, timeout=120)
        assert cooling.returncode == 0, cooling.stderr
        assert "enriching 1 album" in cooling.stdout
        check = checks()[-1]
        assert check.status == "skipped" and check.details["decision"] == "cooldown"
        assert check.reason.startswith("enrichment:album failed on ") and "next try after" in check.reason
        assert len(enrichments()) == 1  # not asked again before the cooldown is over

        eight_days = dt.timedelta(days=8)
        EnrichmentLog.update(created_at=failed.created_at - eight_days, started_at=failed.started_at - eight_days,
                             completed_at=failed.completed_at - eight_days).where(EnrichmentLog.id == failed.id).execute()
        over = enrich("run", "--pending", env=env, timeout=120)
        assert over.returncode == 2, over.stderr  # MusicBrainz still answers 404
        check = checks()[-1]
        assert check.status == "degraded" and check.details["decision"] == "enrich"
        assert check.reason.startswith("failed before;") and check.reason.endswith("the 7-day cooldown is over")
        assert [row.status for row in enrichments()] == ["failed", "failed"]


def test_the_album_job_ending_after_its_spotify_fallback_does_not_write_over_it(db):
    """The fallback is sent while the album job still runs and may finish first: its word stays."""
    from models import utcnow
    from workers.catalog_status import follow_outcome

    album = Album.create(title="Songs from the Archive", spotify_id=OLDER_ALBUM, enrichment_status="queued")
    album_started = utcnow() - dt.timedelta(seconds=5)
    assert follow_outcome("spotify:track-fallback", album.id, "success", utcnow())
    assert not follow_outcome("enrichment:album", album.id, "no_data", album_started)
    assert Album.get_by_id(album.id).enrichment_status == "completed"
    # A later run of the album's own job (it started after that) writes its outcome.
    assert follow_outcome("enrichment:album", album.id, "failed", utcnow())
    assert Album.get_by_id(album.id).enrichment_status == "failed"
    # Retrying and skipped are not outcomes.
    assert not follow_outcome("enrichment:album", album.id, "retrying", utcnow())
    assert not follow_outcome("enrichment:album", album.id, "skipped", utcnow())
    assert Album.get_by_id(album.id).enrichment_status == "failed"
