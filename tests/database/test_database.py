"""The database binding: settings parsing, SQLite in WAL mode, one pooled connection per worker thread."""

from __future__ import annotations

import threading

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from middleware import DatabaseConnections
from models import Album, ConfigError, bind_database, database, load_settings, open_database

from linking_harness import drain


def test_sqlite_runs_in_wal_mode(sqlite_url):
    db = bind_database(sqlite_url)
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 10000


def test_unset_database_url_means_an_sqlite_file_here():
    assert load_settings({}).database_url == "sqlite:///enrichment.db"
    assert open_database("sqlite:///enrichment.db").database == "enrichment.db"


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://root@localhost/x", "unsupported scheme 'mysql'"),
        ("postgresql://root@localhost:5432/", "names no database"),
        ("sqlite:////no/such/folder/x.db", "does not exist"),
    ],
)
def test_bad_database_urls_name_what_is_wrong(url, message):
    with pytest.raises(ConfigError, match=message):
        open_database(url)


def test_a_password_never_appears_in_a_database_error():
    with pytest.raises(ConfigError) as info:
        open_database("mysql://root:hunter2pass@localhost/x")
    assert "hunter2pass" not in str(info.value)


def test_each_worker_thread_gets_its_own_connection_back_in_the_pool_after_a_message(db):
    broker = StubBroker()
    broker.emit_after("process_boot")
    broker.add_middleware(DatabaseConnections())
    seen = {}

    @dramatiq.actor(broker=broker)
    def touch(title):
        Album.create(title=title)
        seen[title] = (threading.get_ident(), id(database.connection()))

    worker = Worker(broker, worker_timeout=50, worker_threads=3)
    worker.start()
    try:
        for i in range(12):
            touch.send(f"album {i}")
        drain(broker, worker)
    finally:
        worker.stop()
    assert Album.select().count() == 12
    database.close()  # this test's own connection
    pool = database.obj
    # Nothing is checked out after the messages: every thread gave its connection back.
    assert len(pool._in_use) == 0
    threads = {thread for thread, _ in seen.values()}
    assert 1 <= len(threads) <= 3
    assert len({conn for _, conn in seen.values()}) <= pool._max_connections
