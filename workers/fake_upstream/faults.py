"""Misbehaviour on demand: which requests fail, how, and how many times.

A fault matches a request path by prefix (``/musicbrainz/ws/2/release-group``)
or, when it starts with ``^``, by regular expression.  It applies to the next
``times`` matching requests, or to all of them when ``times`` is None.

Kinds:
    rate_limit          429 with ``Retry-After: <retry_after>`` (seconds or an HTTP-date)
    server_error        503 (or ``status``), with Retry-After when given
    status              any ``status``, with a JSON error body
    not_found           404
    unauthorized        401
    timeout             wait ``delay`` seconds (default 30), then hang up without answering
    disconnect          hang up at once without answering
    malformed_json      200 with a body that is not JSON
    truncated_json      200 whose body stops half-way (the connection is cut)
    huge_body           200, chunked, ``size`` bytes (default 64 MiB) streamed until the client leaves
    huge_body_declared  the same with ``Content-Length: size`` announced up front
    not_an_image        200 ``Content-Type: image/jpeg`` whose bytes are HTML
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Union

from .exchange import Reply, json_reply

KINDS = (
    "rate_limit",
    "server_error",
    "status",
    "not_found",
    "unauthorized",
    "timeout",
    "disconnect",
    "malformed_json",
    "truncated_json",
    "huge_body",
    "huge_body_declared",
    "not_an_image",
)
HUGE_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_DELAY = 30.0


@dataclass
class Fault:
    """One configured misbehaviour; ``hits`` counts the requests it has answered."""

    id: int
    path: str
    kind: str
    times: Optional[int] = 1
    retry_after: Union[int, float, str, None] = 1
    delay: float = DEFAULT_TIMEOUT_DELAY
    status: Optional[int] = None
    size: int = HUGE_BODY_BYTES
    hits: int = 0

    def matches(self, path: str) -> bool:
        if self.path.startswith("^"):
            return re.search(self.path, path) is not None
        return path.startswith(self.path)

    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def to_dict(self) -> dict:
        return asdict(self)


class FaultRegistry:
    """The configured faults, in the order they were added; thread-safe."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(
        self,
        path: str,
        kind: str,
        times: Optional[int] = 1,
        retry_after: Union[int, float, str, None] = 1,
        delay: Optional[float] = None,
        status: Optional[int] = None,
        size: Optional[int] = None,
    ) -> Fault:
        """Configure a fault (see the module docstring); ValueError for an unknown kind or bad pattern."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(KINDS)}")
        if path.startswith("^"):
            re.compile(path)
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for every request")
        fault = Fault(
            id=next(self._ids),
            path=path,
            kind=kind,
            times=times,
            retry_after=retry_after,
            delay=DEFAULT_TIMEOUT_DELAY if delay is None else float(delay),
            status=status,
            size=HUGE_BODY_BYTES if size is None else int(size),
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, path: str) -> Optional[Fault]:
        """The first live fault matching ``path``, counting this use, or None."""
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted() and fault.matches(path):
                    fault.hits += 1
                    return fault
        return None

    def remove(self, fault_id: int) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict]:
        with self._lock:
            return [f.to_dict() for f in self._faults]


ErrorBody = Callable[[int, str], dict]


def plain_error_body(status: int, message: str) -> dict:
    return {"error": message, "status": status}


def canned_reply(fault: Fault, error_body: ErrorBody = plain_error_body) -> Optional[Reply]:
    """The complete response of a fault that is just a response; None for the connection-level kinds.

    ``error_body(status, message)`` shapes an error's JSON as the faulted service does.
    """
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if fault.kind == "rate_limit":
        return json_reply(error_body(429, "rate limited"), 429, headers)
    if fault.kind == "server_error":
        status = fault.status or 503
        return json_reply(error_body(status, "Service Unavailable"), status, headers)
    if fault.kind in ("status", "not_found", "unauthorized"):
        status = {"not_found": 404, "unauthorized": 401}.get(fault.kind) or fault.status or 500
        return json_reply(error_body(status, f"fault injected: HTTP {status}"), status)
    if fault.kind == "malformed_json":
        return Reply(200, b'{"id": "oops", <html><body>Bad Gateway</body></html>', "application/json")
    if fault.kind == "not_an_image":
        return Reply(200, b"<!DOCTYPE html><html><body>Not an image</body></html>" * 20, "image/jpeg")
    return None
