"""Metrics and traces of real `dramatiq workers.worker` processes (real Redis, PostgreSQL, fake upstream).

The workers serve their Prometheus exposition on a free port and export
spans over OTLP/HTTP to a receiver in this test; the figures are checked
against the job log, and no credential may appear in either.
"""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from models import EnrichmentLog
from workers.fake_upstream import FakeCredentials, FakeUpstream

from app_harness import add_album
from linking_harness import wait_for
from process_harness import ROOT, WorkerProcess, free_port, shell_env
from services import REDIS_TEST_URL
from test_app_processes import all_acked, send_root

pytestmark = pytest.mark.slow

# Real-looking credentials: none may reach a metric label or a span.
CREDENTIALS = FakeCredentials(
    discogs_token="gQhWqXrTnYpLkJdFsAzVbNmCxEuRiOtYpWq",
    spotify_client_id="5f2c9d1e7a3b4c6d8e0f1a2b3c4d5e6f",
    spotify_client_secret="3f9a1c7e5b2d4f8a9c0e1b3d5f7a9c2e",
)
SECRETS = [CREDENTIALS.discogs_token, CREDENTIALS.spotify_client_id, CREDENTIALS.spotify_client_secret]


class OTLPReceiver:
    """A tiny OTLP/HTTP collector: keeps every ExportTraceServiceRequest body it is sent."""

    def __init__(self):
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.bodies.append((self.path, self.headers.get("Content-Type"), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list:
        found = []
        for _, _, body in self.bodies:
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    found.extend(scope_spans.spans)
        return found

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def scrape(port: int) -> dict:
    """{(sample name, frozenset(labels)): value} from the workers' endpoint."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def values(metrics: dict, name: str, **labels) -> float:
    wanted = set(labels.items())
    return sum(v for (n, found), v in metrics.items() if n == name and wanted <= found)


def worker_env(fake, pg_url, tmp_path, port: int, **extra) -> dict:
    return {
        **fake.env(cloudflare=False),
        "REDIS_URL": REDIS_TEST_URL,
        "DATABASE_URL": pg_url,
        "COVERART_URL": fake.url + "/coverartarchive",
        "IMAGE_CACHE_DIR": str(tmp_path / "images"),
        "MUSICBRAINZ_MIN_INTERVAL": "0.05",
        "DISCOGS_MIN_INTERVAL": "0.05",
        "RETRY_MIN_BACKOFF_MS": "100",
        "RETRY_MAX_BACKOFF_MS": "200",
        "PROMETHEUS_PORT": str(port),
        "dramatiq_prom_db": str(tmp_path / "prometheus"),  # Dramatiq's multiprocess directory
        **extra,
    }


@pytest.fixture
def fake():
    with FakeUpstream(credentials=CREDENTIALS) as server:
        yield server


def test_metrics_and_traces_of_an_album_tree_match_the_job_log(pg_db, pg_url, fake, tmp_path):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    receiver = OTLPReceiver()
    port = free_port()
    # A file left by a previous run is cleared at start: its counts must not be added to ours.
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "counter_999999.db").write_bytes(b"\0" * 16)
    env = worker_env(fake, pg_url, tmp_path, port, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                     OTEL_BSP_SCHEDULE_DELAY="100", OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST=".*")
    worker = WorkerProcess("workers.worker", env, tmp_path / "workers.log", processes=2, threads=4)
    sender = RedisBroker(url=REDIS_TEST_URL)
    try:
        worker.wait_ready(processes=2)
        assert not (tmp_path / "prometheus" / "counter_999999.db").exists()
        # Discogs refuses artist pages for good (their trees end degraded); the album lookup fails once (a retry).
        fake.fail("^/discogs/artists/", "status", status=400, times=None)
        fake.fail("^/musicbrainz/ws/2/release-group", "server_error", times=1, retry_after=None)
        albums = [add_album("Homogenic", ["Björk"]), add_album("Dummy", ["Portishead"])]
        roots = [send_root(sender, "check_album_enrichment", str(a.id), "test") for a in albums]
        wait_for(all_acked, timeout=120, interval=0.2)
        # Degraded roots are counted by the drainer that applies a tree's first failure, a moment
        # after the acks: wait for the job log to be final and for the counts to catch up with it.
        def caught_up():
            rows, m = list(EnrichmentLog.select()), scrape(port)
            final = not [r for r in rows if r.status in ("queued", "running", "retrying")]
            degraded = sum(1 for r in rows if r.is_root_job and r.status == "degraded")
            return (final and values(m, "enrich_jobs_finished_total") == len(rows)
                    and values(m, "enrich_roots_degraded_total") == degraded and m)
        metrics = wait_for(caught_up, timeout=15)
        wait_for(lambda: len(receiver.spans()) >= sum(r.retry_count + 1 for r in EnrichmentLog.select()),
                 timeout=20)
    finally:
        worker.stop()
        sender.close()
        receiver.close()

    rows = list(EnrichmentLog.select())
    # Jobs finished, by operation and the job's own status, are the rows.
    by_row = Counter((r.operation, r.own_status) for r in rows)
    by_metric = {(dict(labels)["operation"], dict(labels)["status"]): v for (n, labels), v in metrics.items()
                 if n == "enrich_jobs_finished_total"}
    assert by_metric == by_row
    assert by_row[("discogs:get-artist", "failed")] >= 1
    # Every attempt counted by Dramatiq's own middleware, and timed by ours.
    attempts = sum(r.retry_count + 1 for r in rows)
    assert sum(r.retry_count for r in rows) >= 1
    assert values(metrics, "dramatiq_messages_total") == attempts
    assert values(metrics, "dramatiq_message_errors_total") == sum(r.retry_count for r in rows) + sum(
        1 for r in rows if r.status == "failed")
    assert values(metrics, "enrich_job_duration_seconds_count") == attempts
    degraded = [r for r in rows if r.is_root_job and r.status == "degraded"]
    assert degraded  # a Discogs page refused for good
    assert values(metrics, "enrich_roots_degraded_total") == len(degraded)
    assert values(metrics, "enrich_roots_degraded_total", operation="check:album-enrichment") == len(degraded)
    # Upstream requests by service and status, as the fake upstream saw them.
    for service in ("musicbrainz", "discogs"):
        assert values(metrics, "enrich_upstream_requests_total", service=service) == len(fake.requests(service=service))
        assert values(metrics, "enrich_rate_limit_wait_seconds_count", service=service) == len(
            fake.requests(service=service))
    assert values(metrics, "enrich_upstream_requests_total", service="discogs", status="400") >= 1
    assert values(metrics, "enrich_upstream_requests_total", service="musicbrainz", status="503") == 1
    # The broker's queues, read by every worker process (QueueMetrics): each state of the default queue.
    for state in ("ready", "fetched", "delayed", "dead"):
        assert ("enrich_queue_messages", frozenset({("queue", "default"), ("state", state)})) in metrics, state
    for state in ("ready", "delayed", "dead"):
        assert ("enrich_queue_oldest_age_seconds", frozenset({("queue", "default"), ("state", state)})) in metrics
    # Small label sets: no job id, entity id or credential in any label.
    ids = {r.job_id for r in rows} | {str(r.entity_id) for r in rows if r.entity_id} | {str(a.id) for a in albums}
    label_values = {v for (_, labels) in metrics for _, v in labels}
    assert not label_values & ids
    assert not [v for v in label_values for s in SECRETS if s in v]

    # Traces: every attempt is a CONSUMER span, each tree one trace.
    spans = receiver.spans()
    assert all(body[0] == "/v1/traces" and body[1] == "application/x-protobuf" for body in receiver.bodies)
    consumer = [s for s in spans if s.kind == s.SPAN_KIND_CONSUMER]
    client = [s for s in spans if s.kind == s.SPAN_KIND_CLIENT]
    assert len(consumer) == attempts
    attrs = [{a.key: a.value for a in s.attributes} for s in consumer]
    message_ids = Counter(a["messaging.message.id"].string_value for a in attrs)
    assert message_ids == Counter({r.job_id: r.retry_count + 1 for r in rows})
    traces = {s.trace_id for s in consumer}
    assert len(traces) == len(roots)
    for root_id in roots:
        tree = {r.job_id for r in rows if r.job_id == root_id or r.parent_job_id == root_id}
        tree_traces = {s.trace_id for s, a in zip(consumer, attrs) if a["messaging.message.id"].string_value in tree}
        assert len(tree_traces) == 1
        assert all(a["enrich.root_job_id"].string_value == root_id
                   for a in attrs if a["messaging.message.id"].string_value in tree)
    span_ids = {s.span_id for s in spans}
    assert all(s.parent_span_id in span_ids for s in consumer if s.parent_span_id)
    # Upstream calls are spans under the jobs that made them, as many as the fake upstream saw.
    consumer_ids = {s.span_id for s in consumer}
    assert len(client) == len(fake.requests()) and all(s.parent_span_id in consumer_ids for s in client)
    urls = [a.value.string_value for s in client for a in s.attributes if a.key in ("url.full", "http.url")]
    assert urls and not [u for u in urls if "?" in u]
    # No credential anywhere in what was exported, headers captured with ".*" included.
    exported = b"".join(body for _, _, body in receiver.bodies)
    assert not [s for s in SECRETS if s.encode() in exported]
    log = (tmp_path / "workers.log").read_text()
    assert "Traceback" not in log.replace('"exception"', "")


def test_a_metrics_port_in_use_is_one_line_and_the_workers_run_on(pg_db, pg_url, fake, tmp_path):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    worker = WorkerProcess("workers.worker", worker_env(fake, pg_url, tmp_path, port), tmp_path / "workers.log",
                           processes=1, threads=2)
    sender = RedisBroker(url=REDIS_TEST_URL)
    try:
        worker.wait_ready(processes=1)
        wait_for(lambda: "cannot serve metrics" in (tmp_path / "workers.log").read_text(), timeout=20)
        album = add_album("Dummy", ["Portishead"])
        root = send_root(sender, "check_album_enrichment", str(album.id), "test")
        wait_for(all_acked, timeout=60, interval=0.2)
        time.sleep(1)  # a crash loop would have printed again by now
        assert worker.proc.poll() is None
    finally:
        worker.stop()
        sender.close()
        taken.close()
    assert EnrichmentLog.get(EnrichmentLog.job_id == root).status == "success"
    log = (tmp_path / "workers.log").read_text()
    lines = [line for line in log.splitlines() if "cannot serve metrics" in line]
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0] and "PROMETHEUS_PORT" in lines[0]
    assert "Traceback" not in log


def _drain_command(pg_url: str, tmp_path, port: int):
    """`enrich drain` as the Procfile's drain line runs it, its output in drain.log."""
    env = shell_env({"REDIS_URL": REDIS_TEST_URL, "DATABASE_URL": pg_url, "DRAIN_PROMETHEUS_PORT": str(port)})
    env.pop("dramatiq_prom_db", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = open(tmp_path / "drain.log", "w")
    return subprocess.Popen([sys.executable, "-m", "workers.cli", "drain"], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def _journal_tree(root: str, failing: int, fine: int) -> None:
    """A root and its children as the workers append them: the failed ones counted against the root."""
    from middleware.job_log.journal import journal_for

    from linking_harness import journal_row as row

    journal = journal_for(RedisBroker(url=REDIS_TEST_URL))
    journal.append(row(root, "running", operation="enrichment:album"))
    for n in range(failing):
        journal.append(row(f"{root}-f{n}", "failed", root), failed_child_of=root)
    for n in range(fine):
        journal.append(row(f"{root}-s{n}", "success", root))


def test_enrich_drain_serves_the_journal_and_degraded_roots_metrics(pg_db, pg_url, tmp_path):
    """With JOB_LOG_DRAIN_IN_WORKERS=0 only `enrich drain` knows what it applied: it serves that."""
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    port = free_port()
    _journal_tree("root-a", failing=2, fine=5)
    _journal_tree("root-b", failing=0, fine=3)
    drain = _drain_command(pg_url, tmp_path, port)
    try:
        wait_for(lambda: EnrichmentLog.select().count() == 12, timeout=30, interval=0.2)
        metrics = wait_for(lambda: (lambda m: m if values(m, "enrich_journal_drained_rows_total") == 12 else None)(
            _scrape_or_none(port)), timeout=20, interval=0.5)
    finally:
        drain.terminate()
        drain.wait(20)
    log = (tmp_path / "drain.log").read_text()
    assert drain.returncode == 0, log
    assert values(metrics, "enrich_roots_degraded_total", operation="enrichment:album") == 1  # one tree, once
    assert values(metrics, "enrich_journal_entries") == 0
    assert values(metrics, "enrich_journal_refused_rows_total") == 0
    assert EnrichmentLog.get(EnrichmentLog.job_id == "root-a").failed_children == 2
    assert f"metrics on http://127.0.0.1:{port}/metrics" in log and "Traceback" not in log


def test_enrich_drain_with_its_metrics_port_taken_says_so_once_and_drains(pg_db, pg_url, tmp_path):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    _journal_tree("root-c", failing=1, fine=1)
    drain = _drain_command(pg_url, tmp_path, taken.getsockname()[1])
    try:
        wait_for(lambda: EnrichmentLog.select().count() == 3, timeout=30, interval=0.2)
    finally:
        drain.terminate()
        drain.wait(20)
        taken.close()
    log = (tmp_path / "drain.log").read_text()
    assert drain.returncode == 0, log
    lines = [line for line in log.splitlines() if "cannot serve metrics" in line]
    assert len(lines) == 1 and "DRAIN_PROMETHEUS_PORT" in lines[0], log
    assert "Traceback" not in log


def _scrape_or_none(port: int):
    try:
        return scrape(port)
    except httpx.HTTPError:
        return None
