"""The database binding: one proxy every model uses, opened from DATABASE_URL.

Both back ends are pooled and thread-safe in peewee's sense: each thread gets
its own connection, and ``close()`` hands it back to the pool.  Dramatiq worker
threads give theirs back after every message (``middleware.DatabaseConnections``).
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from .error_text import first_line
from .settings import ConfigError, check_url, redact_url  # noqa: F401  (redact_url: imported from here too)

database = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the one writer
    "synchronous": "normal",  # durable at checkpoints, safe with WAL
    "busy_timeout": 10000,  # ms: writers queue instead of failing at once
    "foreign_keys": 1,
}


def open_database(url: str, max_connections: int = 32) -> peewee.Database:
    """A new pooled database for ``url``: ``postgresql://`` or ``sqlite:///path``."""
    parsed = urlparse(check_url("DATABASE_URL", url))
    scheme = parsed.scheme.lower()
    if scheme in ("postgres", "postgresql"):
        name = unquote(parsed.path.lstrip("/"))
        if not name:
            raise ConfigError(f"DATABASE_URL {redact_url(url)!r} names no database (postgresql://user@host:5432/NAME)")
        return PooledPostgresqlDatabase(
            name,
            host=parsed.hostname or None,
            port=parsed.port or None,
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            max_connections=max_connections,
            stale_timeout=300,
            timeout=10,  # seconds to wait for a free pooled connection
            connect_timeout=5,
        )
    if scheme == "sqlite":
        # sqlite:///relative.db -> "relative.db"; sqlite:////abs/path.db -> "/abs/path.db"
        path = unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path)
        if not path:
            raise ConfigError(f"DATABASE_URL {url!r} names no file (sqlite:///path/to/file.db)")
        if path != ":memory:":
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise ConfigError(f"DATABASE_URL {url!r}: folder {folder!r} does not exist")
        return PooledSqliteDatabase(
            path,
            pragmas=SQLITE_PRAGMAS,
            max_connections=max_connections,
            stale_timeout=300,
            timeout=10,
            check_same_thread=False,
            # A transaction takes the write lock when it begins: one that reads and then writes
            # would otherwise fail at once with "database is locked" when another connection
            # (a drainer, another worker thread) wrote in between; busy_timeout cannot wait for that.
            lock_type="IMMEDIATE",
        )
    raise AssertionError(f"check_url let an unsupported scheme through: {parsed.scheme!r}")


def bind_database(url: str, max_connections: int = 32) -> peewee.Database:
    """Open ``url`` and point every model at it; returns the database."""
    db = open_database(url, max_connections=max_connections)
    current = database.obj
    if current is not None and not current.is_closed():
        current.close()
    database.initialize(db)
    return db


def check_connection(db: peewee.Database, url: str) -> None:
    """Raise ConfigError with one readable line when the database cannot be reached."""
    try:
        db.connect(reuse_if_open=True)
        db.execute_sql("SELECT 1")
    except peewee.OperationalError as exc:
        raise ConfigError(f"cannot reach the database at {redact_url(url)}: {first_line(exc)}") from None
    finally:
        if not db.is_closed():
            db.close()


def is_postgres(db: peewee.Database) -> bool:
    db = db.obj if isinstance(db, peewee.DatabaseProxy) else db
    return isinstance(db, peewee.PostgresqlDatabase)
