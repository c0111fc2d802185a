"""Fake image hosts: generated sample images, Cover Art Archive redirects, uploaded images."""

from __future__ import annotations

from .exchange import Call, Reply, json_reply
from .state import FakeState

_COVER_SIZES = ("front", "front-250", "front-500", "front-1200")


def handle_images(call: Call, state: FakeState) -> Reply:
    """``GET /images/<path>``: a sample image, or ``/images/delivery/<hash>/<id>/<variant>`` of an upload."""
    path = call.path.lstrip("/")
    if path in state.catalog.images:
        content_type, data = state.catalog.images[path]
        return Reply(200, data, content_type, {"Cache-Control": "max-age=86400"})
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == "delivery":
        with state.lock:
            upload = state.uploads.get(parts[2])
        if upload:
            return Reply(200, upload["data"], "application/octet-stream")
    return Reply(404, b"Not Found", "text/plain")


def handle_cover_art(call: Call, state: FakeState) -> Reply:
    """``/release-group/<mbid>/front`` or ``/release/<mbid>/front``: 307 to the image, as the real archive redirects."""
    parts = [p for p in call.path.split("/") if p]
    if len(parts) == 3 and parts[0] in ("release-group", "release") and parts[2] in _COVER_SIZES:
        image = state.catalog.cover_art.get(parts[1])
        if image:
            return Reply(307, b"", "text/plain", {"Location": f"{call.base_url}/images/{image}"})
    return json_reply({"error": "No cover art found"}, 404)
