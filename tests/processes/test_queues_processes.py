"""Dead letters made by a real ``dramatiq`` worker, seen and requeued from the dashboard and the CLI.

A message dead-lettered by the worker shows on ``/queues`` and its dead-letter
page with why (the row's error); requeued (actions on, CSRF token) it keeps
its job id, its row goes back to ``queued`` and it runs to ``success``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import dramatiq
import pytest
import redis

from dashboard import create_app
from middleware import JobLinking
from models import EnrichmentLog, Settings
from workers.redis_broker import DeadLetteringRedisBroker

from linking_harness import wait_for
from process_harness import WorkerProcess, shell_env
from services import REDIS_TEST_URL
from web_client import Web, basic

pytestmark = pytest.mark.slow
FLAG = "test:fail-flag"


@pytest.fixture
def worker(pg_db, pg_url, tmp_path):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    env = {"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url, "LOG_FLUSH_MS": "0"}
    process = WorkerProcess("options_app", env, tmp_path / "worker.log", threads=2)
    process.wait_ready()
    broker = DeadLetteringRedisBroker(url=REDIS_TEST_URL, middleware=[JobLinking()])
    broker.emit_after("process_boot")

    @dramatiq.actor(broker=broker)
    def fails_while_flag(key: str):  # the worker's actor of the same name runs it
        raise AssertionError("sent only")

    yield broker, fails_while_flag, pg_url
    process.stop()
    broker.close()


def _row(job_id: str) -> EnrichmentLog:
    return EnrichmentLog.get_or_none(EnrichmentLog.job_id == job_id)


def _dead_letter(sender) -> str:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.set(FLAG, 1)
    message = sender.send(FLAG)
    wait_for(lambda: client.zcard("dramatiq:default.XQ") == 1, timeout=60)
    wait_for(lambda: (row := _row(message.message_id)) is not None and row.status == "failed", timeout=60)
    client.delete(FLAG)
    return message.message_id


def test_a_dead_letter_is_shown_with_why_and_requeued_from_the_page_to_success(worker):
    broker, sender, _ = worker
    job_id = _dead_letter(sender)
    web = Web(create_app(Settings(redis_url=REDIS_TEST_URL, dashboard_allow_actions=True, dashboard_password="pw"),
                         broker))
    queues = web.get("/api/queues", headers=basic("pw")).json()["queues"]
    default = next(q for q in queues if q["name"] == "default")
    assert default["counts"]["dead"] == 1 and default["oldest_age_seconds"]["dead"] is not None
    listing = web.get("/api/queues/default?state=dead", headers=basic("pw")).json()
    [dead] = listing["messages"]
    assert (dead["job_id"], dead["actor"], dead["status"]) == (job_id, "fails_while_flag", "failed")
    assert f"flag {FLAG} is set" in dead["last_error"]
    page = web.get("/queues/default?state=dead", headers=basic("pw")).text
    assert f'href="/trees/{job_id}"' in page and "Requeue" in page
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
    refused = web.post(f"/queues/default/dead/{dead['id']}/requeue", headers=basic("pw"), data={"csrf_token": "x"})
    assert refused.status_code == 403 and redis.Redis.from_url(REDIS_TEST_URL).zcard("dramatiq:default.XQ") == 1
    answer = web.post(f"/queues/default/dead/{dead['id']}/requeue", headers=basic("pw"), data={"csrf_token": token})
    assert answer.status_code == 303 and "requeued" in answer.headers["location"]
    assert _row(job_id).status != "failed"  # its queued row was written at the send: the failure taken back
    row = wait_for(lambda: (r := _row(job_id)) is not None and r.status == "success" and r, timeout=60)
    assert row.retry_count == 1  # sent again as a resend is: the failed row moved forward
    assert EnrichmentLog.select().where(EnrichmentLog.job_id == job_id).count() == 1
    assert redis.Redis.from_url(REDIS_TEST_URL).zcard("dramatiq:default.XQ") == 0


def test_without_actions_there_is_no_button_and_the_cli_requeues_by_id(worker):
    broker, sender, pg_url = worker
    job_id = _dead_letter(sender)
    web = Web(create_app(Settings(redis_url=REDIS_TEST_URL)))
    page = web.get("/queues/default?state=dead").text
    assert job_id in page and "Requeue" not in page and "<form" not in page
    env = shell_env({"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url})
    listed = subprocess.run([sys.executable, "-m", "workers.cli", "dead-letters", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    [dead] = json.loads(listed.stdout)["messages"]
    assert dead["job_id"] == job_id and dead["error_code"]
    bad = subprocess.run([sys.executable, "-m", "workers.cli", "dead-letters", "--requeue", "a b"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "malformed message id" in bad.stderr
    # The enrich command's app does not declare the test actor: it refuses in one line, nothing moves.
    refused = subprocess.run([sys.executable, "-m", "workers.cli", "dead-letters", "--requeue", dead["id"]], env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "no actor named 'fails_while_flag'" in refused.stderr
    deleted = subprocess.run([sys.executable, "-m", "workers.cli", "dead-letters", "--delete", "--all"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert deleted.returncode == 0 and deleted.stdout.split() == [dead["id"]]
    assert redis.Redis.from_url(REDIS_TEST_URL).zcard("dramatiq:default.XQ") == 0
    assert _row(job_id).status == "failed"  # deleting leaves the row as it is
