"""Backfill ``is_root_job`` on legacy rows, in short transactions.

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

logger = logging.getLogger("migrations.backfill")

TABLE = "enrichment_logs"
DEFAULT_BATCH_SIZE = 5000


@dataclass
class BackfillReport:
    rows_updated: int = 0
    batches: int = 0
    seconds: float = 0.0
    longest_batch_seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list, repr=False)


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
        with db.atomic():
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
