"""Spotify jobs: an album's tracks when MusicBrainz has none, and the new-releases sync.

``spotify_track_fallback`` is sent by ``enrich_album`` for an album with a
Spotify id whose MusicBrainz release lists no tracks, or that MusicBrainz
does not know (then it also takes the album fields Spotify has and sends
``cache_album_cover_art`` for a cover it found).
``sync_spotify_new_releases`` is a root (a schedule or ``enrich
sync-new-releases``): it adds Spotify's new albums and their artists to the
catalog and starts one ``check_album_enrichment`` tree per album.

Spotify fills gaps: on rows that already exist it only sets fields that are
empty, so it never undoes what MusicBrainz enrichment wrote.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

import peewee
from peewee import fn

from middleware import new_tree, record
from models import Album, AlbumArtist, Artist, Track, database

from ..field_changes import apply_changes, fields_of, save_changes
from ..jobs import JobInputError, clients, enrichment_actor, load, send
from ..upstream.spotify import READ
from .images import largest_image, send_cover_cache

NEW_RELEASES_SOURCE = "spotify:new-releases"  # the check's ``source``: why the album is looked at
PAGE_SIZE = 50  # new releases per Spotify page
_RELEASE_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")
_PRECISION_CHARS = {"year": 4, "month": 7, "day": 10}  # of "1997-05-21"


def release_date(value: Any, precision: Any = None) -> Optional[str]:
    """Spotify's ``release_date`` as the catalog keeps it ("1997", "1997-05", "1997-05-21"), else None.

    ``release_date_precision`` (``year``, ``month``, ``day``) cuts a date padded
    past what is known ("1997-01-01" of precision ``year`` is "1997").
    """
    if not isinstance(value, str) or not _RELEASE_DATE.fullmatch(value) or value.startswith("0000"):
        return None  # Spotify writes "0000" for an unknown year
    return value[: _PRECISION_CHARS.get(precision, len(value))]


def missing_only(instance, values: dict[str, Any]) -> dict[str, Any]:
    """The values for fields the row has nothing in yet."""
    return {field: value for field, value in values.items() if getattr(instance, field) in (None, "", [])}


def create_or_none(model, **values):
    """Insert a row, or None when a unique index says another run already made it."""
    try:
        with database.atomic():  # a savepoint: the enclosing transaction survives the conflict
            return model.create(**values)
    except peewee.IntegrityError:
        return None


# -- spotify:track-fallback --------------------------------------------------------------


def track_values(item: dict, field: str) -> dict[str, Any]:
    """The catalog's track fields of a Spotify track object found at ``field`` of the answer."""
    explicit = item.get("explicit")
    return {
        "title": READ.text(item.get("name"), f"{field}.name"),
        "track_number": READ.number(item.get("track_number"), f"{field}.track_number", stored=True),
        "disc_number": READ.number(item.get("disc_number"), f"{field}.disc_number", stored=True) or 1,
        "duration_ms": READ.number(item.get("duration_ms"), f"{field}.duration_ms", stored=True),
        "explicit": explicit if isinstance(explicit, bool) else None,
        "preview_url": READ.text(item.get("preview_url"), f"{field}.preview_url"),
        "spotify_id": READ.text(item.get("id"), f"{field}.id"),
    }


def upsert_tracks(album: Album, items: list[dict[str, Any]]) -> tuple[int, int]:
    """Match Spotify tracks to the album's (by Spotify id, then disc and position); create the rest.

    ``items`` are ``track_values``.  Returns ``(created, updated)``.  Running it twice creates nothing the second time.
    """
    existing = list(Track.select().where(Track.album == album))
    by_spotify_id = {t.spotify_id: t for t in existing if t.spotify_id}
    by_position = {(t.disc_number, t.track_number): t for t in existing}
    created = updated = 0
    with database.atomic():
        for values in items:
            track = by_spotify_id.get(values["spotify_id"]) or by_position.get(
                (values["disc_number"], values["track_number"])
            )
            if track is None:
                created += create_or_none(Track, album=album, **values) is not None
                continue
            changes = apply_changes(track, missing_only(track, values))
            save_changes(track, changes)
            updated += bool(changes)
    return created, updated


def missing_album_fields(album: Album, spotify_album: dict) -> list[dict[str, Any]]:
    """Changes filling the album's empty fields from a Spotify album (release date, type, cover), not saved yet."""
    values = album_values(spotify_album)
    for kept in ("title", "track_count"):  # the catalog's title stays; the count comes from the tracks
        values.pop(kept)
    return apply_changes(album, missing_only(album, values))


@enrichment_actor("spotify:track-fallback", entity=("album", "album_id"))
def spotify_track_fallback(album_id: str, album_fields: bool = False):
    """Add the album's tracks from Spotify (every page) and set ``track_count``.

    With ``album_fields`` (MusicBrainz found no release group) it also fills the
    album's empty fields Spotify has (release date, type, cover) and sends
    ``cache_album_cover_art`` for a cover it set.  ``skipped`` without a Spotify
    id, ``no_data`` when Spotify gives neither tracks nor a missing field.
    """
    album = load(Album, album_id)
    if not album.spotify_id:
        record(status="skipped", reason="album has no spotify_id: nothing to ask Spotify")
        return
    spotify = clients.spotify()
    field_changes = missing_album_fields(album, spotify.get_album(album.spotify_id)) if album_fields else []
    listed = [track_values(item, f"tracks[{index}]") for index, item in enumerate(spotify.get_album_tracks(album.spotify_id))]
    items = [values for values in listed if values["spotify_id"] and values["title"]]
    created, updated = upsert_tracks(album, items) if items else (0, 0)
    changes = field_changes + (apply_changes(album, {"track_count": len(items)}) if items else [])
    save_changes(album, changes)

    details = {"spotify_album_id": album.spotify_id, "tracks_found": len(items), "tracks_created": created,
               "tracks_updated": updated, "field_changes": changes}
    if items:
        status, reason = "success", f"{len(items)} tracks on Spotify: {created} created, {updated} updated"
    else:
        status, reason = "partial_success" if changes else "no_data", f"Spotify lists no tracks for album {album.spotify_id}"
    if album_fields:
        from_album = fields_of(field_changes)
        cover_sent = "cover_art_url" in from_album and send_cover_cache(album)
        details.update(album_fields_from_spotify=from_album, cover_cache_sent=cover_sent)
        reason += ("; MusicBrainz found no release group, so from Spotify also: " + ", ".join(from_album) if from_album
                   else "; MusicBrainz found no release group, and Spotify has no field the album lacks")
    record(status=status, reason=reason, fields_enriched=fields_of(changes), details=details)


# -- spotify:sync-new-releases -----------------------------------------------------------


def find_or_create_artist(item: dict, field: str) -> Optional[Artist]:
    """The catalog artist of a Spotify artist: by Spotify id, else by name (case-insensitive), else new."""
    spotify_id = READ.text(item.get("id"), f"{field}.id")
    name = (READ.text(item.get("name"), f"{field}.name") or "").strip()
    if spotify_id:
        artist = Artist.get_or_none(Artist.spotify_id == spotify_id)
        if artist is not None:
            return artist
    if not name:
        return None
    # Only artists without a Spotify id: one with another id is a namesake.
    artist = (
        Artist.select()
        .where((fn.LOWER(Artist.name) == name.lower()) & Artist.spotify_id.is_null())
        .order_by(Artist.created_at)
        .first()
    )
    if artist is not None:
        save_changes(artist, apply_changes(artist, {"spotify_id": spotify_id}))
        return artist
    return create_or_none(Artist, name=name, spotify_id=spotify_id) or Artist.get(Artist.spotify_id == spotify_id)


def album_values(item: dict) -> dict[str, Any]:
    """The catalog's album fields of a Spotify album object (older ones lack ``total_tracks`` or ``release_date``)."""
    album_type = READ.text(item.get("album_type"), "album_type")
    return {
        "title": (READ.text(item.get("name"), "name") or "").strip(),
        "release_date": release_date(READ.text(item.get("release_date"), "release_date"),
                                     READ.text(item.get("release_date_precision"), "release_date_precision")),
        "release_type": album_type.capitalize() if album_type else None,  # MusicBrainz's spelling
        "cover_art_url": largest_image(item.get("images"), READ),
        "track_count": READ.number(item.get("total_tracks"), "total_tracks", stored=True),
    }


def upsert_album(item: dict) -> tuple[Album, bool, bool]:
    """The album of a Spotify album object with its artists credited in order: ``(album, created, updated)``."""
    values = album_values(item)
    with database.atomic():
        album = Album.get_or_none(Album.spotify_id == item["id"])
        created = False
        if album is None:
            album = create_or_none(Album, spotify_id=item["id"], **{k: v for k, v in values.items() if v is not None})
            created = album is not None
            if not created:  # another job created it since we looked (the unique index of migration 0007)
                album = Album.get(Album.spotify_id == item["id"])
        changes = [] if created else apply_changes(album, missing_only(album, values))
        save_changes(album, changes)
        artists = [find_or_create_artist(a, f"artists[{i}]") for i, a in enumerate(READ.items(item.get("artists"), "artists"))]
        credited = list(dict.fromkeys(a for a in artists if a is not None))  # one credit per artist, in order
        for position, artist in enumerate(credited):
            AlbumArtist.insert(album=album, artist=artist, position=position).on_conflict_ignore().execute()
    return album, created, bool(changes)


@enrichment_actor("spotify:sync-new-releases")
def sync_spotify_new_releases(limit: int = PAGE_SIZE):
    """Add Spotify's newest ``limit`` albums to the catalog and start a check tree for each.

    Each ``check_album_enrichment`` is a root of its own (``new_tree``) whose
    ``triggered_by`` is this job.
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise JobInputError(f"limit {limit!r} is not a whole number >= 1", "invalid_limit")
    pages = math.ceil(limit / PAGE_SIZE)
    listed = clients.spotify().get_new_releases(min(limit, PAGE_SIZE), max_pages=pages)
    # By id: an album listed on two pages (the list moved while we paged) is synced once.
    unique = {}
    for index, release in enumerate(listed):
        spotify_id = READ.text(release.get("id"), f"albums.items[{index}].id")
        if spotify_id and (READ.text(release.get("name"), f"albums.items[{index}].name") or "").strip():
            unique[spotify_id] = {**release, "id": spotify_id}
    releases = list(unique.values())[:limit]

    albums, created, updated = [], 0, 0
    for item in releases:
        album, was_created, was_updated = upsert_album(item)
        albums.append(album)
        created += was_created
        updated += was_updated
    with new_tree():
        for album in albums:
            send("check_album_enrichment", str(album.id), NEW_RELEASES_SOURCE)

    record(
        status="success" if albums else "no_data",
        reason=f"{len(albums)} new releases: {created} albums added, {updated} updated" if albums
        else "Spotify listed no new releases",
        details={"albums_seen": len(releases), "albums_created": created, "albums_updated": updated,
                 "trees_started": len(albums)},
    )
