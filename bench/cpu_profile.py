"""Where a worker process's CPU goes, per job: py-spy samples sorted into the job log's parts.

The linking benchmark's ``--profile`` runs ``py-spy record`` (pip install
py-spy; root, or ptrace allowed) on the ``dramatiq`` process tree while the
workers drain the queue, then ``categorize`` sorts each sampled stack into
one part (the first rule that matches, the drainer's before the hooks') and
scales the samples to the worker CPU per job measured from /proc in the
same run.  Idle threads are not sampled, so samples follow CPU time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PRODUCT = (f"{_ROOT}/middleware/", f"{_ROOT}/workers/")  # not Dramatiq's own dramatiq/middleware/
# The product's dead-lettering consumer wraps Dramatiq's: what runs below it is Dramatiq's consumer.
_CONSUMER = ("dramatiq/worker.py:ConsumerThread", "workers/redis_broker.py")

# (part, files any of whose frames put the stack in it), in order; a file is matched by the end of its path.
_DRAINER = ("job_log/drainer.py",)
_DRAINER_PARTS = (
    ("root update", ("job_log/root_status.py",)),
    ("drainer: SQL", ("job_log/upsert.py", "job_log/database.py", "/peewee.py", "/psycopg2/")),
    ("drainer: decode", ("job_log/journal.py:decode", "job_log/journal.py:with_datetimes",
                         "job_log/journal.py:_entries")),
    ("drainer: fold", ("job_log/drainer.py:fold", "job_log/drainer.py:add")),
    ("drainer: Redis reads and acks", ("/redis/",)),
)
# The dramatiq parent process relays each line its worker processes log (without --skip-logging).
_LOG_LINES = ("/logging/", "/structlog/", "workers/log_buffer.py", "workers/logging_setup.py",
              "dramatiq/cli.py:watch_logs")
_HOOKS = ("middleware/job_linking.py", "middleware/job_log/", "middleware/job_context.py",
          "middleware/linking_options.py")
_HOOK_PARTS = (
    ("log lines", _LOG_LINES),
    ("start-row hold", ("job_log/start_rows.py",)),
    ("journal append", ("job_log/journal.py", "/redis/")),
    ("building the row", ("job_log/rows.py", "job_log/row_values.py", "middleware/json_text.py",
                          "middleware/redaction.py")),
)
PARTS = ("hooks (other)", "building the row", "journal append", "start-row hold", "log lines",
         "drainer: decode", "drainer: fold", "drainer: SQL", "drainer: Redis reads and acks", "drainer (other)",
         "root update", "lost-work sweeper", "other product middleware", "log lines relayed by dramatiq",
         "Dramatiq: consumer threads", "Dramatiq: worker threads and the rest")


def _frames(stack: str) -> list[str]:
    """'func (path:line)' frames as 'path:func'."""
    frames = []
    for frame in stack.split(";"):
        if frame.endswith(")") and " (" in frame:
            func, where = frame[:-1].rsplit(" (", 1)
            frames.append(f"{where.rsplit(':', 1)[0]}:{func}")
    return frames


def _any(frames: list[str], needles) -> bool:
    return any(needle in frame for frame in frames for needle in needles)


def categorize(frames: list[str]) -> str:
    if _any(frames, ("job_log/lost_work.py",)):
        return "lost-work sweeper"
    if _any(frames, _DRAINER):
        return next((part for part, needles in _DRAINER_PARTS if _any(frames, needles)), "drainer (other)")
    if _any(frames, _HOOKS):
        return next((part for part, needles in _HOOK_PARTS if _any(frames, needles)), "hooks (other)")
    if _any(frames, ("dramatiq/cli.py:watch_logs",)):
        return "log lines relayed by dramatiq"
    if _any(frames, _CONSUMER):
        return "Dramatiq: consumer threads"
    if _any(frames, _PRODUCT):
        return "other product middleware"
    return "Dramatiq: worker threads and the rest"


def start(pid: int, out: str, rate: int = 500) -> subprocess.Popen:
    """py-spy sampling ``pid`` and its children (``raw`` collapsed stacks to ``out``) until ``stop``."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")  # in the benchmark's venv
    py_spy = beside if os.path.exists(beside) else shutil.which("py-spy") or "py-spy"
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--subprocesses", "--rate", str(rate), "--gil",
                             "--format", "raw", "--full-filenames", "--output", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(recorder: subprocess.Popen) -> None:
    recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    recorder.wait(120)


def per_job(out: str, cpu_us_per_job: float) -> dict[str, float]:
    """{part: µs per job}: each part's share of the samples in ``out``, times the measured CPU per job."""
    samples: Counter[str] = Counter()
    with open(out) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and count.isdigit():
                samples[categorize(_frames(stack))] += int(count)
    total = sum(samples.values()) or 1
    return {part: samples[part] / total * cpu_us_per_job for part in PARTS}
