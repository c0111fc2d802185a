"""A child that fails for good and then succeeds on a redelivery no longer degrades its root.

The last attempt's ``failed`` row is committed before the broker hears of the
failure; if the worker dies in between, the message is delivered again and
may succeed.  The root had counted that failure.  A trigger takes it back in
the same statement that moves the child's row away from ``failed``: one less
failed child, and with none left the root's status is its own again, which
``own_status`` keeps (``status`` shows ``degraded`` instead of it).

Only rows that really leave ``failed`` run the trigger (its WHEN clause is
checked without calling anything), so ordinary writes pay nothing.
"""

from peewee import CharField

from migrations.schema_ops import add_column_if_missing, is_postgres

# The root's own status is back when its last failed child recovered; a
# legacy root without one keeps showing ``degraded``.
_UNCOUNT = """
    UPDATE enrichment_logs
       SET failed_children = failed_children - 1,
           status = CASE WHEN failed_children = 1 AND status = 'degraded'
                         THEN COALESCE(own_status, status) ELSE status END
     WHERE job_id = NEW.parent_job_id AND {is_root} AND failed_children > 0
"""
_WHEN = "OLD.status = 'failed' AND NEW.status <> 'failed' AND NEW.parent_job_id IS NOT NULL"
TRIGGER = "enrichment_logs_failed_child_recovered"


def up(migrator, db):
    add_column_if_missing(migrator, db, "enrichment_logs", "own_status", CharField(max_length=20, null=True))
    if is_postgres(db):
        db.execute_sql(
            "CREATE OR REPLACE FUNCTION enrichment_logs_uncount_failed_child() RETURNS trigger AS $$ BEGIN"
            + _UNCOUNT.format(is_root="is_root_job")
            + "; RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        db.execute_sql(
            f"CREATE OR REPLACE TRIGGER {TRIGGER} AFTER UPDATE OF status ON enrichment_logs "
            f"FOR EACH ROW WHEN ({_WHEN}) EXECUTE FUNCTION enrichment_logs_uncount_failed_child()"
        )
    else:
        db.execute_sql(
            f"CREATE TRIGGER IF NOT EXISTS {TRIGGER} AFTER UPDATE OF status ON enrichment_logs "
            f"FOR EACH ROW WHEN {_WHEN} BEGIN {_UNCOUNT.format(is_root='is_root_job = 1')}; END"
        )
