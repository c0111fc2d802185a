"""Clients for the upstream services: MusicBrainz, Discogs, Spotify and image storage.

All are synchronous (Dramatiq actors run in threads), take a ``Settings``,
raise only ``UpstreamError`` subclasses for upstream trouble, and call an
optional ``on_request(source)`` for every HTTP request they send.
"""

from .discogs import DiscogsClient
from .errors import BadUpstreamData, MissingCredentials, PermanentUpstreamError, RetryableUpstreamError, UpstreamError
from .image_sniff import ImageInfo, sniff_image
from .images import (
    MAX_IMAGE_BYTES,
    DownloadedImage,
    ImageClient,
    StoredImage,
    cloudflare_configured,
    download_image,
    store_image,
)
from .musicbrainz import MusicBrainzClient
from .rate_limit import SpacingLimiter, build_rate_limiter_backend, shared_rate_limiter_backend
from .spotify import SpotifyClient, SpotifyTokenCache

__all__ = [
    "UpstreamError",
    "RetryableUpstreamError",
    "PermanentUpstreamError",
    "BadUpstreamData",
    "MissingCredentials",
    "MusicBrainzClient",
    "DiscogsClient",
    "SpotifyClient",
    "SpotifyTokenCache",
    "ImageClient",
    "ImageInfo",
    "DownloadedImage",
    "StoredImage",
    "MAX_IMAGE_BYTES",
    "sniff_image",
    "download_image",
    "store_image",
    "cloudflare_configured",
    "SpacingLimiter",
    "build_rate_limiter_backend",
    "shared_rate_limiter_backend",
]
