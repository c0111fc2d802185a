"""Tracing: each job attempt is an OpenTelemetry CONSUMER span, each job tree one trace.

    broker.add_middleware(Tracing(tracer_provider))   # after Dramatiq's defaults, before JobLinking

Needs the ``otel`` extra (``opentelemetry-sdk``); ``workers.telemetry``
adds this middleware only when tracing is configured, so without it nothing
here is imported.

* A span is named ``<actor> process`` (e.g. ``enrich_album process``), kind
  CONSUMER, with the messaging attributes and ours (``enrich.operation``,
  ``enrich.root_job_id``, ``enrich.retry_count``, ``enrich.entity_type``,
  ``enrich.entity_id``).
* A message sent while a span is current carries that span's W3C
  ``traceparent`` (and ``tracestate``) in its options: a child job's span is
  a child of the span of the job that sent it.
* A retry is Dramatiq sending the same message again: its span has the same
  parent, in the same trace.  A message that came without a ``traceparent``
  (a root sent from outside) is given its first attempt's, so its retries
  stay in its trace, as children of that first attempt.
* Messages sent inside ``new_tree()`` carry no parent but a ``trace_link``:
  their span starts a new trace, with a link to the job that started it.
"""

from __future__ import annotations

import threading
import traceback
from typing import Callable, Iterable, Optional

from dramatiq.middleware import Middleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .job_context import current_job, starting_new_tree
from .redaction import redact_text

PROPAGATION_KEYS = ("traceparent", "tracestate")
LINK_KEY = "trace_link"  # the traceparent of the job that started this tree (new_tree())
MAX_NAME = 100

_propagator = TraceContextTextMapPropagator()


def _carrier(options: dict, keys: Iterable[str]) -> dict:
    """The string values of ``keys`` in ``options``: a message may carry anything there."""
    return {key: options[key] for key in keys if isinstance(options.get(key), str)}


def _traceparent_of(span) -> dict:
    carrier: dict = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


class Tracing(Middleware):
    """Starts a span per job attempt and carries the trace context in message options.

    Parameters:
      tracer_provider(opentelemetry.trace.TracerProvider): Where spans go.
        Defaults to the global provider.
      secrets(Callable[[], Iterable[str]]): Secret values removed from the
        exception messages and tracebacks recorded on failed attempts.
    """

    def __init__(self, tracer_provider=None, *, secrets: Optional[Callable[[], Iterable[str]]] = None) -> None:
        self.tracer_provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = self.tracer_provider.get_tracer("music-enrichment.jobs")
        self.secrets = secrets or (lambda: ())
        self._local = threading.local()

    @property
    def actor_options(self):
        return set()

    # -- sending -----------------------------------------------------------------

    def before_enqueue(self, broker, message, delay):
        job = current_job()
        if job is not None and job.job_id == message.message_id:
            return  # a retry: the message keeps the context it was first sent with
        span = trace.get_current_span()
        if not span.get_span_context().is_valid:
            return
        options = message.options
        if starting_new_tree():
            for key in PROPAGATION_KEYS:
                options.pop(key, None)
            options[LINK_KEY] = _traceparent_of(span)["traceparent"]
        elif "traceparent" not in options:
            options.update(_traceparent_of(span))

    # -- one span per attempt ------------------------------------------------------

    def before_process_message(self, broker, message):
        self._let_go()  # an attempt whose ack never came (a hook raised) must not stay current
        options = message.options
        parent = _propagator.extract(_carrier(options, PROPAGATION_KEYS))
        links = []
        if LINK_KEY in options:
            linked = trace.get_current_span(_propagator.extract(_carrier({"traceparent": options[LINK_KEY]},
                                                                          ["traceparent"])))
            if linked.get_span_context().is_valid:
                links.append(Link(linked.get_span_context(), {"enrich.link": "started_by"}))
        retries = options.get("retries", 0)
        actor = str(message.actor_name)[:MAX_NAME]  # a message may name any actor, of any length
        span = self.tracer.start_span(
            f"{actor} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "dramatiq",
                "messaging.operation.type": "process",
                "messaging.destination.name": message.queue_name,
                "messaging.message.id": str(message.message_id)[:MAX_NAME],
                "messaging.dramatiq.actor": actor,
                "enrich.retry_count": retries if type(retries) is int else 0,
            },
        )
        if "traceparent" not in options or not trace.get_current_span(parent).get_span_context().is_valid:
            options.update(_traceparent_of(span))  # travels with a retry: same trace
        token = otel_context.attach(trace.set_span_in_context(span))
        self._local.attempt = (message.message_id, span, token)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        attempt = getattr(self._local, "attempt", None)
        if attempt is None or attempt[0] != message.message_id:
            return
        span = attempt[1]
        job = current_job()
        if job is not None and job.job_id == message.message_id:
            entity_type, entity_id = job.entity
            span.set_attributes({
                "enrich.operation": job.operation,
                "enrich.root_job_id": job.tree_id,
                "enrich.entity_type": job.outcome.entity_type or entity_type or "",
                "enrich.entity_id": str(job.outcome.entity_id or entity_id or ""),
            })
        if exception is not None:
            self._record_failure(span, exception)
        span.end()

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message)

    # The context stays current until the ack, so JobLinking's "job finished" line carries the ids.
    def after_ack(self, broker, message):
        attempt = getattr(self._local, "attempt", None)
        if attempt is not None and attempt[0] == message.message_id:
            self._let_go()

    after_nack = after_ack

    def _let_go(self) -> None:
        attempt = getattr(self._local, "attempt", None)
        if attempt is not None:
            self._local.attempt = None
            otel_context.detach(attempt[2])

    def after_worker_shutdown(self, broker, worker):
        flush = getattr(self.tracer_provider, "force_flush", None)
        if flush is not None:
            flush()

    def _record_failure(self, span, exception: BaseException) -> None:
        secrets = list(self.secrets())
        error_type = type(exception).__qualname__
        stack = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        span.record_exception(exception, attributes={
            "exception.message": redact_text(str(exception), secrets),
            "exception.stacktrace": redact_text(stack, secrets),
        })
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))
