"""What every enrichment actor shares: declaration, entity loading, clients, error policy."""

from __future__ import annotations

import functools
import threading
import uuid
from typing import Callable, Optional, TypeVar

import dramatiq
from dramatiq import Retry

from middleware import count_api_call, record
from models.base import BaseModel

from . import app
from .upstream import (
    BadUpstreamData,
    DiscogsClient,
    ImageClient,
    MissingCredentials,
    MusicBrainzClient,
    PermanentUpstreamError,
    RetryableUpstreamError,
    SpotifyClient,
)

M = TypeVar("M", bound=BaseModel)


class JobInputError(Exception):
    """The job's own input is wrong (a malformed or unknown id): failing again will not help."""

    def __init__(self, message: str, error_code: str):
        super().__init__(message)
        self.error_code = error_code


# Never retried: Dramatiq's ``throws``.
PERMANENT_ERRORS = (PermanentUpstreamError, JobInputError)


def load(model: type[M], entity_id) -> M:
    """The row with this id, or a JobInputError naming what was wrong."""
    name = model.__name__.lower()
    try:
        key = uuid.UUID(str(entity_id))
    except (ValueError, TypeError, AttributeError):
        raise JobInputError(f"{name} id {str(entity_id)[:80]!r} is not a UUID", "invalid_id") from None
    row = model.get_or_none(model.id == key)
    if row is None:
        raise JobInputError(f"no {name} with id {key}", "entity_not_found")
    return row


def upstream_errors(fn: Callable) -> Callable:
    """Missing credentials end the job ``skipped``; a 429 retries after its Retry-After;
    an answer that cannot be read fails the job (once: it is permanent) with the service and field as its reason."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MissingCredentials as exc:
            record(status="skipped", reason=str(exc), error_code=exc.error_code)
        except BadUpstreamData as exc:
            record(reason=str(exc), error_code=exc.error_code, details={"bad_upstream_data": {
                "service": exc.service, "field": exc.field}})
            raise
        except RetryableUpstreamError as exc:
            if exc.retry_after is None:
                raise
            retry = Retry(f"{exc} (retrying after {exc.retry_after:g} s)", delay=int(exc.retry_after * 1000))
            retry.error_code = exc.error_code
            raise retry from exc

    return wrapper


def enrichment_actor(operation: str, entity: Optional[tuple[str, str]] = None, **options):
    """Declare an actor with its job-log operation, its entity argument and the error policy.

    Parameters:
      operation(str): the job type written to the log, e.g. ``enrichment:album``.
      entity(tuple[str, str]): ``(entity_type, argument_name)`` of the row's entity.
      options: any other Dramatiq actor option (``max_retries``, ``time_limit``...).
    """
    options.setdefault("throws", PERMANENT_ERRORS)

    def decorate(fn):
        return dramatiq.actor(
            upstream_errors(fn),
            actor_name=fn.__name__,
            operation=operation,
            entity=entity,
            **options,
        )

    return decorate


class Clients(threading.local):
    """Upstream clients, one set per worker thread, each request counted on the running job.

    A client is rebuilt when the app's settings it was built from change (a
    test pointing the workers at another upstream: ``workers.app.use_settings``).
    """

    def _client(self, name: str, factory):
        settings = app.settings()
        built = getattr(self, name, None)
        if built is None or built[0] != settings:
            if built is not None:
                built[1].close()
            built = (settings, factory(settings, on_request=count_api_call))
            setattr(self, name, built)
        return built[1]

    def musicbrainz(self) -> MusicBrainzClient:
        return self._client("_musicbrainz", MusicBrainzClient)

    def discogs(self) -> DiscogsClient:
        return self._client("_discogs", DiscogsClient)

    def spotify(self) -> SpotifyClient:
        return self._client("_spotify", SpotifyClient)

    def images(self) -> ImageClient:
        return self._client("_images", ImageClient)


clients = Clients()


def send(actor_name: str, *args, **kwargs) -> dramatiq.Message:
    """Send a message to an actor by name; JobLinking links it under the running job's root."""
    return dramatiq.get_broker().get_actor(actor_name).send(*args, **kwargs)
