"""The broker module the linking benchmark runs under ``dramatiq``.

BENCH_LINKING=1 adds JobLinking (rows go to DATABASE_URL); 0 runs plain Dramatiq.
BENCH_METRICS=1 adds the Prometheus middleware and ours (PROMETHEUS_PORT);
tracing follows the OTEL_* variables, as in workers.broker; BENCH_NO_OTEL=1
makes every ``opentelemetry`` import fail, as without the otel extra.
"""

import os
import sys

if os.environ.get("BENCH_NO_OTEL") == "1":
    class _NoOpenTelemetry:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"{name}: the otel extra is not installed (BENCH_NO_OTEL=1)")
            return None

    sys.meta_path.insert(0, _NoOpenTelemetry())

import dramatiq  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402

from bench.thread_ids import ThreadIds  # noqa: E402
from middleware import DatabaseConnections, JobLinking, MessageOptions  # noqa: E402
from models import bind_database, load_settings  # noqa: E402
from workers.log_buffer import DrainLogsAtShutdown  # noqa: E402
from workers.logging_setup import configure_logging, secret_values  # noqa: E402
from workers.telemetry import tracing_middleware  # noqa: E402

settings = load_settings()
configure_logging(settings)  # production logging in both modes (workers run with --skip-logging)

broker = RedisBroker(url=os.environ["REDIS_URL"])
if os.environ.get("BENCH_METRICS") == "1":
    from dramatiq.middleware import AgeLimit

    from middleware.metrics import JobMetrics
    from middleware.prometheus import MetricsExposition
    from workers.metrics_server import serve_metrics

    # Before Dramatiq's defaults (and after MessageOptions, added below), as in workers.broker.
    broker.add_middleware(MetricsExposition(settings.prometheus_host, settings.prometheus_port, server=serve_metrics),
                          before=AgeLimit)
broker.add_middleware(DrainLogsAtShutdown())
if os.environ.get("BENCH_LINKING") == "1":
    bind_database(os.environ["DATABASE_URL"])
    broker.add_middleware(MessageOptions(), before=type(broker.middleware[0]))
    broker.add_middleware(DatabaseConnections())
    if os.environ.get("BENCH_METRICS") == "1":
        broker.add_middleware(JobMetrics())
    tracing = tracing_middleware(settings, secret_values(settings))
    if tracing is not None:
        broker.add_middleware(tracing)
    broker.add_middleware(ThreadIds())  # the benchmark's own: tells it which threads are the drainer's
    broker.add_middleware(JobLinking())
dramatiq.set_broker(broker)

from bench.bench_actors import io_20ms, noop  # noqa: E402, F401  (declared on the broker set above)
