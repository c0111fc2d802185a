"""Send a failed or lost job again: the same message, the same job id, the same tree.

    resend_job(broker, job_id)          -> the job id sent again
    resend_tree(broker, root_job_id)    -> the job ids sent again

The message comes from the row's ``message`` column (written at send time;
``middleware/job_log/sent_messages.py`` holds both halves of that contract); its tree (``parent_job_id``), trigger and
attempt are rebuilt from the row.  It is sent with ``retries`` = the row's
``retry_count`` + 1, so the ``queued`` row JobLinking writes for it moves
the final row forward (the one way a final row goes back), ``retry_count``
keeps counting, and the root takes the failure back while the job is
pending again (migration 0008's trigger).  If it fails again, it counts
against the root again.  With ``retries`` past the actor's ``max_retries``,
a resent job that failed for good gets one more attempt, not a new series.

Anything that cannot be sent again raises ``ResendRefused`` with one line
saying why; nothing is sent then.  A send appends its ``queued`` row to the
job-log journal, where a drainer applies it a moment later: ``send_again``
waits for that (up to ``ROW_WAIT_SECONDS``), so whoever sent it reads the row
as sent next (the dashboard's redirect, the operator's next command).
"""

from __future__ import annotations

import dramatiq
from dramatiq.errors import ActorNotFound

from middleware.job_log.sent_messages import message_to_resend, resend_problem
from models.job_log import RESENDABLE_STATUSES, EnrichmentLog

Log = EnrichmentLog


ROW_WAIT_SECONDS = 5.0  # normally a fifth of a second; longer only when the drainers are behind or down


class ResendRefused(Exception):
    """A job or tree that cannot be sent again; the message is one line saying why."""


def _refusal(row) -> str | None:
    """Why this row's job cannot be sent again, or None when it can."""
    if row.status not in RESENDABLE_STATUSES:
        return f"job {row.job_id} is {row.status}: only failed or lost jobs are sent again"
    return resend_problem(row.job_id, row.message)


def _message(broker: dramatiq.Broker, row) -> dramatiq.Message:
    actor_name = row.message["actor"]
    try:
        broker.get_actor(actor_name)
    except ActorNotFound:
        raise ResendRefused(f"job {row.job_id}: no actor named {actor_name!r} is declared here") from None
    return message_to_resend(row)


def send_again(broker: dramatiq.Broker, messages: list[dramatiq.Message]) -> bool:
    """Send these messages, then wait until their ``queued`` rows are in the database (``wait_for_sent_rows``)."""
    for message in messages:
        broker.enqueue(message)
    return wait_for_sent_rows(broker)


def wait_for_sent_rows(broker: dramatiq.Broker) -> bool:
    """Wait until the rows of every message this process sent are in the database (up to
    ``ROW_WAIT_SECONDS``); True if they are (else a drainer applies them later), or if ``broker``
    writes no rows (no JobLinking)."""
    from middleware import JobLinking

    linking = next((m for m in getattr(broker, "middleware", ()) if isinstance(m, JobLinking)), None)
    return linking is None or linking.job_log.bind(broker).flush(ROW_WAIT_SECONDS)


def _row(job_id: str):
    row = Log.get_or_none(Log.job_id == job_id)
    if row is None:
        raise ResendRefused(f"no job with id {job_id}")
    return row


def resend_job(broker: dramatiq.Broker, job_id: str) -> str:
    """Send one failed or lost job again; returns its job id."""
    row = _row(job_id.strip())
    problem = _refusal(row)
    if problem:
        raise ResendRefused(problem)
    send_again(broker, [_message(broker, row)])
    return row.job_id


def retries_for_resend(job_id: str) -> int | None:
    """The ``retries`` a message of job ``job_id`` is sent again with (as ``message_to_resend`` sets it), so that
    its ``queued`` row moves its final row forward; None when the job log has no row for it."""
    row = Log.select(Log.retry_count).where(Log.job_id == job_id).first()
    return row.retry_count + 1 if row is not None else None


def resend_tree(broker: dramatiq.Broker, root_job_id: str) -> list[str]:
    """Send every failed or lost job of one tree again; returns their job ids (the root's first).

    Refused as a whole (nothing sent) when the id is not a root, when the
    tree has no failed or lost job, or when one of them cannot be sent again.
    """
    root = _row(root_job_id.strip())
    if not root.is_root_job:
        raise ResendRefused(f"job {root.job_id} is not a root; its tree's root is {root.parent_job_id}")
    rows = list(
        Log.select()
        .where(((Log.job_id == root.job_id) | (Log.parent_job_id == root.job_id)) & Log.status.in_(RESENDABLE_STATUSES))
        .order_by(Log.parent_job_id.is_null(False), Log.created_at)
    )
    if not rows:
        raise ResendRefused(f"tree {root.job_id} has no failed or lost job to send again")
    refusals = [problem for problem in map(_refusal, rows) if problem]
    if refusals:
        more = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
        raise ResendRefused(f"nothing sent: {refusals[0]}{more}")
    messages = [_message(broker, row) for row in rows]
    send_again(broker, messages)
    return [message.message_id for message in messages]


__all__ = ["ResendRefused", "resend_job", "resend_tree", "retries_for_resend", "send_again",
           "wait_for_sent_rows"]
