"""Discogs API client: artist search and artist profiles, 60 requests a minute."""

from __future__ import annotations

from typing import Any, Optional

from models.settings import Settings

from .errors import MissingCredentials
from .http import RateLimitedClient
from .tolerant import Reader

SERVICE = "discogs"
READ = Reader(SERVICE)


class DiscogsClient(RateLimitedClient):
    """Artist search and profiles from Discogs.

    Parameters:
        settings: ``discogs_url``, ``discogs_token``, ``musicbrainz_user_agent``
            (the product's User-Agent), ``http_timeout`` and ``redis_url`` are used.
        rate_limiter: object with ``acquire()``; by default one request per
            1.05 s across every process sharing ``settings.redis_url``.
        on_request: called with ``"discogs"`` for every request sent.
        transport: an httpx transport to use instead of the network.

    Raises ``MissingCredentials('DISCOGS_TOKEN')`` when no token is configured.
    """

    service = SERVICE
    interval_setting = "discogs_interval"

    def _endpoint(self, settings: Settings) -> tuple[str, dict[str, str], list[Optional[str]]]:
        if not settings.discogs_token:
            raise MissingCredentials("DISCOGS_TOKEN", service=SERVICE)
        headers = {
            "User-Agent": settings.musicbrainz_user_agent,
            "Accept": "application/vnd.discogs.v2.discogs+json",
            "Authorization": f"Discogs token={settings.discogs_token}",
        }
        return settings.discogs_url, headers, [settings.discogs_token]

    def search_artists(self, name: str, *, per_page: int = 25) -> list[dict[str, Any]]:
        """Artist search results (``id``, ``title``, ``thumb``, ``cover_image``, ``resource_url``...), ``null`` ones left out.

        Parameters:
            name: the artist's name; Discogs titles may carry a suffix such as ``"Björk (2)"``.
            per_page: most results wanted (one page).
        """
        params = {"type": "artist", "q": name, "per_page": per_page}
        body = READ.mapping(self._http.get_json("database/search", params=params), "search answer")
        return READ.items(body.get("results"), "results")

    def get_artist(self, artist_id: int | str) -> dict[str, Any]:
        """An artist: ``name``, ``profile``, ``images`` (``uri``, ``width``, ``height``), ``urls``...

        Parameters:
            artist_id: the Discogs artist id.

        Fields the artist lacks are absent or ``null``, as Discogs sends it (artists have no genres).
        ``BadUpstreamData`` when the answer is not an object.
        """
        return READ.mapping(self._http.get_json(f"artists/{artist_id}"), f"artists/{artist_id} answer")
