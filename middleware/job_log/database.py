"""The database the job log is written to, and the check a process makes before it consumes anything."""

from __future__ import annotations

from typing import Optional

import peewee

from models.database import bind_database
from models.database import database as default_database
from models.error_text import first_line
from models.settings import ConfigError, job_log_settings


class JobLogRefused(Exception):
    """This process cannot write the job log; the message is one line saying why."""


def resolve(database=None) -> peewee.Database:
    """``database``, else the models' proxy; a proxy nobody bound is bound to ``DATABASE_URL``."""
    db = database if database is not None else default_database
    if isinstance(db, peewee.DatabaseProxy) and db.obj is None:
        url = job_log_settings().database_url
        if url is None:
            raise JobLogRefused(
                "no database for the job log: call models.bind_database(URL) before the worker starts, "
                "pass JobLinking(database=...), or set DATABASE_URL"
            )
        try:
            if db is default_database:
                bind_database(url)
            else:
                from models.database import open_database

                db.initialize(open_database(url))
        except ConfigError as exc:
            raise JobLogRefused(str(exc)) from None
    return db


def describe(db) -> str:
    real = getattr(db, "obj", db)
    params = getattr(real, "connect_params", {}) or {}
    where = f" on {params['host']}:{params.get('port') or 5432}" if params.get("host") else ""
    return f"{real.database!r}{where}"


def problem(db) -> Optional[str]:
    """Why ``db`` cannot take the job log, in one line (unreachable, not migrated, too new), or None."""
    from migrations import schema_problem

    try:
        db.connect(reuse_if_open=True)
        try:
            db.execute_sql("SELECT 1")
            found = schema_problem(db)
        finally:
            if not db.is_closed():
                db.close()
    except peewee.DatabaseError as exc:
        return f"cannot reach the job-log database {describe(db)}: {first_line(exc)}"  # the driver never prints the password
    return None if found is None else f"job-log database {describe(db)}: {found}"


def refuse_unless_ready(database=None) -> peewee.Database:
    """The job-log database, checked; JobLogRefused (one line) when it cannot take rows."""
    db = resolve(database)
    found = problem(db)
    if found:
        raise JobLogRefused(found)
    return db


__all__ = ["JobLogRefused", "resolve", "problem", "refuse_unless_ready"]
