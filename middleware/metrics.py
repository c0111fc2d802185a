"""JobMetrics: the product's job metrics (``middleware/observability.py``), beside Dramatiq's.

    broker.add_middleware(MetricsExposition(...))   # Dramatiq's metrics and the HTTP endpoint
    broker.add_middleware(JobMetrics())             # ours, after it and before JobLinking
"""

from __future__ import annotations

import threading
import time

from dramatiq.middleware import Middleware

from models.job_log import RETRYING

from .job_context import current_job
from .observability import enable_metrics, observe_job_attempt, observe_job_finished, stop_journal_metrics


class JobMetrics(Middleware):
    """Counts finished jobs, times attempts and notices roots turning degraded.

    Add it after ``MetricsExposition`` (its metrics need that middleware's
    directory) and before ``JobLinking`` (it reads the running job from
    ``current_job()`` before JobLinking lets go of it).  Roots turning
    degraded are counted by the job-log drainer (``observe_root_degraded``).
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def before_worker_boot(self, broker, worker):
        # Not after_process_boot: Dramatiq emits after_* hooks last middleware first, and
        # MetricsExposition must have set up the multiprocess directory before.
        enable_metrics()

    def before_worker_shutdown(self, broker, worker):
        stop_journal_metrics()

    def before_process_message(self, broker, message):
        self._local.started = time.monotonic()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        job = current_job()
        started = getattr(self._local, "started", None)
        if job is not None and job.job_id == message.message_id and started is not None:
            observe_job_attempt(job.operation, time.monotonic() - started)
        self._local.started = None

    def before_ack(self, broker, message):
        self._local.ending = self._ending(message, failed=False)

    def before_nack(self, broker, message):
        self._local.ending = self._ending(message, failed=True)

    def after_ack(self, broker, message):
        self._finished(message)

    after_nack = after_ack

    def _ending(self, message, failed: bool):
        """(job id, operation, final status, root job id or None) of the attempt ending; None when retried."""
        job = current_job()
        if job is None or job.job_id != message.message_id:
            return None
        status, _ = job.verdict(failed)
        if status == RETRYING:
            return None  # not finished: Dramatiq runs it again
        return message.message_id, job.operation, status, job.root_id

    def _finished(self, message) -> None:
        ending, self._local.ending = getattr(self._local, "ending", None), None
        if ending is None or ending[0] != message.message_id:
            return
        _, operation, status, _ = ending
        observe_job_finished(operation, status)
        # A root turning degraded is counted by the job-log drainer that applies the
        # tree's first failure (observe_root_degraded): only it knows when that is.
