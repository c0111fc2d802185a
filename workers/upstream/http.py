"""The one place where HTTP requests are made and their failures classified.

Every client wraps a ``ServiceClient``: an ``httpx.Client`` whose request
event hooks wait for the rate limiter and count the call, plus the mapping
from statuses and transport errors to ``UpstreamError``.  Bodies are always
streamed and capped, so a runaway response is refused without being held
in memory.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

import httpx

from middleware.observability import observe_upstream_request
from models.settings import Settings

from .errors import PermanentUpstreamError, RetryableUpstreamError, UpstreamError
from .rate_limit import service_limiter

JSON_MAX_BYTES = 5 * 1024 * 1024
READ_CHUNK = 64 * 1024

OnRequest = Callable[[str], None]


class RateLimiter(Protocol):
    def acquire(self) -> None: ...


def _no_count(source: str) -> None:
    """The default ``on_request``: count nothing."""


def parse_retry_after(value: Optional[str], *, now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    Parameters:
        value: the header value, or None.
        now: the current UNIX time (for tests); ``time.time()`` by default.

    Returns whole seconds (rounded up, never negative), or None when absent
    or unreadable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return float(max(0, math.ceil(seconds)))


def error_for_status(response: httpx.Response, where: str, service: str) -> Optional[UpstreamError]:
    """The error a non-2xx response stands for, or None for a success.

    Parameters:
        response: the response (its body need not be read).
        where: ``"<service> <METHOD> <path>"`` for the message.
        service: the service name stored on the error.
    """
    status = response.status_code
    if 200 <= status < 300:
        return None
    message = f"{where} returned HTTP {status}"
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RetryableUpstreamError(
            message, error_code="rate_limited", retry_after=retry_after, service=service, status=status
        )
    if status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RetryableUpstreamError(
            message, error_code=f"upstream_{status}", retry_after=retry_after, service=service, status=status
        )
    if status == 404:
        return PermanentUpstreamError(message, error_code="not_found", service=service, status=status)
    return PermanentUpstreamError(message, error_code=f"upstream_{status}", service=service, status=status)


def error_for_transport(exc: httpx.TransportError, where: str, service: str, *, reading_body: bool) -> UpstreamError:
    """The error an httpx transport failure stands for.

    Parameters:
        exc: the httpx exception.
        where: ``"<service> <METHOD> <path>"`` for the message.
        service: the service name stored on the error.
        reading_body: True once the status line and headers had arrived; a
            connection cut then means a truncated body.
    """
    if isinstance(exc, httpx.TimeoutException):
        return RetryableUpstreamError(f"{where} timed out", error_code="upstream_timeout", service=service)
    if reading_body and isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return RetryableUpstreamError(
            f"{where} response body was cut off", error_code="malformed_response", service=service
        )
    # The class name says enough (ConnectError, ReadError...); httpx's own text can carry a URL.
    return RetryableUpstreamError(
        f"{where} failed: {type(exc).__name__}", error_code="upstream_unreachable", service=service
    )


def read_capped(response: httpx.Response, max_bytes: int, where: str, service: str) -> bytes:
    """Read a streamed body, refusing it as soon as it passes ``max_bytes``.

    A ``Content-Length`` above the cap is refused before reading anything;
    otherwise at most ``max_bytes`` plus one chunk is ever held.
    """
    too_large = PermanentUpstreamError(
        f"{where} response is larger than {max_bytes} bytes", error_code="response_too_large", service=service
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    for chunk in response.iter_bytes(READ_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


class ServiceClient:
    """An ``httpx.Client`` for one upstream service, with the error mapping.

    Parameters:
        service: the name used for ``on_request`` and in errors.
        base_url: prefix of relative paths (absolute URLs are used as given).
        timeout: seconds for connect, read, write and pool waits.
        headers: default headers (credentials included; httpx masks them in reprs).
        auth: an ``httpx.Auth`` (basic auth, bearer-token flows).
        rate_limiter: object with ``acquire()``, called before every request sent.
        on_request: called with ``service`` for every request sent (the job's call counter).
        transport: an ``httpx.BaseTransport`` to use instead of the network.
        follow_redirects: follow 3xx responses (images behind CDNs).
        secrets: values scrubbed from any error message, whatever produced it.
    """

    def __init__(
        self,
        service: str,
        base_url: str = "",
        *,
        timeout: float,
        headers: Optional[dict[str, str]] = None,
        auth: Optional[httpx.Auth] = None,
        rate_limiter: Optional[RateLimiter] = None,
        on_request: Optional[OnRequest] = None,
        transport: Optional[httpx.BaseTransport] = None,
        follow_redirects: bool = False,
        secrets: Iterable[Optional[str]] = (),
    ) -> None:
        self.service = service
        self._on_request = on_request or _no_count
        self._secrets = [s for s in secrets if s]
        hooks = [self._count]
        if rate_limiter is not None:
            # Runs before each request actually sent, redirects and auth retries included.
            hooks.insert(0, lambda request: rate_limiter.acquire())
        self._client = httpx.Client(
            base_url=base_url,
            headers=headers,
            auth=auth,
            timeout=httpx.Timeout(timeout),
            # Limits belong to the transport: httpx ignores Client(limits=) when given one.
            transport=transport or httpx.HTTPTransport(retries=0, limits=httpx.Limits(max_connections=10)),
            follow_redirects=follow_redirects,
            event_hooks={"request": hooks},
        )

    def _count(self, request: httpx.Request) -> None:
        self._on_request(self.service)

    def scrub(self, error: UpstreamError) -> UpstreamError:
        """Return ``error`` with any configured secret replaced by ``***`` in its message."""
        text = str(error)
        if any(secret in text for secret in self._secrets):
            for secret in self._secrets:
                text = text.replace(secret, "***")
            error.args = (text,)
        return error

    @contextmanager
    def stream(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """Send a request and yield the successful, still unread response.

        Parameters:
            method: HTTP method.
            url: path relative to ``base_url``, or an absolute URL.
            kwargs: ``params``, ``headers``, ``data``, ``files``... as httpx takes them.

        Raises ``UpstreamError`` for a non-2xx status or a transport failure,
        including one while the caller reads the body inside the block.
        """
        try:
            request = self._client.build_request(method, url, **kwargs)
        except httpx.InvalidURL as exc:
            # E.g. a search for a 10,000-character title: httpx refuses the URL before
            # sending anything, and the same input would be refused on every retry.
            raise self.scrub(
                PermanentUpstreamError(
                    f"{self.service} {method}: the request URL cannot be built ({exc})",
                    error_code="invalid_url",
                    service=self.service,
                )
            ) from None
        where = f"{self.service} {method} {request.url.path}"
        started = time.perf_counter()
        try:
            response = self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            observe_upstream_request(self.service, None, time.perf_counter() - started)
            raise self.scrub(error_for_transport(exc, where, self.service, reading_body=False)) from exc
        observe_upstream_request(self.service, response.status_code, time.perf_counter() - started)
        try:
            error = error_for_status(response, self.where(response), self.service)
            if error is not None:
                raise self.scrub(error)
            yield response
        except httpx.TransportError as exc:
            raise self.scrub(error_for_transport(exc, self.where(response), self.service, reading_body=True)) from exc
        finally:
            response.close()

    def read(self, method: str, url: str, *, max_bytes: int, **kwargs: Any) -> tuple[httpx.Response, bytes]:
        """Send a request and return the response with its capped body."""
        with self.stream(method, url, **kwargs) as response:
            return response, self.read_body(response, max_bytes)

    def where(self, response: httpx.Response) -> str:
        """``"<service> <METHOD> <path>"`` of the request behind ``response``, for messages."""
        return f"{self.service} {response.request.method} {response.request.url.path}"

    def read_body(self, response: httpx.Response, max_bytes: int) -> bytes:
        """Read a response from ``stream()``, capped at ``max_bytes`` (``response_too_large``)."""
        try:
            return read_capped(response, max_bytes, self.where(response), self.service)
        except UpstreamError as error:
            raise self.scrub(error) from None

    def request_json(self, method: str, url: str, *, max_bytes: int = JSON_MAX_BYTES, **kwargs: Any) -> Any:
        """Send a request and return its parsed JSON body.

        Parameters:
            method: HTTP method.
            url: path relative to ``base_url``, or an absolute URL.
            max_bytes: largest body accepted (``response_too_large`` above it).
            kwargs: passed to httpx (``params``, ``data``, ``files``, ``headers``).

        Raises ``RetryableUpstreamError('malformed_response')`` for a body
        that is not valid JSON (truncated included).
        """
        response, body = self.read(method, url, max_bytes=max_bytes, **kwargs)
        try:
            return json.loads(body)
        except ValueError:
            raise self.scrub(
                RetryableUpstreamError(
                    f"{self.where(response)} returned a body that is not valid JSON",
                    error_code="malformed_response",
                    service=self.service,
                    status=response.status_code,
                )
            ) from None

    def get_json(self, url: str, *, params: Optional[dict[str, Any]] = None) -> Any:
        """``GET`` a path and return its parsed JSON body."""
        return self.request_json("GET", url, params=params)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"ServiceClient({self.service!r}, base_url={str(self._client.base_url)!r})"


class ClientBase:
    """Lifecycle shared by the service clients: ``close()`` and ``with``."""

    _http: ServiceClient

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._http!r})"


class RateLimitedClient(ClientBase):
    """A client whose requests are spaced by a shared limiter (MusicBrainz, Discogs).

    Subclasses set ``service`` and ``interval_setting`` (the Settings field
    holding the spacing in seconds) and describe their endpoint in
    ``_endpoint(settings) -> (base_url, headers, secrets)``.

    Parameters:
        settings: ``http_timeout`` and ``redis_url`` (for the default limiter), plus
            whatever ``_endpoint`` reads.
        rate_limiter: object with ``acquire()``; by default one request per
            ``interval`` seconds across every process sharing ``settings.redis_url``.
        on_request: called with ``service`` for every request sent.
        transport: an httpx transport to use instead of the network.
    """

    service: str
    interval_setting: str

    def __init__(
        self,
        settings: Settings,
        *,
        rate_limiter: Optional[RateLimiter] = None,
        on_request: Optional[OnRequest] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        base_url, headers, secrets = self._endpoint(settings)
        self._http = ServiceClient(
            self.service,
            base_url,
            timeout=settings.http_timeout,
            headers=headers,
            rate_limiter=rate_limiter
            or service_limiter(settings.redis_url, self.service, getattr(settings, self.interval_setting)),
            on_request=on_request,
            transport=transport,
            secrets=secrets,
        )

    def _endpoint(self, settings: Settings) -> tuple[str, dict[str, str], list[Optional[str]]]:
        raise NotImplementedError
