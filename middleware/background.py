"""BackgroundLoop: one job done again and again on a thread of its own, until stopped.

    loop = BackgroundLoop("journal-metrics", refresh, interval=5.0)
    loop.start()
    ...
    loop.stop()

Every background thread of the product (the job-log drainer and its lost-work
sweep, the held start rows, the journal metrics, the buffered log lines) is
one of these, so each gets the same care: an exception is logged with its
traceback and the loop goes on (a thread never dies silently), except a
service being down (``outages``), said once when it starts and once when
it ends, not with a traceback every round; ``stop()``
ends it at its next pause, and a forked child starts with none running (a
thread does not survive a fork).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import peewee
import redis
import structlog

from models.error_text import first_line

from .fork_reset import reset_in_forked_children

logger = structlog.get_logger("middleware.background")


class ServiceUnavailable(Exception):
    """A service the product needs did not answer (e.g. the job-log journal's Redis): an outage, not a bug."""


# The database is not there right now (stopped, restarting, the connection dropped).
DATABASE_OUTAGES = (peewee.OperationalError, peewee.InterfaceError)
# Redis is away or restarting (redis-py's connection errors, loading included, and its timeouts); not a
# command Redis refuses, which would stay refused.
REDIS_OUTAGES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# What a loop's ``outages`` usually are: Redis or the database down, or our own word for it.
SERVICE_OUTAGES = (ServiceUnavailable, *REDIS_OUTAGES, *DATABASE_OUTAGES)


class BackgroundLoop:
    """Calls ``step`` on a daemon thread every ``interval`` seconds until ``stop()``.

    Parameters:
      name(str): The thread's name, also in the log line of a failed round.
      step(Callable[[], Optional[float]]): One round.  It may return how many
        seconds to pause before the next one (0: at once); None pauses ``interval``.
      interval(float): Seconds between two rounds; read before every pause, so it may be changed.
      first_pause(bool): Pause before the first round too.  Defaults to False.
      outages(tuple[type[Exception], ...]): Exceptions that mean a service is
        down: the first round failing so logs one WARNING (without a
        traceback), the next round that succeeds one line that it ended.
        Defaults to none.
    """

    def __init__(self, name: str, step: Callable[[], Optional[float]], interval: float,
                 first_pause: bool = False, outages: tuple[type[Exception], ...] = ()) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.first_pause = first_pause
        self.outages = outages
        self._down_since: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        reset_in_forked_children(self)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` (or ``request_stop()``) was called since the last start."""
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True at once when the loop is asked to stop."""
        return self._stop.wait(seconds)

    def start(self) -> None:
        """Run the loop on its thread (nothing when it runs already)."""
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
            self._thread.start()

    def run(self) -> None:
        """Run the loop in the calling thread until ``request_stop()`` (``enrich drain`` does)."""
        if self.first_pause and self._stop.wait(self.interval):
            return
        while not self._stop.is_set():
            try:
                pause = self.step()
            except self.outages as exc:
                self._note_outage(exc)
                pause = None
            except Exception:  # logged, and the next round tries again: never a silently dead thread
                logger.exception(f"{self.name}: a round failed; the next one tries again")
                pause = None
            else:
                self._note_recovery()
            pause = self.interval if pause is None else pause
            if pause > 0 and self._stop.wait(pause):
                return

    def _note_outage(self, exc: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(f"{self.name}: a service it needs is down; its rounds wait for it, said again "
                           "when it is back", error=f"{type(exc).__name__}: {first_line(exc)}")

    def _note_recovery(self) -> None:
        if self._down_since is not None:
            logger.warning(f"{self.name}: the service is back; its rounds go on",
                           down_for_seconds=round(time.monotonic() - self._down_since, 1))
            self._down_since = None

    def request_stop(self) -> None:
        """Make the loop end after the round in progress (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop and wait up to ``timeout`` seconds for its thread."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def after_fork_in_child(self) -> None:
        # The parent's thread does not exist here, and its lock may have been held at the fork.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._down_since = None
