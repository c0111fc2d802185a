"""Job linking, the rest: retry and timing columns, the tree index, one row per job id."""

from peewee import SQL, CharField, DateTimeField, IntegerField, TextField

from migrations.schema_ops import (
    add_column_if_missing,
    create_index_if_missing,
    drop_index_if_exists,
    duplicated_values,
)

atomic = False  # indexes are built CONCURRENTLY on PostgreSQL

TABLE = "enrichment_logs"


class DuplicateJobIds(RuntimeError):
    pass


def up(migrator, db):
    columns = {
        "retry_count": IntegerField(default=0, constraints=[SQL("DEFAULT 0")]),
        "last_error": TextField(null=True),
        "error_code": CharField(max_length=50, null=True),
        "failed_children": IntegerField(default=0, constraints=[SQL("DEFAULT 0")]),
        "enqueued_at": DateTimeField(null=True),
        "duration_ms": IntegerField(null=True),
        "triggered_by": CharField(max_length=50, null=True),
    }
    for name, field in columns.items():
        add_column_if_missing(migrator, db, TABLE, name, field)

    create_index_if_missing(db, TABLE, "enrichment_logs_parent_job_id_started_at", ["parent_job_id", "started_at"])
    # Before linking a retry could write a second row under the same job id.
    dupes, listing = duplicated_values(db, TABLE, "job_id")
    if dupes:
        raise DuplicateJobIds(
            f"{dupes} job ids have more than one row in {TABLE}; the unique job_id index cannot be built. "
            f"List them with: {listing}; keep one row per job id, then run `enrich migrate` again."
        )
    create_index_if_missing(db, TABLE, "enrichment_logs_job_id_unique", ["job_id"], unique=True, where="job_id IS NOT NULL")
    drop_index_if_exists(db, "enrichment_logs_job_id")  # the legacy plain index, now redundant
