"""MusicBrainz answers in the one shape the actors read.

Each function takes a document as MusicBrainz sent it and returns a copy in
which every field the product reads has its documented type: numbers are
ints (``score``, ``length``, ``position``), lists are lists and objects are
objects (``null`` becomes empty), dates are ``YYYY``, ``YYYY-MM`` or
``YYYY-MM-DD``.  Keys the product does not read are passed through as sent.
A field that cannot be read raises ``BadUpstreamData`` naming it, e.g.
``release.media[0].tracks[3].length``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Optional

from .tolerant import Reader

read = Reader("musicbrainz")

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def partial_date(value: Any, field: str) -> Optional[str]:
    """A MusicBrainz date, complete or partial (``1973``, ``1973-03``, ``1973-03-24``); None when unknown."""
    text = (read.text(value, field) or "").strip()
    if not text:
        return None
    found = _DATE.match(text)
    if found is None:
        raise read.bad(field, f"expected a date like 1973, 1973-03 or 1973-03-24, got {text[:40]!r}")
    year, month, day = (int(part) if part else None for part in found.groups())
    try:
        dt.date(year, month or 1, day or 1)
    except ValueError:
        raise read.bad(field, f"no such date: {text!r}") from None
    return text


def _object(value: Any, field: str) -> dict:
    """A copy of an object (``{}`` for null)."""
    return dict(read.mapping(value, field))


def _with(doc: dict, key: str, field: str, inner: str, convert) -> dict:
    """``doc[key]`` as an object (``{}`` for null) with its ``inner`` field read by ``convert``."""
    found = _object(doc.get(key), f"{field}.{key}")
    found[inner] = convert(found.get(inner), f"{field}.{key}.{inner}")
    return found


def artist_credit(value: Any, field: str) -> list[dict]:
    """``[{name, joinphrase, artist: {id, name, ...}}]``, each credited name as it is printed."""
    credits = []
    for i, credit in enumerate(read.items(value, field)):
        where = f"{field}[{i}]"
        artist = _with(credit, "artist", where, "name", read.text)
        name = read.text(credit.get("name"), where + ".name") or artist["name"]
        credits.append({**credit, "name": name, "joinphrase": read.text(credit.get("joinphrase"), where + ".joinphrase") or "",
                        "artist": artist})
    return credits


def _votes(value: Any, field: str) -> list[dict]:
    """Genres or tags: ``[{name, count}]``."""
    return [
        {**vote, "name": read.text(vote.get("name"), f"{field}[{i}].name"),
         "count": read.number(vote.get("count"), f"{field}[{i}].count") or 0}
        for i, vote in enumerate(read.items(value, field))
    ]


def _common(doc: dict, field: str) -> dict:
    """What every entity has: id, title/name, artist credit, genres and tags."""
    cleaned = {**doc, "id": read.required_text(doc.get("id"), field + ".id")}
    for key in ("title", "name", "disambiguation", "type", "country"):
        if key in doc:
            cleaned[key] = read.text(doc[key], f"{field}.{key}")
    cleaned["artist-credit"] = artist_credit(doc.get("artist-credit"), field + ".artist-credit")
    cleaned["genres"] = _votes(doc.get("genres"), field + ".genres")
    cleaned["tags"] = _votes(doc.get("tags"), field + ".tags")
    if "score" in doc:
        cleaned["score"] = read.number(doc["score"], field + ".score") or 0
    return cleaned


def _release_brief(doc: dict, field: str) -> dict:
    cleaned = _common(doc, field)
    cleaned["status"] = read.text(doc.get("status"), field + ".status")
    cleaned["date"] = partial_date(doc.get("date"), field + ".date")
    cleaned["country"] = read.text(doc.get("country"), field + ".country")
    return cleaned


def release_group(doc: Any, field: str = "release-group") -> dict:
    """A release group (a lookup or a search hit) with its brief releases."""
    doc = read.mapping(doc, field)
    cleaned = _common(doc, field)
    cleaned["first-release-date"] = partial_date(doc.get("first-release-date"), field + ".first-release-date")
    cleaned["primary-type"] = read.text(doc.get("primary-type"), field + ".primary-type")
    cleaned["secondary-types"] = read.strings(doc.get("secondary-types"), field + ".secondary-types")
    cleaned["releases"] = [
        _release_brief(release, f"{field}.releases[{i}]")
        for i, release in enumerate(read.items(doc.get("releases"), field + ".releases"))
    ]
    return cleaned


def recording(doc: Any, field: str = "recording") -> dict:
    """A recording: id, title, length (ms), video, ISRCs, score when a search hit."""
    doc = read.mapping(doc, field)
    cleaned = _common(doc, field)
    cleaned["length"] = read.number(doc.get("length"), field + ".length", stored=True)
    cleaned["video"] = read.flag(doc.get("video"), field + ".video")
    cleaned["isrcs"] = read.strings(doc.get("isrcs"), field + ".isrcs")
    return cleaned


def track(doc: dict, field: str) -> dict:
    """A track of a medium; its recording read as ``recording()``."""
    cleaned = dict(doc)
    cleaned["title"] = read.text(doc.get("title"), field + ".title")
    cleaned["position"] = read.number(doc.get("position"), field + ".position", stored=True)
    cleaned["number"] = read.text(doc.get("number"), field + ".number")
    cleaned["length"] = read.number(doc.get("length"), field + ".length", stored=True)
    given = doc.get("recording")
    cleaned["recording"] = recording(given, field + ".recording") if given is not None else {}
    return cleaned


def medium(doc: dict, field: str) -> dict:
    """A medium: position, format, its pregap track (or None), tracks and data tracks."""
    cleaned = dict(doc)
    cleaned["position"] = read.number(doc.get("position"), field + ".position", stored=True)
    cleaned["format"] = read.text(doc.get("format"), field + ".format")
    pregap = doc.get("pregap")
    cleaned["pregap"] = track(read.mapping(pregap, field + ".pregap"), field + ".pregap") if pregap else None
    for key in ("tracks", "data-tracks"):
        cleaned[key] = [track(t, f"{field}.{key}[{i}]") for i, t in enumerate(read.items(doc.get(key), f"{field}.{key}"))]
    return cleaned


def release(doc: Any, field: str = "release") -> dict:
    """A release with its media, tracks and recordings."""
    doc = read.mapping(doc, field)
    cleaned = _release_brief(doc, field)
    cleaned["cover-art-archive"] = _with(doc, "cover-art-archive", field, "front", read.flag)
    cleaned["media"] = [medium(m, f"{field}.media[{i}]") for i, m in enumerate(read.items(doc.get("media"), field + ".media"))]
    return cleaned


def artist(doc: Any, field: str = "artist") -> dict:
    """An artist (a lookup or a search hit): type, country, area, life-span, URL relations."""
    doc = read.mapping(doc, field)
    cleaned = _common(doc, field)
    cleaned["area"] = _with(doc, "area", field, "name", read.text)
    cleaned["life-span"] = _with(doc, "life-span", field, "begin", partial_date)
    cleaned["relations"] = [
        {**relation, "type": read.text(relation.get("type"), f"{field}.relations[{i}].type"),
         "url": _with(relation, "url", f"{field}.relations[{i}]", "resource", read.text)}
        for i, relation in enumerate(read.items(doc.get("relations"), field + ".relations"))
    ]
    return cleaned


def hits(answer: Any, key: str, clean) -> list[dict]:
    """The search results under ``key`` (``release-groups``, ``artists``...), each cleaned."""
    return [clean(hit, f"{key}[{i}]") for i, hit in enumerate(read.items(read.mapping(answer, "response").get(key), key))]
