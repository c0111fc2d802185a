"""Reads of the catalog for the job-log views: the entities jobs name, one entity, and the text search.

``models.timeline`` finds the roots of a search's matches; the ``enrich``
command and the dashboard label jobs with ``entity_names``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Optional, Union

from peewee import SQL, ForeignKeyField, NodeList, Value

from .catalog import Album, AlbumArtist, Artist, Track
from .database import is_postgres
from .job_log import ENTITY_TYPES
from .plain import AsDict

SEARCH_MAX_LENGTH = 200
SEARCH_MAX_ENTITIES = 1000  # more matches than this: ask for a longer search text

def _contains(column, text: str):
    """``column`` contains ``text``, ignoring case, with LIKE's wildcards in ``text`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    like = "ILIKE" if is_postgres(Album._meta.database) else "LIKE"  # SQLite's LIKE ignores ASCII case
    return NodeList((column, SQL(like), Value(f"%{escaped}%"), SQL("ESCAPE '\\'")))


def search_entities(text: str) -> dict[str, list[uuid.UUID]]:
    """``{"album": ids, "artist": ids}`` of the albums whose title and the artists whose name contain
    ``text`` (ignoring case); a type without a match is left out.

    On PostgreSQL trigram indexes answer this (migration 0010).  ValueError
    when the text is too long, holds control characters, or matches more
    than ``SEARCH_MAX_ENTITIES`` entities (a page of their roots would be
    slow and no help).
    """
    text = text.strip()
    if len(text) > SEARCH_MAX_LENGTH:
        raise ValueError(f"search text is {len(text)} characters long; at most {SEARCH_MAX_LENGTH}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("search text must not contain control characters")
    found: dict[str, list[uuid.UUID]] = {}
    room = SEARCH_MAX_ENTITIES + 1
    for kind, model, column in (("album", Album, Album.title), ("artist", Artist, Artist.name)):
        ids = [row_id for (row_id,) in model.select(model.id).where(_contains(column, text)).limit(room).tuples()]
        room -= len(ids)
        if room <= 0:
            raise ValueError(f"search {text!r} matches more than {SEARCH_MAX_ENTITIES} albums and artists: "
                             "type more of the title or name")
        if ids:
            found[kind] = ids
    return found



_NAMED = {"album": (Album, Album.title), "artist": (Artist, Artist.name), "track": (Track, Track.title)}


def _uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def entity_names(pairs) -> dict[tuple[str, uuid.UUID], str]:
    """``{(entity_type, entity_id): title or name}`` for (type, id) pairs: one query per entity type present."""
    wanted: dict[str, set] = {}
    for entity_type, entity_id in pairs:
        if entity_type in _NAMED and entity_id is not None:
            wanted.setdefault(entity_type, set()).add(_uuid(entity_id))
    names = {}
    for entity_type, ids in wanted.items():
        model, name = _NAMED[entity_type]
        for row_id, text in model.select(model.id, name).where(model.id.in_(list(ids))).tuples():
            names[(entity_type, row_id)] = text
    return names


@dataclass(slots=True)
class Entity(AsDict):
    """An album, artist or track as the catalog holds it now, with the entities it links to."""

    type: str
    id: uuid.UUID
    name: str  # title or name
    fields: dict  # every other column, by name
    related: list[tuple[str, uuid.UUID, str]]  # (entity type, id, name): credits, tracks, the album


RELATED_LIMIT = 200


def entity_key(entity_type: str, entity_id: Union[uuid.UUID, str]) -> uuid.UUID:
    """The entity's id as a UUID; ValueError naming what is wrong for an unknown type or a malformed id."""
    if entity_type not in ENTITY_TYPES:
        raise ValueError(f"entity type {entity_type!r} is not one of {', '.join(ENTITY_TYPES)}")
    try:
        return uuid.UUID(str(entity_id))
    except ValueError:
        raise ValueError(f"{entity_type} id {str(entity_id)[:80]!r} is not a UUID") from None


def get_entity(entity_type: str, entity_id: Union[uuid.UUID, str]) -> Optional[Entity]:
    """The catalog row, or None when there is none; ValueError for an unknown type or a malformed id."""
    entity_uuid = entity_key(entity_type, entity_id)
    model, name_field = _NAMED[entity_type]
    row = model.get_or_none(model.id == entity_uuid)
    if row is None:
        return None
    fields = {f.name: getattr(row, f.column_name if isinstance(f, ForeignKeyField) else f.name)
              for f in model._meta.sorted_fields if f.name not in ("id", name_field.name)}
    if entity_type == "album":
        related = [("artist", a.id, a.name) for a in Artist.select(Artist.id, Artist.name).join(AlbumArtist)
                   .where(AlbumArtist.album == entity_uuid).order_by(AlbumArtist.position)]
        related += [("track", t.id, t.title) for t in Track.select(Track.id, Track.title)
                    .where(Track.album == entity_uuid)
                    .order_by(Track.disc_number, Track.track_number).limit(RELATED_LIMIT)]
    elif entity_type == "artist":
        related = [("album", a.id, a.title) for a in Album.select(Album.id, Album.title).join(AlbumArtist)
                   .where(AlbumArtist.artist == entity_uuid).order_by(Album.title).limit(RELATED_LIMIT)]
    else:
        related = [("album", a.id, a.title)
                   for a in Album.select(Album.id, Album.title).where(Album.id == row.album_id)]
    return Entity(type=entity_type, id=row.id, name=getattr(row, name_field.name), fields=fields, related=related)
