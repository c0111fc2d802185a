"""``attempt_started_ms``: which delivery of a job's attempt wrote its row, so a late write never wins.

A message is delivered again when the worker that held it died (its
heartbeat expired): the same attempt, the same ``retry_count``, run a second
time.  The dead worker's last entry may still be applied after the new run's
(a drainer claims it about 10 s late), and a stale ``failed`` would replace a
redelivered ``success``.  Every write now carries when its attempt started
(milliseconds since the epoch; 0 for the ``queued`` write made at send time),
and the upsert keeps the row of the latest delivery within a ``retry_count``
(``middleware/job_log/upsert.py``).  Rows written before keep 0.
"""

from peewee import SQL, BigIntegerField

from migrations.schema_ops import add_column_if_missing


def up(migrator, db):
    add_column_if_missing(migrator, db, "enrichment_logs", "attempt_started_ms",
                          BigIntegerField(default=0, constraints=[SQL("DEFAULT 0")]))
