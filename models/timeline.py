"""Read the job log as timelines: the list of root jobs, one job's whole tree, an entity's trees, activity.

Used by the ``enrich`` command and the web dashboard; every function returns
plain dataclasses whose ``as_dict()`` is ready for ``json.dumps``.

Trees are flat: every descendant's ``parent_job_id`` is the root's ``job_id``.
A tree is complete when none of its rows is queued, running or retrying;
both views say so (``complete``, when, and the pending jobs by status),
worked out from the same rows they already read: no count kept by hand.
So a page of roots is one scan of a partial index over roots plus one probe
of the ``(parent_job_id, started_at)`` index per root (on PostgreSQL one
statement, a LATERAL join; on SQLite a second, grouped query), and a tree is
at most two queries (the job asked for, then its root and children).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import operator
import uuid
from collections import Counter, namedtuple
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

from peewee import SQL, NodeList, fn

from .database import is_postgres
from .entities import entity_key, search_entities
from .job_log import ENTITY_TYPES, PENDING_STATUSES, STATUSES, EnrichmentLog
from .plain import AsDict

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

Log = EnrichmentLog

# What a line of the roots list shows; the heavy columns (details, sources) stay behind.
ROOT_COLUMNS = (
    Log.id,
    Log.job_id,
    Log.operation,
    Log.entity_type,
    Log.entity_id,
    Log.status,
    Log.reason,
    Log.error_code,
    Log.triggered_by,
    Log.retry_count,
    Log.created_at,
    Log.started_at,
    Log.completed_at,
    Log.duration_ms,
)

# What a timeline item shows (and created_at, to order jobs not started yet).
TREE_COLUMNS = (
    Log.id,
    Log.job_id,
    Log.parent_job_id,
    Log.operation,
    Log.entity_type,
    Log.entity_id,
    Log.status,
    Log.created_at,
    Log.enqueued_at,
    Log.due_at,
    Log.started_at,
    Log.completed_at,
    Log.duration_ms,
    Log.retry_count,
    Log.last_error,
    Log.error_code,
    Log.reason,
    Log.sources,
    Log.fields_enriched,
    Log.details,
)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    """Stored timestamps are naive UTC; an aware bound is converted, a naive one taken as UTC."""
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _ms(later: Optional[dt.datetime], earlier: Optional[dt.datetime]) -> Optional[int]:
    if later is None or earlier is None:
        return None
    return round((later - earlier).total_seconds() * 1000)


@dataclass(slots=True)
class RootSummary(AsDict):
    """One root job, with its children counted by status and the tree's total duration."""

    id: uuid.UUID
    job_id: Optional[str]  # None on legacy rows; get_tree() takes the id instead
    operation: str
    entity_type: Optional[str]
    entity_id: Optional[uuid.UUID]
    status: str
    reason: Optional[str]
    error_code: Optional[str]
    triggered_by: Optional[str]
    retry_count: int
    created_at: dt.datetime
    started_at: Optional[dt.datetime]
    completed_at: Optional[dt.datetime]
    duration_ms: Optional[int]  # the root job's own
    children: dict[str, int] = field(default_factory=dict)  # status -> count
    child_count: int = 0
    total_duration_ms: Optional[int] = None  # root start to the last completion in the tree
    complete: bool = True  # no job of the tree (the root included) is queued, running or retrying
    tree_completed_at: Optional[dt.datetime] = None  # the last completion in the tree, once complete
    pending: dict[str, int] = field(default_factory=dict)  # queued/running/retrying -> count, the root included


@dataclass(slots=True)
class RootPage(AsDict):
    """One page of the roots list, newest first."""

    roots: list[RootSummary]
    next_cursor: Optional[str]  # None: this is the last page


@dataclass(slots=True)
class TimelineItem(AsDict):
    """One job of a tree, timed relative to the root's start."""

    id: uuid.UUID
    job_id: Optional[str]
    parent_job_id: Optional[str]
    is_root: bool
    operation: str
    entity_type: Optional[str]
    entity_id: Optional[uuid.UUID]
    status: str
    enqueued_at: Optional[dt.datetime]
    due_at: Optional[dt.datetime]  # when a delayed message (or a retry) is due
    started_at: Optional[dt.datetime]
    completed_at: Optional[dt.datetime]
    queue_wait_ms: Optional[int]  # started_at - enqueued_at
    duration_ms: Optional[int]
    offset_ms: Optional[int]  # started_at - the root's started_at
    retry_count: int
    last_error: Optional[str]
    error_code: Optional[str]
    reason: Optional[str]
    sources: list
    fields_enriched: list
    details: Optional[dict]


@dataclass(slots=True)
class Tree(AsDict):
    """A root and its children in start order (the root first); a legacy row is a tree of one."""

    root_job_id: Optional[str]
    items: list[TimelineItem]
    total_duration_ms: Optional[int]
    complete: bool = True  # no job is queued, running or retrying
    completed_at: Optional[dt.datetime] = None  # the last completion in the tree, once complete
    pending: dict[str, int] = field(default_factory=dict)  # queued/running/retrying -> count

    @property
    def root(self) -> Optional[TimelineItem]:
        """The root's item; None when only children of a missing root were found."""
        return self.items[0] if self.items and self.items[0].is_root else None


# -- cursors ---------------------------------------------------------------


def encode_cursor(created_at: dt.datetime, row_id: Union[uuid.UUID, str]) -> str:
    """An opaque cursor for the page after the root (created_at, id)."""
    raw = json.dumps([created_at.isoformat(), uuid.UUID(str(row_id)).hex], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """The (created_at, id) inside a cursor; ValueError naming the cursor when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        pair = json.loads(raw)
        # Valid base64 JSON of another shape ([date, 5], {...}, "x") is no cursor either.
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
            raise ValueError("not a [created_at, id] pair")
        created_at, row_id = pair
        return _naive_utc(dt.datetime.fromisoformat(created_at)), uuid.UUID(row_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        shown = cursor if len(cursor) <= 80 else cursor[:77] + "..."
        raise ValueError(f"malformed cursor {shown!r}: pass back a next_cursor exactly as it was given") from exc


# -- statements ------------------------------------------------------------


# Building a statement costs peewee more than PostgreSQL takes to run it, so
# each statement shape is built once and later calls only bind their values.
# The values bound by hand are checked against peewee's own the first time; a
# shape where they differ is never cached.
_compiled: dict[tuple, Optional[str]] = {}


def _run(shape: tuple, build, params: list, fields, wrap: str = "{}") -> list[tuple]:
    """Rows of the query ``build()`` returns (inside ``wrap``), as tuples of the Python values of ``fields``."""
    db = Log._meta.database
    key = (type(getattr(db, "obj", db)), wrap, *shape)
    sql = _compiled.get(key, False)
    if sql is False:
        built_sql, built_params = build().sql()
        sql = _compiled[key] = wrap.format(built_sql) if list(built_params) == list(params) else None
    if sql is None:
        built_sql, params = build().sql()
        sql = wrap.format(built_sql)
    rows = db.execute_sql(sql, params).fetchall()
    if is_postgres(db):
        # psycopg2 (with the UUID type peewee registers) already returns what
        # python_value would; converting every value again was a large share
        # of a page's client-side time.
        return rows
    converters = [f.python_value for f in fields]
    return [tuple(c(v) if v is not None else None for c, v in zip(converters, row)) for row in rows]


# -- the roots list --------------------------------------------------------


def _filter_params(status, operation, entity_type, entity_id, since, until, entities, job_ids) -> list:
    """The values ``_root_filters`` binds, in its order (validated there)."""
    params: list = [Log.is_root_job.db_value(True)]
    params += [v for v in (status, operation, entity_type) if v is not None]
    if entity_id is not None:
        params.append(Log.entity_id.db_value(uuid.UUID(str(entity_id))))
    params += [Log.created_at.db_value(_naive_utc(v)) for v in (since, until) if v is not None]
    for kind, ids in (entities or {}).items():
        params += [kind, *(Log.entity_id.db_value(i) for i in ids)]
    params += [Log.job_id.db_value(j) for j in job_ids or ()]
    return params


def _root_filters(status, operation, entity_type, entity_id, since, until, entities, job_ids) -> list:
    if status is not None and status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if entity_type is not None and entity_type not in ENTITY_TYPES:
        raise ValueError(f"entity_type {entity_type!r} is not one of {', '.join(ENTITY_TYPES)}")
    conditions = [Log.is_root_job == True]  # noqa: E712 (peewee builds SQL from ==)
    if status is not None:
        conditions.append(Log.status == status)
    if operation is not None:
        conditions.append(Log.operation == operation)
    if entity_type is not None:
        conditions.append(Log.entity_type == entity_type)
    if entity_id is not None:
        try:
            conditions.append(Log.entity_id == uuid.UUID(str(entity_id)))
        except ValueError:
            raise ValueError(f"entity_id {entity_id!r} is not a UUID") from None
    if since is not None:
        conditions.append(Log.created_at >= _naive_utc(since))
    if until is not None:
        conditions.append(Log.created_at < _naive_utc(until))
    if entities:  # a search's matches; typed, so that the (entity_type, entity_id) indexes answer
        conditions.append(functools.reduce(operator.or_, [(Log.entity_type == kind) & Log.entity_id.in_(ids)
                                                          for kind, ids in entities.items()]))
    if job_ids is not None:  # an entity's history
        conditions.append(Log.job_id.in_(job_ids))
    return conditions


def _child_stats(root_job_ids: list[str]) -> dict[str, tuple[dict[str, int], Optional[dt.datetime]]]:
    """For each root job id: its children counted by status and their latest completion, in one query."""
    if not root_job_ids:
        return {}
    query = lambda: (  # noqa: E731
        Log.select(Log.parent_job_id, Log.status, fn.COUNT(Log.id), fn.MAX(Log.completed_at))
        .where(Log.parent_job_id.in_(root_job_ids))
        .group_by(Log.parent_job_id, Log.status)
    )
    fields = (Log.parent_job_id, Log.status, Log.failed_children, Log.completed_at)  # failed_children: an int
    stats: dict[str, tuple[dict[str, int], Optional[dt.datetime]]] = {}
    for parent, status, count, last_completed in _run(("children", len(root_job_ids)), query, root_job_ids, fields):
        counts, latest = stats.get(parent, ({}, None))
        counts[status] = count
        stats[parent] = (counts, max(filter(None, (latest, last_completed)), default=None))
    return stats


# The page's roots, each with the statuses and latest completion of its
# children: one round trip instead of two, the children found through the
# (parent_job_id, started_at) index.  NULL job ids match no children.
_WITH_CHILDREN = (
    "SELECT r.*, kids.statuses, kids.last_completed FROM ({}) AS r"
    " LEFT JOIN LATERAL (SELECT array_agg(c.status) AS statuses, MAX(c.completed_at) AS last_completed"
    f' FROM "{Log._meta.table_name}" AS c WHERE c.parent_job_id = r.job_id) AS kids ON true'
    " ORDER BY r.created_at DESC, r.id DESC"
)
# Positions in a ROOT_COLUMNS row (by name: == on a peewee field builds SQL).
_ID, _JOB_ID, _STATUS, _CREATED_AT, _STARTED_AT, _COMPLETED_AT = (
    [c.name for c in ROOT_COLUMNS].index(name)
    for name in ("id", "job_id", "status", "created_at", "started_at", "completed_at")
)


def pending_counts(statuses: Iterable[str]) -> dict[str, int]:
    """How many of ``statuses`` are queued, running or retrying: a tree with none is complete."""
    counts = Counter(status for status in statuses if status in PENDING_STATUSES)
    return {status: counts[status] for status in PENDING_STATUSES if counts[status]}


def _summary(row: tuple, counts: dict[str, int], last_child: Optional[dt.datetime]) -> RootSummary:
    last = max(filter(None, (row[_COMPLETED_AT], last_child)), default=None)
    pending = pending_counts([row[_STATUS], *counts.elements()])
    return RootSummary(
        *row,  # the ROOT_COLUMNS, in the summary's field order
        children=dict(sorted(counts.items())),
        child_count=sum(counts.values()),
        total_duration_ms=_ms(last, row[_STARTED_AT]),
        complete=not pending,
        tree_completed_at=None if pending else last,
        pending=pending,
    )


def list_roots(
    status: Optional[str] = None,
    operation: Optional[str] = None,
    entity_type: Optional[str] = None,
    entity_id: Union[uuid.UUID, str, None] = None,
    since: Optional[dt.datetime] = None,
    until: Optional[dt.datetime] = None,
    limit: int = DEFAULT_LIMIT,
    cursor: Optional[str] = None,
    search: Optional[str] = None,
    _job_ids: Optional[list[str]] = None,
) -> RootPage:
    """The newest root jobs first, filtered, ``limit`` at a time.

    ``since`` is inclusive and ``until`` exclusive, both on ``created_at``.
    ``search`` keeps the roots whose entity is an album whose title, or an
    artist whose name, contains it (ignoring case; see ``search_entities``).
    Pass the page's ``next_cursor`` back as ``cursor`` for the next page: a
    keyset on (created_at, id), so page 1000 costs what page 1 does and rows
    written meanwhile never shift a page.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit {limit} must be between 1 and {MAX_LIMIT}")
    entities = None
    if search is not None and search.strip():
        entities = search_entities(search)
        if not entities:
            return RootPage(roots=[], next_cursor=None)
    if since is not None and until is not None and _naive_utc(since) >= _naive_utc(until):
        raise ValueError("the time window is empty: since must be earlier than until")
    filters = (status, operation, entity_type, entity_id, since, until, entities, _job_ids)
    conditions, params = _root_filters(*filters), _filter_params(*filters)
    if cursor is not None:
        created_at, row_id = decode_cursor(cursor)
        # (created_at, id) < cursor, spelled so both back ends bound the index scan on created_at.
        conditions.append((Log.created_at <= created_at) & ((Log.created_at < created_at) | (Log.id < row_id)))
        params += [Log.created_at.db_value(created_at)] * 2 + [Log.id.db_value(row_id)]
    params.append(limit + 1)
    shape = ("roots", status is not None, operation is not None, entity_type is not None, entity_id is not None,
             since is not None, until is not None, cursor is not None,
             tuple((kind, len(ids)) for kind, ids in (entities or {}).items()),
             None if _job_ids is None else len(_job_ids))
    query = lambda: (  # noqa: E731
        Log.select(*ROOT_COLUMNS)
        .where(*conditions)
        .order_by(Log.created_at.desc(), Log.id.desc())
        .limit(limit + 1)  # one more tells whether there is a next page
    )
    if is_postgres(Log._meta.database):
        rows = _run(shape, query, params, ROOT_COLUMNS, wrap=_WITH_CHILDREN)
        page = [(row[:-2], Counter(row[-2] or ()), row[-1]) for row in rows[:limit]]
    else:
        rows = _run(shape, query, params, ROOT_COLUMNS)
        stats = _child_stats([row[_JOB_ID] for row in rows[:limit] if row[_JOB_ID] is not None])
        page = []
        for row in rows[:limit]:
            counts, last_completed = stats.get(row[_JOB_ID], ({}, None))
            page.append((row, Counter(counts), last_completed))
    last = page[-1][0] if len(rows) > limit else None
    return RootPage(
        roots=[_summary(*entry) for entry in page],
        next_cursor=None if last is None else encode_cursor(last[_CREATED_AT], last[_ID]),
    )


# -- an entity's history, activity ------------------------------------------

HISTORY_MAX_ROWS = 5000  # an entity's newest job rows read to find the trees that touched it


def entity_history(entity_type: str, entity_id: Union[uuid.UUID, str], limit: int = DEFAULT_LIMIT,
                   cursor: Optional[str] = None) -> RootPage:
    """The roots of every tree in which a job touched this entity, newest first (``list_roots`` pages).

    The trees are found among the entity's newest ``HISTORY_MAX_ROWS`` job
    rows, through the (entity_type, entity_id, created_at) index.
    """
    entity_uuid = entity_key(entity_type, entity_id)
    touched = (
        Log.select(fn.COALESCE(Log.parent_job_id, Log.job_id))
        .where((Log.entity_type == entity_type) & (Log.entity_id == entity_uuid))
        .order_by(Log.created_at.desc())
        .limit(HISTORY_MAX_ROWS)
    )
    root_ids = list(dict.fromkeys(job for (job,) in touched.tuples() if job is not None))
    if not root_ids:
        return RootPage(roots=[], next_cursor=None)
    return list_roots(limit=limit, cursor=cursor, _job_ids=root_ids)


@dataclass(slots=True)
class ActivityBucket(AsDict):
    """How many jobs of one status were written in the interval starting at ``start``."""

    start: dt.datetime
    status: str
    count: int


def job_activity(since: dt.datetime, until: dt.datetime, bucket_seconds: int = 60) -> list[ActivityBucket]:
    """Jobs counted by status and by ``bucket_seconds`` interval of ``created_at``, oldest first.

    ``status IN (every status)`` lets PostgreSQL read the (status,
    created_at) index as one short range per status.
    """
    if bucket_seconds < 1:
        raise ValueError(f"bucket_seconds {bucket_seconds} must be at least 1")
    since, until = _naive_utc(since), _naive_utc(until)
    if is_postgres(Log._meta.database):
        epoch = fn.date_part("epoch", Log.created_at)
    else:
        epoch = fn.CAST(NodeList((fn.strftime("%s", Log.created_at), SQL("AS INTEGER"))))
    bucket = fn.floor(epoch / bucket_seconds)
    query = (
        Log.select(bucket, Log.status, fn.COUNT(Log.id))
        .where(Log.status.in_(STATUSES) & (Log.created_at >= since) & (Log.created_at < until))
        .group_by(bucket, Log.status)
        .order_by(bucket)
    )
    epoch_start = dt.datetime(1970, 1, 1)
    return [
        ActivityBucket(epoch_start + dt.timedelta(seconds=int(b) * bucket_seconds), status, count)
        for b, status, count in query.tuples()
    ]


# -- one tree --------------------------------------------------------------


def _as_uuid(value: str) -> Optional[uuid.UUID]:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


_TreeRow = namedtuple("_TreeRow", [c.name for c in TREE_COLUMNS])


def _tree_rows(shape: tuple, condition, params: list) -> list:
    """Rows as named tuples of TREE_COLUMNS: no model instances, no JSON decoding of unused columns."""
    rows = _run(shape, lambda: Log.select(*TREE_COLUMNS).where(condition()), params, TREE_COLUMNS)
    return [_TreeRow._make(row) for row in rows]


def _find_job(job_id: str):
    """The row with this job id, or (for legacy rows without one) this row id."""
    row_id = _as_uuid(job_id)
    if row_id is None:
        rows = _tree_rows(("job",), lambda: Log.job_id == job_id, [job_id])
    else:
        rows = _tree_rows(("job or id",), lambda: (Log.job_id == job_id) | (Log.id == row_id),
                          [job_id, Log.id.db_value(row_id)])
    return next((r for r in rows if r.job_id == job_id), rows[0] if rows else None)


def _start_order(row) -> tuple:
    # The root first, then by start; jobs not started yet last, in the order they were written.
    return (row.parent_job_id is not None, row.started_at is None, row.started_at or dt.datetime.min, row.created_at)


def _item(row, origin: Optional[dt.datetime]) -> TimelineItem:
    return TimelineItem(
        id=row.id,
        job_id=row.job_id,
        parent_job_id=row.parent_job_id,
        is_root=row.parent_job_id is None,
        operation=row.operation,
        entity_type=row.entity_type,
        entity_id=row.entity_id,
        status=row.status,
        enqueued_at=row.enqueued_at,
        due_at=row.due_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        queue_wait_ms=_ms(row.started_at, row.enqueued_at),
        duration_ms=row.duration_ms,
        offset_ms=_ms(row.started_at, origin),
        retry_count=row.retry_count,
        last_error=row.last_error,
        error_code=row.error_code,
        reason=row.reason,
        sources=row.sources or [],
        fields_enriched=row.fields_enriched or [],
        details=row.details,
    )


def _can_be_stored(text) -> bool:
    """True when ``text`` could be a job id in a row: a string without NUL that UTF-8 can encode."""
    if not isinstance(text, str) or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def get_tree(job_id: str) -> Optional[Tree]:
    """The whole tree around any of its jobs (root or child), or None when no job has that id.

    Offsets count from the root's start; when the root row is missing or has
    not started, from the earliest start in the tree.
    """
    if not _can_be_stored(job_id):
        return None  # no row can have it: PostgreSQL would refuse the query itself
    row = _find_job(job_id)
    if row is None:
        return None
    if row.parent_job_id is not None:  # a child: fetch its root and all the root's children
        root_job_id = row.parent_job_id
        rows = _tree_rows(("tree",), lambda: (Log.job_id == root_job_id) | (Log.parent_job_id == root_job_id),
                          [root_job_id, root_job_id])
    elif row.job_id is not None:  # a root: fetch its children
        root_job_id = row.job_id
        rows = [row, *_tree_rows(("children of",), lambda: Log.parent_job_id == root_job_id, [root_job_id])]
    else:  # a legacy row without a job id: nothing can point at it
        root_job_id, rows = None, [row]
    rows.sort(key=_start_order)
    root = rows[0] if rows[0].parent_job_id is None else None
    starts = [r.started_at for r in rows if r.started_at is not None]
    origin = root.started_at if root is not None and root.started_at else min(starts, default=None)
    last = max((r.completed_at for r in rows if r.completed_at is not None), default=None)
    pending = pending_counts(r.status for r in rows)
    return Tree(
        root_job_id=root_job_id,
        items=[_item(r, origin) for r in rows],
        total_duration_ms=_ms(last, origin),
        complete=not pending,
        completed_at=None if pending else last,
        pending=pending,
    )
