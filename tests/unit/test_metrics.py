"""Our metrics in one process: the journal's figures, the upstream observers, the per-run directory."""

from __future__ import annotations

import threading

import pytest
import redis
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from middleware import observability
from middleware.job_log.journal import JournalUnavailable
from middleware.prometheus import RUN_MARKER, clear_for_this_run

from linking_harness import wait_for


class Journal:
    """A stand-in with the journal's ``stats()`` shape: rows wait, drain, or are refused."""

    def __init__(self):
        self.lock = threading.Lock()
        self.waiting: list[float] = []  # ages of the rows waiting
        self.drained = 0
        self.refused = 0

    def stats(self) -> dict:
        with self.lock:
            return {
                "entries": len(self.waiting),
                "oldest_age_seconds": max(self.waiting, default=None),
                "drained_total": self.drained,
                "refused_total": self.refused,
            }


@pytest.fixture
def registry():
    observability._journal.stats = None  # a journal an earlier test's worker registered in this process
    registry = CollectorRegistry()
    observability.enable_metrics(registry)
    yield registry
    observability.disable_metrics()
    observability._journal.stats = None


def read(registry) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def test_the_queue_figures_are_exported_by_queue_and_state(registry):
    from workers.queues import QueueSummary

    summaries = [QueueSummary("default", {"ready": 7, "fetched": 2, "delayed": 1, "dead": 3},
                              {"ready": 42.5, "delayed": None, "dead": 600.0})]
    observability.observe_queues(lambda: summaries, interval=3600)  # the thread reads once at start
    key = ("enrich_queue_messages", (("queue", "default"), ("state", "ready")))
    figures = wait_for(lambda: (f := read(registry)) and key in f and f)
    assert figures[key] == 7
    assert figures[("enrich_queue_messages", (("queue", "default"), ("state", "dead")))] == 3
    assert figures[("enrich_queue_oldest_age_seconds", (("queue", "default"), ("state", "ready")))] == 42.5
    assert figures[("enrich_queue_oldest_age_seconds", (("queue", "default"), ("state", "delayed")))] == 0
    summaries[0].counts["ready"] = 0
    observability.refresh_queue_metrics()
    assert read(registry)[key] == 0
    observability.stop_queue_metrics()


def test_the_journal_figures_are_exported_from_its_stats_callable(registry):
    journal = Journal()
    observability.observe_journal(journal.stats, interval=3600)  # the thread reads once at start
    figures = wait_for(lambda: (f := read(registry)) and ("enrich_journal_entries", ()) in f and f)
    assert figures[("enrich_journal_entries", ())] == 0
    assert figures[("enrich_journal_oldest_entry_age_seconds", ())] == 0

    journal.waiting = [12.5, 3.0]
    journal.drained, journal.refused = 40, 2
    observability.refresh_journal_metrics()
    figures = read(registry)
    assert figures[("enrich_journal_entries", ())] == 2
    assert figures[("enrich_journal_oldest_entry_age_seconds", ())] == 12.5
    assert figures[("enrich_journal_drained_rows_total", ())] == 40
    assert figures[("enrich_journal_refused_rows_total", ())] == 2

    # The journal's totals only grow: the counters add what was added since the last reading.
    journal.waiting = []
    journal.drained = 42
    observability.refresh_journal_metrics()
    observability.refresh_journal_metrics()
    figures = read(registry)
    assert figures[("enrich_journal_entries", ())] == 0
    assert figures[("enrich_journal_drained_rows_total", ())] == 42
    assert figures[("enrich_journal_refused_rows_total", ())] == 2


def test_the_journal_figures_are_read_again_every_interval(registry):
    journal = Journal()
    observability.observe_journal(journal.stats, interval=0.05)
    with journal.lock:
        journal.waiting = [1.0, 2.0, 3.0]
    wait_for(lambda: read(registry).get(("enrich_journal_entries", ())) == 3, timeout=5)


def test_upstream_requests_and_rate_limit_waits_are_counted_by_service_and_status(registry):
    observability.observe_upstream_request("discogs", 200, 0.12)
    observability.observe_upstream_request("discogs", 429, 0.02)
    observability.observe_upstream_request("musicbrainz", None, 10.0)
    observability.observe_rate_limit_wait("musicbrainz", 0.9)
    figures = read(registry)
    assert figures[("enrich_upstream_requests_total", (("service", "discogs"), ("status", "200")))] == 1
    assert figures[("enrich_upstream_requests_total", (("service", "discogs"), ("status", "429")))] == 1
    assert figures[("enrich_upstream_requests_total", (("service", "musicbrainz"), ("status", "error")))] == 1
    assert figures[("enrich_upstream_request_duration_seconds_count", (("service", "discogs"),))] == 2
    assert figures[("enrich_rate_limit_wait_seconds_sum", (("service", "musicbrainz"),))] == 0.9


def test_without_metrics_the_observers_do_nothing():
    assert observability._metrics is None
    observability.observe_upstream_request("discogs", 200, 0.1)
    observability.observe_rate_limit_wait("discogs", 0.1)
    observability.refresh_journal_metrics()


def test_the_multiprocess_directory_is_cleared_once_per_run(tmp_path):
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_111.db").write_bytes(b"old run")
    assert clear_for_this_run(str(directory), "4242")
    assert {p.name for p in directory.iterdir()} == {".lock", RUN_MARKER}
    # The run's other worker processes boot later: what the first one wrote stays.
    (directory / "counter_222.db").write_bytes(b"this run")
    assert not clear_for_this_run(str(directory), "4242")
    assert (directory / "counter_222.db").exists()
    assert clear_for_this_run(str(directory), "5353")  # the next run
    assert not (directory / "counter_222.db").exists()


def test_the_grafana_dashboard_only_queries_metrics_the_workers_export(registry):
    import inspect
    import json
    import re
    from pathlib import Path

    from dramatiq.middleware import prometheus as dramatiq_prometheus

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs/grafana/enrich.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b((?:enrich|dramatiq)_[a-z_]+)\b", target["expr"])}
    ours = {family.name for family in registry.collect()}
    dramatiqs = set(re.findall(r'"(dramatiq_[a-z_]+)"', inspect.getsource(dramatiq_prometheus)))
    exported = set()
    for name in ours | dramatiqs:
        exported |= {name, name + "_total", name + "_bucket", name + "_sum", name + "_count"}
    assert queried and queried <= exported, queried - exported
    assert {n for n in ours if n.startswith("enrich_")} <= {re.sub(r"_(total|bucket|sum|count)$", "", q)
                                                             for q in queried}  # every one of ours on a panel


@pytest.mark.parametrize("loop, outage", [("journal-metrics", "journal"), ("queue-metrics", "redis")])
def test_a_redis_outage_under_the_metrics_loops_is_one_warning_and_one_line_when_it_ends(registry, loop, outage):
    """Each round while Redis is down must not log an ERROR with a traceback (it did, every 5 s)."""
    down = threading.Event()
    down.set()
    rounds = []

    def stats():
        rounds.append(down.is_set())
        if down.is_set():  # what the real readers raise with Redis away
            raise JournalUnavailable("Error 111 connecting to 127.0.0.1:6379. Connection refused.") \
                if outage == "journal" else redis.exceptions.ConnectionError("Connection refused")
        return Journal().stats() if outage == "journal" else []

    with structlog.testing.capture_logs() as logs:
        if outage == "journal":
            observability.observe_journal(stats, interval=0.02)
        else:
            observability.observe_queues(stats, interval=0.02)
        wait_for(lambda: rounds.count(True) >= 5, timeout=10)
        down.clear()
        wait_for(lambda: any(e["event"].startswith(f"{loop}: the service is back") for e in logs), timeout=10)
    observability.stop_journal_metrics()
    observability.stop_queue_metrics()
    said = [e for e in logs if e["event"].startswith(loop)]
    assert [e["log_level"] for e in said] == ["warning", "warning"], said
    assert said[0]["event"].startswith(f"{loop}: a service it needs is down")
    assert not [e for e in logs if e.get("exc_info")]
