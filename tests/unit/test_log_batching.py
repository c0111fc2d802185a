"""Lines to stderr are written in batches: late by at most LOG_FLUSH_MS, never lost, never reordered."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import structlog

from models.settings import ConfigError, Settings, load_settings
from workers.logging_setup import configure_logging

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stderr(monkeypatch):
    """``configure(ms)``: logging configured on a fresh stderr (set in the test's own phase, where
    pytest's capture has already swapped sys.stderr); the usual configuration is back afterwards."""
    stream = io.StringIO()

    def configure(flush_ms: int) -> io.StringIO:
        monkeypatch.setattr(sys, "stderr", stream)
        configure_logging(Settings(log_flush_ms=flush_ms))
        return stream

    yield configure
    monkeypatch.undo()
    configure_logging(load_settings())


def messages(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["message"] for line in stream.getvalue().splitlines()]


def test_a_warning_writes_the_lines_waiting_before_it_in_order(stderr):
    stream = stderr(60_000)
    log = structlog.get_logger("test")
    log.info("job started")
    log.info("job finished")
    assert messages(stream) == []  # held for now
    log.warning("upstream slow")
    assert messages(stream) == ["job started", "job finished", "upstream slow"]


def test_waiting_lines_are_written_within_the_flush_interval(stderr):
    stream = stderr(20)
    structlog.get_logger("test").info("job finished", job_id="j-1")
    deadline = time.monotonic() + 5
    while not messages(stream) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert messages(stream) == ["job finished"]


def test_log_flush_ms_zero_writes_every_line_at_once(stderr):
    stream = stderr(0)
    structlog.get_logger("test").info("job finished")
    assert messages(stream) == ["job finished"]


@pytest.mark.parametrize("raw", ["-5", "soon", "1.5"])
def test_a_bad_log_flush_ms_is_refused_by_name(raw):
    with pytest.raises(ConfigError, match="LOG_FLUSH_MS"):
        load_settings({"LOG_FLUSH_MS": raw})


def test_a_process_that_exits_has_written_every_line_and_a_forked_child_repeats_none():
    """Exit writes what waits; a child forked while lines wait does not write them a second time."""
    child = textwrap.dedent(
        """
        import os, structlog
        from models.settings import Settings
        from workers.logging_setup import configure_logging

        configure_logging(Settings(log_flush_ms=60_000))
        log = structlog.get_logger("test")
        log.info("before fork")
        pid = os.fork()
        if pid == 0:
            log.info("in child")
            log.warning("child done")  # writes the child's lines now
            os._exit(0)
        os.waitpid(pid, 0)
        for n in range(100):
            log.info("line", n=n)
        """
    )
    result = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["message"] for line in lines].count("before fork") == 1
    assert [line["message"] for line in lines if line["message"] != "line"] == ["in child", "child done", "before fork"]
    assert [line["n"] for line in lines if line["message"] == "line"] == list(range(100))
