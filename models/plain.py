"""Query results as JSON-ready data: what every ``as_dict()`` of the read models returns."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any, Optional


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


def fmt_ms(ms: Optional[int], missing: str = "-") -> str:
    """A duration for a person: 120ms, 4.2s, 2m05s, 3h02m; ``missing`` when unknown."""
    if ms is None:
        return missing
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
