"""A fake of every upstream service, serving SAMPLE DATA, for tests and the offline demo.

``FakeUpstream().start()`` serves MusicBrainz, Discogs, Spotify (API and
accounts), the Cover Art Archive, image hosts and Cloudflare Images on one
local port, misbehaves on demand (``fail()``) and records every request.
``python -m workers.fake_upstream`` runs it standalone.
"""

from .faults import KINDS as FAULT_KINDS
from .server import (
    CLOUDFLARE,
    COVER_ART,
    DISCOGS,
    IMAGES,
    MUSICBRAINZ,
    SPOTIFY_ACCOUNTS,
    SPOTIFY_API,
    FakeUpstream,
)
from .state import FakeCredentials

__all__ = [
    "FakeUpstream",
    "FakeCredentials",
    "FAULT_KINDS",
    "MUSICBRAINZ",
    "DISCOGS",
    "SPOTIFY_API",
    "SPOTIFY_ACCOUNTS",
    "CLOUDFLARE",
    "IMAGES",
    "COVER_ART",
]
