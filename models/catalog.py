"""The catalog the workers enrich: artists, albums, their ordered credits, tracks."""

from __future__ import annotations

import peewee
from peewee import Check, JSONField

from .base import TimestampedModel, utcnow

DATA_QUALITIES = ("low", "medium", "high")
ENRICHMENT_STATUSES = ("pending", "queued", "in_progress", "completed", "no_data", "failed")


def _one_of(column: str, values: tuple[str, ...]) -> Check:
    return Check(f"{column} IN ({', '.join(repr(v) for v in values)})")


class CatalogModel(TimestampedModel):
    data_quality = peewee.CharField(max_length=10, default="low", constraints=[_one_of("data_quality", DATA_QUALITIES)])
    enrichment_status = peewee.CharField(
        max_length=20, default="pending", constraints=[_one_of("enrichment_status", ENRICHMENT_STATUSES)]
    )
    last_enriched_at = peewee.DateTimeField(null=True)


class Artist(CatalogModel):
    name = peewee.TextField()
    musicbrainz_id = peewee.CharField(max_length=36, null=True, unique=True)
    discogs_id = peewee.CharField(max_length=20, null=True)
    spotify_id = peewee.CharField(max_length=40, null=True, unique=True)
    country_code = peewee.CharField(max_length=2, null=True)
    area = peewee.TextField(null=True)
    artist_type = peewee.CharField(max_length=20, null=True)
    formed_year = peewee.IntegerField(null=True)
    genres = JSONField(default=list)
    image_url = peewee.TextField(null=True)
    cloudflare_image_id = peewee.TextField(null=True)
    cached_image_path = peewee.TextField(null=True)  # local image cache, when Cloudflare is not configured

    class Meta:
        table_name = "artists"


class Album(CatalogModel):
    title = peewee.TextField()
    musicbrainz_id = peewee.CharField(max_length=36, null=True, unique=True)
    release_date = peewee.CharField(max_length=10, null=True)  # MusicBrainz dates may be partial: 1997 or 1997-05
    release_type = peewee.CharField(max_length=30, null=True)
    release_status = peewee.CharField(max_length=30, null=True)
    release_country = peewee.CharField(max_length=10, null=True)
    genres = JSONField(default=list)
    secondary_types = JSONField(default=list)
    track_count = peewee.IntegerField(null=True)
    cover_art_url = peewee.TextField(null=True)
    cloudflare_image_id = peewee.TextField(null=True)
    cached_image_path = peewee.TextField(null=True)
    spotify_id = peewee.CharField(max_length=40, null=True, unique=True)  # where set (migration 0007)
    discogs_id = peewee.CharField(max_length=20, null=True)

    class Meta:
        table_name = "albums"


class AlbumArtist(TimestampedModel):
    album = peewee.ForeignKeyField(Album, backref="credits", on_delete="CASCADE")
    artist = peewee.ForeignKeyField(Artist, backref="credits", on_delete="CASCADE")
    position = peewee.IntegerField(default=0)
    join_phrase = peewee.CharField(max_length=50, default="")

    class Meta:
        table_name = "album_artists"
        indexes = ((("album", "artist"), True), (("album", "position"), False))


class Track(CatalogModel):
    album = peewee.ForeignKeyField(Album, backref="tracks", on_delete="CASCADE")
    title = peewee.TextField()
    track_number = peewee.IntegerField(null=True)
    disc_number = peewee.IntegerField(default=1)
    duration_ms = peewee.IntegerField(null=True)
    isrc = peewee.CharField(max_length=12, null=True)
    musicbrainz_id = peewee.CharField(max_length=36, null=True)
    spotify_id = peewee.CharField(max_length=40, null=True)
    explicit = peewee.BooleanField(null=True)
    preview_url = peewee.TextField(null=True)

    class Meta:
        table_name = "tracks"
        indexes = (
            (("album", "musicbrainz_id"), True),
            (("album", "spotify_id"), True),
            (("album", "disc_number", "track_number"), True),
        )


def album_artists(album: Album) -> list[Artist]:
    """The album's credited artists, in credit order."""
    return list(
        Artist.select().join(AlbumArtist).where(AlbumArtist.album == album).order_by(AlbumArtist.position)
    )


__all__ = ["Artist", "Album", "AlbumArtist", "Track", "album_artists", "utcnow", "DATA_QUALITIES"]
