"""What every ``enrich`` command shares: the one-line error, notes, the database and the broker."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import TYPE_CHECKING, Any

import peewee

from models import ConfigError, Settings, check_connection, database

from .. import app

if TYPE_CHECKING:  # Dramatiq loads only for the commands that send or run jobs (start-up time of the others)
    import dramatiq


class CommandError(Exception):
    """An expected failure: printed as one line, exit status 1."""


# What a terminal obeys instead of showing: C0 and C1 controls (ESC starts the sequences that clear the
# screen or set the title), DEL, and the marks that reorder or hide text: bidirectional embeddings,
# overrides and isolates, left/right-to-left marks, line and paragraph separators.
_OBEYED = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: Any) -> str:
    """``text`` safe to print for a person: every character a terminal would obey is shown as an escape
    (``\\x1b``, ``\\u202e``).  For names, titles, ids and errors that come from the catalog, upstream
    services or messages; ``--json`` output keeps the real text instead (JSON escapes it)."""
    return _OBEYED.sub(_escape, str(text))


def note(text: str) -> None:
    """A line for the person at the terminal, on stderr: stdout stays data (ids, tables, JSON)."""
    print(visible(text), file=sys.stderr, flush=True)


def open_database(settings: Settings) -> peewee.Database:
    """The database ``main`` bound (``settings.database_url``), checked to answer (ConfigError in one line otherwise)."""
    check_connection(database.obj, settings.database_url)
    return database.obj


def migrate(db: peewee.Database) -> list[str]:
    """Apply pending migrations; the names applied.  CommandError for a database a newer release migrated."""
    from migrations import UnknownMigrations, apply_migrations

    try:
        return apply_migrations(db)
    except UnknownMigrations as exc:
        raise CommandError(f"refusing to migrate: {exc}") from None


def app_broker(settings: Settings) -> dramatiq.Broker:
    """The app's broker (Redis, or in-memory without ``settings.redis_url``), with every actor: started here
    on first use, for the commands that send or run jobs; the one this process already started otherwise."""
    return app.broker() if app.started() else app.start(settings)


def actor(name: str) -> dramatiq.Actor:
    """An actor of the started app (``app_broker``)."""
    import dramatiq

    try:
        return app.broker().get_actor(name)
    except dramatiq.errors.ActorNotFound:
        raise CommandError(f"no actor named {name} is declared in workers.actors") from None


def quiet_logs(settings: Settings) -> None:
    """Log warnings and errors only, unless LOG_LEVEL asks otherwise: for runs a person watches."""
    if os.environ.get("LOG_LEVEL"):
        return
    from ..logging_setup import configure_logging

    configure_logging(dataclasses.replace(settings, log_level="WARNING"))


__all__ = ["CommandError", "ConfigError", "visible", "note", "open_database", "migrate", "app_broker", "actor", "quiet_logs"]
