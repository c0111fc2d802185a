"""Indexes for the dashboard's text search: trigrams over album titles and artist names, roots by entity.

``models.entities.search_entities`` looks for a text anywhere in a title or
name, ignoring case (``ILIKE '%text%'``).  A B-tree cannot answer that; a
trigram GIN index (the ``pg_trgm`` extension, shipped with PostgreSQL and
trusted, so a database owner may create it) can, in a few milliseconds over
millions of rows.  SQLite, the embedded default, scans its small catalog.

The roots of the matching entities are then read through a partial index
over roots by (entity_type, entity_id, created_at): without it PostgreSQL
walks every root newest first looking for those few entities, or reads
every child row of theirs too.
"""

from migrations.schema_ops import create_index_if_missing, is_postgres

atomic = False  # indexes are built CONCURRENTLY on PostgreSQL


def up(migrator, db):
    if not is_postgres(db):
        return
    db.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    create_index_if_missing(db, "albums", "albums_title_trgm", ["title"], using="gin", opclass="gin_trgm_ops")
    create_index_if_missing(db, "artists", "artists_name_trgm", ["name"], using="gin", opclass="gin_trgm_ops")
    create_index_if_missing(db, "enrichment_logs", "enrichment_logs_roots_entity_created_at",
                            ["entity_type", "entity_id", "created_at"], where="is_root_job")
