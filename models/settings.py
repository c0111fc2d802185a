"""Every setting the product reads from the environment, read in one place.

Nothing else in the code base calls ``os.environ``.  An entry point (the
``dramatiq`` worker module ``workers/worker.py``, the ``enrich`` command, the
metrics server) calls ``load_settings()`` once and passes the frozen
``Settings`` down (``workers.app`` holds them for the actors).  The README's
table of variables is written from this module.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional
from urllib.parse import urlparse

DEFAULT_DATABASE_URL = "sqlite:///enrichment.db"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: Optional[str] = None
    # A worker that stops heartbeating for this long is dead: Redis gives its
    # unacked messages to the others.  Maintenance runs on this share (out of
    # 1,000,000, as Dramatiq counts) of fetches.
    redis_heartbeat_timeout_ms: int = 60000
    redis_maintenance_chance: int = 1000
    db_max_connections: int = 32

    musicbrainz_url: str = "https://musicbrainz.org/ws/2"
    musicbrainz_user_agent: str = "music-enrichment/0.1 ( ops@example.com )"
    discogs_url: str = "https://api.discogs.com"
    spotify_api_url: str = "https://api.spotify.com/v1"
    spotify_accounts_url: str = "https://accounts.spotify.com"
    cloudflare_api_url: str = "https://api.cloudflare.com/client/v4"
    coverart_url: str = "https://coverartarchive.org"
    # Seconds between two requests across all workers.  MusicBrainz allows one
    # per second: lower values are only for the offline fake upstream.
    musicbrainz_interval: float = 1.1
    discogs_interval: float = 1.05

    # Secrets: repr=False keeps them out of any accidental log of the settings.
    discogs_token: Optional[str] = field(default=None, repr=False)
    spotify_client_id: Optional[str] = field(default=None, repr=False)
    spotify_client_secret: Optional[str] = field(default=None, repr=False)
    cloudflare_account_id: Optional[str] = field(default=None, repr=False)
    cloudflare_api_token: Optional[str] = field(default=None, repr=False)

    image_cache_dir: str = "image_cache"
    job_max_retries: int = 3
    retry_min_backoff_ms: int = 5000
    retry_max_backoff_ms: int = 300000
    job_time_limit_ms: int = 120000
    http_timeout: float = 10.0
    log_format: str = "json"
    log_level: str = "INFO"
    log_flush_ms: int = 50  # how late an INFO line on stderr may be written; 0: each line at once
    # A queued or retrying job whose message is nowhere in Redis this long after it
    # was due is marked lost; the sweep looking for such jobs runs this often.
    lost_work_grace_seconds: float = 600.0
    lost_work_sweep_seconds: float = 60.0
    log_retention_days: float = 30.0  # `enrich prune`'s default --older-than
    # How long a check waits before asking again after an operation found
    # nothing (no_data) or failed on the same entity; 0: no wait.
    no_data_cooldown_days: float = 90.0
    failed_cooldown_days: float = 7.0

    # The web dashboard (enrich web): actions need both; any address but 127.0.0.1 needs the password.
    dashboard_allow_actions: bool = False
    dashboard_password: Optional[str] = field(default=None, repr=False)
    # The overview warns that the job log is behind when the journal's oldest row is older than this.
    dashboard_journal_behind_seconds: float = 60.0
    # Metrics of `dramatiq workers` (Redis) on http://prometheus_host:prometheus_port/; port 0: none.
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = 9191
    # Metrics of an `enrich drain` process (its journal figures and degraded roots); port 0: none.
    drain_prometheus_port: int = 9192
    # "otlp" or "console" when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT or OTEL_TRACES_EXPORTER is set:
    # trace the jobs (the OpenTelemetry SDK reads the other OTEL_* variables itself).
    tracing_exporter: Optional[str] = None
    otel_service_name: str = "music-enrichment"
    # JOB_LOG_*: what JobLinking writes and where (read by job_log_settings, also alone).
    job_log: "JobLogSettings" = field(default_factory=lambda: JobLogSettings())

    @property
    def dashboard_actions(self) -> bool:
        """The dashboard's actions are on: asked for, behind the password, and with the workers' Redis to send to."""
        return bool(self.dashboard_allow_actions and self.dashboard_password and self.redis_url)

    @property
    def tracing(self) -> bool:
        return self.tracing_exporter is not None

    def secrets(self) -> list[str]:
        """The configured secret values, for the log redaction step."""
        values = [
            self.discogs_token,
            self.spotify_client_id,
            self.spotify_client_secret,
            self.cloudflare_api_token,
            self.dashboard_password,
        ]
        return [v for v in values if v]


_QUERY_PASSWORD = re.compile(r"(?i)(password=)[^&#]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
ENCODE_HINT = "percent-encode # ? / @ : in the user name and password as %23 %3F %2F %40 %3A"


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, however malformed the URL is.

    The password is taken as everything between the user name's ``:`` and
    the LAST ``@``: a parser would stop at an unencoded ``#``, ``?`` or
    ``/`` in it and show the rest.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = f"{user}{':***' if colon else ''}@{rest[at + 1:]}"
    else:  # no '@': "user:password" with the host forgotten reads as "host:port"
        rest = re.sub(r"^([^:/?#]*):(?!\d*(?:[/?#]|$)).*", r"\1:***", rest, flags=re.S)
    return _CONTROL.sub("?", _QUERY_PASSWORD.sub(r"\1***", f"{scheme}{sep}{rest}"))  # one line, always


URL_EXAMPLES = {
    "DATABASE_URL": ("postgresql://user@host:5432/name or sqlite:///path/to/file.db", ("postgresql", "postgres", "sqlite")),
    "REDIS_URL": ("redis://host:6379/0", ("redis", "rediss", "unix")),
}


def check_url(name: str, url: str) -> str:
    """``url`` when its scheme, host, port and user part can be read as they are meant; ConfigError
    (one line, the password never in it) otherwise."""
    example, schemes = URL_EXAMPLES[name]
    shown = redact_url(url)
    try:
        parsed = urlparse(url)
        parsed.port, parsed.hostname  # noqa: B018  (each raises ValueError on a malformed netloc)
    except ValueError:
        # Never the parser's own words: they quote the text it took for a port, maybe part of the password.
        raise ConfigError(f"{name}={shown!r} is malformed: the host or port cannot be read "
                          f"(a port is a number from 1 to 65535; {ENCODE_HINT})") from None
    if parsed.scheme.lower() not in schemes:
        raise ConfigError(f"{name}={shown!r}: unsupported scheme {parsed.scheme[:20]!r} (use {example})")
    _, has_slashes, after_scheme = url.partition("://")
    if not has_slashes:
        raise ConfigError(f"{name}={shown!r} is malformed: expected {example}")
    if name == "REDIS_URL" and parsed.scheme.lower() != "unix" and not re.fullmatch(r"/?\d*", parsed.path):
        raise ConfigError(f"{name}={shown!r} is malformed: the database after the host is a number (e.g. /0)")
    if parsed.netloc and after_scheme.rfind("@") >= len(parsed.netloc):
        # An '@' past the host part: the user or password holds an unencoded # ? or /.
        raise ConfigError(f"{name}={shown!r} is malformed: the password holds a character that ends the host part "
                          f"({ENCODE_HINT})")
    if parsed.port == 0:
        raise ConfigError(f"{name}={shown!r} is malformed: a port is a number from 1 to 65535")
    return url


def _optional(env: Mapping[str, str], name: str) -> Optional[str]:
    value = env.get(name, "").strip()
    return value or None


def _number(env: Mapping[str, str], name: str, default, cast):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than zero")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number >= 0 (zero is meaningful: no retries)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigError(f"{name}={raw!r} must be a whole number >= 0")
    return int(raw)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r} must be 1 or 0")


def _days(env: Mapping[str, str], name: str, default: float) -> float:
    """A number of days >= 0, fractions allowed (zero is meaningful: no cooldown)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of days") from None
    if not 0 <= value < 36500:  # also refuses nan and inf
        raise ConfigError(f"{name}={raw!r} must be a number of days from 0 to 36500")
    return value


# Per-job log lines: "failures" (the default) logs an attempt that failed or will be retried; "finished" every
# attempt's end; "all" its start too; "none" nothing (the row holds it all).  JobLinking applies them.
JOB_LOG_LINES = ("failures", "finished", "all", "none")


@dataclass(frozen=True)
class JobLogSettings:
    """What JobLinking reads from the environment (it runs in any Dramatiq app, not only this product's)."""

    database_url: Optional[str] = None  # DATABASE_URL as set: JobLinking has no default database
    lines: str = "failures"  # JOB_LOG_LINES: which per-job log lines to write (the row has the rest)
    stream: str = "job-log"  # JOB_LOG_STREAM: the journal's name under the broker's namespace
    drain_in_workers: bool = True  # JOB_LOG_DRAIN_IN_WORKERS: a drainer thread in every worker process


def job_log_settings(env: Optional[Mapping[str, str]] = None) -> JobLogSettings:
    env = os.environ if env is None else env
    lines = (_optional(env, "JOB_LOG_LINES") or "failures").lower()
    if lines not in JOB_LOG_LINES:
        raise ConfigError(f"JOB_LOG_LINES={lines!r} must be one of {', '.join(JOB_LOG_LINES)}")
    drain = (_optional(env, "JOB_LOG_DRAIN_IN_WORKERS") or "1").lower()
    if drain not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"JOB_LOG_DRAIN_IN_WORKERS={drain!r} must be 1 or 0")
    stream = _optional(env, "JOB_LOG_STREAM") or "job-log"
    return JobLogSettings(
        database_url=_optional(env, "DATABASE_URL"),
        lines=lines,
        stream=stream,
        drain_in_workers=drain in ("1", "true", "yes"),
    )


def load_settings(env: Optional[Mapping[str, str]] = None) -> Settings:
    """Read the settings from ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    defaults = Settings()
    log_format = env.get("LOG_FORMAT", defaults.log_format).strip().lower()
    if log_format not in ("json", "console"):
        raise ConfigError(f"LOG_FORMAT={log_format!r} must be 'json' or 'console'")
    redis_url = _optional(env, "REDIS_URL")
    return Settings(
        database_url=check_url("DATABASE_URL", _optional(env, "DATABASE_URL") or defaults.database_url),
        redis_url=redis_url and check_url("REDIS_URL", redis_url),
        redis_heartbeat_timeout_ms=_number(env, "REDIS_HEARTBEAT_TIMEOUT_MS", defaults.redis_heartbeat_timeout_ms, int),
        redis_maintenance_chance=_number(env, "REDIS_MAINTENANCE_CHANCE", defaults.redis_maintenance_chance, int),
        db_max_connections=_number(env, "DB_MAX_CONNECTIONS", defaults.db_max_connections, int),
        musicbrainz_url=_optional(env, "MUSICBRAINZ_URL") or defaults.musicbrainz_url,
        musicbrainz_user_agent=_optional(env, "MUSICBRAINZ_USER_AGENT") or defaults.musicbrainz_user_agent,
        discogs_url=_optional(env, "DISCOGS_URL") or defaults.discogs_url,
        spotify_api_url=_optional(env, "SPOTIFY_API_URL") or defaults.spotify_api_url,
        spotify_accounts_url=_optional(env, "SPOTIFY_ACCOUNTS_URL") or defaults.spotify_accounts_url,
        cloudflare_api_url=_optional(env, "CLOUDFLARE_API_URL") or defaults.cloudflare_api_url,
        coverart_url=_optional(env, "COVERART_URL") or defaults.coverart_url,
        musicbrainz_interval=_number(env, "MUSICBRAINZ_MIN_INTERVAL", defaults.musicbrainz_interval, float),
        discogs_interval=_number(env, "DISCOGS_MIN_INTERVAL", defaults.discogs_interval, float),
        discogs_token=_optional(env, "DISCOGS_TOKEN"),
        spotify_client_id=_optional(env, "SPOTIFY_CLIENT_ID"),
        spotify_client_secret=_optional(env, "SPOTIFY_CLIENT_SECRET"),
        cloudflare_account_id=_optional(env, "CLOUDFLARE_ACCOUNT_ID"),
        cloudflare_api_token=_optional(env, "CLOUDFLARE_API_TOKEN"),
        image_cache_dir=_optional(env, "IMAGE_CACHE_DIR") or defaults.image_cache_dir,
        job_max_retries=_count(env, "JOB_MAX_RETRIES", defaults.job_max_retries),
        retry_min_backoff_ms=_number(env, "RETRY_MIN_BACKOFF_MS", defaults.retry_min_backoff_ms, int),
        retry_max_backoff_ms=_number(env, "RETRY_MAX_BACKOFF_MS", defaults.retry_max_backoff_ms, int),
        job_time_limit_ms=_number(env, "JOB_TIME_LIMIT_MS", defaults.job_time_limit_ms, int),
        http_timeout=_number(env, "HTTP_TIMEOUT", defaults.http_timeout, float),
        lost_work_grace_seconds=_number(env, "LOST_WORK_GRACE_SECONDS", defaults.lost_work_grace_seconds, float),
        lost_work_sweep_seconds=_number(env, "LOST_WORK_SWEEP_SECONDS", defaults.lost_work_sweep_seconds, float),
        log_retention_days=_number(env, "LOG_RETENTION_DAYS", defaults.log_retention_days, float),
        log_format=log_format,
        log_level=(_optional(env, "LOG_LEVEL") or defaults.log_level).upper(),
        log_flush_ms=_count(env, "LOG_FLUSH_MS", defaults.log_flush_ms),
        dashboard_allow_actions=_flag(env, "DASHBOARD_ALLOW_ACTIONS"),
        dashboard_password=_optional(env, "DASHBOARD_PASSWORD"),
        dashboard_journal_behind_seconds=_number(env, "DASHBOARD_JOURNAL_BEHIND_SECONDS",
                                                 defaults.dashboard_journal_behind_seconds, float),
        no_data_cooldown_days=_days(env, "NO_DATA_COOLDOWN_DAYS", defaults.no_data_cooldown_days),
        failed_cooldown_days=_days(env, "FAILED_COOLDOWN_DAYS", defaults.failed_cooldown_days),
        prometheus_host=_optional(env, "PROMETHEUS_HOST") or defaults.prometheus_host,
        prometheus_port=_port(env, "PROMETHEUS_PORT", defaults.prometheus_port),
        drain_prometheus_port=_port(env, "DRAIN_PROMETHEUS_PORT", defaults.drain_prometheus_port),
        tracing_exporter=_tracing_exporter(env),
        otel_service_name=_optional(env, "OTEL_SERVICE_NAME") or defaults.otel_service_name,
        job_log=job_log_settings(env),
    )


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _count(env, name, default)
    if value > 65535:
        raise ConfigError(f"{name}={value} must be a TCP port (1-65535), or 0 for none")
    return value


TRACE_EXPORTERS = ("otlp", "console")


def _tracing_exporter(env: Mapping[str, str]) -> Optional[str]:
    """The span exporter the OTEL_* variables ask for, or None: no tracing."""
    exporter = (_optional(env, "OTEL_TRACES_EXPORTER") or "").lower()
    if exporter == "none" or (_optional(env, "OTEL_SDK_DISABLED") or "").lower() == "true":
        return None
    if not exporter:
        endpoint = _optional(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _optional(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
        exporter = "otlp" if endpoint else ""
    if exporter and exporter not in TRACE_EXPORTERS:
        raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter!r} must be one of {', '.join(TRACE_EXPORTERS)} or none")
    protocol = (_optional(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _optional(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").lower()
    if exporter == "otlp" and protocol != "http/protobuf":
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: the otel extra exports over http/protobuf "
                          "only (the collector's HTTP port, usually 4318)")
    return exporter or None
