"""Data model: settings, the database binding, the catalog and the job log."""

from .base import utcnow
from .catalog import Album, AlbumArtist, Artist, Track, album_artists
from .database import bind_database, check_connection, database, open_database
from .job_log import EnrichmentLog
from .settings import ConfigError, Settings, load_settings

CATALOG_MODELS = [Artist, Album, AlbumArtist, Track]
ALL_MODELS = CATALOG_MODELS + [EnrichmentLog]

__all__ = [
    "Album",
    "AlbumArtist",
    "Artist",
    "Track",
    "EnrichmentLog",
    "album_artists",
    "bind_database",
    "check_connection",
    "database",
    "open_database",
    "ConfigError",
    "Settings",
    "load_settings",
    "utcnow",
    "CATALOG_MODELS",
    "ALL_MODELS",
]
