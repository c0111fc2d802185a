"""An index of the rows that have no parent and are not roots.

Only a worker from before job linking writes such a row (it leaves
``is_root_job`` at its default).  During a rolling deploy old workers keep
writing them while the backfill (0003) runs and after it ends; every
``enrich migrate`` marks them as roots (``migrations.backfill.link_unlinked_rows``)
and this partial index finds them at once however big the table.  It holds
no row at all once every worker runs linking code.
"""

from migrations.backfill import UNLINKED_INDEX, unlinked_predicate
from migrations.schema_ops import create_index_if_missing

atomic = False  # the index is built CONCURRENTLY on PostgreSQL


def up(migrator, db):
    create_index_if_missing(db, "enrichment_logs", UNLINKED_INDEX, ["id"], where=unlinked_predicate(db))
