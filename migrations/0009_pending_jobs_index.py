"""A partial index over the jobs not ended yet (``queued``, ``running``, ``retrying``).

Tree completion asks "does this tree still have a pending job?" and the
lost-work sweeper asks "which queued or retrying jobs are past their due
time?": both read only the few pending rows, never the millions that ended.
"""

from migrations.schema_ops import create_index_if_missing

atomic = False  # built CONCURRENTLY on PostgreSQL, while workers write

PENDING = "status IN ('queued', 'running', 'retrying')"


def up(migrator, db):
    create_index_if_missing(db, "enrichment_logs", "enrichment_logs_pending", ["parent_job_id", "status", "due_at"],
                            where=PENDING)
