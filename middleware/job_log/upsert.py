"""The SQL that writes job-log rows: one guarded upsert (the root's count is ``root_status``).

It is safe to run in any order and more than once:

* the upsert only moves a row forward, ordered by (retry_count,
  attempt_started_ms, phase) where the ``queued`` write made at send time
  (attempt_started_ms 0) precedes everything of its attempt, a ``retrying``
  write of attempt N precedes the ``running`` write of attempt N+1, which
  precedes any final status of that attempt (``enrich resend`` sends a job
  again with retry_count + 1, so its ``queued`` row moves a final row
  forward, the one way back from a final status);
* a message delivered again (its worker died before the ack) runs the same
  attempt later: its writes win over the dead worker's, which a drainer may
  apply after them (``attempt_started_ms``, migration 0014);
* a root's own write looks at its ``failed_children`` inside the same
  statement (``root_status``, rule 2), so a child's failure counted before
  or after it turns the root ``degraded`` either way.
"""

from __future__ import annotations

import re
import weakref
from typing import Any, Optional

import peewee
from peewee import EXCLUDED, SQL, Case, Function, JSONField, Select, UUIDField, fn

from models.database import is_postgres
from models.job_log import JOB_ID_PRESENT, QUEUED, RETRYING, RUNNING, EnrichmentLog

from ..json_text import json_text
from .root_status import status_on_own_write
from .rows import ROW_COLUMNS

T = EnrichmentLog

# Columns a later write only fills in, never blanks out.
_KEEP_WHEN_MISSING = (
    "operation",
    "entity_type",
    "entity_id",
    "reason",
    "data_quality_before",
    "data_quality_after",
    "last_error",
    "error_code",
    "enqueued_at",
    "duration_ms",
    "details",
    "triggered_by",
    "message",
    "due_at",
)


def phase_rank(status: str) -> int:
    """Order of writes within one retry_count: queued < retrying < running < final."""
    return {QUEUED: -1, RETRYING: 0, RUNNING: 1}.get(status, 2)


def order_key(row: dict[str, Any]) -> tuple[int, int, int]:
    return (row["retry_count"], row["attempt_started_ms"], phase_rank(row["status"]))


def applies(stored: Optional[dict[str, Any]], row: dict[str, Any]) -> bool:
    """Whether the upsert applies ``row`` over the ``stored`` one (``stored_rows``; None: no row yet)."""
    return stored is None or order_key(row) >= order_key(stored)


def merge_rows(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Two pending writes of one job folded into one, exactly as ``upsert_rows`` would apply them."""
    later, earlier = (new, old) if order_key(new) >= order_key(old) else (old, new)
    row = dict(later)
    for name in _KEEP_WHEN_MISSING:
        if row[name] is None:
            row[name] = earlier[name]
    row["id"], row["created_at"] = old["id"], old["created_at"]
    row["started_at"] = min(filter(None, (old["started_at"], new["started_at"])), default=None)
    return row


def _sql_rank(status):
    return Case(None, [(status == QUEUED, -1), (status == RETRYING, 0), (status == RUNNING, 1)], 2)


def _update_clause() -> dict:
    update = {getattr(T, name): fn.COALESCE(getattr(EXCLUDED, name), getattr(T, name)) for name in _KEEP_WHEN_MISSING}
    update.update(
        {
            T.parent_job_id: EXCLUDED.parent_job_id,
            T.is_root_job: EXCLUDED.is_root_job,
            T.status: status_on_own_write(EXCLUDED.status, T.failed_children),  # root_status, rule 2
            T.own_status: EXCLUDED.own_status,
            T.retry_count: EXCLUDED.retry_count,
            T.attempt_started_ms: EXCLUDED.attempt_started_ms,
            T.sources: EXCLUDED.sources,
            T.fields_enriched: EXCLUDED.fields_enriched,
            T.api_call_count: EXCLUDED.api_call_count,
            # Every write of a job carries its first attempt's start (JobLinking keeps it
            # in the message's options across retries); the first one written stays.
            T.started_at: fn.COALESCE(T.started_at, EXCLUDED.started_at),
            T.completed_at: EXCLUDED.completed_at,
            T.updated_at: EXCLUDED.updated_at,
        }
    )
    return update


# failed_children is only ever changed by the rule in root_status; own_status is
# the written status, kept apart.
INSERT_COLUMNS = ROW_COLUMNS + ("failed_children", "own_status")
_INSERT_FIELDS = [getattr(T, c) for c in INSERT_COLUMNS]

# Compiling the statement costs far more than running it (the update clause
# is a tree of a hundred nodes), so each batch size is compiled by peewee
# once and later batches only bind their values.
_CACHED_BATCH_SIZES = 64
_compiled: dict[tuple[type, int], tuple[str, list]] = {}


def _moves_forward():
    """``order_key`` of the write >= the row's, as SQL."""
    same_attempt = (EXCLUDED.attempt_started_ms == T.attempt_started_ms) & (
        _sql_rank(EXCLUDED.status) >= _sql_rank(T.status))
    same_count = (EXCLUDED.attempt_started_ms > T.attempt_started_ms) | same_attempt
    return (EXCLUDED.retry_count > T.retry_count) | ((EXCLUDED.retry_count == T.retry_count) & same_count)


def _upsert_query(rows: list[dict[str, Any]]):
    return T.insert_many([_insert_row(row) for row in rows], fields=_INSERT_FIELDS).on_conflict(
        conflict_target=[T.job_id], conflict_where=JOB_ID_PRESENT, update=_update_clause(), where=_moves_forward()
    )


def _insert_row(row: dict[str, Any]) -> dict[str, Any]:
    return dict(row, failed_children=0, own_status=row["status"])


def _converter(field):
    """The bound parameter peewee would send for a value of ``field``.

    Only UUID and JSON columns change their values; the rest are bound as
    they are (they already have the column's type).  Where peewee wraps a
    value in SQL (SQLite's ``json(?)``), the wrapper is already in the
    compiled statement: only its argument is bound.
    """
    if not isinstance(field, (UUIDField, JSONField)):
        return None

    def convert(value):
        value = field.db_value(value)
        while isinstance(value, Function) and len(value.arguments) == 1:
            value = value.arguments[0]
        return value

    return convert


_CONVERTERS = [(name, _converter(field)) for name, field in zip(INSERT_COLUMNS, _INSERT_FIELDS)]


def _bound_values(rows: list[dict[str, Any]]) -> list:
    values = []
    for row in rows:
        row = _insert_row(row)
        for name, convert in _CONVERTERS:
            value = row.get(name, 0)
            values.append(value if convert is None or value is None else convert(value))
    return values


def upsert_rows(rows: list[dict[str, Any]], db=None) -> None:
    """Insert or move forward one row per job id, in one statement (on ``db``, default: the model's)."""
    db = db if db is not None else T._meta.database
    if is_postgres(db):
        _upsert_postgres(db, rows)
        return
    key = (type(getattr(db, "obj", db)), len(rows))  # the SQL depends on the dialect only
    compiled = _compiled.get(key)
    if compiled is None:
        query = _upsert_query(rows)
        if len(rows) > _CACHED_BATCH_SIZES:
            query.execute(db)
            return
        sql, params = query.sql()
        constants = params[len(rows) * len(INSERT_COLUMNS):]
        _compiled[key] = compiled = (sql, constants)
    sql, constants = compiled
    db.execute_sql(sql, _bound_values(rows) + constants)


# On PostgreSQL a batch travels as ONE JSON parameter of a statement prepared
# once per connection: binding 26 parameters per row and sending and planning
# a statement of hundreds of them cost more CPU than the rows themselves.
_PREPARED_NAME = "enrich_upsert_job_logs"
_prepared_on: "weakref.WeakSet" = weakref.WeakSet()  # connections that hold the statement
_postgres_statement: list = []  # [(PREPARE sql, EXECUTE sql)], built on first use

_RECORD_TYPES = (
    (peewee.UUIDField, "uuid"),
    (peewee.BooleanField, "boolean"),
    (peewee.BigIntegerField, "bigint"),  # before IntegerField, its base class
    (peewee.IntegerField, "integer"),
    (peewee.DateTimeField, "timestamp"),
    (JSONField, "jsonb"),
)


def _record_type(field) -> str:
    return next((name for cls, name in _RECORD_TYPES if isinstance(field, cls)), "text")


def _build_postgres_statement() -> tuple[str, str]:
    record = ", ".join(f'"{name}" {_record_type(getattr(T, name))}' for name in ROW_COLUMNS)
    source = Select(
        from_list=[SQL(f"jsonb_to_recordset(%s::jsonb) AS r({record})", ["rows"])],
        columns=[SQL(f'r."{name}"') for name in ROW_COLUMNS] + [SQL("0"), SQL('r."status"')],
    )
    query = T.insert_from(source, fields=_INSERT_FIELDS).on_conflict(
        conflict_target=[T.job_id], conflict_where=JOB_ID_PRESENT, update=_update_clause(), where=_moves_forward()
    )
    sql, params = query.sql()
    # The statement's other parameters are its own constants (statuses, ranks):
    # written into it once, so each EXECUTE binds nothing but the rows.
    values = iter(["$1", *(_literal(value) for value in params[1:])])
    prepared, count = re.subn(r"%s", lambda _: next(values), sql)
    if count != len(params) or params[0] != "rows":
        raise RuntimeError("the job-log upsert's placeholders do not match its parameters")
    return f"PREPARE {_PREPARED_NAME} AS {prepared}", f"EXECUTE {_PREPARED_NAME}(%s)"


def _literal(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and re.fullmatch(r"[a-z_]+", value):
        return f"'{value}'"
    raise RuntimeError(f"unexpected constant in the job-log upsert: {value!r}")


def _upsert_postgres(db, rows: list[dict[str, Any]]) -> None:
    if not _postgres_statement:
        _postgres_statement.append(_build_postgres_statement())
    prepare, execute = _postgres_statement[0]
    conn = db.connection()
    if conn not in _prepared_on:
        db.execute_sql(prepare)
        _prepared_on.add(conn)
    # Keys the record does not name are ignored; str() for anything JSON has no type for.
    db.execute_sql(execute, [json_text(rows, default=str)])


def stored_rows(job_ids: list[str], lock: bool, db=None) -> dict[str, dict[str, Any]]:
    """The status and ``order_key`` columns of each existing row; ``lock`` holds the rows until commit (PostgreSQL)."""
    if not job_ids:
        return {}
    query = T.select(T.job_id, T.status, T.retry_count, T.attempt_started_ms).where(T.job_id.in_(job_ids))
    if lock:
        query = query.for_update()
    return {row["job_id"]: row for row in query.dicts().execute(db or T._meta.database)}


def existing_roots(job_ids: list[str], db=None) -> set[str]:
    """Which of these job ids have a root row."""
    if not job_ids:
        return set()
    query = T.select(T.job_id).where(T.job_id.in_(job_ids) & (T.is_root_job == True))  # noqa: E712
    return {job_id for (job_id,) in query.tuples().execute(db or T._meta.database)}


__all__ = ["merge_rows", "order_key", "applies", "upsert_rows", "stored_rows", "existing_roots"]
