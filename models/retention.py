"""Retention: delete whole trees that completed before a cutoff, in short batches.

A tree goes only as a whole, and only when complete (no row ``queued``,
``running`` or ``retrying``) with its last completion before the cutoff.
Legacy rows without a job id (from before job linking; nothing can point
at them) go by their ``created_at``.  Orphans, child rows whose root row no
longer exists (deleted by hand, or a tree pruned before a late child's row
landed), go by their completion, once they have ended: no tree shows them.

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
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

from peewee import SQL, Case, fn

from .database import is_postgres
from .job_log import PENDING_STATUSES, EnrichmentLog

Log = EnrichmentLog
DEFAULT_BATCH_ROOTS = 200


@dataclass
class PruneReport:
    trees: int = 0  # whole trees deleted (or that would be, in a dry run)
    rows: int = 0  # every row deleted, roots, children and legacy rows
    legacy_rows: int = 0  # rows without a job id, by created_at
    orphan_rows: int = 0  # ended child rows whose root row no longer exists, by completion
    batches: int = 0
    longest_transaction_seconds: float = 0.0  # one batch's delete (or count, in a dry run)

    def add_batch(self, started: float, progress: Optional[Callable[[PruneReport], None]], *, trees: int = 0,
                  rows: int = 0, legacy: int = 0, orphans: int = 0) -> None:
        """Count one batch (begun at ``started``, a monotonic time) and tell ``progress``."""
        self.trees += trees
        self.rows += rows
        self.legacy_rows += legacy
        self.orphan_rows += orphans
        self.batches += 1
        self.longest_transaction_seconds = max(self.longest_transaction_seconds, time.monotonic() - started)
        if progress is not None:
            progress(self)


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


def _orphans(cutoff: dt.datetime, after: Optional[uuid.UUID], limit: int) -> tuple[list[uuid.UUID], Optional[uuid.UUID]]:
    """The next ``limit`` ended child rows (by id) that completed before ``cutoff``: (those whose root row
    is gone, the last id read), or ([], None) at the end."""
    query = (Log.select(Log.id, Log.parent_job_id)
             .where(Log.parent_job_id.is_null(False) & Log.status.not_in(PENDING_STATUSES)
                    & (fn.COALESCE(Log.completed_at, Log.updated_at) < cutoff))
             .order_by(Log.id).limit(limit))
    if after is not None:
        query = query.where(Log.id > after)
    children = list(query.tuples())
    if not children:
        return [], None
    parents = {parent for _, parent in children}
    present = {job_id for (job_id,) in Log.select(Log.job_id).where(Log.job_id.in_(parents)).tuples()}
    return [row_id for row_id, parent in children if parent not in present], children[-1][0]


def _delete_orphans(ids: list[uuid.UUID]) -> int:
    """Delete these rows if their root row is still missing (checked again in the statement itself)."""
    root = Log.alias()
    return (Log.delete()
            .where(Log.id.in_(ids) & ~fn.EXISTS(root.select(SQL("1")).where(root.job_id == Log.parent_job_id)))
            .execute())


def prune(cutoff: dt.datetime, *, dry_run: bool = False, batch_roots: int = DEFAULT_BATCH_ROOTS,
          progress: Optional[Callable[[PruneReport], None]] = None) -> PruneReport:
    """Delete (or, with ``dry_run``, count) every complete tree that completed before ``cutoff``, then the
    ended orphans that did."""
    report = _prune_trees(cutoff, dry_run, batch_roots, progress)
    after = None
    while True:
        started = time.monotonic()
        orphans, after = _orphans(cutoff, after, batch_roots * 10)
        if after is None:
            return report
        deleted = len(orphans) if dry_run or not orphans else _delete_orphans(orphans)
        report.add_batch(started, progress, rows=deleted, orphans=deleted)


def _prune_trees(cutoff: dt.datetime, dry_run: bool, batch_roots: int,
                 progress: Optional[Callable[[PruneReport], None]]) -> PruneReport:
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
        report.add_batch(started, progress, trees=trees, rows=rows, legacy=legacy)


__all__ = ["PruneReport", "prune", "DEFAULT_BATCH_ROOTS"]
