"""Start and stop real `dramatiq` worker processes for the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent  # tests/support: the apps `dramatiq` loads are here
ROOT = TESTS.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile_command(process_type: str) -> str:
    """The command the Procfile gives for ``process_type`` (``worker``, ``release``)."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process_type:
            return command.strip()
    raise KeyError(f"no {process_type!r} line in the Procfile")


def shell_env(env: dict) -> dict:
    """``env`` for a shell command: this venv's ``dramatiq`` and ``enrich`` first on PATH, the project importable."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": f"{TESTS}{os.pathsep}{ROOT}"}


class WorkerProcess:
    """``dramatiq MODULE`` (or a shell ``command``) in a process group of its own, its log in a file."""

    def __init__(self, module: str, env: dict, log_path: Path, processes: int = 1, threads: int = 4, extra=(),
                 command: str = None):
        self.log_path = log_path
        self.log = open(log_path, "w")
        if command is not None:  # run as a Procfile runner would: bash, from the project root
            args, cwd = ["bash", "-c", f"exec {command}"], ROOT
        else:
            args = [sys.executable, "-m", "dramatiq", module, "--processes", str(processes), "--threads", str(threads),
                    "--skip-logging", *extra]
            cwd = TESTS
        self.proc = subprocess.Popen(
            args, env=shell_env(env), cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
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
