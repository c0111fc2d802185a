"""BufferedLines: log lines written to their stream in batches, at most a few ms late.

Under ``dramatiq``, a worker process's stderr is a pipe to the parent
process, which reads and re-writes every line: about five system calls in
two processes per line.  With two lines per job that cost more CPU than the
rest of job linking together, so lines are collected and written together.

Lines at WARNING and above are written at once (with whatever waits before
them, so the order holds): they are the ones an operator needs if the
process dies.  What a process killed outright (SIGKILL) had not written yet
is lost: at most ``interval`` seconds of INFO lines.
"""

from __future__ import annotations

import atexit
import io
import threading
import weakref
from typing import TextIO

from dramatiq.middleware import Middleware

from middleware.background import BackgroundLoop
from middleware.fork_reset import reset_in_forked_children

_all_buffers: "weakref.WeakSet[BufferedLines]" = weakref.WeakSet()


class BufferedLines(io.TextIOBase):
    """A text stream that writes what it is given to ``stream`` every ``interval`` seconds.

    Parameters:
      stream(TextIO): Where the lines go.
      interval(float): The longest a line waits, in seconds.
      max_chars(int): Write at once when this much is waiting.  Defaults to 64 KiB.
    """

    def __init__(self, stream: TextIO, interval: float, max_chars: int = 65536) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self.max_chars = max_chars
        self._parts: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._flusher = BackgroundLoop("log-flusher", self.drain, interval, first_pause=True)
        _all_buffers.add(self)
        reset_in_forked_children(self)

    def write(self, text: str) -> int:
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            if self._size >= self.max_chars:
                self._write_out()
        if not self._flusher.running:
            self._flusher.start()
        return len(text)

    def flush(self) -> None:
        """Nothing: callers flush after every line, which is what this class is for avoiding."""

    def drain(self) -> None:
        """Write everything waiting now (a WARNING line, a shutdown)."""
        with self._lock:
            self._write_out()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty() if hasattr(self.stream, "isatty") else False

    def _write_out(self) -> None:
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # the stream is gone (a closed pipe at exit): nowhere left to write

    def after_fork_in_child(self) -> None:
        # The parent writes what was waiting at the fork; the child must not write it again
        # (and its flusher, a BackgroundLoop, starts again on the child's first line).
        self._lock = threading.Lock()
        self._parts = []
        self._size = 0


def drain_all() -> None:
    """Write every buffer's waiting lines (at exit, at worker shutdown)."""
    for buffer in list(_all_buffers):
        buffer.drain()


class DrainLogsAtShutdown(Middleware):
    """Writes the waiting log lines when a worker stops.

    ``dramatiq`` ends its worker processes with ``os._exit`` after closing
    their log pipe, so exit handlers never run there: this hook is the last
    moment the lines can go out.
    """

    def after_worker_shutdown(self, broker, worker):
        drain_all()


atexit.register(drain_all)
