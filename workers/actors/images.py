"""Image cache jobs: keep a copy of an album's cover or an artist's image.

``cache_album_cover_art`` is sent by ``enrich_album`` and
``spotify_track_fallback`` (``send_cover_cache``); ``cache_artist_image`` by
``enrich_artist`` and ``discogs_get_artist``.  Each downloads the entity's image
URL (byte cap, content type and bytes checked) and stores it in Cloudflare
Images when CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN are set, else in the
local cache (IMAGE_CACHE_DIR).  Neither sends anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from middleware import record
from models import Album, Artist

from ..field_changes import apply_changes, fields_of, save_changes
from ..jobs import clients, enrichment_actor, load, send
from ..upstream.tolerant import Reader


def largest_image(images: Any, read: Reader, field: str = "images", url_key: str = "url") -> Optional[str]:
    """The URL of the image with the most pixels (width x height), or None.

    Parameters:
        images: image objects as Spotify (``url``) or Discogs (``uri``) list them;
            neither promises an order; sizes may be missing (counted as 0) or strings.
        read: the answering service's readers (an unreadable list or size names the service).
        field: where the list is in the answer, for that error.
        url_key: the key holding the URL.
    """
    best, most = None, -1
    for index, image in enumerate(read.items(images, field)):
        url = read.text(image.get(url_key), f"{field}[{index}].{url_key}")
        if not url:
            continue
        size = [read.number(image.get(side), f"{field}[{index}].{side}") or 0 for side in ("width", "height")]
        if size[0] * size[1] > most:  # the first of equal sizes wins
            best, most = url, size[0] * size[1]
    return best


def send_cover_cache(album: Album) -> bool:
    """Send ``cache_album_cover_art`` when the album has a cover URL and no cached image."""
    if album.cover_art_url and not album.cloudflare_image_id and not album.cached_image_path:
        send("cache_album_cover_art", str(album.id))
        return True
    return False


def already_cached(entity: Union[Album, Artist]) -> Optional[str]:
    """Why there is nothing to do: the image is in Cloudflare, or its local file is still there."""
    if entity.cloudflare_image_id:
        return f"already cached in Cloudflare Images (id {entity.cloudflare_image_id})"
    if entity.cached_image_path and Path(entity.cached_image_path).is_file():
        return f"already cached at {entity.cached_image_path}"
    return None


def cache_image(entity: Union[Album, Artist], url: Optional[str], url_field: str) -> None:
    """Download ``url`` and store it; record where it went on the entity and the job."""
    if not url:
        record(status="skipped", reason=f"{type(entity).__name__.lower()} has no {url_field}")
        return
    cached = already_cached(entity)
    if cached:
        record(status="skipped", reason=cached)
        return

    client = clients.images()
    image = client.download(url)
    stored = client.store(image.data, image.info)
    if stored.cloudflare_id:
        values, where = {"cloudflare_image_id": stored.cloudflare_id}, {"cloudflare_id": stored.cloudflare_id}
        after_url = stored.delivery_url
    else:
        values, where = {"cached_image_path": stored.cache_path}, {"cache_path": stored.cache_path}
        after_url = Path(stored.cache_path).as_uri()
    changes = apply_changes(entity, values)
    save_changes(entity, changes)

    record(
        status="success",
        reason=f"cached {stored.format} {stored.width}x{stored.height} ({stored.file_size} bytes), {stored.cache_location}",
        fields_enriched=fields_of(changes),
        details={
            "source_url": url,
            **where,
            "file_size": stored.file_size,
            "format": stored.format,
            "width": stored.width,
            "height": stored.height,
            "cache_location": stored.cache_location,
            "before_url": url,
            "after_url": after_url,
            "field_changes": changes,
        },
    )


@enrichment_actor("cache:album-cover-art", entity=("album", "album_id"))
def cache_album_cover_art(album_id: str):
    """Cache ``album.cover_art_url``; skipped when there is none or it is cached already."""
    album = load(Album, album_id)
    cache_image(album, album.cover_art_url, "cover_art_url")


@enrichment_actor("cache:artist-image", entity=("artist", "artist_id"))
def cache_artist_image(artist_id: str):
    """Cache ``artist.image_url``; skipped when there is none or it is cached already."""
    artist = load(Artist, artist_id)
    cache_image(artist, artist.image_url, "image_url")
