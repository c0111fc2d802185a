"""Backfill ``is_root_job`` on legacy rows, in short transactions, and catch up later ones.

``backfill_root_jobs`` (migration 0003) walks the whole table once.  Workers
from before job linking may still be inserting rows during a rolling deploy,
during the walk and after it: ``link_unlinked_rows``, run at the end of
every ``enrich migrate``, marks every row with no parent that is not a root
yet (migration 0011 indexes exactly those), its last batch under a lock that
holds writers off for that one short UPDATE, so none is left behind.

The walk goes down the primary key in batches: each batch finds its upper key
with one index scan, then updates only the rows in that key range that have no
parent.  No batch holds its row locks for longer than one small UPDATE, so
workers writing new rows are never blocked for long, and the work per batch
stays the same at the start and at the end of a big table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from models.database import is_postgres

logger = logging.getLogger("migrations.backfill")

TABLE = "enrichment_logs"
DEFAULT_BATCH_SIZE = 5000
UNLINKED_INDEX = "enrichment_logs_unlinked"


@dataclass
class BackfillReport:
    rows_updated: int = 0
    batches: int = 0
    seconds: float = 0.0
    longest_batch_seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list, repr=False)


def _write_transaction(db):
    """A transaction that takes SQLite's write lock at BEGIN: a deferred one that reads first fails
    at once ("database is locked") when another writer commits before its UPDATE."""
    return db.atomic() if is_postgres(db) else db.atomic("IMMEDIATE")


def _upper_key(db, lower, batch_size: int):
    """The last primary key of the next batch after ``lower`` (None: from the start)."""
    p = getattr(db, "param", "?")
    after = f"WHERE id > {p} " if lower is not None else ""
    args = (lower,) if lower is not None else ()
    row = db.execute_sql(f"SELECT id FROM {TABLE} {after}ORDER BY id LIMIT 1 OFFSET {p}", args + (batch_size - 1,)).fetchone()
    if row is None:  # the last, short batch
        row = db.execute_sql(f"SELECT id FROM {TABLE} {after}ORDER BY id DESC LIMIT 1", args).fetchone()
    return row[0] if row else None


def backfill_root_jobs(
    db,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[Callable[[BackfillReport], None]] = None,
) -> BackfillReport:
    """Mark every row without a parent as a root; returns what it did and how long the longest batch took."""
    p = getattr(db, "param", "?")
    report = BackfillReport()
    started = time.perf_counter()
    lower = None
    while True:
        batch_started = time.perf_counter()
        with _write_transaction(db):
            upper = _upper_key(db, lower, batch_size)
            if upper is None:
                break
            after = f"id > {p} AND " if lower is not None else ""
            args = (lower,) if lower is not None else ()
            cursor = db.execute_sql(
                f"UPDATE {TABLE} SET is_root_job = {p} WHERE {after}id <= {p} "
                f"AND parent_job_id IS NULL AND is_root_job = {p}",
                (True,) + args + (upper, False),
            )
            updated = max(cursor.rowcount, 0)
        elapsed = time.perf_counter() - batch_started
        report.rows_updated += updated
        report.batches += 1
        report.batch_seconds.append(elapsed)
        report.longest_batch_seconds = max(report.longest_batch_seconds, elapsed)
        if progress is not None:
            progress(report)
        elif report.batches % 50 == 0:
            logger.info("backfill: %d rows marked as roots in %d batches", report.rows_updated, report.batches)
        lower = upper
    report.seconds = time.perf_counter() - started
    logger.info(
        "backfill done: %d rows marked as roots in %d batches, %.1f s, longest batch %.3f s",
        report.rows_updated,
        report.batches,
        report.seconds,
        report.longest_batch_seconds,
    )
    return report


def unlinked_predicate(db) -> str:
    """Rows a pre-linking worker wrote: no parent, not a root.  Written as the partial index's predicate
    (SQLite uses an index only for the same text)."""
    return "parent_job_id IS NULL AND " + ("NOT is_root_job" if is_postgres(db) else "is_root_job = 0")


def link_unlinked_rows(db, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Mark every row with no parent that is not a root yet as a root; returns how many.

    Batches run until one finds fewer than ``batch_size`` rows; that last one
    runs under a lock that keeps writers out for its duration (PostgreSQL:
    SHARE ROW EXCLUSIVE; SQLite has one writer anyway).  When this returns,
    no such row committed before it is left.
    """
    p = getattr(db, "param", "?")
    unlinked = unlinked_predicate(db)
    update = (f"UPDATE {TABLE} SET is_root_job = {p} WHERE id IN "
              f"(SELECT id FROM {TABLE} WHERE {unlinked} LIMIT {p})")
    total, last = 0, False
    while True:
        with _write_transaction(db):
            if last and is_postgres(db):
                db.execute_sql(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")
            updated = max(db.execute_sql(update, (True, batch_size)).rowcount, 0)
        total += updated
        if last:
            break
        last = updated < batch_size
    if total:
        logger.info("marked %d rows without a parent as roots (written by workers older than job linking)", total)
    return total
