"""Schema history, applied in order by peewee's own migration runner.

The numbered files tell how a database got here: 0001 is the schema from
before job linking (what existing users already have), 0002-0004 take it to
the linked schema.  ``enrich migrate`` calls ``apply_migrations``.

Two deploys may run their release phase (``enrich migrate``) at once: on
PostgreSQL the second waits for the first on an advisory lock, then finds
nothing left to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator

import psycopg2
from playhouse.migrate import SqliteMigrator
from playhouse.migrations import Runner

from models.database import is_postgres

MIGRATIONS_DIR = os.path.dirname(os.path.abspath(__file__))
LOCK_KEY = 0x656E7269636800  # "enrich" as a number: one advisory lock for every `enrich migrate`
LOCK_POLL_SECONDS = 0.25

logger = logging.getLogger("migrations")


class UnknownMigrations(RuntimeError):
    """The database was migrated by a newer release: this code must not touch it."""


class _SqliteWriteLockMigrator(SqliteMigrator):
    """SQLite's migrator, its migrations' transactions taking the write lock at BEGIN.

    A deferred transaction that reads the schema before it alters it fails at
    once ("database is locked", no busy wait) when another writer commits in
    between, as a worker writing rows while ``enrich migrate`` runs does.
    """

    @contextlib.contextmanager
    def migration_context(self, atomic=True):
        with super().migration_context(atomic=False):  # foreign keys off, no transaction
            if atomic:
                with self.database.atomic("IMMEDIATE"):
                    yield
            else:
                yield


def runner(db) -> Runner:
    found = Runner(db, directory=MIGRATIONS_DIR)
    if isinstance(found.migrator, SqliteMigrator):
        found.migrator = _SqliteWriteLockMigrator(db)
    return found


@contextlib.contextmanager
def migration_lock(db) -> Iterator[None]:
    """Hold the migration lock of ``db`` (PostgreSQL) for the block; waits while another process holds it.

    The lock is taken on a connection of its own, in autocommit, with
    ``pg_try_advisory_lock`` in a loop: a waiting process never sits in a
    transaction, so the holder's CREATE INDEX CONCURRENTLY (which waits for
    every open transaction) never waits for it.  Closing the connection
    releases the lock, also when the process dies.
    """
    if not is_postgres(db):
        yield
        return
    db = getattr(db, "obj", db)
    conn = psycopg2.connect(dbname=db.database, **db.connect_params)
    conn.autocommit = True
    try:
        said = False
        with conn.cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                if cursor.fetchone()[0]:
                    break
                if not said:
                    logger.warning("another `enrich migrate` is migrating this database: waiting for it to finish")
                    said = True
                time.sleep(LOCK_POLL_SECONDS)
        yield
    finally:
        conn.close()


def unknown_migrations_line(unknown: list[str]) -> str:
    return (f"the database has migrations this code does not know ({', '.join(unknown)}): "
            "it was migrated by a newer release; deploy that release here too")


def apply_migrations(db, target: str | None = None) -> list[str]:
    """Apply every pending migration (or up to ``target``); returns the names applied.

    Refuses (UnknownMigrations) a database that has migrations this code has
    no file for.  Then marks rows written since by workers older than job
    linking as roots (``backfill.link_unlinked_rows``).
    """
    from .backfill import link_unlinked_rows

    with migration_lock(db):
        unknown = unknown_migrations(db)
        if unknown:
            raise UnknownMigrations(unknown_migrations_line(unknown))
        applied = runner(db).up(target)
        if "enrichment_logs" in db.get_tables() and "is_root_job" in {c.name for c in db.get_columns("enrichment_logs")}:
            link_unlinked_rows(db)
        return applied


def pending_migrations(db) -> list[str]:
    return [m.name for m in runner(db).status() if m.path is not None and not m.applied]


def unknown_migrations(db) -> list[str]:
    """Migrations the database has applied that this code has no file for (a newer release's)."""
    return [m.name for m in runner(db).status() if m.path is None and m.applied]


def schema_problem(db) -> str | None:
    """Why this code cannot write the job log to ``db``, in one line, or None when it can.

    A process that would write rows (a worker, a drainer) checks this at boot
    instead of starting and then losing every row.
    """
    unknown = unknown_migrations(db)
    if unknown:
        return unknown_migrations_line(unknown)
    if "enrichment_logs" not in db.get_tables():
        return "the database has no enrichment_logs table: run `enrich migrate` first"
    pending = pending_migrations(db)
    if pending:
        return f"the database is not migrated ({', '.join(pending)} pending): run `enrich migrate` first"
    return None


__all__ = [
    "UnknownMigrations",
    "apply_migrations",
    "migration_lock",
    "pending_migrations",
    "unknown_migrations",
    "schema_problem",
    "runner",
    "MIGRATIONS_DIR",
]
