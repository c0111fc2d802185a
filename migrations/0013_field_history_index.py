"""An index of the job rows that changed a catalog field, by entity and time.

``models.history.field_history`` reads an entity's changes newest first.  The
(entity_type, entity_id, created_at) index would find every job of the
entity (checks, image jobs, retries: several per tree) and read each row's
details to throw most away; this partial one holds only the rows whose
``fields_enriched`` is not empty, so an entity touched by thousands of trees
costs its changes.
"""

from migrations.schema_ops import create_index_if_missing
from models.history import CHANGED_INDEX, changed_rows

atomic = False  # the index is built CONCURRENTLY on PostgreSQL


def up(migrator, db):
    create_index_if_missing(db, "enrichment_logs", CHANGED_INDEX, ["entity_type", "entity_id", "created_at"],
                            where=changed_rows(db))
