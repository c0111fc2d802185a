"""The check jobs: decide, for real, whether an entity needs enrichment, and start it.

A check is what a user or a schedule starts (the root of a tree).  It ends
``skipped`` with the reason when there is nothing to do; otherwise it sends
the enrichment job (and, for an album, one artist check per credited
artist), all children of this root.

Cooldowns (``cooldowns.py``) look at the same operation on the same entity
only: a failed image cache never blocks an album's enrichment.  An artist's
missing image is held back on its own when the Discogs job that would fetch
it is cooling down, so a refused Discogs page does not re-run the
MusicBrainz enrichment for nothing, and is asked again once its cooldown is
over.  The other way round, when MusicBrainz is cooling down on an artist (it
found nothing) but the Discogs job may run again, the check sends only that
Discogs job: Discogs' own, shorter wait after a failure is kept.
"""

from __future__ import annotations

import datetime as dt

from middleware import record
from models import Album, Artist, Track, album_artists, utcnow
from models.catalog import CatalogModel

from ..jobs import enrichment_actor, load, send
from .artist import NO_IMAGE, has_image, image_lookup
from .cooldowns import verdict

STALE_AFTER = dt.timedelta(days=30)


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
    if not has_image(artist):
        reasons.append(NO_IMAGE)
    if not artist.country_code:
        reasons.append("no country")
    return reasons


def held_back(artist: Artist, reasons: list[str], now: dt.datetime) -> tuple[list[str], dict[str, str]]:
    """The artist's reasons with a missing image explained, and the image held back while Discogs cools down.

    Returns ``(reasons, held)``: ``held`` maps a reason left out to why.
    """
    if NO_IMAGE not in reasons:
        return reasons, {}
    _, operation = image_lookup(artist)
    outcome = verdict(operation, "artist", artist.id, now)
    if outcome is None:
        return reasons, {}
    if outcome.blocked:
        return [r for r in reasons if r != NO_IMAGE], {NO_IMAGE: outcome.reason}
    return [f"{NO_IMAGE} ({outcome.reason})" if r == NO_IMAGE else r for r in reasons], {}


def decide(entity: CatalogModel, entity_type: str, reasons: list[str], force: bool,
           held: dict[str, str] | None = None) -> bool:
    """Record the decision; True when the enrichment job should be sent.

    ``held`` maps reasons left out of ``reasons`` (their own source is cooling down) to why.
    """
    held = held or {}
    if force:
        record(reason="forced" + (f" ({'; '.join(reasons)})" if reasons else ""),
               details={"decision": "enrich", "reasons": reasons, "force": True})
        return True
    outcome = verdict(f"enrichment:{entity_type}", entity_type, entity.id, utcnow())
    if outcome is not None and outcome.blocked:
        record(status="skipped", reason=outcome.reason,
               details={"decision": "cooldown", "reasons": reasons, "cooldown": outcome.as_dict(),
                        **({"held_back": held} if held else {})})
        return False
    if not reasons and held:
        record(
            status="skipped",
            reason="; ".join(f"{reason}, but {why}" for reason, why in held.items()),
            details={"decision": "cooldown", "reasons": [], "held_back": held},
        )
        return False
    if not reasons:
        record(
            status="skipped",
            reason=f"enriched {entity.last_enriched_at:%Y-%m-%d} with {entity.data_quality} quality; nothing to gain",
            details={"decision": "up to date", "reasons": []},
        )
        return False
    said = reasons + ([outcome.reason] if outcome is not None else [])
    record(reason="; ".join(said), details={"decision": "enrich", "reasons": reasons, "force": False,
                                            **({"held_back": held} if held else {})})
    return True


def _mark_queued(entity: CatalogModel) -> None:
    model = type(entity)
    model.update(enrichment_status="queued", updated_at=utcnow()).where(model.id == entity.id).execute()


def check_and_send(entity: CatalogModel, entity_type: str, reasons: list[str], source: str, force: bool,
                   held: dict[str, str] | None = None, send_kwargs: dict | None = None) -> bool:
    """Decide, and when there is work mark the entity queued and send ``enrich_<type>`` (with ``send_kwargs``).

    Returns True when the enrichment was sent; otherwise the check has recorded why not.
    """
    record(details={"source": source}, data_quality_before=entity.data_quality)
    if not decide(entity, entity_type, reasons, force, held):
        return False
    _mark_queued(entity)
    send(f"enrich_{entity_type}", str(entity.id), **(send_kwargs or {}))
    return True


def discogs_only(artist: Artist, reasons: list[str], held: dict[str, str], now: dt.datetime) -> bool:
    """Send only the Discogs job for a missing image while enrichment:artist itself is cooling down.

    Parameters:
      artist(Artist): the artist checked.
      reasons(list[str]): its reasons, as ``held_back`` left them (``no image`` only when Discogs may run).
      held(dict[str, str]): reasons left out, and why.
      now(datetime): the check's time.

    Returns True when it sent the Discogs job (and recorded why); False leaves the decision to ``decide``.
    """
    image = next((reason for reason in reasons if reason.startswith(NO_IMAGE)), None)
    if image is None:
        return False
    outcome = verdict("enrichment:artist", "artist", artist.id, now)
    if outcome is None or not outcome.blocked:
        return False
    actor_name, operation = image_lookup(artist)
    record(reason=f"{image}; {outcome.reason}: sent {operation} only",
           details={"decision": "image only", "reasons": reasons, "cooldown": outcome.as_dict(),
                    **({"held_back": held} if held else {})})
    send(actor_name, str(artist.id))
    return True


@enrichment_actor("check:album-enrichment", entity=("album", "album_id"))
def check_album_enrichment(album_id: str, source: str = "manual", force: bool = False):
    """Send enrichment:album and one artist check per credited artist, when the album needs work."""
    album = load(Album, album_id)
    if not check_and_send(album, "album", album_reasons(album, utcnow()), source, force):
        return
    artists = album_artists(album)
    for artist in artists:
        send("check_artist_enrichment", str(artist.id), source, force)
    record(details={"artists_checked": len(artists)})


@enrichment_actor("check:artist-enrichment", entity=("artist", "artist_id"))
def check_artist_enrichment(artist_id: str, source: str = "manual", force: bool = False):
    """Send enrichment:artist when the artist lacks a MusicBrainz id, an image or a country.

    A missing image counts only when the Discogs job that would fetch it may
    run; ``force`` ignores that cooldown too, here and in enrichment:artist.
    While enrichment:artist is cooling down, a missing image Discogs may be
    asked for again sends that Discogs job alone (``discogs_only``).
    """
    artist = load(Artist, artist_id)
    now = utcnow()
    reasons, held = artist_reasons(artist, now), {}
    if not force:
        reasons, held = held_back(artist, reasons, now)
        if discogs_only(artist, reasons, held, now):
            record(details={"source": source}, data_quality_before=artist.data_quality)
            return
    check_and_send(artist, "artist", reasons, source, force, held, {"force": True} if force else None)


@enrichment_actor("check:track-enrichment", entity=("track", "track_id"))
def check_track_enrichment(track_id: str, source: str = "manual", force: bool = False):
    """Send enrichment:track when the track lacks a MusicBrainz id."""
    track = load(Track, track_id)
    check_and_send(track, "track", common_reasons(track, utcnow()), source, force)
