"""Local image cache paths on the catalog, and partial indexes for the root table.

``cached_image_path`` records where ``cache:*`` jobs stored an image when
Cloudflare Images is not configured (the embedded default).

The root table filters roots by status and pages by (created_at, id); with
only ``(status, created_at)`` PostgreSQL wades through children of that
status, and ``(is_root_job, created_at)`` needs a sort step on the id.
Partial indexes over roots only answer both with one short index scan.
"""

from peewee import TextField

from migrations.schema_ops import add_column_if_missing, create_index_if_missing, is_postgres

atomic = False  # indexes are built CONCURRENTLY on PostgreSQL


def up(migrator, db):
    for table in ("albums", "artists"):
        add_column_if_missing(migrator, db, table, "cached_image_path", TextField(null=True))
    roots = "is_root_job" if is_postgres(db) else "is_root_job = 1"  # SQLite matches the predicate's text
    create_index_if_missing(db, "enrichment_logs", "enrichment_logs_roots_created_at", ["created_at", "id"], where=roots)
    create_index_if_missing(
        db, "enrichment_logs", "enrichment_logs_roots_status_created_at", ["status", "created_at", "id"], where=roots
    )
