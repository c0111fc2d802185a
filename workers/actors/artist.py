"""enrichment:artist: MusicBrainz artist lookup or scored search, and what follows.

Writes country, area, type, formed year (a group's life-span begin; none for
a Person, whose begin is a birth date), genres (top tags) and the Discogs id
from the URL relations.  A search whose best match has namesakes (another
artist of the same name also scoring above the threshold) is ambiguous: the
best one's fields are written at ``low`` quality, without its MusicBrainz or
Discogs id, and the row names the candidates.  Then, for an artist without an image, it asks
Discogs: ``discogs:get-artist`` when the Discogs id is known (most
MusicBrainz artists link their Discogs page), else ``discogs:search-artist``,
unless that job is cooling down on this artist (``cooldowns.py``; ``force``
ignores it).  An artist with an image URL and no cached image gets
``cache:artist-image``.  It does so when MusicBrainz finds no artist too (the
job still ends ``no_data``: its own source had nothing), so an artist only
Discogs knows gets its Discogs id and image in the same tree.
"""

from __future__ import annotations

import re
from typing import Optional

from middleware import record
from models import Artist, utcnow

from ..field_changes import apply_changes, better_quality, fields_of, save_changes
from ..jobs import clients, enrichment_actor, load, send
from ..matching import similarity
from .cooldowns import verdict
from .musicbrainz_scoring import ACCEPT_SCORE, best_match, namesakes, quality_for, top_genres

NO_IMAGE = "no image"  # the check's reason, held back while the Discogs job is cooling down

_DISCOGS_ARTIST_URL = re.compile(r"discogs\.com/artist/(\d+)")


def score_artist(candidate: dict, name: str) -> float:
    return 0.5 * (candidate.get("score") or 0) / 100 + 0.5 * similarity(name, candidate.get("name"))


def discogs_id_from(relations: list[dict]) -> Optional[str]:
    for relation in relations or []:
        if relation.get("type") == "discogs":
            found = _DISCOGS_ARTIST_URL.search((relation.get("url") or {}).get("resource") or "")
            if found:
                return found.group(1)
    return None


def formed_year(data: dict) -> Optional[int]:
    """The year a group (orchestra, choir...) formed; None for a Person, whose life-span begins at birth."""
    if data.get("type") == "Person":
        return None
    begin = (data.get("life-span") or {}).get("begin") or ""
    return int(begin[:4]) if begin[:4].isdigit() else None


def candidate_summary(candidate: dict, score: float) -> dict:
    """What tells namesakes apart, for the row's details."""
    return {"id": candidate.get("id"), "name": candidate.get("name"), "disambiguation": candidate.get("disambiguation") or None,
            "country": candidate.get("country"), "type": candidate.get("type"), "match_score": round(score, 3)}


def has_image(artist: Artist) -> bool:
    return bool(artist.image_url or artist.cloudflare_image_id or artist.cached_image_path)


def image_lookup(artist: Artist) -> tuple[str, str]:
    """(actor, operation) of the Discogs job that may find the image of an artist without one."""
    if artist.discogs_id:
        return "discogs_get_artist", "discogs:get-artist"
    return "discogs_search_artist", "discogs:search-artist"


def send_image_job(artist: Artist, force: bool) -> str | None:
    """Send what brings the artist an image (or caches the one it has); returns what was done, for the row."""
    if has_image(artist):
        if artist.image_url and not artist.cloudflare_image_id and not artist.cached_image_path:
            send("cache_artist_image", str(artist.id))
            return "image URL not cached yet: sent cache:artist-image"
        return None
    actor_name, operation = image_lookup(artist)
    outcome = None if force else verdict(operation, "artist", artist.id, utcnow())
    if outcome is not None and outcome.blocked:
        return f"{NO_IMAGE}; {operation} not sent: {outcome.reason}"
    send(actor_name, str(artist.id))
    which = f" for Discogs id {artist.discogs_id}" if artist.discogs_id else ""
    return f"{NO_IMAGE}: sent {operation}{which}" + (" (forced)" if force else "")


def with_step(reason: str, image_step: str | None) -> str:
    """The row's reason followed by what was done about the image, if anything."""
    return f"{reason}; {image_step}" if image_step else reason


@enrichment_actor("enrichment:artist", entity=("artist", "artist_id"))
def enrich_artist(artist_id: str, force: bool = False):
    artist = load(Artist, artist_id)
    quality_before = artist.data_quality
    record(data_quality_before=quality_before)
    mb = clients.musicbrainz()
    ambiguous: list[dict] = []
    if artist.musicbrainz_id:
        mbid, score, how = artist.musicbrainz_id, 1.0, "lookup by MusicBrainz id"
    else:
        candidates = mb.search_artists(artist.name)
        scorer = lambda c: score_artist(c, artist.name)  # noqa: E731
        best, score = best_match(candidates, scorer)
        if best is None or score <= ACCEPT_SCORE:
            found = f" (best: {best.get('name')!r}, {score:.2f})" if best else ""
            # MusicBrainz not knowing the artist says nothing of Discogs, which may have its page and image.
            image_step = send_image_job(artist, force)
            record(status="no_data", reason=with_step(f"no MusicBrainz artist scored above {ACCEPT_SCORE}{found}", image_step),
                   data_quality_after=quality_before,
                   details={"match_score": round(score, 3), "search_query": artist.name, "image_step": image_step})
            return
        mbid, how = best["id"], "search"
        others = namesakes(best, candidates, scorer)
        if others:
            ambiguous = [candidate_summary(c, scorer(c)) for c in [best, *others]]
            how = (f"search, ambiguous: {len(ambiguous)} MusicBrainz artists named {best.get('name')!r}; "
                   f"wrote the best one's fields at low quality, not its id")

    data = mb.get_artist(mbid)
    values = {
        "country_code": data.get("country"),
        "area": (data.get("area") or {}).get("name"),
        "artist_type": data.get("type"),
        "formed_year": formed_year(data),
        "genres": top_genres(data) or None,
        "discogs_id": None if artist.discogs_id or ambiguous else discogs_id_from(data.get("relations")),
        "data_quality": better_quality(artist.data_quality, "low" if ambiguous else quality_for(score)),
    }
    # An ambiguous match keeps no id: the next run searches again, and a person can set the right one.
    if not ambiguous and not artist.musicbrainz_id and not Artist.select().where(
        (Artist.musicbrainz_id == mbid) & (Artist.id != artist.id)
    ).exists():
        values["musicbrainz_id"] = mbid
    changes = apply_changes(artist, values)
    save_changes(artist, changes)

    image_step = send_image_job(artist, force)
    record(
        status="success",
        reason=with_step(f"matched by {how}", image_step),
        fields_enriched=fields_of(changes),
        data_quality_after=artist.data_quality,
        details={
            "musicbrainz_id": mbid,
            "match_score": round(score, 3),
            "field_changes": changes,
            "data_quality_before": quality_before,
            "data_quality_after": artist.data_quality,
            "image_step": image_step,
            **({"ambiguous": True, "candidates": ambiguous} if ambiguous else {}),
        },
    )
