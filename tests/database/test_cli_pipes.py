"""``enrich`` whose reader goes away early (``enrich timeline ID --json | head -c 1``).

Every command ends quietly, as a Unix tool does: no BrokenPipeError traceback
on stderr, exit status 141 (128 + SIGPIPE, what a shell shows for ``yes | head -1``).
The job log holds enough rows that each output is larger than a pipe's buffer,
so the command is still writing when the pipe closes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from models import EnrichmentLog

from test_cli import _log_row

CHILDREN = 1000
ROOTS = 600  # a page of 500 roots: 80 KB of text, 350 KB of --json
PIPE_BUFFER = 65536  # Linux's default


@pytest.fixture
def big_log(url):  # noqa: F811
    """A root with CHILDREN children, and ROOTS other roots; returns (DATABASE_URL, the root's job id)."""
    root = f"root-{uuid.uuid4()}"
    rows = [_log_row(root, end=2.0)]
    rows += [_log_row(f"{root}-{n}", root, start=0.001 * n, end=1.0, reason=f"child {n} of a big tree")
             for n in range(CHILDREN)]
    rows += [_log_row(f"other-root-{n}-{uuid.uuid4()}") for n in range(ROOTS)]
    for at in range(0, len(rows), 200):  # SQLite allows at most 32,766 parameters a statement
        EnrichmentLog.insert_many(rows[at:at + 200]).execute()
    return url, root


def closed_early(database_url: str, *args: str) -> tuple[int, str]:
    """Run ``enrich ARGS``, read one byte of its stdout, close the pipe; (exit status, stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LOG_LEVEL")}
    env["DATABASE_URL"] = database_url
    process = subprocess.Popen([sys.executable, "-m", "workers.cli", *args], env=env, bufsize=0,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.read(1)
        process.stdout.close()
        status = process.wait(timeout=60)
        return status, process.stderr.read().decode()
    finally:
        process.kill()
        process.stderr.close()


COMMANDS = [
    ["timeline", "{root}", "--json"],
    ["timeline", "{root}"],
    ["timeline", "{root}", "--follow"],
    ["roots", "--json", "--limit", "500"],
    ["roots", "--limit", "500"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_reader_closing_the_pipe_ends_the_command_quietly(big_log, command):
    database_url, root = big_log
    status, stderr = closed_early(database_url, *(part.format(root=root) for part in command))
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr
    assert status == 141, stderr


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_read_to_the_end_the_output_is_larger_than_a_pipe_buffer(big_log, command):
    """The same commands read to the end exit 0, and their output outgrows the pipe: the test above is real."""
    database_url, root = big_log
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LOG_LEVEL")}
    env["DATABASE_URL"] = database_url
    result = subprocess.run([sys.executable, "-m", "workers.cli", *(part.format(root=root) for part in command)],
                            env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) > PIPE_BUFFER
