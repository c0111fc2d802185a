"""Retention: delete whole trees that completed before a cutoff, in short batches.

A tree goes only as a whole, and only when complete (no row ``queued``,
``running`` or ``retrying``) with its last completion before the cutoff.
Legacy rows without a job id (from before job linking; nothing can point
at them) go by their ``created_at``.

Roots are read oldest first through the partial index over roots
``(created_at, id)`` (a tree completes after its root was created, so only
roots created before the cutoff can qualify), a batch at a time.  Each batch
is one short transaction: lock the batch's roots, check their trees again
inside it, delete the children, then the roots.  A child written meanwhile
that moves a failed child back to ``queued`` (``enrich resend``) updates its
root through migration 0008's trigger, so it waits for the lock and then
finds no tree (its row is gone), or the prune finds the tree pending and
leaves it whole.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Callable, Optional

from peewee import Case, fn

from .database import is_postgres
from .job_log import PENDING_STATUSES, EnrichmentLog

Log = EnrichmentLog
DEFAULT_BATCH_ROOTS = 200


@dataclass
class PruneReport:
    trees: int = 0  # whole trees deleted (or that would be, in a dry run)
    rows: int = 0  # every row deleted, roots, children and legacy rows
    legacy_rows: int = 0  # rows without a job id, by created_at
    batches: int = 0
    longest_transaction_seconds: float = 0.0  # one batch's delete (or count, in a dry run)


def _roots_before(cutoff: dt.datetime, after: Optional[tuple], limit: int) -> list[tuple]:
    """(created_at, id, job_id) of the next roots created before ``cutoff``, oldest first."""
    query = Log.select(Log.created_at, Log.id, Log.job_id).where(Log.is_root_job == True, Log.created_at < cutoff)  # noqa: E712
    if after is not None:
        created_at, row_id = after
        query = query.where((Log.created_at > created_at) | ((Log.created_at == created_at) & (Log.id > row_id)))
    return list(query.order_by(Log.created_at, Log.id).limit(limit).tuples())


def _finished_trees(root_job_ids: list[str], cutoff: dt.datetime) -> tuple[list[str], int]:
    """Those of ``root_job_ids`` whose tree is complete with its last completion before ``cutoff``; and their row count."""
    if not root_job_ids:
        return [], 0
    ended = fn.COALESCE(Log.completed_at, Log.updated_at)
    pending = fn.SUM(Case(None, [(Log.status.in_(PENDING_STATUSES), 1)], 0))
    rows = (
        Log.select(fn.COALESCE(Log.parent_job_id, Log.job_id).alias("tree"), fn.COUNT(Log.id), pending, fn.MAX(ended))
        .where(Log.parent_job_id.in_(root_job_ids) | Log.job_id.in_(root_job_ids))
        .group_by(fn.COALESCE(Log.parent_job_id, Log.job_id))
        .tuples()
    )
    finished, count = [], 0
    for tree, size, pending_count, last in rows:
        if not pending_count and last is not None and _as_datetime(last) < cutoff:
            finished.append(tree)
            count += size
    return finished, count


def _as_datetime(value) -> dt.datetime:
    # SQLite hands MAX() of a timestamp column back as its text.
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


def _delete_batch(db, roots: list[tuple], cutoff: dt.datetime) -> tuple[int, int, int]:
    """One transaction: (trees deleted, rows deleted, legacy rows deleted) among ``roots``."""
    legacy_ids = [row_id for _, row_id, job_id in roots if job_id is None]
    job_ids = [job_id for _, _, job_id in roots if job_id is not None]
    with db.atomic():
        if job_ids and is_postgres(db):
            # Hold the roots: a resend's trigger (and a late child failure) updates its root first.
            Log.select(Log.id).where(Log.job_id.in_(job_ids)).for_update().execute()
        finished, _ = _finished_trees(job_ids, cutoff)
        rows = 0
        if finished:
            rows += Log.delete().where(Log.parent_job_id.in_(finished)).execute()
            rows += Log.delete().where(Log.job_id.in_(finished) & (Log.is_root_job == True)).execute()  # noqa: E712
        legacy = Log.delete().where(Log.id.in_(legacy_ids)).execute() if legacy_ids else 0
    return len(finished), rows + legacy, legacy


def prune(cutoff: dt.datetime, *, dry_run: bool = False, batch_roots: int = DEFAULT_BATCH_ROOTS,
          progress: Optional[Callable[[PruneReport], None]] = None) -> PruneReport:
    """Delete (or, with ``dry_run``, count) every complete tree that completed before ``cutoff``."""
    db = Log._meta.database
    report = PruneReport()
    after = None
    while True:
        roots = _roots_before(cutoff, after, batch_roots)
        if not roots:
            return report
        after = roots[-1][:2]
        started = time.monotonic()
        if dry_run:
            legacy = sum(1 for *_, job_id in roots if job_id is None)
            finished, rows = _finished_trees([job_id for *_, job_id in roots if job_id is not None], cutoff)
            trees, rows = len(finished), rows + legacy
        else:
            trees, rows, legacy = _delete_batch(db, roots, cutoff)
        report.trees += trees
        report.rows += rows
        report.legacy_rows += legacy
        report.batches += 1
        report.longest_transaction_seconds = max(report.longest_transaction_seconds, time.monotonic() - started)
        if progress is not None:
            progress(report)


__all__ = ["PruneReport", "prune", "DEFAULT_BATCH_ROOTS"]
