"""Cooldowns: when a later run may ask an upstream again about the same entity.

The last finished row of an operation on an entity decides (``skipped``,
``running`` and ``retrying`` rows do not count):

- ``success`` or ``partial_success``: no cooldown.
- ``no_data``: not again for ``no_data_cooldown_days`` (NO_DATA_COOLDOWN_DAYS, 90).
- ``failed``: not again for ``failed_cooldown_days`` (FAILED_COOLDOWN_DAYS, 7),
  except the error codes the operation lists in ``NOT_RETRIED``: the same
  request would fail the same way, so only ``--force`` asks again.

An operation's outcome includes the jobs it hands its own work to on the
same entity (``HANDED_TO``): an album whose tracks came from Spotify after
MusicBrainz found nothing is not "no data".  The README's cooldown table
states these rules; keep the two together.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

from models import EnrichmentLog

from .. import app

COUNTED_STATUSES = ("success", "partial_success", "no_data", "failed")

# The jobs whose outcome counts as the operation's own (the operation first).
HANDED_TO = {
    "enrichment:album": ("enrichment:album", "spotify:track-fallback"),
}

# Per operation: error codes a later run must not repeat, and why.  Other
# failures (a 404 or 403 for an id, a 401, a service down after every retry)
# are retried once the failed cooldown is over: the id may be restored, the
# access or the service fixed.
NOT_RETRIED = {
    "discogs:get-artist": {
        "upstream_400": "Discogs called the request malformed, and the same request fails the same way",
    },
}


@dataclass(frozen=True)
class Verdict:
    """What the last counted outcome says about asking again now.

    Parameters:
      blocked(bool): True when a later run must not ask yet (or, for a
        ``NOT_RETRIED`` failure, at all without ``--force``).
      reason(str): why, for a check's row: the operation, its outcome, its date
        and the next try (or why there is none).
      operation(str): the job whose row decided (the operation, or the job it handed over to).
    """

    blocked: bool
    reason: str
    operation: str
    status: str
    error_code: Optional[str]
    finished_at: dt.datetime

    def as_dict(self) -> dict:
        return {
            "blocked": self.blocked,
            "operation": self.operation,
            "status": self.status,
            "error_code": self.error_code,
            "finished_at": self.finished_at.isoformat(timespec="seconds"),
        }


def _days(value: float) -> str:
    return f"{value:g}-day"


def last_outcome(operation: str, entity_type: str, entity_id) -> Optional[EnrichmentLog]:
    """The newest counted row of ``operation`` (or a job it hands over to) on this entity."""
    operations = HANDED_TO.get(operation, (operation,))
    return (
        EnrichmentLog.select(
            EnrichmentLog.operation, EnrichmentLog.status, EnrichmentLog.error_code,
            EnrichmentLog.completed_at, EnrichmentLog.created_at,
        )
        .where(
            (EnrichmentLog.entity_type == entity_type)
            & (EnrichmentLog.entity_id == entity_id)
            & (EnrichmentLog.operation.in_(operations))
            & (EnrichmentLog.status.in_(COUNTED_STATUSES))
        )
        .order_by(EnrichmentLog.created_at.desc())
        .first()
    )


def verdict(operation: str, entity_type: str, entity_id, now: dt.datetime) -> Optional[Verdict]:
    """Whether ``operation`` may run again on this entity now, and why.

    None when it never ran or its last run delivered: nothing worth saying.
    """
    last = last_outcome(operation, entity_type, entity_id)
    if last is None:
        return None
    settings = app.settings()
    when = last.completed_at or last.created_at
    moment = f"{when:%Y-%m-%d %H:%M}"

    def decided(blocked: bool, reason: str) -> Verdict:
        return Verdict(blocked, reason, last.operation, last.status, last.error_code, when)

    if last.status in ("success", "partial_success"):
        if last.operation == operation:
            return None
        return decided(False, f"{last.operation} (sent by {operation}) delivered on {moment}: no cooldown")
    if last.status == "no_data":
        wait = dt.timedelta(days=settings.no_data_cooldown_days)
        found = f"{last.operation} found no data on {moment}"
        if now - when < wait:
            return decided(True, f"{found}; next try after {when + wait:%Y-%m-%d %H:%M}")
        return decided(False, f"{found}; the {_days(settings.no_data_cooldown_days)} cooldown is over")
    failed = f"{last.operation} failed on {moment} ({last.error_code or 'no error code'})"
    never = NOT_RETRIED.get(last.operation, {}).get(last.error_code)
    if never:
        return decided(True, f"{failed}: {never}; not retried without --force")
    wait = dt.timedelta(days=settings.failed_cooldown_days)
    if now - when < wait:
        return decided(True, f"{failed}, worth another try: next try after {when + wait:%Y-%m-%d %H:%M}")
    return decided(False, f"{failed}, worth another try: the {_days(settings.failed_cooldown_days)} cooldown is over")
