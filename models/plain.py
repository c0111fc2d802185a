"""Query results as JSON-ready data: what every ``as_dict()`` of the read models returns."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any


def plain(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 UTC and UUIDs as strings, recursively."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class AsDict:
    __slots__ = ()

    def as_dict(self) -> dict:
        """The dataclass as JSON-ready data (ISO timestamps, string UUIDs)."""
        return plain(dataclasses.asdict(self))
