"""The ``enrich`` command: what a new user and an on-call operator touch.

Every subcommand has ``--help`` with an example.  Expected failures (a bad
setting, an unreachable database or Redis, a wrong id) print one line naming
what was wrong and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional

import peewee

from models import ConfigError, bind_database, check_connection, load_settings


class CommandError(Exception):
    """An expected failure: printed as one line, exit status 1."""


Handler = Callable[[argparse.Namespace], int]


def _open_database(settings):
    db = bind_database(settings.database_url, settings.db_max_connections)
    check_connection(db, settings.database_url)
    return db


def cmd_migrate(args: argparse.Namespace) -> int:
    from migrations import apply_migrations

    settings = load_settings()
    db = _open_database(settings)
    applied = apply_migrations(db)
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("database is up to date")
    return 0


def _add(sub, name: str, handler: Handler, help_text: str, example: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enrich",
        description="Enrich a music catalog from MusicBrainz, Discogs, Spotify and an image cache; "
        "every job is logged as one row of enrichment_logs, linked into a tree under its root job.",
        epilog="example:\n  DATABASE_URL=postgresql://root@127.0.0.1:5432/music enrich migrate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add(sub, "migrate", cmd_migrate, "apply pending database migrations (safe to run twice)", "enrich migrate")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except (ConfigError, CommandError) as exc:
        print(f"enrich {args.command}: {exc}", file=sys.stderr)
        return 1
    except peewee.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"enrich {args.command}: database error: {first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"enrich {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
