"""Schema history, applied in order by peewee's own migration runner.

The numbered files tell how a database got here: 0001 is the schema from
before job linking (what existing users already have), 0002-0004 take it to
the linked schema.  ``enrich migrate`` calls ``apply_migrations``.
"""

from __future__ import annotations

import os

from playhouse.migrations import Runner

MIGRATIONS_DIR = os.path.dirname(os.path.abspath(__file__))


def runner(db) -> Runner:
    return Runner(db, directory=MIGRATIONS_DIR)


def apply_migrations(db, target: str | None = None) -> list[str]:
    """Apply every pending migration (or up to ``target``); returns the names applied."""
    return runner(db).up(target)


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
        return (f"the database has migrations this code does not know ({', '.join(unknown)}): "
                "it was migrated by a newer release; deploy that release here too")
    if "enrichment_logs" not in db.get_tables():
        return "the database has no enrichment_logs table: run `enrich migrate` first"
    pending = pending_migrations(db)
    if pending:
        return f"the database is not migrated ({', '.join(pending)} pending): run `enrich migrate` first"
    return None


__all__ = [
    "apply_migrations",
    "pending_migrations",
    "unknown_migrations",
    "schema_problem",
    "runner",
    "MIGRATIONS_DIR",
]
