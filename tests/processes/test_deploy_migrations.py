"""Migrations as real deploys run them: two release phases at once, old workers still writing
during and after the backfill, and a database a newer release has migrated."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from migrations import UnknownMigrations, apply_migrations, pending_migrations, runner
from migrations.backfill import backfill_root_jobs
from models import EnrichmentLog, bind_database

from conftest import create_pg_database, drop_pg_database

LEGACY_INSERT = (
    "INSERT INTO enrichment_logs (id, job_id, parent_job_id, operation, status, sources, fields_enriched, "
    "api_call_count, created_at, updated_at) VALUES ({p}, {p}, {p}, {p}, {p}, '[]', '[]', 0, {p}, {p})"
)


def _enrich_migrate(url: str, cwd) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LOG_LEVEL")}
    env["DATABASE_URL"] = url
    return subprocess.Popen([sys.executable, "-m", "workers.cli", "migrate"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("legacy_rows", [0, 2000], ids=["empty", "legacy rows"])
def test_two_enrich_migrate_at_once_on_one_fresh_database_both_succeed(tmp_path, legacy_rows):
    for attempt in range(3):
        url = create_pg_database("enrich_race")
        try:
            if legacy_rows:
                db = bind_database(url)
                apply_migrations(db, "0001_pre_linking_schema")
                sql = LEGACY_INSERT.format(p=db.param)
                when = dt.datetime(2024, 5, 1)
                with db.atomic():
                    for i in range(legacy_rows):
                        db.execute_sql(sql, (str(uuid.uuid4()), f"old-{i}", None, "enrichment:album", "success", when, when))
                db.close_all()
            both = [_enrich_migrate(url, tmp_path) for _ in range(2)]
            results = [(p.wait(120), *p.communicate()) for p in both]
            for code, out, err in results:
                assert code == 0, (attempt, out, err)
                assert "Traceback" not in err
            applied = [line for _, out, _ in results for line in out.splitlines() if line.startswith("applied ")]
            assert len(applied) == len(set(applied)), applied  # each migration ran once
            db = bind_database(url)
            assert pending_migrations(db) == []
            assert EnrichmentLog.select().where(EnrichmentLog.is_root_job == True).count() == legacy_rows  # noqa: E712
            db.close_all()
        finally:
            drop_pg_database(url)


class LegacyWriter(threading.Thread):
    """A worker from before job linking: inserts parentless rows without ``is_root_job``, one per transaction."""

    def __init__(self, db):
        super().__init__(daemon=True)
        self.db, self.committed, self.stop_event, self.error = db, [], threading.Event(), None

    def run(self):
        sql = LEGACY_INSERT.format(p=self.db.param)
        try:
            while not self.stop_event.is_set():
                row_id, now = uuid.uuid4(), dt.datetime.utcnow()
                with self.db.atomic():  # the id as this back end stores a UUID
                    self.db.execute_sql(sql, (EnrichmentLog.id.db_value(row_id), f"late-{row_id}", None,
                                              "enrichment:album", "success", now, now))
                self.committed.append(row_id)  # only once its transaction has committed
                time.sleep(0.001)
        except Exception as exc:  # surfaced by the test
            self.error = exc
        finally:
            self.db.close()

    def stop(self):
        self.stop_event.set()
        self.join(30)
        assert self.error is None, self.error


def _unlinked(db, ids) -> set:
    rows = EnrichmentLog.select(EnrichmentLog.id).where(
        EnrichmentLog.id.in_(list(ids)) & EnrichmentLog.parent_job_id.is_null() & (EnrichmentLog.is_root_job == False)  # noqa: E712
    )
    return {r.id for r in rows}


def test_rows_old_workers_write_during_and_after_the_backfill_become_roots(fresh_database_url):
    db = bind_database(fresh_database_url)
    apply_migrations(db, "0001_pre_linking_schema")
    sql = LEGACY_INSERT.format(p=db.param)
    when = dt.datetime(2024, 5, 1)
    with db.atomic():
        for i in range(3000):
            db.execute_sql(sql, (str(uuid.uuid4()), f"old-{i}", None, "enrichment:album", "success", when, when))
    apply_migrations(db, "0002_add_is_root_job")

    writer = LegacyWriter(db)
    writer.start()
    try:
        # The walk, in small batches with a pause between them (a big table) so that the writer inserts throughout it.
        backfill_root_jobs(db, batch_size=50, progress=lambda report: time.sleep(0.005))
        during_walk = len(writer.committed)
        assert during_walk > 0
        # Every row committed before the rest of the release phase (`enrich migrate`) starts
        # must be linked when it returns.  (Not the rows committed while it runs: one committed
        # after its last batch but before it returns is rightly left for the next migrate.)
        existed = list(writer.committed)
        apply_migrations(db)
        assert _unlinked(db, existed) == set(), "rows written before the migration finished were left parentless"
        by_then = set(writer.committed)
        time.sleep(0.3)  # old workers go on writing after the release phase
    finally:
        writer.stop()
    later = [r for r in writer.committed if r not in by_then]
    # Rows the old workers wrote afterwards wait for the next migrate (the first few may have
    # committed just before the last batch, and been noted just after the migrate returned).
    assert later and len(_unlinked(db, later)) >= len(later) - 5
    assert apply_migrations(db) == []  # the next `enrich migrate` (next deploy, or run by hand) catches up
    assert _unlinked(db, writer.committed) == set()
    assert EnrichmentLog.select().where(EnrichmentLog.is_root_job == False).count() == 0  # noqa: E712
    db.close_all()


def test_a_database_a_newer_release_migrated_is_refused_in_one_line(fresh_database_url, tmp_path):
    db = bind_database(fresh_database_url)
    apply_migrations(db)
    history = runner(db).History
    history.create(name="0099_from_a_newer_release")
    history.create(name="0100_and_another")
    with pytest.raises(UnknownMigrations, match="0099_from_a_newer_release, 0100_and_another"):
        apply_migrations(db)
    db.close_all()
    proc = _enrich_migrate(fresh_database_url, tmp_path)
    code = proc.wait(60)
    out, err = proc.communicate()
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("enrich migrate: refusing to migrate: the database has migrations this code does not know")
    assert "0099_from_a_newer_release, 0100_and_another" in lines[0]
