"""``enrich history album|artist|track ID``: each catalog field's changes, newest first.

Reads ``models.history.field_history``, the query the dashboard's pages and
JSON API use; ``--json`` prints its ``as_dict()``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from models import Settings
from models.entities import get_entity
from models.history import DEFAULT_LIMIT, MAX_LIMIT, FieldChange, FieldHistory, field_history
from models.job_log import ENTITY_TYPES

from .common import CommandError, note, open_database, visible


def _value(value: Any, recorded: bool) -> str:
    if not recorded:
        return "(not recorded)"
    if value is None or value == "" or value == []:
        return "–"
    return visible(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def _line(change: FieldChange) -> str:
    when = change.changed_at.strftime("%Y-%m-%d %H:%M:%S") if change.changed_at else "–"
    return (f"  {when}  {_value(change.before, change.recorded)} → {_value(change.after, change.recorded)}  "
            f"from {visible(change.source.label)}  job {visible(change.job_id or '-')} "
            f"(tree {visible(change.root_job_id or '-')}, {visible(change.operation)})")


def history_lines(history: FieldHistory) -> list[str]:
    """The disagreements first, then each field's changes, newest first."""
    lines = []
    for disagreement in history.disagreements:
        said = "; ".join(f"{visible(c.source.label)} says {_value(c.after, True)}" for c in disagreement.changes)
        lines.append(f"sources disagree on {disagreement.field}: {said}")
    for name, changes in history.by_field().items():
        lines.append(f"{name}:")
        lines += [_line(change) for change in changes]
    return lines


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    open_database(settings)
    try:
        history = field_history(args.entity_type, args.entity_id.strip(), args.field, args.limit, args.cursor)
        if not history.changes and get_entity(args.entity_type, args.entity_id.strip()) is None:
            raise CommandError(f"no {args.entity_type} with id {args.entity_id.strip()}, and no job changed one")
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps(history.as_dict(), indent=2))
        return 0
    lines = history_lines(history)
    print("\n".join(lines) if lines else f"no job has changed {'its ' + args.field if args.field else 'a field'}")
    if history.truncated:
        field = f" --field {args.field}" if args.field else ""
        note(f"older changes: enrich history {args.entity_type} {args.entity_id.strip()}{field} "
             f"--cursor {history.next_cursor}")
    return 0


def _limit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def add_history_command(sub, add) -> None:
    p = add(sub, "history", cmd_history,
            "show each catalog field's history for an album, artist or track, newest first: before and after, "
            "the job (and its tree) that changed it, when, and the source (service and its id); where the "
            "sources disagree, says so",
            "enrich history album 5f0c2a4e-8d4b-4e43-9b8e-0d6a1c2f3b4d --field release_date")
    p.add_argument("entity_type", choices=ENTITY_TYPES, help="album, artist or track")
    p.add_argument("entity_id", help="the entity's id (a UUID)")
    p.add_argument("--field", help="only this field, e.g. release_date")
    p.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT,
                   help=f"read the newest LIMIT jobs that changed a field, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})")
    p.add_argument("--cursor", help="the next page: the next_cursor a page gave (older changing jobs)")
    p.add_argument("--json", action="store_true", help="print the history as JSON")
