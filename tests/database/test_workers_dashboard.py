"""Worker records as ``WorkerRegistry`` writes them, read by ``/workers``, ``GET /api/workers`` and ``enrich workers``.

A real Dramatiq worker (threads of this process) on the test Redis runs a job that waits; a second record is
one a killed worker left.  No database is read by these pages: they run on one back end.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.worker import Worker

from dashboard import create_app
from middleware import JobLinking, WorkerRegistry
from models import Settings, load_settings
from workers.cli.main import main as enrich_main

from linking_harness import wait_for
from services import REDIS_TEST_URL
from web_client import Web

# A database of the Redis of its own: the process tests flush theirs.
URL = REDIS_TEST_URL.rsplit("/", 1)[0] + "/12"
ALBUM = str(uuid.uuid4())


@pytest.fixture
def running(pg_db):
    """A live worker running ``held_job(ALBUM)`` under a tree, and the record of a killed one; yields the job.
    (JobLinking gives the actor its ``operation`` and ``entity``; its rows are not what is tested here.)"""
    client = redis.Redis.from_url(URL)
    client.flushdb()
    broker = RedisBroker(url=URL)
    broker.add_middleware(WorkerRegistry(interval_seconds=0.1))
    broker.add_middleware(JobLinking(lost_work_interval=0))
    release = threading.Event()

    @dramatiq.actor(broker=broker, queue_name="held", actor_name="held_job", entity=("album", "album_id"),
                    operation="enrichment:album")
    def held_job(album_id):
        release.wait(30)

    worker = Worker(broker, queues={"held"}, worker_threads=3)
    worker.start()
    killed_at = int(time.time() * 1000) - 120_000
    client.hset("dramatiq:enrich:worker:killed", mapping={
        "host": "elsewhere", "pid": 4242, "queues": '["default"]', "threads": 8, "started_at_ms": killed_at,
        "heartbeat_ms": killed_at, "jobs": json.dumps([{"job_id": "held-when-killed", "actor": "slow",
                                                         "started_at_ms": killed_at - 5000}])})
    client.hset("dramatiq:enrich:worker:garbled", mapping={"heartbeat_ms": "soon", "jobs": "not json"})
    client.zadd("dramatiq:enrich:workers", {"killed": killed_at, "garbled": killed_at - 1})
    try:
        job = held_job.send_with_options(args=(ALBUM,), parent_job_id="7d6e5f4c-3b2a-4c8e-9b1a-3c9b7a1e2f4d")
        wait_for(lambda: job.message_id in (client.hget(f"dramatiq:enrich:worker:{broker.broker_id}", "jobs") or b"").decode())
        yield job
    finally:
        release.set()
        worker.stop()
        broker.close()
        client.flushdb()  # the journal's stream too


def test_api_lists_the_live_worker_with_its_job_then_the_gone_ones(running):
    web = Web(create_app(Settings(redis_url=URL, redis_heartbeat_timeout_ms=60_000)))
    answer = web.get("/api/workers").json()
    assert answer["heartbeat_timeout_ms"] == 60_000
    live, killed, garbled = answer["workers"]
    assert (live["state"], live["queues"], live["threads"]) == ("live", ["held"], 3)
    assert live["heartbeat_age_seconds"] < 30
    [job] = live["jobs"]
    assert job["job_id"] == running.message_id
    assert (job["tree_id"], job["actor"], job["operation"], job["entity_type"], job["entity_id"], job["attempt"]) == (
        "7d6e5f4c-3b2a-4c8e-9b1a-3c9b7a1e2f4d", "held_job", "enrichment:album", "album", ALBUM, 0)
    assert job["running_for_seconds"] >= 0
    assert (killed["state"], killed["host"], killed["pid"]) == ("gone", "elsewhere", 4242)
    assert [j["job_id"] for j in killed["jobs"]] == ["held-when-killed"]
    assert killed["heartbeat_age_seconds"] >= 120
    assert (garbled["state"], garbled["jobs"], garbled["pid"]) == ("gone", [], None)  # shown, never a 500


def test_the_page_links_each_job_to_its_tree_and_entity(running):
    web = Web(create_app(Settings(redis_url=URL)))
    page = web.get("/workers")
    assert page.status_code == 200
    assert '<a href="/workers" class="here">Workers</a>' in page.text
    assert 'href="/trees/7d6e5f4c-3b2a-4c8e-9b1a-3c9b7a1e2f4d"' in page.text
    assert f'href="/albums/{ALBUM}"' in page.text
    assert page.text.count('class="worker live"') == 1 and page.text.count('class="worker gone"') == 2


def test_without_redis_or_when_it_is_down_one_line_503():
    web = Web(create_app(Settings()))
    answer = web.get("/api/workers")
    assert (answer.status_code, answer.json()) == (
        503, {"error": "the dashboard has no REDIS_URL: the workers' records are in their Redis"})
    down = Web(create_app(Settings(redis_url="redis://127.0.0.1:1/0")))
    assert down.get("/workers").text == "the broker (REDIS_URL) cannot be reached; try again shortly\n"


def test_enrich_workers_text_and_json(running, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", URL)
    assert enrich_main(["workers"], settings=load_settings()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("LIVE ") and "queues held  threads 3" in lines[0]
    assert lines[1].startswith(f"  job {running.message_id}  tree 7d6e5f4c-3b2a-4c8e-9b1a-3c9b7a1e2f4d  held_job  "
                               f"album {ALBUM}  for ")
    assert lines[2].startswith("GONE  elsewhere:4242") and "(held when it went)" in lines[2]
    assert enrich_main(["workers", "--json"], settings=load_settings()) == 0
    assert [w["state"] for w in json.loads(capsys.readouterr().out)["workers"]] == ["live", "gone", "gone"]
    monkeypatch.delenv("REDIS_URL")
    assert enrich_main(["workers"], settings=load_settings()) == 1
    assert capsys.readouterr().err.startswith("enrich workers: REDIS_URL is not set: the workers' records are in")
