"""Data migration: every legacy row without a parent becomes a root.

Runs in short batches (see ``migrations.backfill``), so workers keep writing
while a table of millions of rows is converted.  Rows that carry a parent
stay children.
"""

from migrations.backfill import backfill_root_jobs

atomic = False  # each batch commits on its own


def up(migrator, db):
    backfill_root_jobs(db)
