"""The broker every process uses: Redis when REDIS_URL is set, in-memory otherwise.

Middleware order matters: MessageOptions first, so that no middleware acts on
an option of the wrong type; Dramatiq's Prometheus metrics next (workers on
Redis), so that they see every message that starts, even one failed by the
next; ActorArguments next, so that a job whose arguments cannot fit its actor
fails before anything runs for it; Dramatiq's defaults next (with our retry
settings), then the per-message database connection release, our metrics and
the tracing, then JobLinking, so that it sees each attempt's final verdict.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from middleware import ActorArguments, DatabaseConnections, JobLinking, MessageOptions
from middleware.metrics import JobMetrics
from models import ConfigError, Settings
from models.settings import redact_url

from .log_buffer import DrainLogsAtShutdown
from .logging_setup import secret_values
from .redis_broker import DeadLetteringRedisBroker
from .telemetry import tracing_middleware


def build_broker(settings: Settings) -> dramatiq.Broker:
    """A broker with the product's middleware; in-memory when ``settings.redis_url`` is unset."""
    # Metrics only where `dramatiq workers` serves them: worker processes on Redis.
    metrics = bool(settings.redis_url and settings.prometheus_port)
    if metrics:
        from middleware.prometheus import MetricsExposition  # imports Dramatiq's prometheus module
    middleware = [
        MessageOptions(),  # first: its checks run before any other middleware reads an option
        # Dramatiq's own metrics and their HTTP endpoint (a process forked by `dramatiq`).
        *([MetricsExposition(settings.prometheus_host, settings.prometheus_port)] if metrics else []),
        ActorArguments(),  # a call that cannot fit the actor's signature fails here, never retried
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
    ]
    if settings.redis_url:
        try:
            broker = DeadLetteringRedisBroker(
                url=settings.redis_url,
                middleware=middleware,
                heartbeat_timeout=settings.redis_heartbeat_timeout_ms,
                maintenance_chance=settings.redis_maintenance_chance,
            )
        except ValueError:  # redis-py's words may quote the URL, password included
            raise ConfigError(f"REDIS_URL={redact_url(settings.redis_url)!r} is malformed "
                              "(e.g. redis://:password@host:6379/0, the database a number)") from None
    else:
        broker = StubBroker(middleware=middleware)
        broker.emit_after("process_boot")
    broker.add_middleware(DrainLogsAtShutdown())
    broker.add_middleware(DatabaseConnections())
    if metrics:
        # Ours, before JobLinking: it reads current_job() while JobLinking still holds it.
        broker.add_middleware(JobMetrics())
    tracing = tracing_middleware(settings, secret_values(settings))  # None unless tracing is configured
    if tracing is not None:
        # A span per attempt, current while JobLinking logs the attempt's lines.
        broker.add_middleware(tracing)
    # Its drainers also sweep for jobs whose message Redis lost (one sweep per interval across processes).
    broker.add_middleware(JobLinking(secrets=settings.secrets, lost_work_grace=settings.lost_work_grace_seconds,
                                     lost_work_interval=settings.lost_work_sweep_seconds))
    return broker


def job_linking(broker: dramatiq.Broker) -> JobLinking:
    return next(m for m in broker.middleware if isinstance(m, JobLinking))
