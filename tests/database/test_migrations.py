"""The migrations take a pre-linking database to the linked schema without losing a row."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid

import peewee
import pytest

from middleware.job_log.drainer import Drainer
from middleware.job_log.journal import MemoryJournal
from migrations import apply_migrations, pending_migrations
from migrations.backfill import backfill_root_jobs
from models import Album, EnrichmentLog, bind_database

from linking_harness import journal_row

LEGACY_INSERT = (
    "INSERT INTO enrichment_logs (id, job_id, parent_job_id, operation, status, sources, fields_enriched, "
    "api_call_count, created_at, updated_at) VALUES ({p}, {p}, {p}, {p}, {p}, '[]', '[]', 0, {p}, {p})"
)


def _legacy_rows(db, count_roots: int, count_children: int):
    p = db.param
    sql = LEGACY_INSERT.format(p=p)
    when = dt.datetime(2024, 5, 1, 12, 0)
    roots, children = [], []
    with db.atomic():
        for i in range(count_roots):
            job = f"legacy-root-{i}"
            db.execute_sql(sql, (str(uuid.uuid4()), job, None, "enrichment:album", "success", when, when))
            roots.append(job)
        for i in range(count_children):
            job = f"legacy-child-{i}"
            db.execute_sql(sql, (str(uuid.uuid4()), job, roots[i % len(roots)], "enrichment:artist", "failed", when, when))
            children.append(job)
        # A legacy row with no job id at all: still a root afterwards, and visible.
        db.execute_sql(sql, (str(uuid.uuid4()), None, None, "enrichment:track", "success", when, when))
    return roots, children


def test_pre_linking_database_migrates_to_head_keeping_every_row(fresh_database_url):
    db = bind_database(fresh_database_url)
    assert apply_migrations(db, "0001_pre_linking_schema") == ["0001_pre_linking_schema"]
    columns = {c.name for c in db.get_columns("enrichment_logs")}
    assert {"job_id", "parent_job_id"} <= columns
    assert "is_root_job" not in columns and "retry_count" not in columns

    roots, children = _legacy_rows(db, count_roots=7, count_children=5)

    applied = apply_migrations(db)
    assert applied == [
        "0002_add_is_root_job",
        "0003_backfill_root_jobs",
        "0004_linking_columns",
        "0005_image_cache_and_root_indexes",
        "0006_recovered_child_failures",
        "0007_unique_album_spotify_id",
        "0008_queued_and_lost_jobs",
        "0009_pending_jobs_index",
        "0010_dashboard_search_indexes",
        "0011_unlinked_rows_index",
        "0012_person_has_no_formed_year",
        "0013_field_history_index",
        "0014_attempt_order",
    ]

    rows = {r.job_id: r for r in EnrichmentLog.select()}
    assert len(rows) == 7 + 5 + 1
    for job in roots:
        assert rows[job].is_root_job is True
        assert rows[job].parent_job_id is None
        assert rows[job].status == "success"
    for job in children:
        assert rows[job].is_root_job is False
        assert rows[job].parent_job_id.startswith("legacy-root-")
    assert rows[None].is_root_job is True
    # The linking columns exist with their defaults on the old rows.
    assert all(r.retry_count == 0 and r.failed_children == 0 and r.attempt_started_ms == 0 for r in rows.values())
    index_names = {i.name for i in db.get_indexes("enrichment_logs")}
    assert {
        "enrichment_logs_is_root_job_created_at",
        "enrichment_logs_parent_job_id_started_at",
        "enrichment_logs_job_id_unique",
        "enrichment_logs_entity_type_entity_id_created_at",
        "enrichment_logs_status_created_at",
        "enrichment_logs_field_changes",
    } <= index_names


def test_job_id_is_unique_only_where_present(fresh_database_url):
    db = bind_database(fresh_database_url)
    apply_migrations(db)
    EnrichmentLog.create(job_id=None, operation="x")
    EnrichmentLog.create(job_id=None, operation="x")
    EnrichmentLog.create(job_id="j1", operation="x")
    with pytest.raises(Exception):
        with db.atomic():
            EnrichmentLog.create(job_id="j1", operation="x")
    assert EnrichmentLog.select().count() == 3


def test_database_made_without_migration_history_is_adopted(fresh_database_url):
    """A user's pre-linking database has the tables but none of our history."""
    db = bind_database(fresh_database_url)
    apply_migrations(db, "0001_pre_linking_schema")
    _legacy_rows(db, count_roots=2, count_children=1)
    db.execute_sql("DROP TABLE schema_migration")

    apply_migrations(db)

    assert EnrichmentLog.select().where(EnrichmentLog.is_root_job == True).count() == 3  # noqa: E712
    assert pending_migrations(db) == []


def test_duplicate_legacy_job_ids_stop_the_migration_with_a_clear_error(fresh_database_url):
    db = bind_database(fresh_database_url)
    apply_migrations(db, "0001_pre_linking_schema")
    _legacy_rows(db, count_roots=1, count_children=0)
    sql = LEGACY_INSERT.format(p=db.param)
    now = dt.datetime(2024, 1, 1)
    db.execute_sql(sql, (str(uuid.uuid4()), "legacy-root-0", None, "enrichment:album", "failed", now, now))

    with pytest.raises(Exception, match="1 job ids have more than one row"):
        apply_migrations(db)
    # Nothing was lost, and fixing the duplicates lets it finish.
    assert EnrichmentLog.select().count() == 3
    EnrichmentLog.delete().where((EnrichmentLog.job_id == "legacy-root-0") & (EnrichmentLog.status == "failed")).execute()
    apply_migrations(db)
    assert pending_migrations(db) == []


def test_albums_sharing_a_spotify_id_stop_the_migration_with_a_clear_error(fresh_database_url):
    db = bind_database(fresh_database_url)
    apply_migrations(db, "0006_recovered_child_failures")
    for title, spotify_id in (("OKNOTOK", "0tzfI6NFJqcJkWb23R3lRZ"), ("OKNOTOK (again)", "0tzfI6NFJqcJkWb23R3lRZ"),
                              ("Single", None), ("Single again", None)):
        Album.create(title=title, spotify_id=spotify_id)

    with pytest.raises(Exception, match="1 Spotify ids have more than one album"):
        apply_migrations(db)
    assert Album.select().count() == 4  # nothing lost
    Album.delete().where(Album.title == "OKNOTOK (again)").execute()
    assert apply_migrations(db)[0] == "0007_unique_album_spotify_id"
    # Albums without a Spotify id are many; a second one with the same id is refused.
    with pytest.raises(peewee.IntegrityError):
        Album.create(title="OKNOTOK (third)", spotify_id="0tzfI6NFJqcJkWb23R3lRZ")


def test_backfill_works_in_batches_and_leaves_children_alone(fresh_database_url):
    db = bind_database(fresh_database_url)
    apply_migrations(db, "0002_add_is_root_job")
    roots, children = _legacy_rows(db, count_roots=23, count_children=11)
    seen = []
    report = backfill_root_jobs(db, batch_size=5, progress=lambda r: seen.append(r.rows_updated))
    assert report.rows_updated == 24  # 23 roots + the row without a job id
    assert report.batches == 7  # 35 rows in batches of 5
    assert seen == sorted(seen) and seen[-1] == 24
    assert EnrichmentLog.select().where(EnrichmentLog.is_root_job == False).count() == 11  # noqa: E712
    # Running it again changes nothing.
    assert backfill_root_jobs(db, batch_size=5).rows_updated == 0


def test_enrich_migrate_twice_is_a_no_op(fresh_database_url, tmp_path):
    env = dict(os.environ, DATABASE_URL=fresh_database_url)
    cmd = [sys.executable, "-m", "workers.cli", "migrate"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "applied 0006_recovered_child_failures" in first.stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "database is up to date"


def test_enrich_migrate_names_an_unreachable_database(tmp_path):
    env = dict(os.environ, DATABASE_URL="postgresql://root@127.0.0.1:1/nowhere")
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "migrate"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 1
    assert "cannot reach the database at postgresql://root@127.0.0.1:1/nowhere" in result.stderr
    assert "Traceback" not in result.stderr


def test_default_database_is_an_sqlite_file_in_the_working_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "migrate"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "enrichment.db").exists()


HEAD_0007_INSERT = (
    "INSERT INTO enrichment_logs (id, job_id, parent_job_id, is_root_job, operation, status, own_status, sources, "
    "fields_enriched, api_call_count, retry_count, failed_children, created_at, updated_at) "
    "VALUES ({p}, {p}, {p}, {p}, 'enrichment:album', {p}, {p}, '[]', '[]', 0, 0, {p}, {p}, {p})"
)
OLD_STATUSES = ("running", "retrying", "success", "partial_success", "no_data", "skipped", "failed", "degraded")


def _database_at(url: str, migration: str, rows: list[tuple]):
    """A database migrated up to ``migration``, holding ``rows``: (job_id, parent, is_root, status,
    own_status, failed_children) each, written with the columns every head since 0007 has."""
    db = bind_database(url)
    apply_migrations(db, migration)
    sql = HEAD_0007_INSERT.format(p=db.param)
    when = dt.datetime(2026, 11, 30, 12, 0)
    with db.atomic():
        for row in rows:
            db.execute_sql(sql, (str(uuid.uuid4()), *row, when, when))
    return db


def test_a_database_made_by_the_previous_head_takes_queued_and_lost_rows(fresh_database_url):
    """0008/0009 on a 0007 database with rows in every status: nothing changes but the new columns,
    and a lost child sent again gives its root its own status back, as a failed one does."""
    db = _database_at(fresh_database_url, "0007_unique_album_spotify_id", [
        ("root", None, True, "degraded", "success", 2),
        *((f"child-{status}", "root", False, status, status, 0) for status in OLD_STATUSES)])

    # To the head: the model reads every column of today's schema.
    assert apply_migrations(db)[:2] == ["0008_queued_and_lost_jobs", "0009_pending_jobs_index"]
    rows = {r.job_id: r for r in EnrichmentLog.select()}
    assert {rows[f"child-{s}"].status for s in OLD_STATUSES} == set(OLD_STATUSES)
    assert all(r.message is None and r.due_at is None for r in rows.values())
    assert "enrichment_logs_pending" in {i.name for i in db.get_indexes("enrichment_logs")}

    # The root counts two failures; say one of them was the sweeper's "lost".
    EnrichmentLog.update(status="lost").where(EnrichmentLog.job_id == "child-failed").execute()  # lost -> lost: no change
    assert EnrichmentLog.get(EnrichmentLog.job_id == "root").failed_children == 2
    for child in ("child-failed", "child-degraded"):  # sent again: back to queued
        EnrichmentLog.update(status="queued").where(EnrichmentLog.job_id == child).execute()
    root = EnrichmentLog.get(EnrichmentLog.job_id == "root")
    assert (root.status, root.failed_children) == ("degraded", 1)  # degraded -> queued is no failure taken back
    EnrichmentLog.update(status="lost").where(EnrichmentLog.job_id == "child-running").execute()
    EnrichmentLog.update(status="running").where(EnrichmentLog.job_id == "child-running").execute()
    root = EnrichmentLog.get(EnrichmentLog.job_id == "root")
    assert (root.status, root.failed_children) == ("success", 0)  # its own status again


def test_a_database_made_by_the_previous_head_orders_redeliveries_after_0014(fresh_database_url):
    """0014 on a 0013 database: old rows get attempt_started_ms 0; a redelivered attempt's end then
    wins over a dead worker's late entry, even one appended by a worker from before 0014 (no such key)."""
    db = _database_at(fresh_database_url, "0013_field_history_index", [
        ("root", None, True, "success", "success", 0), ("child", "root", False, "running", "running", 0)])

    assert apply_migrations(db) == ["0014_attempt_order"]
    assert {r.attempt_started_ms for r in EnrichmentLog.select()} == {0}

    drainer = Drainer(MemoryJournal(), db)
    try:
        redelivered = journal_row("child", "success", root="root", attempt_started_ms=int(time.time() * 1000))
        drainer.journal.append(redelivered)
        drainer.drain_once(block_ms=0)
        stale = journal_row("child", "failed", root="root", error_code="upstream_500")
        del stale["attempt_started_ms"]  # appended by a worker from before 0014
        drainer.journal.append(stale, "root")
        drainer.drain_once(block_ms=0)
    finally:
        drainer.stop()
    child = EnrichmentLog.get(EnrichmentLog.job_id == "child")
    root = EnrichmentLog.get(EnrichmentLog.job_id == "root")
    assert (child.status, child.error_code, child.attempt_started_ms) == (
        "success", None, redelivered["attempt_started_ms"])
    assert (root.status, root.failed_children) == ("success", 0)
