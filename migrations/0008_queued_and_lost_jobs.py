"""Jobs visible from the moment they are sent: ``queued`` and ``lost`` rows, the message kept for a resend.

* ``message`` (JSON): what is needed to send the same message again (actor,
  queue, args, kwargs, the options that are not the linking's own), written
  with the ``queued`` row at send time.
* ``due_at``: when a delayed message (or a retry after its backoff) is due;
  for a message sent without a delay, when it was sent.
* Statuses are plain text, so ``queued`` and ``lost`` need no schema change;
  but a ``lost`` child counts against its root like a ``failed`` one, so
  migration 0006's trigger now takes the failure back when a child leaves
  either (a lost or failed job sent again with ``enrich resend``).
"""

import importlib

from peewee import DateTimeField, JSONField

from migrations.schema_ops import add_column_if_missing, is_postgres

TABLE = "enrichment_logs"
TRIGGER = "enrichment_logs_failed_child_recovered"
FUNCTION = "enrichment_logs_uncount_failed_child"

# 0006's statement (one less failed child, the root's own status back with none left), under a wider WHEN.
_UNCOUNT = importlib.import_module("migrations.0006_recovered_child_failures")._UNCOUNT
_WHEN = ("OLD.status IN ('failed', 'lost') AND NEW.status NOT IN ('failed', 'lost') "
         "AND NEW.parent_job_id IS NOT NULL")


def up(migrator, db):
    add_column_if_missing(migrator, db, TABLE, "message", JSONField(null=True))
    add_column_if_missing(migrator, db, TABLE, "due_at", DateTimeField(null=True))
    if is_postgres(db):
        db.execute_sql(
            f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger AS $$ BEGIN"
            + _UNCOUNT.format(is_root="is_root_job")
            + "; RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        db.execute_sql(
            f"CREATE OR REPLACE TRIGGER {TRIGGER} AFTER UPDATE OF status ON {TABLE} "
            f"FOR EACH ROW WHEN ({_WHEN}) EXECUTE FUNCTION {FUNCTION}()"
        )
    else:
        # SQLite has no CREATE OR REPLACE TRIGGER; the migration runs in one transaction.
        db.execute_sql(f"DROP TRIGGER IF EXISTS {TRIGGER}")
        db.execute_sql(
            f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status ON {TABLE} "
            f"FOR EACH ROW WHEN {_WHEN} BEGIN {_UNCOUNT.format(is_root='is_root_job = 1')}; END"
        )
