"""Start and stop real `dramatiq` worker processes for the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


class WorkerProcess:
    """``dramatiq MODULE`` in a process group of its own, its log in a file."""

    def __init__(self, module: str, env: dict, log_path: Path, processes: int = 1, threads: int = 4, extra=()):
        self.log_path = log_path
        full_env = {**os.environ, **env, "PYTHONPATH": f"{TESTS}{os.pathsep}{ROOT}"}
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", module, "--processes", str(processes), "--threads", str(threads),
             "--skip-logging", *extra],
            env=full_env, cwd=TESTS, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, processes: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.read_text().count("ready for action") >= processes:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError("worker not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()
