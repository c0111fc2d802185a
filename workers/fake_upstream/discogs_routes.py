"""Fake Discogs: ``/database/search?type=artist`` and ``/artists/{id}``, token required.

Errors are Discogs' ``{"message": "..."}`` (its API documentation, "Errors").
"""

from __future__ import annotations

from .exchange import Call, Reply, json_reply
from .sample import discogs_base_name, normalize
from .state import FakeState

# What Discogs says for these statuses, whatever the fault's own words.
MESSAGES = {
    401: "You must authenticate to access this resource.",
    404: "The requested resource was not found.",
    429: "You are making requests too quickly.",
    500: "An internal server error occurred.",
}


def error_body(status: int, message: str) -> dict:
    """Discogs' error body: ``{"message": ...}``."""
    return {"message": MESSAGES.get(status, message)}


def _error(status: int, message: str = "") -> Reply:
    return json_reply(error_body(status, message), status)


def _search_hit(artist: dict) -> dict:
    images = artist.get("images") or []  # null on an artist without any
    thumb = next((image["uri150"] for image in images), "")
    cover = next((image["uri"] for image in images), "")
    return {
        "id": artist["id"],
        "type": "artist",
        "user_data": {"in_wantlist": False, "in_collection": False},
        "master_id": None,
        "master_url": None,
        "uri": artist["uri"].replace("https://www.discogs.com", ""),
        "title": artist["name"],
        "thumb": thumb,
        "cover_image": cover,
        "resource_url": artist["resource_url"],
    }


def _relevance(query: str, name: str) -> int:
    """100 for the name, 95 for the name without its "(2)" suffix, 70 when every query word is in it."""
    wanted = normalize(query)
    if wanted == normalize(name):
        return 100
    if wanted == normalize(discogs_base_name(name)):
        return 95
    return 70 if set(wanted.split()) <= set(normalize(name).split()) else 0


def _search(call: Call, state: FakeState) -> Reply:
    query = call.query.get("q", "")
    kind = call.query.get("type", "artist")
    try:
        per_page = max(1, min(call.int_param("per_page", 50), 100))
    except ValueError:
        return _error(400, "Invalid per_page")
    hits = []
    if kind == "artist" and normalize(query):
        for artist in state.catalog.discogs_artists.values():
            score = _relevance(query, artist["name"])
            if score:
                hits.append((score, artist["id"], _search_hit(artist)))
    hits.sort(key=lambda hit: (-hit[0], hit[1]))
    results = [hit for _, _, hit in hits][:per_page]
    pagination = {"page": 1, "pages": 1, "per_page": per_page, "items": len(results), "urls": {}}
    return json_reply({"pagination": pagination, "results": results})


def handle_discogs(call: Call, state: FakeState) -> Reply:
    """Answer one Discogs request; ``Authorization: Discogs token=...`` must match."""
    if call.headers.get("authorization") != f"Discogs token={state.credentials.discogs_token}":
        return _error(401)
    parts = [p for p in call.path.split("/") if p]
    if call.method == "GET" and parts == ["database", "search"]:
        return _search(call, state)
    if call.method == "GET" and len(parts) == 2 and parts[0] == "artists":
        artist = state.catalog.discogs_artists.get(int(parts[1])) if parts[1].isdigit() else None
        return json_reply(artist) if artist else json_reply({"message": "Artist not found."}, 404)
    return _error(404)
