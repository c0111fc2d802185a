"""The product's own Prometheus metrics, defined here once, and the functions that observe them.

Who observes what: ``JobMetrics`` (``middleware/metrics.py``) the jobs,
JobLinking's drainer the journal and the roots turning degraded, the upstream
clients (``workers/upstream``) their requests and rate-limit waits.  This
module imports neither side, so both import it.

``enable_metrics`` creates the metrics in a process: ``JobMetrics`` does it
when a worker starts, after Dramatiq's ``Prometheus`` middleware
(``middleware/prometheus.py``) has pointed ``prometheus_client`` at its
multiprocess directory, so they land in the same exposition; ``enrich drain``
does it on a registry of its own.  Before that (and in a process without
metrics) every ``observe_*`` function is a no-op: the upstream clients call
them unconditionally.

Labels are small, fixed sets (operation, status, service): never a job or
entity id.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from .background import SERVICE_OUTAGES, BackgroundLoop

# Seconds: jobs run from milliseconds to the two-minute time limit.
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Seconds: upstream requests and rate-limit waits.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

JournalStats = Callable[[], Mapping[str, float]]


class _Metrics:
    """The metric objects of this process, created at boot (``prometheus_client`` imported then)."""

    def __init__(self, registry=None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        registry = registry or REGISTRY
        self.jobs_finished = Counter(
            "enrich_jobs_finished_total", "Jobs that ended for good, by operation and status (the row's own status).",
            ["operation", "status"], registry=registry)
        self.job_duration = Histogram(
            "enrich_job_duration_seconds", "Time one attempt of a job ran, retried attempts included.",
            ["operation"], buckets=JOB_BUCKETS, registry=registry)
        self.roots_degraded = Counter(
            "enrich_roots_degraded_total", "Root jobs that turned degraded (a job of their tree failed for good).",
            ["operation"], registry=registry)
        self.upstream_requests = Counter(
            "enrich_upstream_requests_total", "Requests to upstream services, by HTTP status ('error': no response).",
            ["service", "status"], registry=registry)
        self.upstream_duration = Histogram(
            "enrich_upstream_request_duration_seconds", "Time until an upstream service's response headers.",
            ["service"], buckets=REQUEST_BUCKETS, registry=registry)
        self.rate_limit_wait = Histogram(
            "enrich_rate_limit_wait_seconds", "Time a request waited for the shared MusicBrainz/Discogs spacing.",
            ["service"], buckets=REQUEST_BUCKETS, registry=registry)
        # Every process reads the same journal (one Redis Stream): the backlog and its age are
        # maxed over live processes, not summed (an in-memory journal has one process anyway).
        self.journal_entries = Gauge(
            "enrich_journal_entries", "Job-log rows waiting in the journal for the database.",
            registry=registry, multiprocess_mode="livemax")
        self.journal_oldest_age = Gauge(
            "enrich_journal_oldest_entry_age_seconds", "Age of the oldest row waiting in the journal.",
            registry=registry, multiprocess_mode="livemax")
        # Every process reads the same broker: maxed over live processes, as the journal's figures.
        self.queue_messages = Gauge(
            "enrich_queue_messages", "Messages in a Dramatiq queue on the broker, by state (ready, fetched, delayed, "
            "dead).", ["queue", "state"], registry=registry, multiprocess_mode="livemax")
        self.queue_oldest_age = Gauge(
            "enrich_queue_oldest_age_seconds", "Age of the oldest message of a queue's state (ready, delayed, dead).",
            ["queue", "state"], registry=registry, multiprocess_mode="livemax")
        self.journal_drained = Counter(
            "enrich_journal_drained_rows_total", "Journal rows written to the database.", registry=registry)
        self.journal_refused = Counter(
            "enrich_journal_refused_rows_total", "Journal rows the database refused.", registry=registry)


_metrics: Optional[_Metrics] = None


def enable_metrics(registry=None) -> None:
    """Create this process's metrics (``JobMetrics`` does it at boot); the ``observe_*`` functions start counting."""
    global _metrics
    if _metrics is None:
        _metrics = _Metrics(registry)
        _journal.start_if_ready()


def disable_metrics() -> None:
    """Stop counting in this process (tests)."""
    global _metrics
    _journal.stop()
    _queues.stop()
    _metrics = None


def observe_job_finished(operation: str, status: str) -> None:
    """A job ended for good with this status (the row's own status)."""
    if _metrics is not None:
        _metrics.jobs_finished.labels(operation, status).inc()


def observe_job_attempt(operation: str, seconds: float) -> None:
    """How long one attempt of a job ran."""
    if _metrics is not None:
        _metrics.job_duration.labels(operation).observe(seconds)


def stop_journal_metrics() -> None:
    """Stop reading the journal's figures (a worker shutting down)."""
    _journal.stop()


def observe_upstream_request(service: str, status: Optional[int], seconds: float) -> None:
    """One upstream request: its HTTP status (None: no response) and the time to its headers."""
    if _metrics is not None:
        _metrics.upstream_requests.labels(service, "error" if status is None else str(status)).inc()
        _metrics.upstream_duration.labels(service).observe(seconds)


def observe_rate_limit_wait(service: str, seconds: float) -> None:
    """Time one request waited for its service's rate limit."""
    if _metrics is not None:
        _metrics.rate_limit_wait.labels(service).observe(seconds)


class _JournalObserver:
    """Copies ``stats()`` into the journal metrics every ``interval`` seconds, on a thread of its own."""

    def __init__(self) -> None:
        self.stats: Optional[JournalStats] = None
        self.forget_totals()
        self._loop = BackgroundLoop("journal-metrics", self.refresh, interval=5.0, outages=SERVICE_OUTAGES)

    @property
    def interval(self) -> float:
        return self._loop.interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self._loop.interval = seconds

    def forget_totals(self) -> None:
        self._last = {"drained_total": 0, "refused_total": 0}

    def refresh(self) -> None:
        if _metrics is None or self.stats is None:
            return
        stats = self.stats()
        _metrics.journal_entries.set(stats["entries"])
        _metrics.journal_oldest_age.set(stats["oldest_age_seconds"] or 0)
        # The journal's totals count from its start: the counters take what was added since the last read.
        for key, counter in (("drained_total", _metrics.journal_drained), ("refused_total", _metrics.journal_refused)):
            added = stats[key] - self._last[key]
            if added > 0:
                counter.inc(added)
            self._last[key] = stats[key]

    def start_if_ready(self) -> None:
        if _metrics is not None and self.stats is not None:
            self._loop.start()

    def stop(self) -> None:
        self._loop.stop()


_journal = _JournalObserver()


def observe_root_degraded(operation: str) -> None:
    """A root's tree had its first job fail for good (the root is, or will end, ``degraded``)."""
    if _metrics is not None:
        _metrics.roots_degraded.labels(operation).inc()


def observe_journal(stats: JournalStats, interval: float = 5.0) -> None:
    """Export the journal's figures: ``stats()`` returns ``entries``, ``oldest_age_seconds``,
    ``drained_total`` and ``refused_total`` (totals since the journal started).

    Call it once per process (before or after boot); the figures are read
    every ``interval`` seconds while metrics are on.
    """
    _journal.stats = stats
    _journal.interval = interval
    _journal.forget_totals()  # a new journal's totals count from its own start
    _journal.start_if_ready()


QueueStats = Callable[[], list]


class _QueueObserver:
    """Copies ``stats()`` (``workers.queues.QueueSummary`` items) into the queue gauges every ``interval`` s."""

    def __init__(self) -> None:
        self.stats: Optional[QueueStats] = None
        self._loop = BackgroundLoop("queue-metrics", self.refresh, interval=15.0, outages=SERVICE_OUTAGES)

    def refresh(self) -> None:
        if _metrics is None or self.stats is None:
            return
        for summary in self.stats():
            for state, count in summary.counts.items():
                _metrics.queue_messages.labels(summary.name, state).set(count)
            for state, age in summary.oldest_age_seconds.items():
                _metrics.queue_oldest_age.labels(summary.name, state).set(age or 0)

    def start(self, stats: QueueStats, interval: float) -> None:
        self.stats = stats
        self._loop.interval = interval
        if _metrics is not None:
            self._loop.start()

    def stop(self) -> None:
        self._loop.stop()


_queues = _QueueObserver()


def observe_queues(stats: QueueStats, interval: float = 15.0) -> None:
    """Export the broker's queues: ``stats()`` returns each queue's counts and oldest ages by state, read every
    ``interval`` seconds on a thread of its own while metrics are on (call it after ``enable_metrics``)."""
    _queues.start(stats, interval)


def stop_queue_metrics() -> None:
    _queues.stop()


def refresh_queue_metrics() -> None:
    """Read the queues' figures now (what the background thread does every interval)."""
    _queues.refresh()


def refresh_journal_metrics() -> None:
    """Read the journal's figures now (what the background thread does every interval)."""
    _journal.refresh()
