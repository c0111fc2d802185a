"""What every ``enrich`` command shares: the one-line error, notes, the database and the broker."""

from __future__ import annotations

import dataclasses
import os
import sys

import dramatiq
import peewee

from models import ConfigError, check_connection, database, load_settings


class CommandError(Exception):
    """An expected failure: printed as one line, exit status 1."""


def note(text: str) -> None:
    """A line for the person at the terminal, on stderr: stdout stays data (ids, tables, JSON)."""
    print(text, file=sys.stderr, flush=True)


def open_database() -> peewee.Database:
    """The database ``workers`` bound at import, checked to answer (ConfigError in one line otherwise)."""
    check_connection(database.obj, load_settings().database_url)
    return database.obj


def migrate(db: peewee.Database) -> list[str]:
    """Apply pending migrations; the names applied.  CommandError for a database a newer release migrated."""
    from migrations import UnknownMigrations, apply_migrations

    try:
        return apply_migrations(db)
    except UnknownMigrations as exc:
        raise CommandError(f"refusing to migrate: {exc}") from None


def app_broker() -> dramatiq.Broker:
    """The broker ``workers`` built at import from the environment (Redis, or in-memory)."""
    from .. import broker

    return broker


def actor(name: str) -> dramatiq.Actor:
    try:
        return app_broker().get_actor(name)
    except dramatiq.errors.ActorNotFound:
        raise CommandError(f"no actor named {name} is declared in workers.actors") from None


def quiet_logs() -> None:
    """Log warnings and errors only, unless LOG_LEVEL asks otherwise: for runs a person watches."""
    if os.environ.get("LOG_LEVEL"):
        return
    from .. import settings
    from ..logging_setup import configure_logging

    configure_logging(dataclasses.replace(settings, log_level="WARNING"))


__all__ = ["CommandError", "ConfigError", "note", "open_database", "migrate", "app_broker", "actor", "quiet_logs"]
