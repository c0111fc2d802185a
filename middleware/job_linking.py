"""JobLinking: every message becomes one row of ``enrichment_logs`` from the
moment it is sent (``queued``), linked into a flat tree
under the root job that started it, and moved forward as workers run it.

    broker.add_middleware(JobLinking())

Add it last, after Dramatiq's defaults and ``MessageOptions`` (which checks
every option; JobLinking checks the ones it reads again, by the same rules,
so it is safe alone): its ``before_*`` hooks then run after everyone else's,
and its verdict on a failed attempt is read in ``before_ack``/``before_nack``,
once Retries has decided whether to retry.

This module holds the Dramatiq hooks only: it builds each write
(``JobLogRow``) and hands it to its ``JobLog`` (``middleware.job_log``: the
journal, a Redis Stream with a RedisBroker, and the drainers that apply it
to the database).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Iterable, Optional

import structlog
from dramatiq.errors import ActorNotFound, BrokerConnectionError, ConnectionClosed
from dramatiq.middleware import Middleware, MiddlewareError
from dramatiq.worker import ConsumerThread

from models.job_log import FAILED, RETRYING, RUNNING, SKIPPED
from models.settings import JOB_LOG_LINES, ConfigError, job_log_settings

from .background import REDIS_OUTAGES
from .job_context import JobState, current_job, set_current, starting_new_tree
from .job_log import JobLog, JobLogRefused, JobLogRow, JournalUnavailable
from .job_log.ride_along import JournalDown
from .job_log.root_status import counts_against_root
from .job_log.row_values import MAX_TRIGGERED_BY, from_millis, is_job_id, job_id_problem, parent_problem, shown
from .job_log.rows import attempt_start, due_at, message_entity, operation_of
from .linking_options import check_actor
from .message_options import LINKING_CHECKS, drop_bad_options
from .observability import observe_journal

logger = structlog.get_logger("middleware.job_linking")

_CONTEXT_KEYS = ("job_id", "parent_job_id", "operation")


class RetryNotEnqueued(MiddlewareError, ConnectionClosed):
    """Retries could not put a failed attempt's message back (Redis down): it must not be acked yet.

    Raised from ``before_ack`` like ``JournalDown``: the worker retries the ack every few
    seconds, and this hook enqueues the retry again first, until Redis takes it.
    """


# What a broker raises while Redis is away or restarting: redis-py's (REDIS_OUTAGES), Dramatiq's, a refused socket.
BROKER_DOWN = (*REDIS_OUTAGES, BrokerConnectionError, ConnectionError)


def _before(message, what: str) -> Optional[tuple[str, str]]:
    """A write that must be in the journal before ``message``'s enqueue or ack (sent with it on Redis)."""
    redis_message_id = message.options.get("redis_message_id")
    return None if redis_message_id is None else (redis_message_id, what)


class JobLinking(Middleware):
    """Writes one job-log row per message and links rows into flat trees.

    A message's parent is its ``parent_job_id`` option: the id of the ROOT of
    its tree.  While an actor runs, every message it sends is given the
    running job's root (or its own id, when it is the root), so the tree is
    flat at any depth; use ``middleware.new_tree()`` to start a new tree.

    A message gets its ``queued`` row when it is sent.  Every write goes to
    the journal (``self.job_log``); the final one is appended before the
    message is acked (if it cannot be, the ack waits and is retried).  So is
    a retry that Retries could not enqueue (Redis down): the ack waits, and
    the retry is enqueued again before each try of the ack.  A
    worker process checks the database at boot and refuses to start, with one
    line, when it cannot take the job log.

    Actor options:
      operation(str): The job type written to the row (default: actor name).
      entity(tuple[str, str]): ``(entity_type, argument_name)``: the row's
        entity is that keyword argument, or the first positional argument.
      Both are checked when the actor is declared (``middleware/linking_options.py``).

    Parameters:
      database(peewee.Database): Where rows go.  Defaults to ``models.database``,
        bound to ``DATABASE_URL`` if nothing else bound it.
      secrets(Callable[[], Iterable[str]]): Secret values to remove from
        error texts.  Defaults to none (credential-shaped text is still removed).
      log_lines(str): Per-job log lines (the row holds all they say): ``failures``
        (a ``job finished`` line for an attempt that failed or will be retried),
        ``finished`` (one for every attempt), ``all`` (``job started`` too) or
        ``none``.  Defaults to ``JOB_LOG_LINES``, else ``failures``.
      stream, drain_in_workers, batch_size, claim_idle, root_wait, lost_work_grace,
        lost_work_interval: The job log's, passed to ``JobLog`` (``middleware/job_log/engine.py``,
        which lists them with their defaults).
    """

    def __init__(
        self,
        database=None,
        *,
        secrets: Optional[Callable[[], Iterable[str]]] = None,
        log_lines: Optional[str] = None,
        **job_log_options: Any,
    ) -> None:
        self.secrets = secrets or (lambda: ())
        self.log_lines = log_lines or job_log_settings().lines
        if self.log_lines not in JOB_LOG_LINES:
            raise ConfigError(f"log_lines={self.log_lines!r} must be one of {', '.join(JOB_LOG_LINES)}")
        self.job_log = JobLog(database, **job_log_options)

    @property
    def actor_options(self):
        return {"operation", "entity"}

    def before_declare_actor(self, broker, actor):
        """A malformed ``operation`` or ``entity`` stops the declaration (BadActorOptions, one line).

        Before, not after: Dramatiq logs and drops what an ``after_*`` hook raises.  (An actor declared
        before this middleware was added cannot have these options: Dramatiq refuses unknown options.)
        """
        check_actor(actor)

    # -- worker lifecycle --------------------------------------------------------------

    def before_worker_boot(self, broker, worker):
        """Refuse to start (one line, nothing consumed) when the database cannot take the job log;
        warn (one line) when the broker's Redis would forget everything on a restart."""
        try:
            self.job_log.check_database()
        except JobLogRefused as exc:
            print(f"JobLinking: refusing to start: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(3) from None
        self.job_log.bind(broker).warn_if_redis_keeps_nothing("worker")

    def after_worker_boot(self, broker, worker):
        self.job_log.bind(broker).start_draining()
        observe_journal(self.job_log.stats)  # the enrich_journal_* metrics, when metrics are on

    def after_worker_shutdown(self, broker, worker):
        # After, not before: the worker threads finish the jobs they run first, and their ends must be
        # drained too (with every worker stopping, no other drainer may be left to apply them).
        self.job_log.stop()

    # -- linking -------------------------------------------------------------

    def before_enqueue(self, broker, message, delay):
        job = current_job()
        if job is not None and message.message_id == job.job_id:
            # Dramatiq re-enqueueing the running message itself (a retry): ``after_enqueue`` notes it got
            # there; the delay is kept so that ``_finish`` can enqueue it again if the broker refused it.
            job.retry_delay = delay
            return
        if delay is None and isinstance(threading.current_thread(), ConsumerThread):
            # A delayed message (a retry after its backoff too) moved to its queue once due, by
            # the worker's consumer thread, which deletes its ``eta`` first: its row says so already.
            return
        if job is not None:
            self._link(job, message.options)
        self._record_sent(broker, message, delay, outside_job=job is None)

    @staticmethod
    def _link(job: JobState, options: dict) -> None:
        """Put a message sent by ``job`` in its tree (or make it the root of a new one)."""
        if starting_new_tree():
            options.pop("parent_job_id", None)
            options["triggered_by"] = job.job_id[:MAX_TRIGGERED_BY]
            options["started_by"] = {"job_id": job.job_id, "operation": job.operation}
        elif options.get("parent_job_id") is None:
            options["parent_job_id"] = job.tree_id

    def _record_sent(self, broker, message, delay, outside_job: bool) -> None:
        """The ``queued`` row of a message about to be enqueued: written once, before it is.

        It is appended to the journal (one Redis command; a drainer applies
        it), before the message is enqueued, so a sending job's end comes
        after it; if Redis refuses it, the send raises ``JournalDown`` and
        nothing is enqueued.  An in-memory journal (no Redis) is drained
        only by this process: a send outside any job applies its row to
        the database at once instead (such a process may have no worker
        and exit at once), and appends it only when the database cannot take it.
        """
        row = JobLogRow.queued(message, delay, self._actor_options(broker, message.actor_name))
        if row is None:
            return
        job_log = self.job_log.bind(broker)
        if outside_job and job_log.in_memory and job_log.apply_now([row]):
            return
        try:
            job_log.append(row, before=_before(message, "the message's queued row"))
        except JournalUnavailable as exc:
            raise JournalDown(f"the message's queued row could not be written, so it was not sent: {exc}") from exc

    def after_enqueue(self, broker, message, delay):
        job = current_job()
        if job is not None and message.message_id == job.job_id:
            job.retry_enqueued = True  # Retries put this very message back on the queue
            job.retry_due = due_at(message, delay)

    # -- one row per job ---------------------------------------------------------

    def before_process_message(self, broker, message):
        job = self._start_job(broker, message)
        if job.loggable:
            self.job_log.bind(broker).hold_start(job.job_id, lambda: JobLogRow.start(job, message))
        if self.log_lines == "all":
            self._log("job started", job, RUNNING)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        job = current_job()
        if job is not None and job.job_id == message.message_id:
            job.exception = exception

    def after_skip_message(self, broker, message):
        job = current_job()
        if job is None or job.job_id != message.message_id:
            # Skipped by a middleware before ours ran (e.g. AgeLimit).
            job = self._start_job(broker, message)
        job.skipped = True
        reason = getattr(message, "_exception", None)  # stuffed by the worker when the skip failed the message
        if getattr(reason, "error_code", None):
            job.exception = reason  # a middleware's own reason to fail it, e.g. ActorArguments' bad_arguments

    def before_ack(self, broker, message):
        self._finish(broker, message, failed=False)

    def before_nack(self, broker, message):
        self._finish(broker, message, failed=True)

    # -- internals -------------------------------------------------------------

    def _start_job(self, broker, message) -> JobState:
        # MessageOptions, first in the stack, has checked these already; JobLinking may be used without it.
        drop_bad_options(broker, message, LINKING_CHECKS)
        options = message.options
        parent = options.get("parent_job_id")
        attempt = options.get("retries", 0)
        # Retries re-enqueue these same options: the first attempt's start travels
        # with the message, so every write of the job carries it.
        first_start = from_millis(options.get("first_started_at"))
        if first_start is None:
            options["first_started_at"] = int(time.time() * 1000)
            first_start = from_millis(options["first_started_at"])
        actor_options = self._actor_options(broker, message.actor_name)
        operation = operation_of(actor_options, message.actor_name)
        job = JobState(
            job_id=message.message_id,
            root_id=parent,
            operation=operation,
            attempt=attempt,
            entity=message_entity(actor_options.get("entity"), message),
            enqueued_at=from_millis(message.message_timestamp),
            started_at=first_start,
        )
        problem = job_id_problem(job.job_id)
        if problem:
            # The row is keyed by the message id: one that cannot be stored gets no row.
            job.loggable = False
            logger.warning("message id cannot be a job id; the job runs without a log row",
                           bad_value=shown(job.job_id), problem=problem)
        set_current(job)
        structlog.contextvars.bind_contextvars(
            job_id=job.job_id, parent_job_id=job.root_id, operation=job.operation
        )
        return job

    @staticmethod
    def _actor_options(broker, actor_name) -> dict:
        try:
            return broker.get_actor(actor_name).options
        except ActorNotFound:
            return {}

    def _finish(self, broker, message, failed: bool) -> None:
        job = current_job()
        if job is None or job.job_id != message.message_id:
            if failed and isinstance(getattr(message, "_exception", None), ActorNotFound):
                self._record_unknown_actor(broker, message)
            return  # e.g. the consumer thread acking a delayed message it re-enqueued
        job_log = self.job_log.bind(broker)
        if job.final_write is None:
            if not failed and job.exception is not None and job.retry_delay is not None and not job.retry_enqueued:
                self._enqueue_retry(broker, message, job)
            status, retry_count, error = self._verdict(job, message, failed)
            if status == RETRYING:
                row = JobLogRow.retrying(job, message, retry_count, error, self.secrets()).as_dict()
            else:
                row = JobLogRow.end(job, message, status, retry_count, error, self.secrets()).as_dict()
            if job_log.take_start(job.job_id):
                row["created_at"] = attempt_start(job)  # a short job: its end is its start too
            job.final_write = (row, job.root_id if counts_against_root(status) else None)
        row, failed_child_of = job.final_write
        if job.loggable:
            try:
                job_log.append(row, failed_child_of, before=_before(message, "the job's final row"))
            except JournalUnavailable as exc:
                # The job stays current: Dramatiq calls this hook again when it retries the ack.
                logger.warning("job end not written to the job-log journal; the ack waits for it", error=str(exc))
                raise JournalDown(str(exc)) from exc
        try:
            if not job.loggable:
                # No row will show this job: say in the log where its message went.
                logger.warning("job without a log row finished", bad_value=shown(job.job_id), status=row["status"],
                               message_went_to="the dead-letter queue" if failed else "nowhere: acked as done",
                               actor=shown(message.actor_name), error=row["last_error"])
            if self._logs_end(row["status"]):
                self._log("job finished", job, row["status"], retry_count=row["retry_count"],
                          duration_ms=row["duration_ms"], error=row["last_error"], saved=job.loggable)
        finally:
            set_current(None)
            structlog.contextvars.unbind_contextvars(*_CONTEXT_KEYS)

    def _enqueue_retry(self, broker, message, job: JobState) -> None:
        """Enqueue the retry that Retries asked for and the broker refused; while Redis is down the ack
        waits (``RetryNotEnqueued``) and Dramatiq calls this again, so a blip never ends the job.

        A refusal that is not an outage (a bug) leaves the verdict ``retry_not_enqueued``."""
        try:
            broker.enqueue(message, delay=job.retry_delay)  # after_enqueue marks it retry_enqueued
        except BROKER_DOWN as exc:
            logger.warning("retry not enqueued: the broker is unavailable; the ack waits and the enqueue is "
                           "tried again", job_id=job.job_id, error=f"{type(exc).__name__}: {exc}")
            raise RetryNotEnqueued(str(exc)) from exc
        except Exception as exc:
            logger.error("retry not enqueued: the broker refused it", job_id=job.job_id,
                         error=f"{type(exc).__name__}: {exc}")
            job.retry_delay = None  # no retry will come: the verdict is failed

    def _verdict(self, job: JobState, message, failed: bool):
        """(status, retry_count, exception) for the attempt that just ended."""
        status, retry_count = job.verdict(failed)
        exception = None if status == SKIPPED else job.exception
        if status == FAILED and not failed and message.options.get("retries", 0) > job.attempt:
            # Retries meant to retry, but the broker refused the message for a reason other than
            # an outage (_enqueue_retry): nothing will run this job again, so its row must not wait.
            job.outcome.error_code = "retry_not_enqueued"
        return status, retry_count, exception

    def _record_unknown_actor(self, broker, message) -> None:
        """A message for an actor this worker does not know: one failed row, never silence."""
        if not is_job_id(message.message_id):
            return
        parent = message.options.get("parent_job_id")
        job = JobState(
            job_id=message.message_id,
            root_id=None if parent_problem(parent, message.message_id) else parent,
            operation=operation_of({}, message.actor_name),
            attempt=0,
        )
        job.outcome.error_code = "unknown_actor"
        job.outcome.reason = f"no actor named {shown(message.actor_name)} is declared on this worker"
        row = JobLogRow.end(job, message, FAILED)
        try:
            self.job_log.bind(broker).append(row, job.root_id, before=_before(message, "the job's final row"))
        except JournalUnavailable as exc:
            raise JournalDown(str(exc)) from exc
        if self._logs_end(FAILED):
            self._log("job finished", job, FAILED, error=row.last_error)

    def _logs_end(self, status: str) -> bool:
        """Whether an attempt that ended ``status`` gets a ``job finished`` line (``log_lines``)."""
        lines = self.log_lines
        return lines in ("finished", "all") or (lines == "failures" and status in (FAILED, RETRYING))

    def _log(self, event: str, job: JobState, status: str, **extra) -> None:
        logger.info(
            event,
            job_id=job.job_id,
            parent_job_id=job.root_id,
            is_root_job=job.is_root,
            operation=job.operation,
            status=status,
            retry_count=extra.pop("retry_count", job.attempt),
            **extra,
        )
