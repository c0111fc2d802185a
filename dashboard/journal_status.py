"""The job-log journal as the overview shows it: rows still waiting for the database, and rows it refused.

Pages read the database; a row the workers wrote reaches it only once a
drainer has moved it out of the journal (``middleware.job_log``).  When rows
wait there long, every page is behind: the overview says so.  The dashboard
reads the workers' Redis Stream with a client of its own, with short timeouts
(a page must not hang on a Redis that does not answer).  Without REDIS_URL the
journal lives in the memory of each process that runs jobs: nothing to read
from here, and the overview says that rather than showing zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote, urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from middleware.job_log import JobLog, JournalUnavailable
from models.error_text import first_line
from models.settings import redact_url

# `enrich drain`'s options for the rows put aside (workers/cli/drain.py).
LIST_COMMAND = "enrich drain --list-rejected"
REPLAY_COMMAND = "enrich drain --replay-rejected"
CONNECT_TIMEOUT = 1.0  # seconds: a host that drops packets costs the page at most this (twice: one retry)
READ_TIMEOUT = 1.0

INSPECTED, NOT_INSPECTABLE, UNREACHABLE = "inspected", "not_inspectable", "unreachable"


@dataclass(frozen=True)
class JournalStatus:
    """What the overview says about the journal.

    Parameters:
      state(str): ``inspected``, ``not_inspectable`` (no REDIS_URL) or ``unreachable`` (Redis did not
        answer, or refused the commands).
      behind_after_seconds(float): The oldest entry's age past which the job log is said to be behind.
      stream(str): The journal's Redis Stream (None without Redis).
      rejected_stream(str): Where the rows the database refused are kept (None without Redis).
      entries(int): Rows waiting in the journal (None unless inspected).
      oldest_age_seconds(float): Age of the oldest of them (None: none waits, or not inspected).
      rejected(int): Rows the database refused, kept aside (None unless inspected).
      problem(str): One line saying why the journal was not read (None when it was).
    """

    state: str
    behind_after_seconds: float
    stream: Optional[str] = None
    rejected_stream: Optional[str] = None
    entries: Optional[int] = None
    oldest_age_seconds: Optional[float] = None
    rejected: Optional[int] = None
    problem: Optional[str] = None

    @property
    def behind(self) -> bool:
        """The oldest row waiting is older than the threshold: pages lack rows the workers wrote."""
        return self.oldest_age_seconds is not None and self.oldest_age_seconds > self.behind_after_seconds

    @property
    def oldest_age_ms(self) -> Optional[int]:
        return None if self.oldest_age_seconds is None else round(self.oldest_age_seconds * 1000)


def _client(url: str) -> redis.Redis:
    """A client of the workers' Redis that gives up quickly: one retry (a pooled connection Redis closed)."""
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=READ_TIMEOUT,
                                retry=Retry(NoBackoff(), 1))


def _password(url: str) -> Optional[str]:
    try:
        password = urlparse(url).password
    except ValueError:  # load_settings checked the URL; a hand-made Settings may hold anything
        return None
    return unquote(password) if password else None


class JournalReader:
    """Reads the journal's figures for each overview.

    Parameters:
      redis_url(str): The workers' REDIS_URL; None: the journal is in other processes' memory.
      stream(str): The journal's name under the broker's namespace (``JOB_LOG_STREAM``).
      behind_after_seconds(float): See ``JournalStatus``.
    """

    def __init__(self, redis_url: Optional[str], stream: str, behind_after_seconds: float) -> None:
        self.redis_url = redis_url
        self.behind_after_seconds = behind_after_seconds
        self.job_log: Optional[JobLog] = JobLog.of_redis(_client(redis_url), stream) if redis_url else None

    def status(self) -> JournalStatus:
        """The journal's backlog and rejected rows now, or why they cannot be read (never raises for Redis)."""
        if self.job_log is None:
            return JournalStatus(NOT_INSPECTABLE, self.behind_after_seconds,
                                 problem="not inspectable from here: REDIS_URL is not set, so each process that "
                                         "runs jobs (enrich run, enrich demo) keeps its journal in its own memory")
        stream, rejected_stream = self.job_log.keys
        where = {"stream": stream, "rejected_stream": rejected_stream}
        try:
            stats = self.job_log.stats()  # entries and the oldest's age (its totals count this process only)
            rejected = self.job_log.rejected_count()
        except (JournalUnavailable, redis.RedisError) as exc:
            return JournalStatus(UNREACHABLE, self.behind_after_seconds, **where, problem=self._unreachable(exc))
        return JournalStatus(INSPECTED, self.behind_after_seconds, **where, entries=stats["entries"],
                             oldest_age_seconds=stats["oldest_age_seconds"], rejected=rejected)

    def _unreachable(self, exc: Exception) -> str:
        """One line naming the Redis (its password hidden) and what it answered."""
        text = first_line(exc)
        password = _password(self.redis_url)
        if password:
            text = text.replace(password, "***")
        return f"cannot be read from Redis at {redact_url(self.redis_url)}: {text}"
