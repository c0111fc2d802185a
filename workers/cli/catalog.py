"""Adding albums and artists to the catalog by hand: ``enrich add-album`` / ``add-artist`` (and the demo).

Both are find-or-create, so running the same command twice gives the same
id.  Input is checked here, where a person typed it, and every problem is a
``ValueError`` with one line saying what to fix.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Optional, Sequence
from urllib.parse import urlparse

from peewee import fn

from models import Album, AlbumArtist, Artist, album_artists, database
from models.database import is_postgres

from .common import visible

MAX_TEXT = 1000
_SPOTIFY_ID = re.compile(r"^[0-9A-Za-z]{1,40}$")


# -- input checks -------------------------------------------------------------


def clean_text(value: str, what: str) -> str:
    """``value`` stripped; ValueError when empty or longer than MAX_TEXT characters."""
    text = (value or "").strip()
    if not text:
        raise ValueError(f"{what} is empty")
    if len(text) > MAX_TEXT:
        raise ValueError(f"{what} is {len(text):,} characters long; at most {MAX_TEXT:,} are allowed")
    return text


def clean_mbid(value: Optional[str]) -> Optional[str]:
    """A MusicBrainz id in its canonical form (lower-case UUID with hyphens)."""
    if value is None:
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise ValueError(f"malformed MusicBrainz id {value[:80]!r}: expected a UUID such as "
                         "b1392450-e666-3926-a536-22c65f834433") from None


def clean_spotify_id(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    text = value.strip()
    if not _SPOTIFY_ID.match(text):
        raise ValueError(f"malformed Spotify id {value[:80]!r}: expected letters and digits, "
                         "such as 6dVIqQ8qmQ5GBnJ9shOYGE")
    return text


def clean_url(value: Optional[str], what: str = "URL") -> Optional[str]:
    """An http(s) URL with a host; ValueError otherwise."""
    if value is None:
        return None
    text = value.strip()
    try:
        parsed = urlparse(text)
        host = parsed.hostname
    except ValueError:  # e.g. a malformed port or IPv6 literal
        host = None
        parsed = None
    if parsed is None or parsed.scheme.lower() not in ("http", "https") or not host:
        raise ValueError(f"malformed {what} {text[:200]!r}: expected http:// or https:// and a host name")
    return text


# -- case-insensitive lookups ----------------------------------------------------


def _lowered(column):
    """``LOWER(column)`` as Python's ``str.lower`` means it.

    PostgreSQL's LOWER folds every letter; SQLite's only ASCII ones ("BJÖRK"
    would stay "bjÖrk"), so on SQLite the comparison goes through Python.
    """
    db = database.obj
    if is_postgres(db):
        return fn.LOWER(column)
    db.register_function(_py_lower, "enrich_lower", 1, deterministic=True)
    return fn.enrich_lower(column)


def _py_lower(value):
    return value.lower() if isinstance(value, str) else value


def find_artist(name: str) -> Optional[Artist]:
    """The oldest artist with this name, ignoring case."""
    return (
        Artist.select()
        .where(_lowered(Artist.name) == name.lower())
        .order_by(Artist.created_at, Artist.id)
        .first()
    )


# -- find or create --------------------------------------------------------------


@dataclass(frozen=True)
class AlbumInput:
    """A checked ``add-album`` request."""

    title: str
    artists: tuple[str, ...]
    mbid: Optional[str] = None
    spotify_id: Optional[str] = None
    cover_url: Optional[str] = None

    @classmethod
    def parse(cls, title: str, artists: Sequence[str], mbid=None, spotify_id=None, cover_url=None) -> "AlbumInput":
        names = [clean_text(a, "artist name") for a in artists]
        if not names:
            raise ValueError("at least one --artist is needed")
        unique = list(dict.fromkeys(n for n in names))  # the same artist twice is one credit
        return cls(
            title=clean_text(title, "album title"),
            artists=tuple(unique),
            mbid=clean_mbid(mbid),
            spotify_id=clean_spotify_id(spotify_id),
            cover_url=clean_url(cover_url, "cover URL"),
        )


def add_artist(name: str, mbid: Optional[str] = None) -> tuple[Artist, bool]:
    """(artist, created): found by MBID, then by name (ignoring case), else created."""
    name = clean_text(name, "artist name")
    mbid = clean_mbid(mbid)
    with database.atomic():
        return _artist(name, mbid)


def _artist(name: str, mbid: Optional[str] = None) -> tuple[Artist, bool]:
    artist = Artist.get_or_none(Artist.musicbrainz_id == mbid) if mbid else None
    if artist is None:
        artist = find_artist(name)
        if artist is not None and mbid and artist.musicbrainz_id not in (None, mbid):
            artist = None  # a namesake with another MBID: a different artist
    if artist is None:
        return Artist.create(name=name, musicbrainz_id=mbid), True
    if mbid and artist.musicbrainz_id is None:
        artist.musicbrainz_id = mbid
        artist.save()
    return artist, False


def _find_album(request: AlbumInput) -> Optional[Album]:
    if request.mbid:
        album = Album.get_or_none(Album.musicbrainz_id == request.mbid)
        if album is not None:
            return album
    if request.spotify_id:
        album = Album.get_or_none(Album.spotify_id == request.spotify_id)
        if album is not None:
            return album
    first = find_artist(request.artists[0])
    if first is None:
        return None
    candidates = (
        Album.select()
        .join(AlbumArtist)
        .where((AlbumArtist.artist == first) & (_lowered(Album.title) == request.title.lower()))
        .order_by(Album.created_at, Album.id)
    )
    for album in candidates:
        # An album found by title must not contradict an id given for it.
        if request.mbid and album.musicbrainz_id not in (None, request.mbid):
            continue
        if request.spotify_id and album.spotify_id not in (None, request.spotify_id):
            continue
        return album
    return None


def add_album(request: AlbumInput) -> tuple[Album, bool]:
    """(album, created): the album and its ordered credits, found or created in one transaction.

    An existing album gets the ids and cover URL it lacked, and credits for
    artists it does not list yet (after the ones it has); nothing it already
    has is overwritten.
    """
    with database.atomic():
        artists = [_artist(name)[0] for name in request.artists]
        album = _find_album(request)
        created = album is None
        if created:
            album = Album.create(
                title=request.title,
                musicbrainz_id=request.mbid,
                spotify_id=request.spotify_id,
                cover_art_url=request.cover_url,
            )
        else:
            _fill_blanks(album, request)
        _credit(album, artists)
    return album, created


def _fill_blanks(album: Album, request: AlbumInput) -> None:
    if request.spotify_id and album.spotify_id is None:
        # Found by its MusicBrainz id while the Spotify id is another album's: an album has one of each.
        holder = Album.get_or_none(Album.spotify_id == request.spotify_id)
        if holder is not None:
            raise ValueError(
                f"Spotify id {request.spotify_id} already belongs to {credit_line(holder)} ({holder.id}), "
                f"not to the album with MusicBrainz id {request.mbid}"
            )
    changed = False
    for attr, value in (("musicbrainz_id", request.mbid), ("spotify_id", request.spotify_id),
                        ("cover_art_url", request.cover_url)):
        if value and getattr(album, attr) is None:
            setattr(album, attr, value)
            changed = True
    if changed:
        album.save()


def _credit(album: Album, artists: list[Artist]) -> None:
    credited = {c.artist_id: c.position for c in AlbumArtist.select().where(AlbumArtist.album == album)}
    position = max(credited.values(), default=-1) + 1
    for artist in artists:
        if artist.id in credited:
            continue
        AlbumArtist.create(album=album, artist=artist, position=position)
        credited[artist.id] = position
        position += 1


def credit_line(album: Album) -> str:
    """``'OK Computer' by Radiohead`` for messages, safe to print."""
    names = [a.name for a in album_artists(album)]
    return visible(f"'{album.title}' by {', '.join(names) or 'no credited artist'}")


