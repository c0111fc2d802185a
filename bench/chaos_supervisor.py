"""The chaos soak's processes: each started from its Procfile line in a process group of its own, and started
again when it exits, as systemd (``Restart=always``) or supervisord would."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESTART_PAUSE = 1.0  # seconds a supervisor waits before it starts an exited process again


def procfile_command(process_type: str) -> str:
    """The command the Procfile gives for ``process_type`` (``worker``, ``drain``, ``release``)."""
    with open(os.path.join(ROOT, "Procfile")) as procfile:
        for line in procfile:
            name, _, command = line.partition(":")
            if name.strip() == process_type:
                return command.strip()
    raise KeyError(f"no {process_type!r} line in the Procfile")


def _threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    except (OSError, StopIteration, ValueError):
        return 0


class Supervised:
    """One process type run as a Procfile runner does (``bash -c "exec COMMAND"`` from the project root).

    Parameters:
      name(str): the name in the report and of its log file.
      command(str): the shell command.
      env(dict): its whole environment.
      log_path(str): stdout and stderr, appended to across restarts.
    """

    def __init__(self, name: str, command: str, env: dict, log_path: str) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_path
        self.proc = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(["bash", "-c", f"exec {self.command}"], env=self.env, cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[int]:
        """The worker processes ``dramatiq`` forked: its children with more than two threads (the metrics
        process it also forks has fewer)."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            return []
        return [pid for pid in pids if _threads(pid) > 2]

    def kill(self) -> None:
        """SIGKILL to the whole process group: nothing of it runs a shutdown hook."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)

    def stop(self, timeout: float = 90) -> None:
        """SIGTERM to the parent only (the stop the README recommends), then SIGKILL to the group if it lingers."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


class Supervisor:
    """Starts each ``Supervised`` again ``RESTART_PAUSE`` s after it exits, on a thread, until ``stop()``.

    Parameters:
      processes(list[Supervised]): what it keeps running.
    """

    def __init__(self, processes: list[Supervised]) -> None:
        self.processes = {p.name: p for p in processes}
        self.restarts: Counter = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        for process in self.processes.values():
            process.start()
        self._thread.start()

    def _run(self) -> None:
        exited_at: dict[str, float] = {}
        while not self._stop.wait(0.2):
            with self._lock:
                for name, process in self.processes.items():
                    if process.alive():
                        continue
                    since = exited_at.setdefault(name, time.monotonic())
                    if time.monotonic() - since >= RESTART_PAUSE and not self._stop.is_set():
                        process.start()
                        self.restarts[name] += 1
                        exited_at.pop(name)

    def retire(self, name: str) -> None:
        """Stop one process for good (the SIGTERM the README recommends)."""
        with self._lock:
            process = self.processes.pop(name)
        process.stop()

    def all_alive(self) -> bool:
        return all(p.alive() for p in self.processes.values())

    def stop(self, kill: bool = False) -> None:
        """Stop restarting, then stop every process: the SIGTERM the README recommends, or with ``kill``
        SIGKILL to every process group (the soak was interrupted or failed)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for process in self.processes.values():
            process.kill() if kill else process.stop()
