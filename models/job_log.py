"""The job log: one row of ``enrichment_logs`` per Dramatiq message.

Column names are part of the product's interface (operators and dashboards
query them); keep them as they are.  Rows are written by the job-log engine
(``middleware/job_log``); when a root shows ``degraded`` is decided by one
rule, in ``middleware/job_log/root_status.py`` (``failed_children`` and
``own_status`` below are its columns).
"""

from __future__ import annotations

import peewee
from peewee import JSONField

from .base import TimestampedModel

# Statuses a job can end in, and the ones a failed descendant turns into
# ``degraded`` on the root.
QUEUED = "queued"  # sent, not started yet (or sent again by `enrich resend`)
RUNNING = "running"
RETRYING = "retrying"
SUCCESS = "success"
PARTIAL_SUCCESS = "partial_success"
NO_DATA = "no_data"
SKIPPED = "skipped"
FAILED = "failed"
DEGRADED = "degraded"
LOST = "lost"  # the message vanished from the broker before it ran (middleware/job_log/lost_work.py)

STATUSES = (QUEUED, RUNNING, RETRYING, SUCCESS, PARTIAL_SUCCESS, NO_DATA, SKIPPED, FAILED, DEGRADED, LOST)
FINAL_STATUSES = (SUCCESS, PARTIAL_SUCCESS, NO_DATA, SKIPPED, FAILED, DEGRADED, LOST)
PENDING_STATUSES = (QUEUED, RUNNING, RETRYING)  # a tree with one of these is not complete
FAILED_STATUSES = (FAILED, LOST)  # a child ending so counts against its root (degraded)
RESENDABLE_STATUSES = (FAILED, LOST)
DEGRADABLE_STATUSES = (SUCCESS, PARTIAL_SUCCESS, NO_DATA, SKIPPED)
ACTOR_STATUSES = (SUCCESS, PARTIAL_SUCCESS, NO_DATA, SKIPPED, FAILED)  # what an actor may record()
ENTITY_TYPES = ("album", "artist", "track")


class EnrichmentLog(TimestampedModel):
    job_id = peewee.CharField(max_length=100, null=True)
    parent_job_id = peewee.CharField(max_length=100, null=True)
    is_root_job = peewee.BooleanField(default=False)

    operation = peewee.CharField(max_length=100)
    entity_type = peewee.CharField(max_length=20, null=True)
    entity_id = peewee.UUIDField(null=True)

    status = peewee.CharField(max_length=20, default=RUNNING)
    # The job's own last status, while ``status`` shows ``degraded`` for a root
    # with failed children (restored if they recover): middleware/job_log/root_status.py.
    own_status = peewee.CharField(max_length=20, null=True)
    reason = peewee.TextField(null=True)
    sources = JSONField(default=list)
    fields_enriched = JSONField(default=list)
    data_quality_before = peewee.CharField(max_length=10, null=True)
    data_quality_after = peewee.CharField(max_length=10, null=True)

    retry_count = peewee.IntegerField(default=0)
    # When the attempt that made the last applied write started (ms since the epoch; 0: written at send).
    # Orders two deliveries of one attempt: a redelivery's writes win (middleware/job_log/upsert.py).
    attempt_started_ms = peewee.BigIntegerField(default=0)
    last_error = peewee.TextField(null=True)
    error_code = peewee.CharField(max_length=50, null=True)
    api_call_count = peewee.IntegerField(default=0)
    failed_children = peewee.IntegerField(default=0)  # a root's children that failed or were lost (root_status)

    enqueued_at = peewee.DateTimeField(null=True)
    started_at = peewee.DateTimeField(null=True)
    completed_at = peewee.DateTimeField(null=True)
    duration_ms = peewee.IntegerField(null=True)

    details = JSONField(null=True)
    # What `enrich resend` sends again: actor, queue, args, kwargs, options (middleware/job_log/sent_messages.py).
    message = JSONField(null=True)
    due_at = peewee.DateTimeField(null=True)  # when a delayed message (or a retry) is due
    triggered_by = peewee.CharField(max_length=50, null=True)

    class Meta:
        table_name = "enrichment_logs"
        indexes = (
            (("parent_job_id", "started_at"), False),
            (("is_root_job", "created_at"), False),
            (("entity_type", "entity_id", "created_at"), False),
            (("status", "created_at"), False),
        )


def max_length(column: str) -> int:
    """The longest text the column ``column`` holds, as declared above: every bound on a row's text reads it here."""
    return EnrichmentLog._meta.fields[column].max_length


MAX_ID_LENGTH = max_length("job_id")  # parent_job_id too
MAX_OPERATION = max_length("operation")
MAX_TRIGGERED_BY = max_length("triggered_by")
MAX_ERROR_CODE = max_length("error_code")
MAX_ERROR_TEXT = 2000  # last_error is TEXT: this bound is the product's, not the column's
MAX_INTEGER = 2**31 - 1  # what an IntegerField (retry_count, api_call_count, duration_ms) holds on PostgreSQL

# The unique index on job_id is partial (legacy rows may have no job id); it is
# created by the migrations, and upserts name it through this predicate.
JOB_ID_PRESENT = EnrichmentLog.job_id.is_null(False)
