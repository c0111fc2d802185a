"""CPU cost per message of the metrics and tracing middleware, in one process, without a broker.

    .venv/bin/python bench/observability_cost.py [--messages 20000] [--rounds 3]

The linking benchmark measures whole workers, and on a shared 2-core
machine its figures swing by a third.  This one calls the hooks Dramatiq
calls for each message (enqueue of one child, process, ack) on each stack,
interleaved, ``--rounds`` times, and prints microseconds of CPU per message
for every round and the median:

* ``base``: the hooks of no middleware at all (the loop's own cost);
* ``metered``: Dramatiq's Prometheus middleware and ours (multiprocess files);
* ``traced``: the Tracing middleware, spans batched to an OTLP/HTTP
  exporter whose endpoint drops them (the export thread's CPU included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


class Message:
    """What the hooks read of a Dramatiq message."""

    def __init__(self, n: int):
        self.message_id = f"00000000-0000-4000-8000-{n:012d}"
        self.queue_name = "default"
        self.actor_name = "enrich_album"
        self.options = {}
        self.args = ()
        self.kwargs = {}
        self.failed = False


def stack(name: str):
    """(middleware list, flush, close) for one mode."""
    if name == "base":
        return [], lambda: None, lambda: None
    if name == "metered":
        from middleware.metrics import JobMetrics
        from middleware.prometheus import MetricsExposition
        from workers.metrics_server import serve_metrics

        exposition = MetricsExposition(server=serve_metrics)
        exposition.after_process_boot(None)  # sets up the multiprocess directory
        metrics = JobMetrics()
        metrics.before_worker_boot(None, None)
        return [exposition, metrics], lambda: None, lambda: None
    if name == "traced":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from bench.linking_benchmark import otlp_sink
        from middleware.tracing import Tracing

        provider = TracerProvider()
        # A queue big enough that no span is dropped: all of them are exported, and their CPU counted.
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_sink() + "/v1/traces"), max_queue_size=10**6)
        provider.add_span_processor(processor)
        return [Tracing(provider)], processor.force_flush, provider.shutdown
    raise ValueError(name)


def run(middleware, count: int, flush) -> float:
    """CPU microseconds per message (process time: every thread, the exporter's included)."""
    from middleware.job_context import JobState, set_current

    started = time.process_time()
    for n in range(count):
        message = Message(n)
        child = Message(n + 10**9)
        for m in middleware:
            m.before_process_message(None, message)
        set_current(JobState(job_id=message.message_id, root_id=None, operation="enrichment:album", attempt=0))
        for m in middleware:
            m.before_enqueue(None, child, 0)
        for m in reversed(middleware):
            m.after_enqueue(None, child, 0)
        for m in reversed(middleware):
            m.after_process_message(None, message, result=None, exception=None)
        for m in middleware:
            m.before_ack(None, message)
        set_current(None)
        for m in reversed(middleware):
            m.after_ack(None, message)
    flush()  # the spans still queued are exported inside the measurement
    return (time.process_time() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["dramatiq_prom_db"] = tempfile.mkdtemp(prefix="bench-prom-")
    modes = ["base", "metered", "traced"]
    stacks = {m: stack(m) for m in modes}
    results = {m: [] for m in modes}
    print("CPU microseconds per message (one child sent, processed, acked)")
    print(f"{'round':<7}" + "".join(f"{m:>10}" for m in modes))
    for round_no in range(1, args.rounds + 1):
        for mode in modes:
            results[mode].append(run(stacks[mode][0], args.messages, stacks[mode][1]))
        print(f"{round_no:<7}" + "".join(f"{results[m][-1]:>10.1f}" for m in modes), flush=True)
    medians = {m: statistics.median(results[m]) for m in modes}
    print(f"{'median':<7}" + "".join(f"{medians[m]:>10.1f}" for m in modes))
    for mode in modes[1:]:
        print(f"  {mode}: {medians[mode] - medians['base']:+.1f} us per message")
    for _, _, close in stacks.values():
        close()


if __name__ == "__main__":
    main()
