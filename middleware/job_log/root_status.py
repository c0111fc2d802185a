"""The rule for a root's status: when a tree's root shows ``degraded``, and when it takes a failure back.

A root job's row shows its own status, unless a job of its tree (a child)
ended ``failed`` or ``lost``: then the root shows ``degraded`` once it has
finished well (success, partial_success, no_data or skipped), and its own
status is kept in ``own_status``.  Stated as what each write does:

1. A child's write that makes its row ``failed`` (``counts_against_root``:
   JobLinking sends it with its root as ``failed_child_of``), or the
   lost-work sweeper marking it ``lost``, adds one to the root's
   ``failed_children``; a root that had finished well turns ``degraded``
   (``count_failed_children``, in the same transaction as the child's row).
   The drainer decides whether the write is what makes the row failed
   (a failure applied twice counts once, and a ``failed`` end arriving after the sweeper's
   ``lost`` is not counted again: ``already_counted``), and counts only a
   write the upsert applies (a dead worker's late ``failed`` over its
   redelivered run's row is not applied, so not counted: ``upsert.applies``).
2. A root's own write stores ``degraded`` instead of a status that finished
   well while ``failed_children`` > 0 (``status_on_own_write``, in the upsert).
   Whichever of 1 and 2 lands second turns the root degraded.
3. A child that leaves ``failed`` or ``lost`` (a redelivery that succeeds, a
   job sent again by ``enrich resend``) takes its failure back: one less
   failed child, and with none left the root shows ``own_status`` again.
   This half runs in the database, in the same statement that moves the
   child's row: the trigger ``enrichment_logs_failed_child_recovered``
   (installed by migration 0008, widening 0006's; applied migrations are
   never edited, so its SQL stays there: ``TAKE_BACK_TRIGGER`` names it).
4. The metric ``enrich_roots_degraded_total`` counts a tree's first counted
   failure (``turned_degraded``).

Every statement below, and every caller, follows these; nothing else
decides a root's status.
"""

from __future__ import annotations

from typing import Optional

from peewee import Case

from models.base import utcnow
from models.database import is_postgres
from models.job_log import DEGRADABLE_STATUSES, DEGRADED, FAILED, FAILED_STATUSES, PENDING_STATUSES, EnrichmentLog

T = EnrichmentLog
TAKE_BACK_TRIGGER = "enrichment_logs_failed_child_recovered"  # rule 3, in the database (migration 0008)


def counts_against_root(status: str) -> bool:
    """Rule 1: whether a child's write with this status is counted on its root (``lost`` is the sweeper's)."""
    return status == FAILED


def already_counted(status: Optional[str]) -> bool:
    """Rule 1: whether a child's row in ``status`` is already counted on its root (``failed`` by a
    drainer, ``lost`` by the sweeper), so that a failure written over it is not counted again."""
    return status in FAILED_STATUSES


def status_on_own_write(written, failed_children):
    """Rule 2, as SQL: the status a root's row takes from its own write ``written``."""
    return Case(None, [(written.in_(DEGRADABLE_STATUSES) & (failed_children > 0), DEGRADED)], written)


def turned_degraded(status: str, failed_children: int, counted_now: int) -> bool:
    """Rule 4: the failures just counted are the tree's first, on a root that is (or will end) degraded."""
    return failed_children == counted_now and (status == DEGRADED or status in PENDING_STATUSES)


def count_failed_child(root_job_id: str, db=None) -> bool:
    """Rule 1 for one failure: one atomic UPDATE of the root; False when there is no such root row."""
    updated = (
        T.update(
            {
                T.failed_children: T.failed_children + 1,
                T.status: Case(None, [(T.status.in_(DEGRADABLE_STATUSES), DEGRADED)], T.status),
                T.updated_at: utcnow(),
            }
        )
        .where((T.job_id == root_job_id) & (T.is_root_job == True))  # noqa: E712
        .execute(db or T._meta.database)
    )
    return updated > 0


def count_failed_children(counts: dict[str, int], db=None) -> dict[str, Optional[tuple[str, str, int]]]:
    """Rule 1 for many roots at once (``{root job id: failures}``); returns the roots found, each with
    its (operation, status, failed_children) after the update on PostgreSQL (None on SQLite).

    On PostgreSQL one UPDATE for the whole batch: a drainer's batch holds
    failures of hundreds of trees, and one round trip each would cost more
    than the batch's upsert.
    """
    db = db if db is not None else T._meta.database
    if not counts:
        return {}
    if not is_postgres(db):
        return {root: None for root, n in counts.items() for _ in range(n) if count_failed_child(root, db)}
    roots = sorted(counts)
    degradable = ", ".join(f"'{status}'" for status in DEGRADABLE_STATUSES)
    cursor = db.execute_sql(
        "UPDATE enrichment_logs AS t SET failed_children = t.failed_children + v.n, "
        f"status = CASE WHEN t.status IN ({degradable}) THEN '{DEGRADED}' ELSE t.status END, updated_at = %s "
        "FROM unnest(%s::text[], %s::int[]) AS v(job_id, n) "
        "WHERE t.job_id = v.job_id AND t.is_root_job RETURNING t.job_id, t.operation, t.status, t.failed_children",
        [utcnow(), roots, [counts[root] for root in roots]],
    )
    return {job_id: (operation, status, failed) for job_id, operation, status, failed in cursor.fetchall()}


__all__ = ["TAKE_BACK_TRIGGER", "counts_against_root", "already_counted", "status_on_own_write", "turned_degraded",
           "count_failed_child", "count_failed_children"]
