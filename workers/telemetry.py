"""OpenTelemetry tracing for the workers, when the ``otel`` extra is installed and configured.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or ``OTEL_TRACES_EXPORTER`` is set
(``Settings.tracing``).  The SDK reads the other standard ``OTEL_*``
variables itself: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``...

When it is off, or the extra is missing, nothing of OpenTelemetry is
imported: no middleware, no log processor, no instrumented httpx.
"""

from __future__ import annotations

from typing import Iterable, Optional
from urllib.parse import urlsplit, urlunsplit

import structlog
from structlog.typing import EventDict, WrappedLogger

from middleware.redaction import REDACTED, is_secret_key, redact_text
from models.settings import Settings

logger = structlog.get_logger("workers.telemetry")

_provider = None  # this process's TracerProvider, once configured


def otel_installed() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def tracing_enabled(settings: Settings) -> bool:
    """Tracing is configured and the ``otel`` extra is installed."""
    return settings.tracing and otel_installed()


def configure_tracing(settings: Settings, secrets: Iterable[str] = (), exporter=None):
    """This process's TracerProvider (built once), or None when tracing is off.

    Parameters:
        settings: ``tracing`` says whether to trace at all.
        secrets: values kept out of every span attribute of the upstream calls.
        exporter: a SpanExporter to use instead of the one ``OTEL_TRACES_EXPORTER``
            names (tests: the SDK's in-memory exporter).
    """
    global _provider
    if not settings.tracing:
        return None
    if not otel_installed():
        logger.warning('OTEL_* tracing variables are set but the otel extra is not installed '
                       '(pip install -e ".[otel]"): jobs are not traced')
        return None
    if _provider is not None:
        return _provider
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter(settings.tracing_exporter)))
    trace.set_tracer_provider(provider)
    _instrument_httpx(provider, list(secrets))
    _provider = provider
    return provider


def _exporter(name: str):
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*


# -- upstream calls --------------------------------------------------------------


def redacted_url(url: str) -> str:
    """Scheme, host and path only: user info and the query (tokens, search terms) are left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub_span(span, secrets: list[str]) -> None:
    """Rewrite the span's attributes that hold a URL, a credential header or a secret value."""
    for key, value in dict(getattr(span, "attributes", None) or {}).items():
        if key in ("url.full", "http.url"):
            clean = redacted_url(str(value))
        elif key.startswith(("http.request.header.", "http.response.header.")) and is_secret_key(key):
            clean = [REDACTED]
        elif isinstance(value, str):
            clean = redact_text(value, secrets)
        elif isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value):
            clean = [redact_text(v, secrets) if isinstance(v, str) else v for v in value]
        else:
            continue
        if clean != (list(value) if isinstance(value, tuple) else value):
            span.set_attribute(key, clean)


def _instrument_httpx(provider, secrets: list[str]) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    def request_hook(span, request) -> None:
        scrub_span(span, secrets)

    def response_hook(span, request, response) -> None:
        scrub_span(span, secrets)  # the response's own attributes, captured headers included

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider, request_hook=request_hook, response_hook=response_hook)


# -- logs ------------------------------------------------------------------------


def add_trace_ids(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: ``trace_id`` and ``span_id`` of the current span, when there is one."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def trace_log_processors(settings: Settings) -> list:
    """``[add_trace_ids]`` when tracing is on, else nothing (no cost per line)."""
    return [add_trace_ids] if tracing_enabled(settings) else []


def tracing_middleware(settings: Settings, secrets: Iterable[str]) -> Optional[object]:
    """The ``Tracing`` middleware for the workers' broker, or None when tracing is off."""
    secrets = list(secrets)
    provider = configure_tracing(settings, secrets)
    if provider is None:
        return None
    from middleware.tracing import Tracing

    return Tracing(provider, secrets=lambda: secrets)
