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


__all__ = ["apply_migrations", "pending_migrations", "runner", "MIGRATIONS_DIR"]
