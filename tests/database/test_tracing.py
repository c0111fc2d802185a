"""Job spans through a real Dramatiq worker, collected by the SDK's in-memory exporter.

A tree is one trace whose spans follow who sent whom; a retry is a second
span in that trace; ``new_tree()`` starts a trace linked to its starter; the
JSON log lines of a job carry its span's ids.
"""

from __future__ import annotations

import io
import json

import pytest
from dramatiq.middleware import Retries
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from middleware import JobLinking, new_tree
from middleware.tracing import Tracing
from models import EnrichmentLog
from models.settings import Settings, load_settings
from workers.logging_setup import configure_logging
from workers.telemetry import redacted_url, scrub_span

from linking_harness import Harness

ALBUM_ID = "3f1c9a52-8d7e-4b6a-9c01-2e5f7a8b9c0d"


@pytest.fixture
def traced(db):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness = Harness(JobLinking(root_wait=0.3, log_lines="all"))  # "job started" too: a test reads it
    # Where workers.broker.middleware_stack puts it: after Retries, before JobLinking.
    harness.broker.add_middleware(Retries(min_backoff=10, max_backoff=20))
    harness.broker.add_middleware(Tracing(provider, secrets=lambda: ["s3cr3t-T0ken-value"]),
                                  before=JobLinking)
    yield harness, exporter
    harness.stop()
    provider.shutdown()


def job_spans(exporter) -> list:
    return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]


def test_a_three_level_tree_is_one_trace_following_who_sent_whom(traced):
    harness, exporter = traced

    @harness.actor(operation="cache:album-cover-art", entity=("album", "album_id"))
    def grandchild(album_id):
        pass

    @harness.actor(operation="enrichment:album", entity=("album", "album_id"))
    def child(album_id):
        grandchild.send(album_id)

    @harness.actor(operation="check:album-enrichment", entity=("album", "album_id"))
    def root(album_id):
        child.send(album_id)

    message = root.send(ALBUM_ID)
    harness.start().drain()

    spans = {s.attributes["messaging.dramatiq.actor"]: s for s in job_spans(exporter)}
    assert set(spans) == {"root", "child", "grandchild"}
    assert len({s.context.trace_id for s in spans.values()}) == 1
    assert spans["root"].parent is None
    assert spans["child"].parent.span_id == spans["root"].context.span_id
    assert spans["grandchild"].parent.span_id == spans["child"].context.span_id
    assert spans["root"].name == "root process"
    attributes = dict(spans["grandchild"].attributes)
    assert attributes["messaging.system"] == "dramatiq"
    assert attributes["messaging.destination.name"] == "default"
    assert attributes["enrich.operation"] == "cache:album-cover-art"
    assert attributes["enrich.root_job_id"] == message.message_id  # the tree's root, as in the job log
    assert attributes["enrich.entity_type"] == "album" and attributes["enrich.entity_id"] == ALBUM_ID
    assert attributes["enrich.retry_count"] == 0
    row = EnrichmentLog.get(EnrichmentLog.operation == "cache:album-cover-art")
    assert attributes["messaging.message.id"] == row.job_id
    assert all(s.status.status_code != StatusCode.ERROR for s in spans.values())


def test_a_retried_job_has_two_spans_in_its_trace_the_failed_one_with_its_exception(traced):
    harness, exporter = traced
    attempts = []

    @harness.actor(max_retries=1, operation="enrichment:album")
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("upstream went away; Authorization: Bearer s3cr3t-T0ken-value")

    @harness.actor(operation="check:album-enrichment")
    def root():
        flaky.send()

    root.send()
    harness.start().drain()

    spans = job_spans(exporter)
    flaky_spans = sorted((s for s in spans if s.name == "flaky process"), key=lambda s: s.start_time)
    root_span = next(s for s in spans if s.name == "root process")
    assert len(flaky_spans) == 2
    assert {s.context.trace_id for s in spans} == {root_span.context.trace_id}
    assert [s.parent.span_id for s in flaky_spans] == [root_span.context.span_id] * 2
    assert [s.attributes["enrich.retry_count"] for s in flaky_spans] == [0, 1]
    failed, retried = flaky_spans
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "ConnectionError"
    [event] = failed.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ConnectionError"
    assert "upstream went away" in event.attributes["exception.message"]
    assert "s3cr3t-T0ken-value" not in event.attributes["exception.message"]
    assert "s3cr3t-T0ken-value" not in event.attributes["exception.stacktrace"]
    assert retried.status.status_code != StatusCode.ERROR


def test_a_retried_root_stays_in_its_trace(traced):
    harness, exporter = traced
    attempts = []

    @harness.actor(max_retries=1)
    def root():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("once")

    root.send()
    harness.start().drain()
    first, second = sorted(job_spans(exporter), key=lambda s: s.start_time)
    assert first.context.trace_id == second.context.trace_id
    assert second.parent.span_id == first.context.span_id  # a root has no sender span to hang it from


def test_new_tree_starts_a_trace_linked_to_the_job_that_started_it(traced):
    harness, exporter = traced

    @harness.actor
    def album_check():
        pass

    @harness.actor
    def sync():
        with new_tree():
            album_check.send()
        album_check.send()  # outside the block: a child, in this trace

    sync.send()
    harness.start().drain()

    spans = job_spans(exporter)
    sync_span = next(s for s in spans if s.name == "sync process")
    checks = [s for s in spans if s.name == "album_check process"]
    [started] = [s for s in checks if s.context.trace_id != sync_span.context.trace_id]
    [child] = [s for s in checks if s.context.trace_id == sync_span.context.trace_id]
    assert started.parent is None
    assert [link.context.span_id for link in started.links] == [sync_span.context.span_id]
    assert [link.context.trace_id for link in started.links] == [sync_span.context.trace_id]
    assert child.parent.span_id == sync_span.context.span_id and not child.links


def test_a_message_with_a_bad_traceparent_still_runs_as_a_new_trace(traced):
    harness, exporter = traced
    ran = []

    @harness.actor
    def job():
        ran.append(1)

    for bad in (12345, "00-not-a-trace", {"x": 1}, "\x00" * 55):
        harness.broker.enqueue(job.message_with_options(traceparent=bad, trace_link=bad))
    harness.start().drain()
    spans = job_spans(exporter)
    assert len(ran) == len(spans) == 4
    assert all(s.parent is None and not s.links for s in spans)
    assert len({s.context.trace_id for s in spans}) == 4


def test_json_log_lines_inside_a_job_carry_its_trace_and_span_ids(traced):
    harness, exporter = traced
    stream = io.StringIO()
    configure_logging(Settings(tracing_exporter="console", log_flush_ms=0), stream=stream)
    try:
        @harness.actor
        def job():
            import structlog

            structlog.get_logger("test").info("inside the job")

        job.send()
        harness.start().drain()
        import structlog

        structlog.get_logger("test").info("outside any job")
    finally:
        configure_logging(load_settings())
    [span] = job_spans(exporter)
    lines = {line["message"]: line for line in map(json.loads, stream.getvalue().splitlines())}
    ids = {"trace_id": format(span.context.trace_id, "032x"), "span_id": format(span.context.span_id, "016x")}
    for message in ("job started", "inside the job", "job finished"):
        assert {k: lines[message].get(k) for k in ids} == ids, message
    assert "trace_id" not in lines["outside any job"]


def test_without_tracing_configured_log_lines_have_no_trace_ids():
    stream = io.StringIO()
    configure_logging(Settings(log_flush_ms=0), stream=stream)
    try:
        import structlog

        structlog.get_logger("test").info("a line")
    finally:
        configure_logging(load_settings())
    assert "trace_id" not in json.loads(stream.getvalue())


def test_upstream_call_spans_keep_urls_and_headers_free_of_credentials(monkeypatch):
    token = "gQhWqXrTnYpLkJdFsAzVbNmCxEuRiOtYpWq"
    assert redacted_url(f"https://user:{token}@api.discogs.com/database/search?q=Bj%C3%B6rk&token={token}") == (
        "https://api.discogs.com/database/search")

    class FakeSpan:
        def __init__(self, attributes):
            self.attributes = dict(attributes)

        def set_attribute(self, key, value):
            self.attributes[key] = value

    span = FakeSpan({
        "url.full": f"https://api.discogs.com/artists/1?token={token}",
        "http.request.header.authorization": (f"Discogs token={token}",),
        "http.request.header.user_agent": ("music-enrichment/0.1",),
        "http.response.header.x_echo": (f"echo {token}",),
        "http.response.status_code": 200,
    })
    scrub_span(span, [token])
    assert token not in repr(span.attributes)
    assert span.attributes["url.full"] == "https://api.discogs.com/artists/1"
    assert span.attributes["http.request.header.user_agent"] == ("music-enrichment/0.1",)
    assert span.attributes["http.response.status_code"] == 200


@pytest.mark.parametrize("env, exporter", [
    ({}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
])
def test_tracing_is_on_when_an_endpoint_or_an_exporter_is_set(env, exporter):
    assert load_settings(env).tracing_exporter == exporter


@pytest.mark.parametrize("env, named", [
    ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER='jaeger'"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'"),
    ({"PROMETHEUS_PORT": "70000"}, "PROMETHEUS_PORT=70000"),
    ({"PROMETHEUS_PORT": "nine"}, "PROMETHEUS_PORT='nine'"),
])
def test_a_bad_observability_setting_is_one_line_naming_it(env, named):
    from models import ConfigError

    with pytest.raises(ConfigError) as refused:
        load_settings(env)
    assert named in str(refused.value) and "\n" not in str(refused.value)


# What an entry point does (here on the in-memory broker): settings, logs, then the app.
START_APP = ("from models import load_settings\n"
             "from workers import app\n"
             "from workers.logging_setup import configure_logging\n"
             "settings = load_settings()\n"
             "configure_logging(settings)\n"
             "broker = app.start(settings)\n")


def test_installed_but_not_configured_nothing_of_opentelemetry_is_loaded(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    # (redis-py imports the OpenTelemetry API when it is there, for its own opt-in metrics: not ours.)
    ours = ("opentelemetry.sdk.trace", "opentelemetry.instrumentation", "opentelemetry.exporter",
            "middleware.tracing", "prometheus_client")
    child = ("import sys, httpx\n"
             f"{START_APP}"
             "print(sorted(type(m).__name__ for m in broker.middleware))\n"
             f"print(sorted(m for m in sys.modules if m.startswith({ours!r})))\n"
             "print(httpx.HTTPTransport.handle_request.__module__)\n")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", child], cwd=root, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root),
                                 "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.returncode == 0, result.stderr
    middleware, loaded, transport = result.stdout.splitlines()
    assert "Tracing" not in middleware and "JobMetrics" not in middleware
    assert loaded == "[]"  # no tracer, no span, no log processor: no cost per job or per line
    assert transport == "httpx._transports.default"  # httpx as it is, not instrumented


def test_configured_without_the_otel_extra_is_one_warning_and_no_tracing(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    # The otel extra "not installed": every opentelemetry import fails in this process.
    child = (
        "import sys\n"
        "class NoOtel:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'opentelemetry': raise ImportError(name)\n"
        "sys.meta_path.insert(0, NoOtel())\n"
        f"{START_APP}"
        "print(sorted(type(m).__name__ for m in broker.middleware))\n"
        "print(any(m.startswith('opentelemetry') for m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", child], cwd=root, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
             "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "LOG_FLUSH_MS": "0"},
    )
    assert result.returncode == 0, result.stderr
    middleware, otel_loaded = result.stdout.splitlines()
    assert "Tracing" not in middleware and "JobLinking" in middleware
    assert otel_loaded == "False"
    [line] = [json.loads(line) for line in result.stderr.splitlines()]
    assert line["level"] == "warning" and 'pip install -e ".[otel]"' in line["message"]
