"""The roots filters of a request's query string: parsed, checked, and written back into links.

Every bad value raises ``BadRequest`` with one line naming it; the app
answers 400 with that line.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Optional
from urllib.parse import urlencode

from models import utcnow
from models.entities import SEARCH_MAX_LENGTH
from models.job_log import STATUSES
from models.timeline import DEFAULT_LIMIT, MAX_LIMIT

# The quick time windows of the roots page: name -> length.
WINDOWS = {
    "15m": dt.timedelta(minutes=15),
    "1h": dt.timedelta(hours=1),
    "6h": dt.timedelta(hours=6),
    "24h": dt.timedelta(days=1),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
}


class BadRequest(ValueError):
    """A malformed query parameter or path part: answered 400 with this one line."""


def text_param(value: Optional[str], name: str, max_length: int) -> Optional[str]:
    value = (value or "").strip()
    if not value:
        return None
    if len(value) > max_length:
        raise BadRequest(f"{name} is {len(value)} characters long; at most {max_length}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadRequest(f"{name} must not contain control characters")
    return value


def _moment(value: Optional[str], name: str) -> Optional[dt.datetime]:
    """An ISO 8601 date or date and time; without a zone it is UTC (what the pages show)."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}={value[:40]!r} is not a date and time like 2026-05-01T12:00") from None
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class RootFilters:
    """What the roots page and /api/roots were asked for."""

    status: Optional[str] = None
    operation: Optional[str] = None
    q: Optional[str] = None  # text in the album title or artist name
    last: Optional[str] = None  # a quick window, a key of WINDOWS
    since: Optional[dt.datetime] = None
    until: Optional[dt.datetime] = None
    limit: int = DEFAULT_LIMIT
    cursor: Optional[str] = None

    @classmethod
    def parse(cls, params) -> "RootFilters":
        status = text_param(params.get("status"), "status", 20)
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status {status!r} is not one of {', '.join(STATUSES)}")
        last = text_param(params.get("last"), "last", 10)
        if last is not None and last not in WINDOWS:
            raise BadRequest(f"last {last!r} is not one of {', '.join(WINDOWS)}")
        raw_limit = (params.get("limit") or "").strip()
        if raw_limit and (not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT):
            raise BadRequest(f"limit {raw_limit[:20]!r} must be a whole number from 1 to {MAX_LIMIT}")
        since, until = _moment(params.get("since"), "since"), _moment(params.get("until"), "until")
        if since is not None and until is not None and since >= until:
            raise BadRequest("since must be earlier than until")
        return cls(
            status=status,
            operation=text_param(params.get("operation"), "operation", 100),
            q=text_param(params.get("q"), "q", SEARCH_MAX_LENGTH),
            last=last,
            since=since,
            until=until,
            limit=int(raw_limit) if raw_limit else DEFAULT_LIMIT,
            cursor=text_param(params.get("cursor"), "cursor", 200),
        )

    def query_args(self, now: Optional[dt.datetime] = None) -> dict:
        """Keyword arguments for ``models.timeline.list_roots``."""
        since = self.since
        if self.last is not None:
            window_start = (now or utcnow()) - WINDOWS[self.last]
            since = max(since, window_start) if since else window_start
        return dict(status=self.status, operation=self.operation, search=self.q, since=since, until=self.until,
                    limit=self.limit, cursor=self.cursor)

    def link(self, **changes) -> str:
        """This page's query string with ``changes`` (None drops a parameter), for links and the form."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        if values["limit"] == DEFAULT_LIMIT:
            values["limit"] = None
        pairs = [(k, v.isoformat(timespec="minutes") if isinstance(v, dt.datetime) else v)
                 for k, v in values.items() if v is not None]
        return "?" + urlencode(pairs) if pairs else "?"

    @property
    def active(self) -> bool:
        """True when any filter narrows the list (the page offers to clear them)."""
        return any(v is not None for v in (self.status, self.operation, self.q, self.last, self.since, self.until))
