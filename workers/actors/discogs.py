"""Discogs jobs: find an artist's Discogs page, then read its profile, genres and images.

``enrich_artist`` sends ``discogs_get_artist`` for an artist without an image
whose Discogs id it knows (from MusicBrainz), else ``discogs_search_artist``
(also for an artist MusicBrainz does not know).
An accepted search match sets the artist's ``discogs_id`` and sends
``discogs_get_artist``, which sends ``cache_artist_image`` when it found an
image and the artist has none cached.
Without DISCOGS_TOKEN both end ``skipped`` naming the variable.
"""

from __future__ import annotations

from typing import Optional

from middleware import record
from models import Artist

from ..field_changes import apply_changes, fields_of, save_changes
from ..jobs import clients, enrichment_actor, load, send
from ..matching import similarity, strip_disambiguation
from ..upstream.discogs import READ
from .images import largest_image

ACCEPT_SCORE = 0.85
# Discogs numbers namesakes ("Björk (2)"); the unnumbered artist is the one
# people mean, so a numbered title scores a little lower than the same name plain.
NUMBERED_PENALTY = 0.05
PROFILE_CHARS = 500
CANDIDATES_KEPT = 5


def score_result(name: str, title: str) -> float:
    """How well a Discogs search title matches the artist's name, 0.0 to 1.0."""
    plain = strip_disambiguation(title)
    score = similarity(name, plain)
    if plain != title:
        score -= NUMBERED_PENALTY
    return round(max(score, 0.0), 3)


def merged_genres(current: list, found: list) -> list:
    """The artist's genres followed by Discogs' new ones: another source's genres are kept."""
    return list(current or []) + [g for g in found if isinstance(g, str) and g not in (current or [])]


@enrichment_actor("discogs:search-artist", entity=("artist", "artist_id"))
def discogs_search_artist(artist_id: str):
    """Search Discogs for the artist's name and accept the best result scoring >= 0.85.

    On a match: set ``discogs_id`` (when it changed) and send ``discogs_get_artist``.
    Otherwise ``no_data``, naming the best candidate and its score.
    """
    artist = load(Artist, artist_id)
    query = artist.name
    results = []
    for index, hit in enumerate(clients.discogs().search_artists(query)):
        found = {"id": READ.text(hit.get("id"), f"results[{index}].id"),
                 "title": READ.text(hit.get("title"), f"results[{index}].title")}
        if found["id"] and found["title"]:
            results.append(found)
    scored = [(score_result(query, r["title"]), r) for r in results]
    details = {
        "search_query": query,
        "results_count": len(results),
        "candidates": [
            {"discogs_id": r["id"], "name": r["title"], "score": s}
            for s, r in sorted(scored, key=lambda pair: -pair[0])[:CANDIDATES_KEPT]
        ],
    }
    # max() keeps the first of equal scores: Discogs' own relevance order breaks ties.
    score, best = max(scored, key=lambda pair: pair[0], default=(0.0, None))
    if best is None or score < ACCEPT_SCORE:
        reason = (
            f"Discogs found no artist named {query!r}"
            if best is None
            else f"best Discogs candidate {best['title']!r} (id {best['id']}) scored {score:.2f}, below {ACCEPT_SCORE}"
        )
        record(status="no_data", reason=reason,
               details={**details, "discogs_id": None, "confidence": score, "matched_name": None})
        return

    discogs_id = best["id"]
    changes = apply_changes(artist, {"discogs_id": discogs_id})
    save_changes(artist, changes)
    send("discogs_get_artist", str(artist.id))
    record(
        status="success",
        reason=f"matched Discogs artist {best['title']!r} (id {discogs_id}) with score {score:.2f}",
        fields_enriched=fields_of(changes),
        details={**details, "discogs_id": discogs_id, "confidence": score, "matched_name": best["title"],
                 "field_changes": changes},
    )


def chosen_image(images) -> tuple[Optional[str], Optional[str]]:
    """``(url, which)`` of the image Discogs marks ``primary``; the largest other one only when none is.

    ``which`` is ``"primary"``, ``"largest secondary (no primary)"`` or None when there is no image.
    The primary is the one Discogs shows for the artist; it is often not the largest.
    """
    for index, image in enumerate(READ.items(images, "images")):
        url = READ.text(image.get("uri"), f"images[{index}].uri")
        if url and READ.text(image.get("type"), f"images[{index}].type") == "primary":
            return url, "primary"
    url = largest_image(images, READ, "images", "uri")
    return url, "largest secondary (no primary)" if url else None


@enrichment_actor("discogs:get-artist", entity=("artist", "artist_id"))
def discogs_get_artist(artist_id: str):
    """Read the artist's Discogs page: genres, and its primary image when the artist has none.

    Sends ``cache_artist_image`` when the page has an image and nothing is cached
    for the artist yet.  ``skipped`` for an artist without ``discogs_id``.
    """
    artist = load(Artist, artist_id)
    if not artist.discogs_id:
        record(status="skipped", reason="artist has no discogs_id (discogs_search_artist finds it)")
        return
    data = clients.discogs().get_artist(artist.discogs_id)
    images = [image for image in READ.items(data.get("images"), "images") if image.get("uri")]
    image_url, which = chosen_image(data.get("images"))
    genres = READ.strings(data.get("genres"), "genres")
    profile = (READ.text(data.get("profile"), "profile") or "").strip()

    values = {"genres": merged_genres(artist.genres, genres) if genres else None}
    if image_url and not artist.image_url:
        values["image_url"] = image_url
    changes = apply_changes(artist, values)
    save_changes(artist, changes)

    cache_sent = bool(image_url) and not artist.cloudflare_image_id and not artist.cached_image_path
    if cache_sent:
        send("cache_artist_image", str(artist.id))
    found = bool(profile or images or genres)
    record(
        status="success" if found else "no_data",
        reason=None if found else f"Discogs artist {artist.discogs_id} has no profile, genres or images",
        fields_enriched=fields_of(changes),
        details={
            "discogs_id": artist.discogs_id,
            "profile": profile[:PROFILE_CHARS],
            "images_found": len(images),
            "image": image_url,
            "image_chosen": which,
            "genres": genres,
            "cache_image_sent": cache_sent,
            "field_changes": changes,
        },
    )
