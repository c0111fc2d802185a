"""Spotify Web API client with client-credentials tokens and full paging.

The access token is fetched from ``{accounts_url}/api/token`` and cached for
the whole process (every ``SpotifyClient`` shares it) until 60 s before it
expires.  An ``httpx.Auth`` flow puts it on each request and, on a 401,
fetches a fresh one and retries that request once.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, Callable, Iterator, Optional

import httpx

from models.settings import Settings

from .errors import MissingCredentials, PermanentUpstreamError, RetryableUpstreamError
from .http import ClientBase, OnRequest, ServiceClient
from .tolerant import Reader

SERVICE = "spotify"
READ = Reader(SERVICE)
PAGE_LIMIT = 50
# Spotify refuses offsets past 10,000: 200 pages of 50.
MAX_PAGES = 200


class SpotifyTokenCache:
    """Access tokens by credentials, thread-safe, refreshed ``refresh_margin`` s before expiry.

    Parameters:
        clock: returns seconds (``time.monotonic`` by default; tests pass their own).
        refresh_margin: seconds before ``expires_in`` at which a token counts as expired.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, refresh_margin: float = 60.0) -> None:
        self._clock = clock
        self._margin = refresh_margin
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}

    def get(self, key: str, fetch: Callable[[], tuple[str, float]]) -> str:
        """The cached token for ``key``, or a new one from ``fetch() -> (token, expires_in)``.

        The lock is held while fetching, so concurrent threads make one token request.
        """
        with self._lock:
            cached = self._tokens.get(key)
            if cached and self._clock() < cached[1]:
                return cached[0]
            token, expires_in = fetch()
            self._tokens[key] = (token, self._clock() + max(0.0, expires_in - self._margin))
            return token

    def invalidate(self, key: str, token: str) -> None:
        """Forget ``token`` (rejected with a 401) unless another thread already replaced it."""
        with self._lock:
            if self._tokens.get(key, ("",))[0] == token:
                del self._tokens[key]

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


process_token_cache = SpotifyTokenCache()


class _ClientCredentialsAuth(httpx.Auth):
    """Bearer token on every request; one refresh and retry after a 401."""

    def __init__(self, cache: SpotifyTokenCache, key: str, fetch: Callable[[], tuple[str, float]]) -> None:
        self._cache = cache
        self._key = key
        self._fetch = fetch

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        token = self._cache.get(self._key, self._fetch)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self._cache.invalidate(self._key, token)
            request.headers["Authorization"] = f"Bearer {self._cache.get(self._key, self._fetch)}"
            yield request

    def __repr__(self) -> str:
        return "_ClientCredentialsAuth()"


class SpotifyClient(ClientBase):
    """Albums, album tracks and new releases from the Spotify Web API.

    Parameters:
        settings: ``spotify_api_url``, ``spotify_accounts_url``, ``spotify_client_id``,
            ``spotify_client_secret`` and ``http_timeout`` are used.
        on_request: called with ``"spotify"`` for every request sent, token requests included.
        transport: an httpx transport to use instead of the network.
        token_cache: where tokens are kept; the process-wide cache by default.

    Raises ``MissingCredentials`` naming ``SPOTIFY_CLIENT_ID`` or ``SPOTIFY_CLIENT_SECRET``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_request: Optional[OnRequest] = None,
        transport: Optional[httpx.BaseTransport] = None,
        token_cache: Optional[SpotifyTokenCache] = None,
    ) -> None:
        for variable, value in (
            ("SPOTIFY_CLIENT_ID", settings.spotify_client_id),
            ("SPOTIFY_CLIENT_SECRET", settings.spotify_client_secret),
        ):
            if not value:
                raise MissingCredentials(variable, service=SERVICE)
        secrets = [settings.spotify_client_id, settings.spotify_client_secret]
        self._api_url = settings.spotify_api_url.rstrip("/") + "/"
        self._accounts = ServiceClient(
            SERVICE,
            settings.spotify_accounts_url,
            timeout=settings.http_timeout,
            auth=httpx.BasicAuth(settings.spotify_client_id, settings.spotify_client_secret),
            on_request=on_request,
            transport=transport,
            secrets=secrets,
        )
        # The cache key is a digest: credentials never sit in a dict a debugger prints.
        key = hashlib.sha256("\0".join([settings.spotify_accounts_url, *secrets]).encode()).hexdigest()
        auth = _ClientCredentialsAuth(token_cache or process_token_cache, key, self._fetch_token)
        self._http = ServiceClient(
            SERVICE,
            self._api_url,
            timeout=settings.http_timeout,
            auth=auth,
            on_request=on_request,
            transport=transport,
            secrets=secrets,
        )

    def _fetch_token(self) -> tuple[str, float]:
        body = self._accounts.request_json("POST", "api/token", data={"grant_type": "client_credentials"})
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RetryableUpstreamError(
                "spotify POST /api/token returned no access_token", error_code="malformed_response", service=SERVICE
            )
        try:
            expires_in = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        return token, expires_in

    def _pages(self, path: str, params: dict[str, Any], unwrap: Optional[str], max_pages: int) -> Iterator[dict]:
        """The items of a paging object (``null`` items left out), following ``next`` for up to ``max_pages`` pages."""
        url: Optional[str] = path
        for number in range(1, max_pages + 1):
            where = f"{path} page {number}"
            page = READ.mapping(self._http.get_json(url, params=params), f"{where} answer")
            if unwrap:
                page = READ.mapping(page.get(unwrap), f"{where} {unwrap}")
            yield from READ.items(page.get("items"), f"{where} items")
            url, params = READ.text(page.get("next"), f"{where} next"), None
            if not url:
                return
            if not url.startswith(self._api_url):
                # Never send the bearer token to a host we were not configured with.
                raise PermanentUpstreamError(
                    f"spotify GET {path} paged to an unexpected host", error_code="unexpected_next_url", service=SERVICE
                )

    def get_album(self, album_id: str) -> dict[str, Any]:
        """An album (``name``, ``release_date``, ``images``, ``artists``, first page of ``tracks``...).

        Parameters:
            album_id: the Spotify album id.
        """
        return READ.mapping(self._http.get_json(f"albums/{album_id}"), f"albums/{album_id} answer")

    def get_album_tracks(self, album_id: str) -> list[dict[str, Any]]:
        """Every track of an album, in order, following ``next`` through all pages of 50.

        Parameters:
            album_id: the Spotify album id.
        """
        params = {"limit": PAGE_LIMIT, "offset": 0}
        return list(self._pages(f"albums/{album_id}/tracks", params, None, MAX_PAGES))

    def get_new_releases(self, limit: int = PAGE_LIMIT, max_pages: int = 1) -> list[dict[str, Any]]:
        """Newly released albums (simplified album objects).

        Parameters:
            limit: albums per page (1-50).
            max_pages: pages to follow at most.
        """
        params = {"limit": max(1, min(limit, PAGE_LIMIT)), "offset": 0}
        return list(self._pages("browse/new-releases", params, "albums", max_pages))

    def close(self) -> None:
        self._accounts.close()
        super().close()
