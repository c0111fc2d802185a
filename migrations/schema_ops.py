"""Idempotent schema steps shared by the migration files.

A user's pre-linking database was created without our migration history, so
every step checks what is already there instead of trusting the history table.
"""

from __future__ import annotations

import peewee

from models.database import is_postgres  # noqa: F401  (the migration files import it from here)


def add_column_if_missing(migrator, db, table: str, name: str, field: peewee.Field) -> bool:
    """Add ``name`` to ``table`` unless it exists; True when it was added.

    NOT NULL columns with a default are added in one statement, so on
    PostgreSQL >= 11 no existing row is rewritten (peewee's default path would
    UPDATE every row first, locking a big table for the whole time).
    """
    if name in {c.name for c in db.get_columns(table)}:
        return False
    migrator.migrate(migrator.add_column(table, name, field, allow_not_null=not field.null))
    return True


def duplicated_values(db, table: str, column: str) -> tuple[int, str]:
    """(how many values of ``column`` appear in more than one row, the SQL that lists them).

    A unique index cannot be built over those, and choosing which row to keep
    is the operator's call, not a migration's.
    """
    listing = (
        f'SELECT "{column}", COUNT(*) FROM "{table}" WHERE "{column}" IS NOT NULL '
        f'GROUP BY "{column}" HAVING COUNT(*) > 1'
    )
    return db.execute_sql(f"SELECT COUNT(*) FROM ({listing}) d").fetchone()[0], listing


def _invalid_postgres_index(db, name: str) -> bool:
    row = db.execute_sql(
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
        (name,),
    ).fetchone()
    return bool(row and row[0])


def create_index_if_missing(db, table: str, name: str, columns: list[str], unique: bool = False, where: str = "",
                            using: str = "", opclass: str = "") -> None:
    """Create an index unless it exists (``using``: an index method such as gin; ``opclass``: every column's).

    On PostgreSQL the index is built CONCURRENTLY (the calling migration sets
    ``atomic = False``), so workers keep writing while it builds; an invalid
    left-over from an interrupted build is dropped and built again.
    """
    concurrently = ""
    if is_postgres(db):
        concurrently = "" if db.in_transaction() else "CONCURRENTLY "
        if _invalid_postgres_index(db, name):
            db.execute_sql(f'DROP INDEX {concurrently}"{name}"')
    cols = ", ".join(f'"{c}"' + (f" {opclass}" if opclass else "") for c in columns)
    method = f" USING {using}" if using else ""
    sql = f'CREATE {"UNIQUE " if unique else ""}INDEX {concurrently}IF NOT EXISTS "{name}" ON "{table}"{method} ({cols})'
    if where:
        sql += f" WHERE {where}"
    db.execute_sql(sql)


def drop_index_if_exists(db, name: str) -> None:
    concurrently = "CONCURRENTLY " if is_postgres(db) and not db.in_transaction() else ""
    db.execute_sql(f'DROP INDEX {concurrently}IF EXISTS "{name}"')
