"""Timeline queries: the roots list (filters, keyset pages, child counts) and one job's tree."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid

import pytest

from models import EnrichmentLog
from models.database import is_postgres
from models.timeline import decode_cursor, encode_cursor, get_tree, list_roots

T0 = dt.datetime(2025, 3, 1, 12, 0, 0)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def row(job_id, parent=None, *, created=0.0, operation=None, status="success", entity_type="album", entity_id=None,
        enqueued=None, started=None, completed=None, **extra) -> dict:
    """A job-log row as the middleware writes it; times are seconds after T0."""
    return {
        "id": uuid.uuid4(),
        "job_id": job_id,
        "parent_job_id": parent,
        "is_root_job": parent is None,
        "operation": operation or ("enrichment:album" if parent is None else "enrichment:artist"),
        "entity_type": entity_type,
        "entity_id": entity_id,
        "status": status,
        "created_at": at(created),
        "updated_at": at(created),
        "enqueued_at": None if enqueued is None else at(enqueued),
        "started_at": None if started is None else at(started),
        "completed_at": None if completed is None else at(completed),
        "duration_ms": None if started is None or completed is None else round((completed - started) * 1000),
        "retry_count": extra.pop("retry_count", 0),
        "last_error": extra.pop("last_error", None),
        "error_code": extra.pop("error_code", None),
        "reason": extra.pop("reason", None),
        "details": extra.pop("details", None),
    }


def insert(*rows: dict) -> None:
    EnrichmentLog.insert_many(list(rows)).execute()


@contextlib.contextmanager
def count_queries(db):
    """The SQL statements run inside the block."""
    seen: list[str] = []
    db.query_hooks.append(lambda event: seen.append(event.sql))
    try:
        yield seen
    finally:
        db.query_hooks.pop()


def album_tree(name: str, created: float, status="success") -> list[dict]:
    """A root started at ``created`` + 1 s with three children; the last completes 9 s after the root starts."""
    start = created + 1
    return [
        row(name, created=created, status=status, enqueued=created, started=start, completed=start + 0.5),
        row(f"{name}-mb", name, created=start + 0.1, enqueued=start + 0.1, started=start + 0.3, completed=start + 2),
        row(f"{name}-dc", name, created=start + 0.1, status="failed", enqueued=start + 0.1, started=start + 4,
            completed=start + 9, retry_count=2, last_error="HTTPStatusError: 503", error_code="upstream_5xx"),
        row(f"{name}-sp", name, created=start + 0.1, status="no_data", enqueued=start + 0.1, started=start + 1,
            completed=start + 1.5, reason="no match on Spotify"),
    ]


def test_roots_newest_first_with_children_counted_without_a_query_per_root(db):
    insert(*album_tree("old", 0), *album_tree("mid", 100, status="degraded"), *album_tree("new", 200))
    with count_queries(db) as queries:
        page = list_roots()
    # PostgreSQL joins the children to the page; SQLite counts them all in a second, grouped query.
    assert len(queries) == (1 if is_postgres(db) else 2)
    assert [r.job_id for r in page.roots] == ["new", "mid", "old"]
    assert page.next_cursor is None
    mid = page.roots[1]
    assert mid.status == "degraded" and mid.operation == "enrichment:album"
    assert mid.children == {"failed": 1, "no_data": 1, "success": 1}
    assert mid.child_count == 3
    assert mid.total_duration_ms == 9000  # root start to the last child's completion
    assert mid.duration_ms == 500
    json.dumps(page.as_dict())


def test_filters(db):
    artist = uuid.uuid4()
    insert(
        *album_tree("a1", 0),
        *album_tree("a2", 50, status="degraded"),
        row("ar1", created=60, operation="enrichment:artist", entity_type="artist", entity_id=artist, status="failed"),
        row("t1", created=70, operation="enrichment:track", entity_type="track"),
    )

    def ids(**filters):
        return [r.job_id for r in list_roots(**filters).roots]

    assert ids() == ["t1", "ar1", "a2", "a1"]
    assert ids(status="degraded") == ["a2"]
    assert ids(status="failed") == ["ar1"]  # the failed children are not roots
    assert ids(operation="enrichment:album") == ["a2", "a1"]
    assert ids(entity_type="artist") == ["ar1"]
    assert ids(entity_id=artist) == ["ar1"] == ids(entity_id=str(artist))
    assert ids(since=at(50), until=at(70)) == ["ar1", "a2"]  # since inclusive, until exclusive
    aware = at(50).replace(tzinfo=dt.timezone.utc).astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert ids(since=aware) == ["t1", "ar1", "a2"]
    assert ids(status="degraded", operation="enrichment:artist") == []


def test_cursor_pages_have_no_duplicates_and_no_gaps(db):
    # 23 roots, several created in the same microsecond: the id breaks the tie.
    roots = [row(f"r{i}", created=i // 3) for i in range(23)]
    insert(*roots, *[row(f"r{i}-c", f"r{i}", created=i // 3 + 0.5) for i in range(0, 23, 2)])
    expected = [r["job_id"] for r in sorted(roots, key=lambda r: (r["created_at"], r["id"].hex), reverse=True)]

    seen, cursor, pages = [], None, 0
    while True:
        page = list_roots(limit=5, cursor=cursor)
        seen += [r.job_id for r in page.roots]
        pages += 1
        if pages == 1:
            insert(row("late", created=999))  # a root written meanwhile does not shift later pages
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
    assert pages == 5
    assert list_roots(limit=23).next_cursor is not None  # "late" is now the newest
    cursor = list_roots(limit=20).next_cursor
    assert [r.job_id for r in list_roots(limit=5, status="success", cursor=cursor).roots] == expected[19:]


def test_cursor_round_trip_and_malformed_cursors():
    row_id = uuid.uuid4()
    assert decode_cursor(encode_cursor(at(1.25), row_id)) == (at(1.25), row_id)
    for bad in ["", "not a cursor", "!!!!", encode_cursor(at(1), row_id)[:-3],
                "WyJ4Il0", "eyJhIjogMX0", "WyIyMDI1LTAzLTAxIiwgIm5vdC1hLXV1aWQiXQ"]:
        with pytest.raises(ValueError, match="malformed cursor"):
            decode_cursor(bad)


def test_bad_arguments_are_value_errors(db):
    for kwargs in [{"limit": 0}, {"limit": 501}, {"status": "degradd"}, {"entity_type": "song"},
                   {"entity_id": "nope"}, {"cursor": "garbage"}]:
        with pytest.raises(ValueError):
            list_roots(**kwargs)


def test_legacy_rows_are_one_item_trees(db):
    legacy = row("legacy-1", created=5, started=5, completed=7)
    legacy.update(enqueued_at=None)
    no_job_id = row(None, created=6)
    insert(legacy, no_job_id)

    page = list_roots()
    assert [r.job_id for r in page.roots] == [None, "legacy-1"]
    assert page.roots[1].child_count == 0 and page.roots[1].children == {}
    assert page.roots[1].total_duration_ms == 2000

    tree = get_tree("legacy-1")
    assert [i.job_id for i in tree.items] == ["legacy-1"]
    assert tree.root.queue_wait_ms is None and tree.root.offset_ms == 0
    # A row without a job id is reached through its row id, as the roots list shows it.
    tree = get_tree(str(page.roots[0].id))
    assert tree.root_job_id is None and [i.id for i in tree.items] == [no_job_id["id"]]
    assert get_tree("no-such-job") is None
    assert get_tree(str(uuid.uuid4())) is None


def test_tree_from_any_job_in_it_in_start_order_with_waits_and_offsets(db):
    rows = album_tree("root", 10)
    insert(*reversed(rows), *album_tree("other", 20))

    with count_queries(db) as queries:
        from_child = get_tree("root-dc")
    assert len(queries) == 2
    with count_queries(db) as queries:
        from_root = get_tree("root")
    assert len(queries) == 2
    assert from_child == from_root
    tree = from_root
    assert tree.root_job_id == "root"
    assert [i.job_id for i in tree.items] == ["root", "root-mb", "root-sp", "root-dc"]
    assert [i.offset_ms for i in tree.items] == [0, 300, 1000, 4000]
    assert [i.queue_wait_ms for i in tree.items] == [1000, 200, 900, 3900]
    assert tree.total_duration_ms == 9000
    assert tree.root.is_root and not any(i.is_root for i in tree.items[1:])
    failed = tree.items[3]
    assert (failed.status, failed.retry_count, failed.error_code) == ("failed", 2, "upstream_5xx")
    assert failed.last_error == "HTTPStatusError: 503" and failed.duration_ms == 5000
    assert tree.items[2].reason == "no match on Spotify"

    as_json = json.loads(json.dumps(tree.as_dict()))
    assert as_json["items"][0]["started_at"] == "2025-03-01T12:00:11Z"
    assert as_json["items"][0]["entity_type"] == "album"


def test_children_of_a_missing_root_still_make_a_timeline(db):
    insert(row("orphan-1", "gone", started=3, completed=4), row("orphan-2", "gone", started=1, completed=2))
    tree = get_tree("orphan-1")
    assert tree.root is None and tree.root_job_id == "gone"
    assert [(i.job_id, i.offset_ms) for i in tree.items] == [("orphan-2", 0), ("orphan-1", 2000)]
