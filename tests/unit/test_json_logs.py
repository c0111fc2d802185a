"""Worker and CLI log lines: one JSON object per line, context attached, no secret anywhere.

Each test runs a real Python process with real-looking credentials in its
environment, configures logging the way a worker does and logs through
structlog and the standard library; the assertions read its stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

from models.settings import Settings
from workers.logging_setup import render_processors

ROOT = Path(__file__).resolve().parents[2]

DB_PASSWORD = "Pg-S3cr3t/9xLq"
SECRETS = {
    "DISCOGS_TOKEN": "gQhWqXrTnYpLkJdFsAzVbNmCxEuRiOtYpWq",
    "SPOTIFY_CLIENT_ID": "5f2c9d1e7a3b4c6d8e0f1a2b3c4d5e6f",
    "SPOTIFY_CLIENT_SECRET": "3f9a1c7e5b2d4f8a9c0e1b3d5f7a9c2e",
    "CLOUDFLARE_API_TOKEN": "Zx9_kP2mQ7vL4nR8tY1wE6uI3oA5sD0fG-hJ2kL4",
}
ENV = {
    **SECRETS,
    "DATABASE_URL": f"postgresql://enrich:{quote(DB_PASSWORD, safe='')}@db.internal:5432/music",
}

# What a worker does: configure (twice, as a CLI that re-reads settings would),
# then log from a job with bound context, from libraries, and from failures.
CHILD = textwrap.dedent(
    """
    import logging, os
    import structlog
    from models.settings import load_settings
    from workers.logging_setup import configure_logging

    settings = load_settings()
    configure_logging(settings)
    configure_logging(settings)
    token = os.environ["DISCOGS_TOKEN"]
    spotify_secret = os.environ["SPOTIFY_CLIENT_SECRET"]
    log = structlog.get_logger("workers.enrich")

    log.info("worker starting", database_url=os.environ["DATABASE_URL"])
    structlog.contextvars.bind_contextvars(job_id="job-123", parent_job_id=None, operation="enrichment:album")
    log.info("calling discogs", headers={"Authorization": f"Discogs token={token}"}, attempt=1)
    log.info("spotify auth", config={"nested": [{"client_secret": spotify_secret}], "api_key": "k-" + token})
    log.warning("request failed: Authorization: Bearer %s", os.environ["CLOUDFLARE_API_TOKEN"])
    logging.getLogger("dramatiq.worker.WorkerThread").info("stdlib line with token=%s", token)
    logging.getLogger("peewee").debug("SQL with %s", token)
    logging.getLogger("httpx").info("HTTP Request: GET https://api.discogs.com/?token=%s", token)
    try:
        raise RuntimeError(f"Discogs answered 401 for token {token} via {os.environ['DATABASE_URL']}")
    except RuntimeError:
        log.exception("enrichment failed")
        logging.getLogger("dramatiq.worker.WorkerThread").error("unhandled", exc_info=True)
    structlog.contextvars.clear_contextvars()
    log.info("worker stopping", error=ValueError("bad secret " + spotify_secret))
    """
)


def _run(log_format: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV, "LOG_FORMAT": log_format, "LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )


def _assert_no_secret(text: str) -> None:
    for value in [*SECRETS.values(), DB_PASSWORD, quote(DB_PASSWORD, safe="")]:
        assert value not in text


def test_every_line_is_json_with_context_and_no_secret():
    result = _run("json")
    assert result.stdout == ""  # logs go to stderr; stdout is the command's own output
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    by_message = {line["message"]: line for line in lines}

    for line in lines:
        assert {"timestamp", "level", "message", "logger"} <= line.keys()
        assert "event" not in line
        stamp = dt.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
        assert stamp.utcoffset() == dt.timedelta(0)
    # One handler after two configure_logging calls: every line once.
    assert len(lines) == len(by_message) == 8
    assert by_message["worker starting"]["level"] == "info"
    assert "job_id" not in by_message["worker starting"]
    assert by_message["worker stopping"].get("job_id") is None

    bound = ["calling discogs", "spotify auth", "enrichment failed", "unhandled"]
    for message in bound:
        assert by_message[message]["job_id"] == "job-123"
        assert by_message[message]["operation"] == "enrichment:album"
    stdlib_line = by_message["stdlib line with token=[REDACTED]"]
    assert stdlib_line["logger"] == "dramatiq.worker.WorkerThread"
    assert stdlib_line["job_id"] == "job-123"  # library lines carry the job's context too
    assert by_message["request failed: Authorization: Bearer [REDACTED]"]["level"] == "warning"

    for message in ("enrichment failed", "unhandled"):
        line = by_message[message]
        assert line["level"] == "error"
        (exc,) = line["exception"]
        assert exc["exc_type"] == "RuntimeError"
        assert "[REDACTED]" in exc["exc_value"]
        assert exc["frames"] and {"filename", "lineno", "name"} <= exc["frames"][0].keys()
        assert "locals" not in exc["frames"][0]

    assert by_message["calling discogs"]["headers"]["Authorization"] == "[REDACTED]"
    assert by_message["spotify auth"]["config"] == {"nested": [{"client_secret": "[REDACTED]"}], "api_key": "[REDACTED]"}
    assert by_message["worker starting"]["database_url"] == "postgresql://enrich:[REDACTED]@db.internal:5432/music"
    # Quiet at INFO: httpx's per-request line and peewee's SQL.
    assert not [line for line in lines if line["logger"] in ("httpx", "peewee")]
    _assert_no_secret(result.stderr)


def test_console_format_is_for_humans_and_redacted_too():
    result = _run("console")
    assert result.stdout == ""
    text = result.stderr
    assert not text.lstrip().startswith("{")
    assert "calling discogs" in text and "job_id=job-123" in text
    assert "Traceback (most recent call last)" in text and "RuntimeError" in text
    assert "[REDACTED]" in text
    _assert_no_secret(text)


def test_redaction_is_the_last_step_before_rendering():
    for log_format in ("json", "console"):
        chain = render_processors(Settings(log_format=log_format, discogs_token="x" * 20))
        assert chain[-2].__name__ == "redact"
