"""What the fake services remember between requests: credentials, tokens, uploads."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from .sample import SampleCatalog


@dataclass(frozen=True)
class FakeCredentials:
    """The credentials the fake services accept (sample values, printed by the standalone server)."""

    spotify_client_id: str = "fake-spotify-client-id"
    spotify_client_secret: str = "fake-spotify-client-secret"
    discogs_token: str = "fake-discogs-token"
    cloudflare_account_id: str = "fake-cloudflare-account"
    cloudflare_api_token: str = "fake-cloudflare-api-token"


@dataclass
class FakeState:
    """Shared by every request thread; guarded by ``lock``.

    Attributes:
        catalog: the sample documents.
        credentials: what the services accept.
        spotify_page_size: most items the fake Spotify puts on a page (Spotify's
            default page is 20; the real API allows 50, so paging shows with fewer).
        spotify_token_expires_in: ``expires_in`` of issued tokens, seconds.
    """

    catalog: SampleCatalog
    credentials: FakeCredentials = field(default_factory=FakeCredentials)
    spotify_page_size: int = 20
    spotify_token_expires_in: int = 3600
    tokens: dict[str, float] = field(default_factory=dict)
    uploads: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_token(self) -> str:
        token = "fake-" + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.monotonic() + self.spotify_token_expires_in
        return token

    def token_problem(self, token: Optional[str]) -> Optional[str]:
        """None for a live token, else Spotify's message for it."""
        with self.lock:
            expires = self.tokens.get(token or "")
        if expires is None:
            return "Invalid access token"
        if time.monotonic() >= expires:
            return "The access token expired"
        return None

    def expire_tokens(self) -> None:
        """Make every issued token expired (the next API call gets a 401)."""
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = 0.0

    def reset(self) -> None:
        with self.lock:
            self.tokens.clear()
            self.uploads.clear()
