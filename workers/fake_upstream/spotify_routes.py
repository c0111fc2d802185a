"""Fake Spotify: the accounts token endpoint and the Web API's albums and new releases.

Web API errors are Spotify's error object ``{"error": {"status": 404, "message": "..."}}``
(Web API reference, "Response status codes").
"""

from __future__ import annotations

import base64
import binascii
from typing import Optional
from urllib.parse import parse_qs

from .exchange import Call, Reply, json_reply, page_bounds
from .state import FakeState

_SIMPLIFIED_DROPS = ("tracks", "copyrights", "external_ids", "genres", "label", "popularity")


# What Spotify says for these statuses, whatever the fault's own words.
MESSAGES = {401: "The access token expired", 404: "Resource not found", 429: "API rate limit exceeded",
            500: "Server error", 502: "Bad gateway", 503: "Service unavailable"}


def error_body(status: int, message: str) -> dict:
    """The Web API's error object."""
    return {"error": {"status": status, "message": MESSAGES.get(status, message)}}


def _api_error(status: int, message: str) -> Reply:
    return json_reply({"error": {"status": status, "message": message}}, status)


def _basic_credentials(header: str) -> Optional[tuple[str, str]]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def handle_spotify_accounts(call: Call, state: FakeState) -> Reply:
    """``POST /api/token`` with client credentials: Basic auth and ``grant_type=client_credentials``."""
    if call.method != "POST" or call.path != "/api/token":
        return json_reply({"error": "not_found"}, 404)
    form = {k: v[0] for k, v in parse_qs(call.body.decode("utf-8", "replace")).items()}
    if form.get("grant_type") != "client_credentials":
        return json_reply({"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"}, 400)
    expected = (state.credentials.spotify_client_id, state.credentials.spotify_client_secret)
    if _basic_credentials(call.headers.get("authorization", "")) != expected:
        return json_reply({"error": "invalid_client", "error_description": "Invalid client"}, 400)
    token = state.issue_token()
    return json_reply({"access_token": token, "token_type": "Bearer", "expires_in": state.spotify_token_expires_in})


def _paging(call: Call, path: str, items: list[dict], page_size: int, **extra) -> dict:
    """A Spotify paging object over ``items`` for the request's offset and limit."""
    offset, limit = page_bounds(call, 20, 50)
    limit = min(limit, page_size)
    total = len(items)
    nxt = call.url(path, offset=offset + limit, limit=limit, **extra) if offset + limit < total else None
    previous = call.url(path, offset=max(0, offset - limit), limit=limit, **extra) if offset > 0 else None
    return {
        "href": call.url(path, offset=offset, limit=limit, **extra),
        "items": items[offset : offset + limit],
        "limit": limit,
        "next": nxt,
        "offset": offset,
        "previous": previous,
        "total": total,
    }


def handle_spotify_api(call: Call, state: FakeState) -> Reply:
    """``/albums/{id}``, ``/albums/{id}/tracks`` and ``/browse/new-releases``, bearer token required."""
    scheme, _, token = call.headers.get("authorization", "").partition(" ")
    problem = "No token provided" if scheme.lower() != "bearer" else state.token_problem(token.strip())
    if problem:
        return _api_error(401, problem)
    if call.method != "GET":
        return _api_error(405, "Method not allowed")
    albums = state.catalog.spotify_albums
    parts = [p for p in call.path.split("/") if p]
    try:
        if parts == ["browse", "new-releases"]:
            simplified = [
                {k: v for k, v in albums[i].items() if k not in _SIMPLIFIED_DROPS} for i in state.catalog.new_release_ids
            ]
            return json_reply({"albums": _paging(call, "/browse/new-releases", simplified, state.spotify_page_size)})
        if len(parts) in (2, 3) and parts[0] == "albums":
            album = albums.get(parts[1])
            if album is None:
                return _api_error(404, "Resource not found")
            tracks_path = f"/albums/{parts[1]}/tracks"
            if len(parts) == 3 and parts[2] == "tracks":
                return json_reply(_paging(call, tracks_path, album["tracks"]["items"], state.spotify_page_size))
            if len(parts) == 2:
                first_page = _paging(_first_page(call), tracks_path, album["tracks"]["items"], state.spotify_page_size)
                return json_reply({**album, "tracks": first_page})
    except ValueError:
        return _api_error(400, "Invalid limit or offset")
    return _api_error(404, "Service not found")


def _first_page(call: Call) -> Call:
    """The album object embeds its first tracks page (Spotify uses limit 50 there)."""
    return Call(call.method, call.path, {"limit": "50"}, call.headers, b"", call.base_url, call.service_url)
