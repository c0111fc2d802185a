"""Each catalog field's history: who changed it, when, from what to what, and on whose word.

Every job that changed an entity keeps ``details.field_changes``
(``[{field, before, after}]``, ``workers.field_changes``) and the fields in
``fields_enriched``.  ``field_history`` reads an entity's rows that changed
something with one query through a partial index over exactly those rows
(migration 0013, ``CHANGED_ROWS``), so an entity touched by thousands of
trees costs its changes, not its jobs nor the table.  ``tree_changes`` reads
the same entries from a tree already loaded (``models.timeline.get_tree``).

The dashboard's pages and JSON API and ``enrich history`` all read here.
Values pass through the same redaction as the logs (``middleware.redaction``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Union

from peewee import SQL, NodeList, Value

from middleware.redaction import redact_value

from .database import is_postgres
from .entities import entity_key
from .job_log import EnrichmentLog
from .plain import AsDict, plain
from .timeline import decode_cursor, encode_cursor

Log = EnrichmentLog

DEFAULT_LIMIT = 200
# A page of changing jobs; older ones are read with the page's ``next_cursor``. 2,000 made a 2 MB answer
# that took over 100 ms to write out (bench/README.md#field-history-and-the-tree-page-measured).
MAX_LIMIT = 500
MAX_FIELD = 64

# The partial index's name and predicate (migration 0013): the rows that changed a field.
CHANGED_INDEX = "enrichment_logs_field_changes"


def changed_rows(db) -> str:
    """The predicate of the rows that changed a field (``fields_enriched`` is JSON text, ``[]`` when none)."""
    return "fields_enriched::text <> '[]'" if is_postgres(db) else "fields_enriched <> '[]'"


# Where an operation's values come from: (service, what its id names, the details key holding the id).
SOURCES = {
    "enrichment:album": ("MusicBrainz", "release", "release_id"),
    "enrichment:artist": ("MusicBrainz", "artist", "musicbrainz_id"),
    "enrichment:track": ("MusicBrainz", "recording", "musicbrainz_id"),
    "spotify:track-fallback": ("Spotify", "album", "spotify_album_id"),
    "discogs:search-artist": ("Discogs", "artist", "discogs_id"),
    "discogs:get-artist": ("Discogs", "artist", "discogs_id"),
    "cache:album-cover-art": ("image cache", "image", "source_url"),
    "cache:artist-image": ("image cache", "image", "source_url"),
}
SOURCE_URLS = {
    ("MusicBrainz", "release"): "https://musicbrainz.org/release/{}",
    ("MusicBrainz", "artist"): "https://musicbrainz.org/artist/{}",
    ("MusicBrainz", "recording"): "https://musicbrainz.org/recording/{}",
    ("Spotify", "album"): "https://open.spotify.com/album/{}",
    ("Discogs", "artist"): "https://www.discogs.com/artist/{}",
}

HISTORY_COLUMNS = (Log.id, Log.job_id, Log.parent_job_id, Log.operation, Log.entity_type, Log.entity_id,
                   Log.created_at, Log.completed_at, Log.fields_enriched, Log.details)


@dataclass(slots=True)
class Source(AsDict):
    """Where a value came from: the service, what its id names and the id (``url`` to see it there)."""

    service: str
    kind: Optional[str] = None
    id: Optional[str] = None
    url: Optional[str] = None

    @property
    def label(self) -> str:
        return " ".join(filter(None, (self.service, self.kind, self.id)))

    def as_dict(self) -> dict:
        return {"service": self.service, "kind": self.kind, "id": self.id, "url": self.url}


@dataclass(slots=True)
class FieldChange(AsDict):
    """One field changed by one job; ``recorded`` is False for a row that named the field only."""

    field: str
    before: Any
    after: Any
    recorded: bool
    job_id: Optional[str]
    root_job_id: Optional[str]  # the tree it belongs to
    operation: str
    entity_type: Optional[str]
    entity_id: Optional[uuid.UUID]
    changed_at: Optional[dt.datetime]  # the job's end (its send time while it had none)
    source: Source

    def as_dict(self) -> dict:
        """Written out: ``dataclasses.asdict`` deep-copies every value, most of the API's time for 1,000s of
        changes. ``before`` and ``after`` came from JSON and stay as they are."""
        return {"field": self.field, "before": self.before, "after": self.after, "recorded": self.recorded,
                "job_id": self.job_id, "root_job_id": self.root_job_id, "operation": self.operation,
                "entity_type": self.entity_type, "entity_id": plain(self.entity_id),
                "changed_at": plain(self.changed_at), "source": self.source.as_dict()}


@dataclass(slots=True)
class Disagreement(AsDict):
    """A field the sources last set to different values: each service's latest change."""

    field: str
    changes: list[FieldChange]

    def as_dict(self) -> dict:
        return {"field": self.field, "changes": [change.as_dict() for change in self.changes]}


@dataclass(slots=True)
class FieldHistory(AsDict):
    """An entity's changes, newest first, and where its sources disagree."""

    entity_type: str
    entity_id: uuid.UUID
    field: Optional[str]
    changes: list[FieldChange] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)
    next_cursor: Optional[str] = None  # older changing jobs exist: pass it back as ``cursor``

    @property
    def truncated(self) -> bool:
        """More changing jobs than this page read: older changes are on the next page."""
        return self.next_cursor is not None

    def as_dict(self) -> dict:
        return {"entity_type": self.entity_type, "entity_id": plain(self.entity_id), "field": self.field,
                "changes": [change.as_dict() for change in self.changes],
                "disagreements": [d.as_dict() for d in self.disagreements], "truncated": self.truncated,
                "next_cursor": self.next_cursor}

    def by_field(self) -> dict[str, list[FieldChange]]:
        """The changes grouped by field (fields in name order, each newest first)."""
        grouped: dict[str, list[FieldChange]] = {}
        for change in self.changes:
            grouped.setdefault(change.field, []).append(change)
        return dict(sorted(grouped.items()))


def _source(operation: str, details: dict) -> Source:
    service, kind, key = SOURCES.get(operation, (operation.split(":")[0], None, None))
    value = details.get(key) if key else None
    source_id = redact_value(str(value)) if value not in (None, "") else None
    url = SOURCE_URLS.get((service, kind))
    return Source(service, kind, source_id, url.format(source_id) if url and source_id else None)


def _changes(row) -> list[FieldChange]:
    """The changes one job row records, in the order it made them."""
    details = row.details if isinstance(row.details, dict) else {}
    recorded = [c for c in details.get("field_changes") or () if isinstance(c, dict) and c.get("field")]
    named = {c["field"] for c in recorded}
    # A row from before its actor kept the values: the fields it names, values unknown.
    entries = [(c["field"], c.get("before"), c.get("after"), True) for c in recorded]
    entries += [(f, None, None, False) for f in row.fields_enriched or () if isinstance(f, str) and f not in named]
    source = _source(row.operation, details)
    return [
        FieldChange(field=str(name), before=redact_value(before), after=redact_value(after), recorded=known,
                    job_id=row.job_id, root_job_id=row.parent_job_id or row.job_id, operation=row.operation,
                    entity_type=row.entity_type, entity_id=row.entity_id,
                    changed_at=row.completed_at or getattr(row, "created_at", None), source=source)
        for name, before, after, known in entries
    ]


def _disagreements(changes: list[FieldChange]) -> list[Disagreement]:
    latest: dict[str, dict[str, FieldChange]] = {}
    for change in changes:  # newest first: the first one seen per (field, service) is its latest word
        if change.recorded:
            latest.setdefault(change.field, {}).setdefault(change.source.service, change)
    return [Disagreement(name, list(by_service.values())) for name, by_service in sorted(latest.items())
            if len({repr(c.after) for c in by_service.values()}) > 1]


def _check_field(name: Optional[str]) -> Optional[str]:
    if name is None:
        return None
    if not name or len(name) > MAX_FIELD or not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"field {name[:80]!r} is not a field name: letters, digits and _ , at most {MAX_FIELD}")
    return name


def changes_query(entity_type: str, entity_uuid: uuid.UUID, field_name: Optional[str] = None,
                  cursor: Optional[str] = None):
    """The entity's rows that changed a field (``field_name``, when given), newest first: ``CHANGED_INDEX``.

    ``cursor`` (a page's ``next_cursor``) keeps the rows after it: a keyset on (created_at, id), as the roots
    list pages, so an old page costs what the first does.
    """
    db = Log._meta.database
    conditions = [Log.entity_type == entity_type, Log.entity_id == entity_uuid, SQL(changed_rows(db))]
    if field_name is not None:  # the JSON text holds the name quoted: a cheap filter on the index's rows
        conditions.append(NodeList((Log.fields_enriched.cast("text"), SQL("LIKE"), Value(f'%"{field_name}"%'))))
    if cursor is not None:
        created_at, row_id = decode_cursor(cursor)
        conditions.append((Log.created_at <= created_at) & ((Log.created_at < created_at) | (Log.id < row_id)))
    return Log.select(*HISTORY_COLUMNS).where(*conditions).order_by(Log.created_at.desc(), Log.id.desc())


def field_history(entity_type: str, entity_id: Union[uuid.UUID, str], field_name: Optional[str] = None,
                  limit: int = DEFAULT_LIMIT, cursor: Optional[str] = None) -> FieldHistory:
    """The entity's field changes, newest first, from its newest ``limit`` jobs that changed one.

    One query through the partial index ``CHANGED_INDEX`` on (entity_type,
    entity_id, created_at).  ``field_name`` keeps one field's changes; pass a
    page's ``next_cursor`` back as ``cursor`` for the older jobs' changes.
    ValueError for an unknown type, a malformed id, field or cursor, a bad limit.
    """
    entity_uuid = entity_key(entity_type, entity_id)
    field_name = _check_field(field_name)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit {limit} must be between 1 and {MAX_LIMIT}")
    rows = list(changes_query(entity_type, entity_uuid, field_name, cursor).limit(limit + 1).namedtuples())
    changes = [c for row in rows[:limit] for c in _changes(row) if field_name is None or c.field == field_name]
    last = rows[limit - 1] if len(rows) > limit else None
    return FieldHistory(entity_type, entity_uuid, field_name, changes, _disagreements(changes),
                        next_cursor=None if last is None else encode_cursor(last.created_at, last.id))


def tree_changes(items: Iterable) -> list[FieldChange]:
    """What a tree's jobs changed, in the tree's order: read from its items (``models.timeline.Tree``)."""
    return [change for item in items if item.fields_enriched for change in _changes(item)]
