"""Shared fixtures: a database of the test session's own on PostgreSQL and SQLite.

Tests never touch the developer's data: PostgreSQL tests run in a database
created for this session and dropped at its end, SQLite tests in a temporary
file.  Nothing is skipped when a service is missing: a missing PostgreSQL or
Redis is an error.
"""

from __future__ import annotations

import os
import uuid

import psycopg2
import pytest

from migrations import apply_migrations
from models import ALL_MODELS, bind_database, database, load_settings
from models.database import is_postgres
from workers import app

# The processes the tests start (`enrich`, `dramatiq`) read their settings from the environment: make it
# the tests' (no Redis unless a test gives it, quick retries, a scratch default database), whatever the
# developer's shell says.
os.environ.pop("REDIS_URL", None)
os.environ["RETRY_MIN_BACKOFF_MS"] = "100"
os.environ["RETRY_MAX_BACKOFF_MS"] = "400"
os.environ.setdefault("DATABASE_URL",
                      "sqlite:///" + os.path.join(os.environ.get("TMPDIR", "/tmp"), f"enrich-tests-{os.getpid()}.db"))

# This process's app (the in-memory broker, every actor), on the same settings, started before the test
# modules import actor modules; tests/app_harness.py points its actors at a fake upstream.
app.start(load_settings())

from services import PG_ADMIN_URL  # noqa: E402  (overridable: see services.py)

# The `app` and `fake` fixtures (the real app on its in-memory broker, the fake upstream), for every test.
pytest_plugins = ["app_harness"]
BACKENDS = ["postgres", "sqlite"]


def _admin():
    conn = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    conn.autocommit = True
    return conn


def create_pg_database(prefix: str = "enrich_test") -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def pg_url():
    url = create_pg_database()
    db = bind_database(url)
    apply_migrations(db)
    db.close_all() if hasattr(db, "close_all") else db.close()
    yield url
    current = database.obj
    if current is not None:
        current.close_all() if hasattr(current, "close_all") else current.close()
    drop_pg_database(url)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'enrichment.db'}"
    db = bind_database(url)
    apply_migrations(db)
    db.close_all()
    return url


def _truncate(db) -> None:
    tables = [m._meta.table_name for m in reversed(ALL_MODELS)]
    if is_postgres(db):
        db.execute_sql("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
    else:
        with db.atomic():
            for t in tables:
                db.execute_sql(f'DELETE FROM "{t}"')


def _bound(url):
    db = bind_database(url)
    _truncate(db)
    yield db
    db.close_all()


@pytest.fixture(params=BACKENDS)
def db(request):
    """A migrated, empty database bound to the models; once per back end."""
    url = request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")
    yield from _bound(url)


@pytest.fixture
def url(db, request):
    """DATABASE_URL of the migrated, emptied test database of ``db``'s back end (for a subprocess)."""
    backend = request.node.callspec.params["db"]
    return request.getfixturevalue("pg_url" if backend == "postgres" else "sqlite_url")


@pytest.fixture
def pg_db(pg_url):
    """The migrated, empty PostgreSQL test database (for tests that need concurrency)."""
    yield from _bound(pg_url)


@pytest.fixture(params=BACKENDS)
def fresh_database_url(request, tmp_path):
    """An empty database with no tables at all, for migration tests."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = create_pg_database("enrich_fresh")
    yield url
    current = database.obj
    if current is not None:
        current.close_all()
    drop_pg_database(url)
