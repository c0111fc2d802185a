"""Start rows held back for a moment: a job that ends soon writes ONE journal entry, not two.

Most jobs last milliseconds.  Their ``running`` row would be appended to the
journal, read back by a drainer and folded into the job's end anyway; held
for ``hold`` seconds, it is folded into the end before it is appended (one
Redis round trip per job instead of two).  A job still running after
``hold`` has its start appended by a background thread, so ``running`` shows.
What is held is how to make the row, not the row: most jobs never need it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import structlog

from ..background import BackgroundLoop
from ..fork_reset import reset_in_forked_children
from .journal import JournalUnavailable

logger = structlog.get_logger("middleware.job_linking")


class StartRows:
    """Holds start rows until their job ends or ``hold`` seconds pass.

    Parameters:
      append(Callable[[dict], None]): Appends one row to the journal.
      hold(float): Seconds a start row waits for its job's end.  Defaults to 0.05.
    """

    def __init__(self, append: Callable[[dict], None], hold: float = 0.05) -> None:
        self._append = append
        self.hold = hold
        self._held: dict[str, tuple[float, Callable[[], dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        # Appends the starts held past ``hold``: held rows must not wait for their job's end.
        self._appender = BackgroundLoop("job-log-start-rows", lambda: self.flush(due_only=True), hold / 2,
                                        first_pause=True)
        reset_in_forked_children(self)

    def hold_row(self, job_id: str, make_row: Callable[[], dict[str, Any]]) -> None:
        """Hold ``job_id``'s start: ``make_row()`` makes its row if it is still held after ``hold``."""
        with self._lock:
            self._held[job_id] = (time.monotonic() + self.hold, make_row)
        if not self._appender.running:
            self._appender.start()

    def take(self, job_id: str) -> bool:
        """Whether the job's start was still held (now it is not: the caller folds it into the job's end)."""
        with self._lock:
            return self._held.pop(job_id, None) is not None

    def flush(self, due_only: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            due = [job_id for job_id, (deadline, _) in self._held.items() if not due_only or deadline <= now]
            makers = [self._held.pop(job_id)[1] for job_id in due]
        for make_row in makers:
            row = make_row()
            try:
                self._append(row)
            except JournalUnavailable as exc:
                # The job's end carries everything its start has: only `running` is missing meanwhile.
                logger.warning("job start not written to the job-log journal", job_id=row["job_id"], error=str(exc))

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._held = {}
