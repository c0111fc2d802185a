"""Job linking, step one: ``is_root_job`` and the index behind the root table.

The column is added NOT NULL DEFAULT FALSE in one statement (no table
rewrite on PostgreSQL); which legacy rows are roots is decided by 0003.
"""

from peewee import SQL, BooleanField

from migrations.schema_ops import add_column_if_missing, create_index_if_missing

atomic = False  # the index is built CONCURRENTLY on PostgreSQL


def up(migrator, db):
    add_column_if_missing(
        migrator, db, "enrichment_logs", "is_root_job", BooleanField(default=False, constraints=[SQL("DEFAULT FALSE")])
    )
    create_index_if_missing(
        db, "enrichment_logs", "enrichment_logs_is_root_job_created_at", ["is_root_job", "created_at"]
    )
