"""The broker every process uses: Redis when REDIS_URL is set, in-memory otherwise.

``build_broker(settings)`` is the factory; ``workers.app.start`` calls it once
per process.  Its middleware stack is the one list in ``middleware_stack``,
in the order Dramatiq runs the ``before_*`` hooks (``after_*`` hooks run in
the reverse order).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from middleware import ActorArguments, DatabaseConnections, JobLinking, MessageOptions, WorkerRegistry
from middleware.job_log import JobLog
from middleware.metrics import JobMetrics
from models import ConfigError, Settings
from models.settings import redact_url

from .catalog_status import CatalogStatus
from .log_buffer import DrainLogsAtShutdown
from .logging_setup import secret_values
from .queue_metrics import QueueMetrics
from .redis_broker import DeadLetteringRedisBroker
from .telemetry import tracing_middleware


def middleware_stack(settings: Settings) -> list[dramatiq.Middleware]:
    """The product's middleware, in order; metrics and tracing only where the settings turn them on."""
    # Metrics only where `dramatiq workers.worker` serves them: worker processes on Redis.
    metrics = bool(settings.redis_url and settings.prometheus_port)
    if metrics:
        from middleware.prometheus import MetricsExposition  # imports Dramatiq's prometheus module

        from .metrics_server import serve_metrics
    tracing = tracing_middleware(settings, secret_values(settings))  # None unless tracing is configured
    job_log = settings.job_log
    stack = [
        # First: its checks run before any other middleware reads an option of the wrong type.
        MessageOptions(),
        # Dramatiq's own metrics and their HTTP endpoint (a process forked by `dramatiq`): before the
        # next one, so that they see every message that starts, even one it fails.
        *([MetricsExposition(settings.prometheus_host, settings.prometheus_port, server=serve_metrics)]
          if metrics else []),
        # A call that cannot fit the actor's signature fails here, before anything runs for it; never retried.
        ActorArguments(),
        # Dramatiq's defaults, with our time limit and retry settings.
        AgeLimit(),
        TimeLimit(time_limit=settings.job_time_limit_ms),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(
            max_retries=settings.job_max_retries,
            min_backoff=settings.retry_min_backoff_ms,
            max_backoff=settings.retry_max_backoff_ms,
        ),
        # Buffered log lines written out when the worker stops.
        DrainLogsAtShutdown(),
        # The database connection of a worker thread handed back after each message.
        DatabaseConnections(),
        # Ours, before JobLinking: it reads current_job() while JobLinking still holds it.
        *([JobMetrics(), QueueMetrics()] if metrics else []),
        # Before JobLinking: it reads the job's final outcome while JobLinking still holds the job.
        CatalogStatus(),
        # This process and the jobs it runs, in Redis (`enrich workers`; the lost-work sweep spares them).
        WorkerRegistry(),
        # A span per attempt, current while JobLinking logs the attempt's lines.
        *([tracing] if tracing is not None else []),
        # Last, so that it sees each attempt's final verdict (after Retries decided).  Its drainers also
        # sweep for jobs whose message Redis lost (one sweep per interval across processes).
        JobLinking(secrets=settings.secrets, log_lines=job_log.lines, stream=job_log.stream,
                   drain_in_workers=job_log.drain_in_workers, lost_work_grace=settings.lost_work_grace_seconds,
                   lost_work_interval=settings.lost_work_sweep_seconds),
    ]
    return stack


def build_broker(settings: Settings) -> dramatiq.Broker:
    """A broker with the product's middleware; in-memory when ``settings.redis_url`` is unset."""
    stack = middleware_stack(settings)
    if not settings.redis_url:
        broker = StubBroker(middleware=stack)
        broker.emit_after("process_boot")  # no `dramatiq` process boots it
        return broker
    try:
        return DeadLetteringRedisBroker(
            url=settings.redis_url,
            middleware=stack,
            heartbeat_timeout=settings.redis_heartbeat_timeout_ms,
            maintenance_chance=settings.redis_maintenance_chance,
        )
    except ValueError:  # redis-py's words may quote the URL, password included
        raise ConfigError(f"REDIS_URL={redact_url(settings.redis_url)!r} is malformed "
                          "(e.g. redis://:password@host:6379/0, the database a number)") from None


def job_linking(broker: dramatiq.Broker) -> JobLinking:
    return next(m for m in broker.middleware if isinstance(m, JobLinking))


def job_log(broker: dramatiq.Broker) -> JobLog:
    """The job-log engine of ``broker``'s JobLinking: its journal, drainer and sweeper."""
    return job_linking(broker).job_log.bind(broker)
