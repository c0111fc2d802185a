"""The schema from before job linking: the catalog and a job log without linking columns.

Frozen copies of the models as they were then (the runner's convention): later
changes to ``models/`` must not change what this step creates.  Existing
pre-linking databases already have these tables; ``safe=True`` leaves them be.
"""

import datetime
import uuid

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    JSONField,
    Model,
    TextField,
    UUIDField,
)


def up(migrator, db):
    now = datetime.datetime.utcnow

    class Base(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4)
        created_at = DateTimeField(default=now)
        updated_at = DateTimeField(default=now)

        class Meta:
            database = db
            legacy_table_names = False

    class Artist(Base):
        name = TextField()
        musicbrainz_id = CharField(max_length=36, null=True, unique=True)
        discogs_id = CharField(max_length=20, null=True)
        spotify_id = CharField(max_length=40, null=True, unique=True)
        country_code = CharField(max_length=2, null=True)
        area = TextField(null=True)
        artist_type = CharField(max_length=20, null=True)
        formed_year = IntegerField(null=True)
        genres = JSONField(default=list)
        image_url = TextField(null=True)
        cloudflare_image_id = TextField(null=True)
        data_quality = CharField(max_length=10, default="low")
        enrichment_status = CharField(max_length=20, default="pending")
        last_enriched_at = DateTimeField(null=True)

        class Meta:
            table_name = "artists"

    class Album(Base):
        title = TextField()
        musicbrainz_id = CharField(max_length=36, null=True, unique=True)
        release_date = CharField(max_length=10, null=True)
        release_type = CharField(max_length=30, null=True)
        release_status = CharField(max_length=30, null=True)
        release_country = CharField(max_length=10, null=True)
        genres = JSONField(default=list)
        secondary_types = JSONField(default=list)
        track_count = IntegerField(null=True)
        cover_art_url = TextField(null=True)
        cloudflare_image_id = TextField(null=True)
        spotify_id = CharField(max_length=40, null=True)
        discogs_id = CharField(max_length=20, null=True)
        data_quality = CharField(max_length=10, default="low")
        enrichment_status = CharField(max_length=20, default="pending")
        last_enriched_at = DateTimeField(null=True)

        class Meta:
            table_name = "albums"

    class AlbumArtist(Base):
        album = ForeignKeyField(Album, on_delete="CASCADE")
        artist = ForeignKeyField(Artist, on_delete="CASCADE")
        position = IntegerField(default=0)
        join_phrase = CharField(max_length=50, default="")

        class Meta:
            table_name = "album_artists"
            indexes = ((("album", "artist"), True), (("album", "position"), False))

    class Track(Base):
        album = ForeignKeyField(Album, on_delete="CASCADE")
        title = TextField()
        track_number = IntegerField(null=True)
        disc_number = IntegerField(default=1)
        duration_ms = IntegerField(null=True)
        isrc = CharField(max_length=12, null=True)
        musicbrainz_id = CharField(max_length=36, null=True)
        spotify_id = CharField(max_length=40, null=True)
        explicit = BooleanField(null=True)
        preview_url = TextField(null=True)
        data_quality = CharField(max_length=10, default="low")
        enrichment_status = CharField(max_length=20, default="pending")
        last_enriched_at = DateTimeField(null=True)

        class Meta:
            table_name = "tracks"
            indexes = (
                (("album", "musicbrainz_id"), True),
                (("album", "spotify_id"), True),
                (("album", "disc_number", "track_number"), True),
            )

    class EnrichmentLog(Base):
        # Before linking: one row per attempt, ids recorded but not used.
        job_id = CharField(max_length=100, null=True, index=True)
        parent_job_id = CharField(max_length=100, null=True)
        operation = CharField(max_length=100)
        entity_type = CharField(max_length=20, null=True)
        entity_id = UUIDField(null=True)
        status = CharField(max_length=20, default="running")
        reason = TextField(null=True)
        sources = JSONField(default=list)
        fields_enriched = JSONField(default=list)
        data_quality_before = CharField(max_length=10, null=True)
        data_quality_after = CharField(max_length=10, null=True)
        api_call_count = IntegerField(default=0)
        started_at = DateTimeField(null=True)
        completed_at = DateTimeField(null=True)
        details = JSONField(null=True)

        class Meta:
            table_name = "enrichment_logs"
            indexes = (
                (("entity_type", "entity_id", "created_at"), False),
                (("status", "created_at"), False),
            )

    db.create_tables([Artist, Album, AlbumArtist, Track, EnrichmentLog], safe=True)
