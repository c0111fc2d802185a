"""One logging configuration for worker processes and the ``enrich`` command.

Every line, whether it comes from structlog or from the standard library
(Dramatiq's own lines, peewee's, httpx's), goes through the same processors
and the same renderer:

* ``LOG_FORMAT=json`` (the default): one JSON object per line with
  ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and any
  context the job middleware bound (``job_id``, ``parent_job_id``,
  ``operation``); a traceback is a list of dicts under ``exception``.
* ``LOG_FORMAT=console``: structlog's ``ConsoleRenderer``, for humans.

Lines go to **stderr**: stdout belongs to the ``enrich`` command's own output
(tables, ``--json`` documents piped into ``jq``), and Dramatiq workers log to
stderr as well, so a process's log stream is one stream in both cases.

Secrets are removed from every line by ``redact_secrets``, the last step
before rendering.  Workers run with ``dramatiq --skip-logging`` so this module
is the only logging configuration in the process.
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable, Optional, TextIO
from urllib.parse import quote, unquote, urlparse

import structlog
from structlog.processors import ExceptionRenderer
from structlog.stdlib import ProcessorFormatter
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from middleware.json_text import json_text
from middleware.redaction import REDACTED, is_secret_key, redact_text, redact_value
from models.settings import ConfigError, Settings

from .log_buffer import BufferedLines
from .telemetry import trace_log_processors

# Loggers that speak once per request or query: (level when debugging, level otherwise).
# httpcore's DEBUG is one line per socket event and peewee's is every SQL
# statement with its parameters, too much even when debugging.
NOISY_LOGGERS = {
    "httpx": (logging.DEBUG, logging.WARNING),
    "httpcore": (logging.INFO, logging.WARNING),
    "peewee": (logging.INFO, logging.INFO),
}

# Locals are left out of tracebacks: they are where tokens and whole API
# responses live, and they would make every error line huge.
structured_traceback = ExceptionRenderer(ExceptionDictTransformer(show_locals=False))


def shared_processors() -> list[Processor]:
    """What every line gets first, from structlog or from the standard library."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def secret_values(settings: Settings) -> list[str]:
    """The configured secrets and the database password, each as written and URL-encoded."""
    values = set(settings.secrets())
    password = urlparse(settings.database_url).password  # as written in the URL, maybe %-encoded
    if password:
        values |= {password, unquote(password)}
    return sorted(values | {quote(v, safe="") for v in values})


def redact_secrets(secrets: Iterable[str]) -> Processor:
    """A processor that removes secrets from every value of a line, nested ones included.

    Values that are not plain JSON data (exceptions, UUIDs, datetimes, any
    object) become their ``str`` first, so their text is redacted like any
    string.
    """
    values = sorted(set(secrets), key=len, reverse=True)  # a secret containing another goes first
    # Most strings of a line repeat from line to line (logger, message,
    # operation, status, a job id in its start and end lines): remember
    # their redacted form instead of scanning them again.
    seen: dict[str, str] = {}

    def redact_string(text: str) -> str:
        done = seen.get(text)
        if done is None:
            done = redact_text(text, values)
            if len(text) <= 200:
                if len(seen) >= 4096:
                    seen.clear()
                seen[text] = done
        return done

    # Keys seen before that do not name a secret: a line whose keys are all
    # known is only scanned, and copied only when a value changes.
    ordinary_keys: set[str] = set()

    def redact(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        changes = {}
        for key, value in event_dict.items():
            if key not in ordinary_keys:
                if type(key) is not str:
                    return redact(logger, method, {str(k): v for k, v in event_dict.items()})
                if is_secret_key(key):
                    if value:
                        changes[key] = REDACTED
                    continue
                if len(ordinary_keys) < 1024:
                    ordinary_keys.add(key)
            kind = type(value)
            if kind is str:
                if key not in TRUSTED_KEYS:
                    clean = redact_string(value)
                    if clean is not value:
                        changes[key] = clean
            elif value is not None and kind not in _SCALARS:
                changes[key] = redact_value(value, values)
        return {**event_dict, **changes} if changes else event_dict

    return redact


_SCALARS = frozenset({bool, int, float})

# Values only this module's processors write.
TRUSTED_KEYS = frozenset({"timestamp", "level", "logger"})


def render_processors(settings: Settings, colors: bool = False) -> list[Processor]:
    """The tail of every line, in the handler: tracebacks, the message key, redaction, rendering."""
    json_format = settings.log_format == "json"
    return [
        ProcessorFormatter.remove_processors_meta,
        *trace_log_processors(settings),  # trace_id and span_id, only when tracing is on
        # JSON gets the traceback as data; the console gets it as text (so it is redacted too).
        structured_traceback if json_format else structlog.processors.format_exc_info,
        structlog.processors.EventRenamer("message"),  # the key Datadog and Vector read as the message
        redact_secrets(secret_values(settings)),  # last but rendering: nothing added later escapes it
        (
            structlog.processors.JSONRenderer(serializer=json_text)  # orjson: a fifth of json's cost
            if json_format
            else structlog.dev.ConsoleRenderer(event_key="message", colors=colors)
        ),
    ]


def _level(name: str) -> int:
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise ConfigError(f"LOG_LEVEL={name!r} must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


HANDLER_NAME = "enrich"  # the one root handler this module installs, replaced on reconfiguration


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's direct writer, with the name ``add_logger_name`` reads."""

    def __init__(self, name: Optional[str]):
        super().__init__(_output.stream)
        self.name = name or "root"

    def msg(self, message: str) -> None:
        # The stream is looked up per line, so reconfiguring redirects loggers already cached
        # (WriteLogger writes through the bound methods it took from its first stream).
        stream = _output.stream
        if stream is not self._file:
            self._file, self._write, self._flush = stream, stream.write, stream.flush
        super().msg(message)

    def urgent(self, message: str) -> None:
        self.msg(message)
        _drain(self._file)

    log = debug = info = msg
    warn = warning = err = error = critical = exception = fatal = failure = urgent


class _Handler(logging.StreamHandler):
    """The standard library's lines: WARNING and above are written at once, like structlog's."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            _drain(self.stream)


def _drain(stream) -> None:
    if isinstance(stream, BufferedLines):
        stream.drain()


class _Output:
    stream: TextIO = sys.stderr
    processors: list = []
    chain: list = []  # structlog's processors


_output = _Output()


def _render(logger: WrappedLogger, method: str, event_dict: EventDict):
    """The settings-dependent tail, looked up per line (see ``_NamedWriteLogger.msg``)."""
    for processor in _output.processors:
        event_dict = processor(logger, method, event_dict)
    return event_dict


def configure_logging(settings: Settings, stream: Optional[TextIO] = None) -> None:
    """Send structlog and standard-library logging through one renderer (stderr by default); safe to call again.

    Lines to stderr are written in batches every ``settings.log_flush_ms``
    (WARNING and above at once); lines to a ``stream`` given here are not held.

    Every line runs through ``shared_processors()`` and then ``render_processors()``.
    structlog's own lines are written directly (no ``logging`` handler and its
    lock on the hot path of every job); the standard library's lines go
    through ``ProcessorFormatter`` with the same processors.
    """
    level = _level(settings.log_level)
    if isinstance(_output.stream, BufferedLines):
        _output.stream.drain()  # what the previous configuration still holds goes out first
    if stream is None:
        # The process's stderr: batched (see workers.log_buffer); a stream the caller chose is left as it is.
        stream = sys.stderr
        if settings.log_flush_ms > 0:
            stream = BufferedLines(stream, settings.log_flush_ms / 1000)
    shared = shared_processors()
    colors = stream.isatty() if hasattr(stream, "isatty") else False
    tail = render_processors(settings, colors)
    _output.stream = stream
    _output.processors = tail[1:]  # remove_processors_meta only matters to the stdlib formatter
    # One list, changed in place: loggers cached under an earlier configuration hold this very
    # list, so they follow a reconfiguration (and structlog.testing.capture_logs) too.
    _output.chain[:] = [*shared, _render]
    structlog.configure(
        processors=_output.chain,
        logger_factory=_NamedWriteLogger,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # The chain above reads the settings through _output, so loggers
        # cached before a reconfiguration stay correct.
        cache_logger_on_first_use=True,
    )
    handler = _Handler(stream)
    handler.name = HANDLER_NAME
    handler.setFormatter(ProcessorFormatter(foreign_pre_chain=shared, processors=tail))

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    debugging = level <= logging.DEBUG
    for name, (when_debugging, otherwise) in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(when_debugging if debugging else max(otherwise, level))
    logging.captureWarnings(True)  # warnings become log lines too, not bare stderr text
