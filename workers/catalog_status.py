"""CatalogStatus: an album's, artist's or track's ``enrichment_status`` follows its enrichment job's final outcome.

The one place that writes ``enrichment_status`` and ``last_enriched_at`` after
a check marked the entity ``queued``:

=====================================  ==================
the enrichment job ends                the catalog says
=====================================  ==================
``success`` or ``partial_success``     ``completed``
``no_data``                            ``no_data``
``failed`` (for good: no retry left)   ``failed``
=====================================  ==================

A job that will be retried, or that ends ``skipped``, changes nothing.  The
jobs an enrichment hands its own work to (``cooldowns.HANDED_TO``: an
album's Spotify track fallback) decide the status too, and being the later
word they win: the enrichment's own outcome is not written over one that
its hand-over wrote since the enrichment started.  The cooldowns read the
same outcomes from the job log, so the catalog and the next check agree.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from typing import Optional

import structlog
from dramatiq.middleware import Middleware

from middleware import current_job
from models import Album, Artist, Track, utcnow
from models.job_log import FAILED, NO_DATA, PARTIAL_SUCCESS, SUCCESS

logger = structlog.get_logger("workers.catalog_status")

CATALOG_STATUS = {SUCCESS: "completed", PARTIAL_SUCCESS: "completed", NO_DATA: "no_data", FAILED: "failed"}
ENRICHMENTS = {"enrichment:album": Album, "enrichment:artist": Artist, "enrichment:track": Track}


@functools.cache
def handed_over() -> dict:
    """The jobs enrichments hand their work to, and the model of their entity."""
    from .actors.cooldowns import HANDED_TO  # not at import: the broker imports this before any actor exists

    return {handed: ENRICHMENTS[operation] for operation, jobs in HANDED_TO.items() for handed in jobs
            if handed != operation}


def follow_outcome(operation: str, entity_id: Optional[uuid.UUID], job_status: str, started_at: dt.datetime) -> bool:
    """Write the entity's status for a job of ``operation`` that ended ``job_status``; True when a row changed.

    Parameters:
      operation(str): the job's operation, e.g. ``enrichment:album``; others change nothing.
      entity_id(UUID): the album, artist or track.
      job_status(str): the job's final status.
      started_at(datetime): when the job's first attempt started (naive UTC).
    """
    model = ENRICHMENTS.get(operation) or handed_over().get(operation)
    status = CATALOG_STATUS.get(job_status)
    if model is None or status is None or entity_id is None:
        return False
    now = utcnow()
    query = model.update(enrichment_status=status, last_enriched_at=now, updated_at=now).where(model.id == entity_id)
    if operation in ENRICHMENTS:
        # A job it handed over to may have finished first: its word is the later one.
        query = query.where(model.last_enriched_at.is_null() | (model.last_enriched_at < started_at))
    return query.execute() > 0


class CatalogStatus(Middleware):
    """Sets the catalog entity's ``enrichment_status`` from its enrichment job's final outcome (``follow_outcome``).

    Runs at ack or nack, when the outcome is final, reading the job JobLinking
    holds: it must come before JobLinking in the broker's middleware.  Takes no parameters.
    """

    def before_ack(self, broker, message):
        self._follow(message, failed=False)

    def before_nack(self, broker, message):
        self._follow(message, failed=True)

    def _follow(self, message, failed: bool) -> None:
        job = current_job()
        if job is None or job.job_id != message.message_id or job.operation not in {*ENRICHMENTS, *handed_over()}:
            return
        status, _ = job.verdict(failed)
        entity_id = job.entity[1]
        database = Album._meta.database
        try:
            with database.connection_context():  # the message's connection was given back already
                follow_outcome(job.operation, entity_id, status, job.started_at)
        except Exception as exc:  # the ack must go on: the job log still says how the job ended
            logger.error("catalog status not written", operation=job.operation, entity_id=str(entity_id),
                         job_status=status, error=f"{type(exc).__name__}: {exc}")
