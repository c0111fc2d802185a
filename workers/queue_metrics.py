"""QueueMetrics: the broker's queues as ``enrich_queue_messages`` and ``enrich_queue_oldest_age_seconds``.

Each worker process reads the queues (``workers/queues.py``: a few pipelined
commands, whatever the queues hold) every ``interval`` seconds while its
metrics are on; the gauges are maxed over live processes, so every process
reporting the same broker counts once.

Parameters:
  interval(float): seconds between two reads (default 15).
"""

from __future__ import annotations

from dramatiq import Middleware

from middleware.observability import observe_queues, stop_queue_metrics

from .queues import queue_summaries


class QueueMetrics(Middleware):
    def __init__(self, interval: float = 15.0) -> None:
        self.interval = interval

    def before_worker_boot(self, broker, worker):
        # After JobMetrics in the stack: its before_worker_boot has enabled the metrics.
        observe_queues(lambda: queue_summaries(broker.client, broker.get_declared_queues()), self.interval)

    def before_worker_shutdown(self, broker, worker):
        stop_queue_metrics()
