"""Configuration errors are one line and never hold the password, however the URL is malformed.

Each URL below holds the same real-looking password, unencoded where a user
would forget to encode it.  Every piece of it (between the characters a
parser stops at) must stay out of the error, from the settings, from
``enrich`` and from ``dramatiq workers.worker``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from models import ConfigError, load_settings, open_database
from models.settings import redact_url

from process_harness import TESTS, shell_env

PASSWORD = "hunter2Alpha#bravoCharlie?deltaEcho/foxtrotGolf@hotelIndia:julietKilo%zz"
PIECES = [piece for piece in re.split(r"[#?/@:%]", PASSWORD) if len(piece) >= 3]

MALFORMED_DATABASE_URLS = {
    "as typed": f"postgresql://app:{PASSWORD}@db.internal:5432/music",
    "hash": "postgresql://app:hunter2Alpha#bravoCharlie@db.internal:5432/music",
    "question mark": "postgresql://app:hunter2Alpha?bravoCharlie@db.internal:5432/music",
    "slash": "postgresql://app:hunter2Alpha/bravoCharlie@db.internal:5432/music",
    "slash then digits": "postgresql://app:12/hunter2Alpha@db.internal:5432/music",
    "bad port": "postgresql://app:hunter2Alpha@db.internal:54x2/music",
    "port too big": "postgresql://app:hunter2Alpha@db.internal:99999/music",
    "port zero": "postgresql://app:hunter2Alpha@db.internal:0/music",
    "no database": "postgresql://app:hunter2Alpha@db.internal:5432/",
    "bad scheme": "mysql://app:hunter2Alpha#bravoCharlie@db.internal/music",
    "no scheme": "app:hunter2Alpha@db.internal:5432/music",
    "scheme without slashes": "postgresql:app:hunter2Alpha#x@db.internal/music",
    "ipv6 unclosed": "postgresql://app:hunter2Alpha@[::1/music",
    "newline": "postgresql://app:hunter2Alpha\nbravoCharlie#x@db.internal/music",
    "only a password": "postgresql://:hunter2Alpha#bravoCharlie@db.internal/music",
    "host forgotten": "postgresql://app:hunter2Alpha/music",
    "host forgotten, hash": "postgresql://app:hunter2Alpha#bravoCharlie",
}
MALFORMED_REDIS_URLS = {
    "hash": "redis://:hunter2Alpha#bravoCharlie@cache.internal:6379/0",
    "slash": "redis://user:hunter2Alpha/bravoCharlie@cache.internal:6379/0",
    "bad port": "redis://:hunter2Alpha@cache.internal:63x9/0",
    "bad scheme": "http://:hunter2Alpha#bravoCharlie@cache.internal:6379/0",
    "bad database": "redis://:hunter2Alpha@cache.internal:6379/zero",
    "query password": "unix:///run/redis.sock?password=hunter2Alpha&db=x",
}


def assert_secret_free(text: str) -> None:
    for piece in PIECES + ["hunter2Alpha", "bravoCharlie"]:
        assert piece not in text, (piece, text)


def config_error(env: dict) -> str:
    """The one-line error ``load_settings`` then ``open_database`` give for ``env``."""
    with pytest.raises(ConfigError) as info:
        settings = load_settings(env)
        open_database(settings.database_url)
    return str(info.value)


@pytest.mark.parametrize("url", list(MALFORMED_DATABASE_URLS.values()), ids=list(MALFORMED_DATABASE_URLS))
def test_a_malformed_database_url_is_one_line_without_the_password(url):
    message = config_error({"DATABASE_URL": url})
    assert "\n" not in message and message.startswith("DATABASE_URL")
    assert_secret_free(message)


@pytest.mark.parametrize("url", list(MALFORMED_REDIS_URLS.values()), ids=list(MALFORMED_REDIS_URLS))
def test_a_malformed_redis_url_is_one_line_without_the_password(url):
    from workers.broker import build_broker

    with pytest.raises(ConfigError) as info:
        build_broker(load_settings({"REDIS_URL": url}))
    message = str(info.value)
    assert "\n" not in message and message.startswith("REDIS_URL")
    assert_secret_free(message)


def test_a_well_formed_url_keeps_its_encoded_password_and_loses_it_in_text():
    url = "postgresql://app:hunter2Alpha%23bravoCharlie@db.internal:5432/music"
    assert load_settings({"DATABASE_URL": url}).database_url == url
    assert open_database(url).connect_params["password"] == "hunter2Alpha#bravoCharlie"
    assert redact_url(url) == "postgresql://app:***@db.internal:5432/music"
    for url in [*MALFORMED_DATABASE_URLS.values(), *MALFORMED_REDIS_URLS.values()]:
        assert_secret_free(redact_url(url))


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "LOG_LEVEL")}
    return subprocess.run(args, env=shell_env({**base, **env}), cwd=TESTS, capture_output=True, text=True, timeout=60)


CLI_CASES = ["as typed", "hash", "slash", "bad port", "scheme without slashes"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CLI_CASES)
def test_enrich_and_dramatiq_workers_say_one_line_without_the_password(case):
    env = {"DATABASE_URL": MALFORMED_DATABASE_URLS[case], "REDIS_URL": "redis://127.0.0.1:1/0"}
    for args in ([sys.executable, "-m", "workers.cli", "roots"],
                 [sys.executable, "-m", "dramatiq", "workers.worker", "--processes", "1", "--threads", "1"]):
        result = _run(args, env)
        assert result.returncode != 0, (args, result.stderr)
        assert_secret_free(result.stdout + result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        ours = [line for line in result.stderr.splitlines() if line.startswith("enrich")]
        assert len(ours) >= 1 and all("DATABASE_URL" in line for line in ours), result.stderr


@pytest.mark.slow
def test_a_bad_redis_url_is_one_line_from_dramatiq_workers(sqlite_url):
    result = _run([sys.executable, "-m", "dramatiq", "workers.worker", "--processes", "1", "--threads", "1"],
                  {"DATABASE_URL": sqlite_url, "REDIS_URL": MALFORMED_REDIS_URLS["bad database"]})
    assert result.returncode != 0
    assert_secret_free(result.stdout + result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert any(line.startswith("enrich: REDIS_URL=") for line in result.stderr.splitlines()), result.stderr
