"""Who may see the dashboard and what its pages may run.

``SecurityHeaders`` sets a Content-Security-Policy that allows scripts,
styles and requests from the dashboard's own origin only (no inline script,
no inline style, nothing from the internet), and forbids framing.

``PasswordRequired`` asks for HTTP Basic credentials on every request when
``DASHBOARD_PASSWORD`` is set.  Parameters:

- ``password``: the password (any user name is accepted); compared in
  constant time.  None: no authentication (the app then listens on
  127.0.0.1 only: ``enrich web`` refuses any other address).

``csrf_token`` / ``csrf_valid``: the token every action form carries, an
HMAC of a key made at start-up, so a page of another site cannot post an
action with the operator's remembered credentials.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Optional

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def bind_problem(host: str, password: Optional[str]) -> Optional[str]:
    """Why the dashboard must not listen on ``host``, in one line, or None."""
    if host in LOCAL_HOSTS or password:
        return None
    return (f"refusing to listen on {host} without DASHBOARD_PASSWORD: anyone who reaches it would read the job "
            "log; set DASHBOARD_PASSWORD, or listen on 127.0.0.1")


class SecurityHeaders:
    """Adds the CSP and its companion headers to every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def password_matches(header: Optional[str], password: str) -> bool:
    """True when an ``Authorization: Basic`` header carries ``password`` (any user name)."""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    _, _, given = decoded.partition(":")
    return hmac.compare_digest(given.encode("utf-8"), password.encode("utf-8"))


class PasswordRequired:
    """HTTP Basic on every request when a password is configured (see the module docstring)."""

    def __init__(self, app: ASGIApp, password: Optional[str]):
        self.app = app
        self.password = password

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.password is None:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization", b"").decode("latin-1")
        if password_matches(header, self.password):
            return await self.app(scope, receive, send)
        response = PlainTextResponse("the dashboard needs its password (DASHBOARD_PASSWORD)\n", status_code=401,
                                     headers={"WWW-Authenticate": 'Basic realm="enrich dashboard", charset="UTF-8"'})
        await response(scope, receive, send)


class Csrf:
    """The action forms' token: the same for every form of this process, checked in constant time."""

    def __init__(self, key: Optional[bytes] = None):
        self._token = hmac.new(key or secrets.token_bytes(32), b"dashboard actions", hashlib.sha256).hexdigest()

    @property
    def token(self) -> str:
        return self._token

    def valid(self, given: Optional[str]) -> bool:
        return bool(given) and hmac.compare_digest(given.encode("utf-8", "replace"), self._token.encode())
