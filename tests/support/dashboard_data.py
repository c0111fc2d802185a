"""Job-log rows and catalog entries for the dashboard's tests, written as the middleware would."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Optional

from models import Album, AlbumArtist, Artist, EnrichmentLog, utcnow


def job(job_id: str, parent: Optional[str] = None, *, at: dt.datetime, status: str = "success",
        operation: Optional[str] = None, entity: Optional[tuple[str, uuid.UUID]] = None, took: float = 0.5,
        wait: float = 0.05, **extra) -> dict:
    """One row: enqueued ``wait`` s before ``at``, started at ``at``, finished ``took`` s later unless active."""
    active = status in ("running", "retrying")
    return {
        "id": uuid.uuid4(),
        "job_id": job_id,
        "parent_job_id": parent,
        "is_root_job": parent is None,
        "operation": operation or ("check:album-enrichment" if parent is None else "enrichment:album"),
        "entity_type": entity[0] if entity else None,
        "entity_id": entity[1] if entity else None,
        "status": status,
        "created_at": at - dt.timedelta(seconds=wait),
        "updated_at": at,
        "enqueued_at": at - dt.timedelta(seconds=wait),
        "started_at": at,
        "completed_at": None if active else at + dt.timedelta(seconds=took),
        "duration_ms": None if active else round(took * 1000),
        "retry_count": extra.pop("retry_count", 0),
        "last_error": extra.pop("last_error", None),
        "error_code": extra.pop("error_code", None),
        "reason": extra.pop("reason", None),
        "details": extra.pop("details", None),
        "sources": extra.pop("sources", []),
        "fields_enriched": extra.pop("fields_enriched", []),
        "failed_children": extra.pop("failed_children", 0),
    }


def insert(*rows: dict) -> None:
    EnrichmentLog.insert_many(list(rows)).execute()


def album(title: str, *artists: str) -> Album:
    record = Album.create(title=title)
    for position, name in enumerate(artists):
        AlbumArtist.create(album=record, artist=Artist.create(name=name), position=position)
    return record


def album_tree(root_id: str, record: Album, *, at: Optional[dt.datetime] = None, status: str = "success",
               failed_child: bool = False) -> list[dict]:
    """A check:album-enrichment root and two children (the second failed when ``failed_child``)."""
    at = at or utcnow() - dt.timedelta(minutes=5)
    artist = Artist.select().join(AlbumArtist).where(AlbumArtist.album == record).first()
    rows = [
        job(root_id, at=at, status="degraded" if failed_child else status, entity=("album", record.id),
            reason="never enriched", details={"decision": "enrich", "force": False},
            failed_children=int(failed_child)),
        job(f"{root_id}-album", root_id, at=at + dt.timedelta(seconds=0.1), entity=("album", record.id),
            sources=["musicbrainz"], fields_enriched=["genres", "release_date"], reason="matched by lookup",
            retry_count=1, error_code="upstream_503", last_error="RetryableUpstreamError: HTTP 503"),
    ]
    if artist is not None:
        rows.append(job(f"{root_id}-artist", root_id, at=at + dt.timedelta(seconds=0.3), operation="discogs:get-artist",
                        entity=("artist", artist.id), status="failed" if failed_child else "success",
                        error_code="upstream_400" if failed_child else None,
                        last_error="PermanentUpstreamError: discogs returned HTTP 400" if failed_child else None))
    insert(*rows)
    return rows
