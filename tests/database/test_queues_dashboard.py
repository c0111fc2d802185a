"""The queue pages and ``enrich queues`` on Redis messages laid out as Dramatiq lays them, on both databases.

Bad input answers 400 or 404 in one line; a payload that is not a message is
listed as such and can be deleted; a secret in a message's arguments never
shows; a dead letter shows why from its job's row.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid

import pytest
import redis

from dashboard import create_app
from models import EnrichmentLog, Settings, load_settings, utcnow
from workers.cli.main import main as enrich_main

from dashboard_data import insert, job
from services import REDIS_TEST_URL
from web_client import Web, basic

# A database of the Redis of its own: the process tests flush theirs.
URL = REDIS_TEST_URL.rsplit("/", 1)[0] + "/13"
SECRET = "hunter2-very-secret"


def _message(job_id: str, **options) -> bytes:
    return json.dumps({"queue_name": "default", "actor_name": "check_album_enrichment", "args": [str(uuid.uuid4())],
                       "kwargs": {"api_token": SECRET, "note": f"Bearer {SECRET}"}, "options": options,
                       "message_id": job_id, "message_timestamp": int(time.time() * 1000) - 90_000}).encode()


@pytest.fixture
def queues(db):
    client = redis.Redis.from_url(URL)
    client.flushdb()
    for n in range(120):
        client.hset("dramatiq:default.msgs", f"r{n}", _message(f"job-{n}"))
        client.rpush("dramatiq:default", f"r{n}")
    for n in range(10):  # ten jobs of the default queue ended within the last 5 minutes: 2 a minute
        insert({**job(f"ended-{n}", at=utcnow() - dt.timedelta(minutes=2)), "message": {"queue": "default"}})
    insert(job("dead-job", at=utcnow(), status="failed", error_code="upstream_error",
               last_error="HTTPError: 502 from MusicBrainz"))
    client.zadd("dramatiq:default.XQ", {"d1": time.time() * 1000 - 5000, "garbage": time.time() * 1000})
    client.hset("dramatiq:default.XQ.msgs",
                mapping={"d1": _message("dead-job"), "garbage": b"not json \x1b[2J token=" + SECRET.encode()})
    yield client
    client.flushdb()


def test_the_queues_and_a_page_of_messages(queues):
    web = Web(create_app(Settings(redis_url=URL)))
    [default] = web.get("/api/queues").json()["queues"]
    assert default["counts"] == {"ready": 120, "fetched": 0, "delayed": 0, "dead": 2}
    assert default["acked_per_minute"] == 2.0
    assert 85 <= default["oldest_age_seconds"]["ready"] < 200 and default["oldest_age_seconds"]["dead"] >= 4
    page = web.get("/api/queues/default?limit=50&offset=100").json()
    assert (page["total"], page["next_offset"]) == (120, None)
    assert [m["job_id"] for m in page["messages"]] == [f"job-{n}" for n in range(100, 120)]
    assert SECRET not in json.dumps(page) and "[REDACTED]" in page["messages"][0]["arguments"]
    html = web.get("/queues").text
    assert 'href="/queues/default?state=dead">2</a>' in html


def test_dead_letters_say_why_and_hide_secrets(queues):
    web = Web(create_app(Settings(redis_url=URL)))
    dead = web.get("/api/queues/default?state=dead").json()["messages"]
    by_id = {m["id"]: m for m in dead}
    assert [m["id"] for m in dead] == ["garbage", "d1"]  # newest first
    assert (by_id["d1"]["error_code"], by_id["d1"]["status"]) == ("upstream_error", "failed")
    assert by_id["garbage"]["problem"].startswith("not a message") and by_id["garbage"]["job_id"] is None
    page = web.get("/queues/default?state=dead").text
    assert SECRET not in page and SECRET not in json.dumps(dead) and "HTTPError: 502" in page
    assert "Requeue" not in page and "<form" not in page  # read-only


@pytest.mark.parametrize("path, status", [("/api/queues/nope", 404), ("/api/queues/a%20b", 400),
                                          ("/api/queues/default?state=gone", 400),
                                          ("/api/queues/default?limit=0", 400), ("/queues/nope", 404),
                                          ("/api/queues/default.XQ", 400)])
def test_bad_names_and_parameters(queues, path, status):
    answer = Web(create_app(Settings(redis_url=URL))).get(path)
    assert answer.status_code == status and "\n" not in answer.text.strip()


def test_a_payload_that_is_not_a_message_is_deleted_from_the_page_and_cannot_be_requeued(queues):
    from workers import app

    settings = Settings(redis_url=URL, dashboard_allow_actions=True, dashboard_password="pw")
    web = Web(create_app(settings, app.broker()))
    page = web.get("/queues/default?state=dead", headers=basic("pw")).text
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
    assert 'action="/queues/default/dead/garbage/delete"' in page
    assert 'action="/queues/default/dead/garbage/requeue"' not in page
    assert web.post("/queues/default/dead/bad%20id/delete", headers=basic("pw"),
                    data={"csrf_token": token}).status_code == 400
    assert web.post("/queues/default/dead/missing/delete", headers=basic("pw"),
                    data={"csrf_token": token}).status_code == 404
    answer = web.post("/queues/default/dead/garbage/delete", headers=basic("pw"), data={"csrf_token": token})
    assert answer.status_code == 303 and queues.zrange("dramatiq:default.XQ", 0, -1) == [b"d1"]
    assert not queues.hexists("dramatiq:default.XQ.msgs", "garbage")
    shown = web.get(answer.headers["location"], headers=basic("pw")).text
    assert "Deleted 1 message." in shown and 'data-message-id="garbage"' not in shown


def test_delete_all_empties_the_dead_letter_queue_and_leaves_the_rows(queues):
    from workers import app

    settings = Settings(redis_url=URL, dashboard_allow_actions=True, dashboard_password="pw")
    web = Web(create_app(settings, app.broker()))
    page = web.get("/queues/default?state=dead", headers=basic("pw")).text
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
    assert web.post("/queues/default/dead/delete", headers=basic("pw"), data={}).status_code == 403
    answer = web.post("/queues/default/dead/delete", headers=basic("pw"), data={"csrf_token": token})
    assert answer.status_code == 303 and "deleted=2" in answer.headers["location"]
    assert queues.zcard("dramatiq:default.XQ") == 0 and queues.hlen("dramatiq:default.XQ.msgs") == 0
    assert queues.llen("dramatiq:default") == 120  # the ready messages are not touched
    assert EnrichmentLog.get(EnrichmentLog.job_id == "dead-job").status == "failed"


def test_enrich_queues_json_and_one_line_errors(queues, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", URL)
    assert enrich_main(["queues", "--json"], settings=load_settings()) == 0
    [default] = json.loads(capsys.readouterr().out)["queues"]
    assert default["counts"]["ready"] == 120
    assert enrich_main(["queues", "default", "--state", "dead", "--json"], settings=load_settings()) == 0
    assert SECRET not in capsys.readouterr().out
    assert enrich_main(["queues", "nope"], settings=load_settings()) == 1
    assert capsys.readouterr().err == "enrich queues: no queue named nope on the broker\n"
    assert enrich_main(["dead-letters", "--requeue", "garbage"], settings=load_settings()) == 1
    assert "is not a message" in capsys.readouterr().err and queues.zcard("dramatiq:default.XQ") == 2


class FailsAtOnce:
    """A broker whose every message is dead-lettered again as soon as it is sent (a job that fails at once)."""

    def __init__(self, client):
        self.client, self.sent = client, []

    def get_actor(self, name):
        return name

    def enqueue(self, message):
        self.sent.append(message)
        redis_id = f"again-{len(self.sent)}"
        self.client.zadd("dramatiq:default.XQ", {redis_id: time.time() * 1000 + 1})
        self.client.hset("dramatiq:default.XQ.msgs", redis_id, message.encode())


def test_requeue_all_sends_each_dead_letter_once_with_its_job_id_and_the_next_retries(queues):
    from workers.dead_letters import requeue_all

    broker = FailsAtOnce(queues)
    outcome = requeue_all(broker, queues, "default")
    assert outcome.done == ["dead-job"] and len(outcome.refused) == 1 and "garbage" in outcome.refused[0]
    [message] = broker.sent  # dead-lettered again at once, and not sent round and round
    assert (message.message_id, message.options["retries"]) == ("dead-job", 1)  # the row's retry_count + 1
    assert "traceback" not in message.options and "redis_message_id" not in message.options
    assert sorted(queues.zrange("dramatiq:default.XQ", 0, -1)) == [b"again-1", b"garbage"]
