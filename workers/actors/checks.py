"""The check jobs: decide, for real, whether an entity needs enrichment, and start it.

A check is what a user or a schedule starts (the root of a tree).  It ends
``skipped`` with the reason when there is nothing to do; otherwise it sends
the enrichment job (and, for an album, one artist check per credited
artist), all children of this root.

Cooldowns look at the same enrichment operation on the same entity only: a
failed image cache never blocks an album's enrichment.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from middleware import record
from models import Album, Artist, EnrichmentLog, Track, album_artists, utcnow
from models.catalog import CatalogModel

from ..jobs import enrichment_actor, load, send

NO_DATA_COOLDOWN = dt.timedelta(days=90)
FAILED_COOLDOWN = dt.timedelta(days=7)
STALE_AFTER = dt.timedelta(days=30)


def cooldown(operation: str, entity_type: str, entity_id, now: dt.datetime) -> Optional[str]:
    """Why the last run of ``operation`` on this entity says: not again yet (None: go ahead)."""
    last = (
        EnrichmentLog.select(EnrichmentLog.status, EnrichmentLog.completed_at, EnrichmentLog.created_at)
        .where(
            (EnrichmentLog.entity_type == entity_type)
            & (EnrichmentLog.entity_id == entity_id)
            & (EnrichmentLog.operation == operation)
            & (EnrichmentLog.status.in_(("no_data", "failed", "success", "partial_success", "degraded")))
        )
        .order_by(EnrichmentLog.created_at.desc())
        .first()
    )
    if last is None:
        return None
    when = last.completed_at or last.created_at
    if last.status == "no_data" and now - when < NO_DATA_COOLDOWN:
        return f"{operation} found no data on {when:%Y-%m-%d}; next try after {when + NO_DATA_COOLDOWN:%Y-%m-%d}"
    if last.status == "failed" and now - when < FAILED_COOLDOWN:
        return f"{operation} failed on {when:%Y-%m-%d %H:%M}; next try after {when + FAILED_COOLDOWN:%Y-%m-%d %H:%M}"
    return None


def common_reasons(entity: CatalogModel, now: dt.datetime) -> list[str]:
    reasons = []
    if entity.last_enriched_at is None:
        reasons.append("never enriched")
    if entity.enrichment_status == "failed":
        reasons.append("failed before")
    if (
        entity.data_quality == "low"
        and entity.last_enriched_at is not None
        and now - entity.last_enriched_at > STALE_AFTER
    ):
        reasons.append(f"low quality, last enriched {entity.last_enriched_at:%Y-%m-%d}")
    if not entity.musicbrainz_id:
        reasons.append("no MusicBrainz id")
    return reasons


def album_reasons(album: Album, now: dt.datetime) -> list[str]:
    reasons = common_reasons(album, now)
    if not album.release_date:
        reasons.append("no release date")
    if not Track.select().where(Track.album == album).exists():
        reasons.append("no tracks")
    return reasons


def artist_reasons(artist: Artist, now: dt.datetime) -> list[str]:
    reasons = common_reasons(artist, now)
    if not artist.image_url and not artist.cloudflare_image_id and not artist.cached_image_path:
        reasons.append("no image")
    if not artist.country_code:
        reasons.append("no country")
    return reasons


def decide(entity: CatalogModel, entity_type: str, operation: str, reasons: list[str], force: bool) -> bool:
    """Record the decision; True when the enrichment job should be sent."""
    now = utcnow()
    if force:
        record(reason="forced" + (f" ({'; '.join(reasons)})" if reasons else ""), details={"decision": "enrich", "reasons": reasons, "force": True})
        return True
    blocked = cooldown(operation, entity_type, entity.id, now)
    if blocked:
        record(status="skipped", reason=blocked, details={"decision": "cooldown", "reasons": reasons})
        return False
    if not reasons:
        record(
            status="skipped",
            reason=f"enriched {entity.last_enriched_at:%Y-%m-%d} with {entity.data_quality} quality; nothing to gain",
            details={"decision": "up to date", "reasons": []},
        )
        return False
    record(reason="; ".join(reasons), details={"decision": "enrich", "reasons": reasons, "force": False})
    return True


def _mark_queued(entity: CatalogModel) -> None:
    model = type(entity)
    model.update(enrichment_status="queued", updated_at=utcnow()).where(model.id == entity.id).execute()


def check_and_send(model, entity_id, entity_type: str, reasons_for, source: str, force: bool):
    """Load the entity, decide, and when there is work mark it queued and send ``enrich_<type>``.

    Returns the entity when its enrichment was sent, else None (the check
    has recorded why).
    """
    entity = load(model, entity_id)
    record(details={"source": source}, data_quality_before=entity.data_quality)
    if not decide(entity, entity_type, f"enrichment:{entity_type}", reasons_for(entity, utcnow()), force):
        return None
    _mark_queued(entity)
    send(f"enrich_{entity_type}", str(entity.id))
    return entity


@enrichment_actor("check:album-enrichment", entity=("album", "album_id"))
def check_album_enrichment(album_id: str, source: str = "manual", force: bool = False):
    """Send enrichment:album and one artist check per credited artist, when the album needs work."""
    album = check_and_send(Album, album_id, "album", album_reasons, source, force)
    if album is None:
        return
    artists = album_artists(album)
    for artist in artists:
        send("check_artist_enrichment", str(artist.id), source, force)
    record(details={"artists_checked": len(artists)})


@enrichment_actor("check:artist-enrichment", entity=("artist", "artist_id"))
def check_artist_enrichment(artist_id: str, source: str = "manual", force: bool = False):
    """Send enrichment:artist when the artist lacks a MusicBrainz id, an image or a country."""
    check_and_send(Artist, artist_id, "artist", artist_reasons, source, force)


@enrichment_actor("check:track-enrichment", entity=("track", "track_id"))
def check_track_enrichment(track_id: str, source: str = "manual", force: bool = False):
    """Send enrichment:track when the track lacks a MusicBrainz id."""
    check_and_send(Track, track_id, "track", common_reasons, source, force)
