"""Request spacing shared by every worker process, on Dramatiq's limiter backends.

MusicBrainz allows one request per second per client and Discogs sixty per
minute.  Dramatiq's Bucket and Window limiters count per wall-clock bucket,
so two requests can land milliseconds apart across a bucket edge.  Here each
request needs ``backend.add(key, 1, ttl)`` to succeed: on Redis that is
``SET key 1 NX PX ttl``, which only one caller wins until the key expires,
so request starts are at least ``interval`` apart across all processes.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

from dramatiq.rate_limits import RateLimiterBackend
from dramatiq.rate_limits.backends import RedisBackend, StubBackend

from middleware.observability import observe_rate_limit_wait

from .errors import RetryableUpstreamError

KEY_PREFIX = "music-enrichment:rate-limit:"

# The spacings themselves are settings (Settings.musicbrainz_interval and
# discogs_interval): a tenth of a second over the published limit absorbs
# network jitter, so the service never sees two requests closer than 1 s.


def build_rate_limiter_backend(redis_url: Optional[str] = None, *, client=None) -> RateLimiterBackend:
    """A new limiter backend: Redis when a URL or client is given, else in-memory.

    Parameters:
        redis_url: e.g. ``redis://127.0.0.1:6379/0``; shared by all processes.
        client: an existing ``redis.Redis`` to use instead of a URL.

    The in-memory ``StubBackend`` only spaces requests within one process.
    """
    if client is not None:
        return RedisBackend(client=client)
    if redis_url:
        return RedisBackend(url=redis_url)
    return StubBackend()


_shared: dict[Optional[str], RateLimiterBackend] = {}
_shared_lock = threading.Lock()


def shared_rate_limiter_backend(redis_url: Optional[str]) -> RateLimiterBackend:
    """The process-wide backend for ``redis_url`` (one per URL, built on first use).

    Clients built without an explicit limiter use this, so every client in a
    process (and, with Redis, every process) shares one spacing.
    """
    with _shared_lock:
        if redis_url not in _shared:
            _shared[redis_url] = build_rate_limiter_backend(redis_url)
        return _shared[redis_url]


def service_limiter(redis_url: Optional[str], service: str, interval: float) -> "SpacingLimiter":
    """The default limiter of a client: spacing ``interval`` under the key ``service``,
    on the process-wide backend for ``redis_url`` (shared by all processes with Redis)."""
    return SpacingLimiter(shared_rate_limiter_backend(redis_url), service, interval=interval, service=service)


class SpacingLimiter:
    """At most one ``acquire()`` per ``interval`` among all users of ``backend`` and ``key``.

    Parameters:
        backend: a Dramatiq ``RateLimiterBackend`` (Redis across processes).
        key: the name of the spacing, e.g. ``"musicbrainz"`` (prefixed for Redis).
        interval: seconds between two acquisitions.
        max_wait: seconds ``acquire()`` may wait before giving up.
        poll_interval: seconds between two attempts while waiting.
        service: named in the error raised when the wait is too long.
    """

    def __init__(
        self,
        backend: RateLimiterBackend,
        key: str,
        *,
        interval: float = 1.0,
        max_wait: float = 30.0,
        poll_interval: float = 0.05,
        service: Optional[str] = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.backend = backend
        self.key = KEY_PREFIX + key
        self.ttl_ms = max(1, int(round(interval * 1000)))
        self.max_wait = max_wait
        self.poll_interval = poll_interval
        self.service = service or key

    def acquire(self) -> None:
        """Wait for this process's turn; raise ``RetryableUpstreamError('rate_limit_wait')`` past ``max_wait``."""
        started = time.monotonic()
        deadline = started + self.max_wait
        while not self.backend.add(self.key, 1, self.ttl_ms):
            if time.monotonic() >= deadline:
                observe_rate_limit_wait(self.service, time.monotonic() - started)
                raise RetryableUpstreamError(
                    f"{self.service} rate limit: no slot within {self.max_wait:g} s",
                    error_code="rate_limit_wait",
                    retry_after=float(max(1, round(self.ttl_ms / 1000))),
                    service=self.service,
                )
            time.sleep(self.poll_interval)
        observe_rate_limit_wait(self.service, time.monotonic() - started)

    def __repr__(self) -> str:
        return f"SpacingLimiter({self.key!r}, interval={self.ttl_ms / 1000:g}s, {type(self.backend).__name__})"
