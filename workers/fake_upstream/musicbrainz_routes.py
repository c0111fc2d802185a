"""Fake MusicBrainz ``/ws/2``: lookups, searches with ``score`` and ISRC lookups, JSON only.

Errors carry MusicBrainz's own envelope, ``{"error": ..., "help": ...}``
(as recorded in the MusicBrainz server's web-service tests); its rate limit
answers 503 with the text clients look for ("exceeding the allowable rate
limit").
"""

from __future__ import annotations

import re
from typing import Callable, Optional

from .exchange import Call, Reply, json_reply, page_bounds
from .sample import SampleCatalog, credit_names, match_score, parse_lucene

_MBID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$")
# MusicBrainz asks clients for a meaningful User-Agent and blocks library defaults.
_GENERIC_AGENTS = ("python-httpx", "python-requests", "python-urllib", "java/", "go-http-client")
CREATED = "2024-01-01T00:00:00.000Z"
HELP = "For usage, please see: https://musicbrainz.org/development/mmd"
RATE_LIMITED = ("Your requests are exceeding the allowable rate limit. Please see "
                "https://musicbrainz.org/doc/MusicBrainz_API/Rate_Limiting for more information.")
Searchable = dict[str, "str | list[str]"]  # a field -> the text (or texts) a query matches it against


def error_body(status: int, message: str) -> dict:
    """MusicBrainz's error envelope; its 503 and 429 say the rate limit was exceeded."""
    return {"error": RATE_LIMITED if status in (429, 503) else message, "help": HELP}


def _error(status: int, message: str) -> Reply:
    return json_reply(error_body(status, message), status)


def _field_score(wanted: str, actual: "str | list[str]") -> int:
    return max((match_score(wanted, text) for text in ([actual] if isinstance(actual, str) else actual)), default=0)


def _scored(fields: Searchable, wanted: dict[str, str]) -> int:
    """The lowest score over the asked fields (0 when any does not match)."""
    scores = [_field_score(value, fields.get(name, "")) for name, value in wanted.items()]
    return min(scores) if scores else 0


def _search(call: Call, catalog: SampleCatalog, key: str, candidates: list[tuple[Searchable, dict]],
            default_field: str) -> Reply:
    """Rank ``(searchable fields, result document)`` pairs against the ``query`` parameter."""
    fields, free = parse_lucene(call.query.get("query", ""))
    if free:
        fields.setdefault(default_field, free)
    if not fields:
        return _error(400, "Invalid search query")
    try:
        offset, limit = page_bounds(call, 25, 100)
    except ValueError:
        return _error(400, "Invalid limit or offset")
    hits = []
    for searchable, document in candidates:
        # Fields this entity does not have (type:, status:...) are ignored, as a filter we do not model.
        score = _scored(searchable, {k: v for k, v in fields.items() if k in searchable})
        if score:
            hits.append((score, document))
    hits.sort(key=lambda hit: -hit[0])
    page = [
        {**document, "score": str(score) if catalog.notes.get(document["id"], {}).get("_score_as_text") else score}
        for score, document in hits[offset : offset + limit]
    ]
    return json_reply({"created": CREATED, "count": len(hits), "offset": offset, key: page})


def _release_group_hit(group: dict) -> dict:
    hit = {k: v for k, v in group.items() if k not in ("genres", "releases")}
    hit["releases"] = [{k: r.get(k) for k in ("id", "title", "status", "status-id")} for r in group.get("releases") or []]
    return hit


def _recording_hit(recording: dict, track: dict, release: dict, group: Optional[dict]) -> dict:
    brief_group = {k: group.get(k) for k in ("id", "title", "primary-type")} if group else None
    medium = {"position": 1, "format": "CD", "track": [{k: track.get(k) for k in ("id", "number", "title", "length")}]}
    release_hit = {"id": release["id"], "title": release.get("title"), "status": release.get("status"), "media": [medium]}
    if brief_group:
        release_hit["release-group"] = brief_group
    return {**recording, "releases": [release_hit]}


def _search_release_groups(call: Call, catalog: SampleCatalog) -> Reply:
    candidates = [
        ({"releasegroup": g["title"], "release": g["title"], "artist": credit_names(g), "artistname": credit_names(g)},
         _release_group_hit(g))
        for g in catalog.release_groups.values()
    ]
    return _search(call, catalog, "release-groups", candidates, "releasegroup")


def _search_artists(call: Call, catalog: SampleCatalog) -> Reply:
    candidates = [
        ({"artist": a.get("name") or "", "sortname": a.get("sort-name") or "", "name": a.get("name") or ""},
         {k: v for k, v in a.items() if k not in ("relations", "genres")})
        for a in catalog.artists.values()
    ]
    return _search(call, catalog, "artists", candidates, "artist")


def _search_recordings(call: Call, catalog: SampleCatalog) -> Reply:
    candidates = []
    for recording, track, release in catalog.recordings():
        searchable = {
            "recording": recording.get("title") or "",
            "artist": credit_names(recording),
            "release": release.get("title") or "",
            "isrc": " ".join(recording.get("isrcs") or []),
        }
        hit = _recording_hit(recording, track, release, catalog.release_group_of(release["id"]))
        candidates.append((searchable, hit))
    return _search(call, catalog, "recordings", candidates, "recording")


def _lookup(documents: dict[str, dict], mbid: str) -> Reply:
    if not _MBID.match(mbid):
        return _error(400, "Invalid mbid.")
    document = documents.get(mbid)
    return json_reply(document) if document is not None else _error(404, "Not Found")


def _isrc(isrc: str, catalog: SampleCatalog) -> Reply:
    if not _ISRC.match(isrc):
        return _error(400, "Invalid isrc.")
    recordings = [
        {k: recording.get(k) for k in ("id", "title", "length", "video", "disambiguation")}
        for recording, _, _ in catalog.recordings()
        if isrc in (recording.get("isrcs") or [])
    ]
    return json_reply({"isrc": isrc, "recordings": recordings}) if recordings else _error(404, "Not Found")


_SEARCHES: dict[str, Callable[[Call, SampleCatalog], Reply]] = {
    "release-group": _search_release_groups,
    "artist": _search_artists,
    "recording": _search_recordings,
}


def handle_musicbrainz(call: Call, catalog: SampleCatalog) -> Reply:
    """Answer one ``/ws/2`` request from the sample catalog.

    Parameters:
        call: the request, ``path`` below ``/ws/2``.
        catalog: the sample documents.
    """
    agent = call.headers.get("user-agent", "").lower()
    if not agent or agent.startswith(_GENERIC_AGENTS):
        return _error(403, "Please identify your application with a meaningful User-Agent")
    if call.query.get("fmt") != "json" and "application/json" not in call.headers.get("accept", ""):
        return _error(406, "This fake serves JSON only: add fmt=json")
    if call.method != "GET":
        return _error(405, "Method not allowed")
    parts = [p for p in call.path.split("/") if p]
    if len(parts) == 1 and parts[0] in _SEARCHES:
        return _SEARCHES[parts[0]](call, catalog)
    if len(parts) == 2:
        entity, key = parts
        documents = {"release-group": catalog.release_groups, "release": catalog.releases, "artist": catalog.artists}
        if entity in documents:
            return _lookup(documents[entity], key)
        if entity == "isrc":
            return _isrc(key.upper(), catalog)
    return _error(404, "Not Found")
