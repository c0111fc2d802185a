"""Write only what changed, and say exactly what did."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from models.base import utcnow

QUALITY_ORDER = {"low": 0, "medium": 1, "high": 2}


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def apply_changes(instance, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Set each field whose value differs; returns ``[{field, before, after}]``.

    A missing value (None, empty string or list) never erases what is there:
    an upstream that knows less than we do changes nothing.
    """
    changes = []
    for field, after in values.items():
        if after is None or after == "" or after == []:
            continue
        before = getattr(instance, field)
        if before == after:
            continue
        setattr(instance, field, after)
        changes.append({"field": field, "before": _plain(before), "after": _plain(after)})
    return changes


def better_quality(current: str, found: str) -> str:
    """Quality never goes down because of one weaker match."""
    return found if QUALITY_ORDER.get(found, 0) > QUALITY_ORDER.get(current, 0) else current


def save_changes(instance, changes: list[dict[str, Any]]) -> None:
    """Write the changed fields only.

    ``enrichment_status`` and ``last_enriched_at`` are the job's outcome, written
    when it ends (``workers.catalog_status``), never by an actor.
    """
    if changes:
        model = type(instance)
        instance.updated_at = utcnow()
        model.update({getattr(model, f): getattr(instance, f) for f in [*fields_of(changes), "updated_at"]}).where(
            model.id == instance.id
        ).execute()


def fields_of(changes: list[dict[str, Any]]) -> list[str]:
    return [c["field"] for c in changes]
