"""The errors every upstream client raises, in two families.

Actors list ``PermanentUpstreamError`` in Dramatiq's ``throws`` so those are
not retried; ``RetryableUpstreamError`` goes through the Retries middleware,
honouring ``retry_after`` when the service gave one.  ``MissingCredentials``
is permanent too: actors turn it into the job status ``skipped``.

Messages name the service, the HTTP method, the URL path and the status;
never a query string, a header or a credential.
"""

from __future__ import annotations

from typing import Optional


class UpstreamError(Exception):
    """A call to an upstream service failed.

    Parameters:
        message: what happened, for people; never contains a secret.
        error_code: short snake_case reason (<= 50 chars) for the job log,
            e.g. ``rate_limited``, ``upstream_503``, ``not_found``.
        retry_after: seconds the service asked us to wait, or None.
        service: ``musicbrainz``, ``discogs``, ``spotify``, ``cloudflare`` or ``image``.
        status: the HTTP status when there was a response, else None.
    """

    retryable: bool = False
    default_code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        error_code: Optional[str] = None,
        retry_after: Optional[float] = None,
        service: Optional[str] = None,
        status: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.error_code = (error_code or self.default_code)[:50]
        self.retry_after = retry_after
        self.service = service
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.error_code!r}, {str(self)!r})"


class RetryableUpstreamError(UpstreamError):
    """Worth another try later: 429, 5xx, timeouts, connection errors, bad JSON."""

    retryable = True
    default_code = "upstream_unavailable"


class PermanentUpstreamError(UpstreamError):
    """Retrying will not help: other 4xx, not found, too large, not an image."""

    retryable = False
    default_code = "upstream_rejected"


class BadUpstreamData(PermanentUpstreamError):
    """The service answered, but a field of its answer cannot be read: retrying gets the same answer.

    Parameters:
        service: the service that answered, e.g. ``musicbrainz``.
        field: where in the answer, e.g. ``release-groups[0].score``.
        problem: what was wrong with it, e.g. ``expected a number, got 'n/a'``.
    """

    default_code = "bad_upstream_data"

    def __init__(self, service: str, field: str, problem: str) -> None:
        super().__init__(f"{service} answered an unreadable {field}: {problem}", service=service)
        self.field = field


class MissingCredentials(PermanentUpstreamError):
    """A setting the service needs is not configured.

    Parameters:
        variable_name: the environment variable to set, e.g. ``DISCOGS_TOKEN``.
    """

    default_code = "missing_credentials"

    def __init__(self, variable_name: str, *, service: Optional[str] = None) -> None:
        super().__init__(f"{variable_name} is not set", service=service)
        self.variable_name = variable_name


__all__ = ["UpstreamError", "RetryableUpstreamError", "PermanentUpstreamError", "BadUpstreamData", "MissingCredentials"]
