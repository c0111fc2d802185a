"""A StubBroker with JobLinking and a real Dramatiq worker, for the middleware tests."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import dramatiq
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from middleware import DatabaseConnections, JobLinking, MessageOptions
from middleware.job_log.rows import JobLogRow
from models import EnrichmentLog


class Harness:
    def __init__(self, linking: JobLinking, threads: int = 4):
        self.broker = StubBroker()
        self.broker.add_middleware(MessageOptions(), before=self.broker.middleware[0].__class__)
        self.broker.emit_after("process_boot")
        self.linking = linking
        self.broker.add_middleware(DatabaseConnections())
        self.broker.add_middleware(linking)
        dramatiq.set_broker(self.broker)
        self.worker = Worker(self.broker, worker_timeout=50, worker_threads=threads)

    def actor(self, fn=None, **options):
        options.setdefault("min_backoff", 10)
        options.setdefault("max_backoff", 50)
        return dramatiq.actor(fn, broker=self.broker, **options) if fn else (
            lambda f: dramatiq.actor(f, broker=self.broker, **options)
        )

    def start(self):
        self.worker.start()
        return self

    def drain(self, timeout: float = 30.0):
        """Every message processed and every row it wrote in the database."""
        drain(self.broker, self.worker, timeout)

    def stop(self):
        self.worker.stop()
        self.linking.job_log.stop()
        self.broker.close()


def drain(broker: StubBroker, worker: Worker, timeout: float = 30.0) -> None:
    """Wait until every queue (delayed ones too) is empty, every message acked, and every row they
    wrote applied from the job-log journal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for queue in list(broker.queues):
            broker.join(queue, fail_fast=False, timeout=int(max(deadline - time.monotonic(), 0.1) * 1000))
        worker.join()
        if all(q.qsize() == 0 and q.unfinished_tasks == 0 for q in broker.queues.values()):
            for linking in (m for m in broker.middleware if isinstance(m, JobLinking)):
                assert linking.job_log.flush(max(deadline - time.monotonic(), 1.0)), "the job-log journal was not drained"
            return
    raise TimeoutError("queues did not drain")


def rows() -> dict:
    return {r.job_id: r for r in EnrichmentLog.select()}


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def journal_row(job_id: str, status: str, root: str | None = None, **extra) -> dict:
    """A job-log row as the workers append it to the journal (any column can be set)."""
    now = dt.datetime.utcnow()
    values = dict(id=str(uuid.uuid4()), job_id=job_id, parent_job_id=root, is_root_job=root is None,
                  operation="test:op", status=status, enqueued_at=now, started_at=now,
                  completed_at=None if status == "running" else now, created_at=now)
    return JobLogRow(**{**values, **extra}).as_dict()
