"""What a fake service route receives (``Call``) and returns (``Reply``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlencode


@dataclass
class Call:
    """One incoming request, as a route sees it.

    Attributes:
        method: ``GET``, ``POST``...
        path: the path below the service prefix, e.g. ``/release-group/<mbid>``.
        query: first value of each query parameter.
        headers: header names lower-cased.
        body: the request body.
        base_url: ``http://127.0.0.1:<port>`` of the fake server.
        service_url: ``base_url`` plus the service prefix.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    base_url: str
    service_url: str

    def int_param(self, name: str, default: int) -> int:
        """An integer query parameter; ``default`` when absent, ValueError when not a number."""
        raw = self.query.get(name)
        return default if raw in (None, "") else int(raw)

    def url(self, path: str, **params: Any) -> str:
        """An absolute URL in this service, as the real APIs put in ``href``/``next``."""
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return f"{self.service_url}{path}" + (f"?{query}" if query else "")


@dataclass
class Reply:
    """A response to send: status, body, content type and extra headers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(data: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> Reply:
    """A JSON response."""
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    return Reply(status, body, "application/json; charset=utf-8", dict(headers or {}))


def page_bounds(call: Call, default_limit: int, max_limit: int) -> tuple[int, int]:
    """``(offset, limit)`` from the query, limit clamped to 1..``max_limit``; ValueError when not numbers."""
    offset = max(0, call.int_param("offset", 0))
    limit = max(1, min(call.int_param("limit", default_limit), max_limit))
    return offset, limit
