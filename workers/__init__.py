"""The Dramatiq app: ``dramatiq workers`` loads the broker and every actor from here.

Importing this package reads the settings, configures the JSON logs, binds
the database and sets the broker; then every actor is declared on it.
"""

from __future__ import annotations

import sys

import dramatiq

from models import ConfigError, bind_database, load_settings
from models.settings import job_log_settings

from .broker import build_broker
from .logging_setup import configure_logging

try:
    settings = load_settings()
    job_log_settings()  # JobLinking reads JOB_LOG_*: a bad value is one line here too
    configure_logging(settings)
    bind_database(settings.database_url, settings.db_max_connections)
    if settings.redis_url is None and "dramatiq.cli" in sys.modules:
        # Worker processes started by `dramatiq` cannot share an in-memory queue.
        raise ConfigError(
            "REDIS_URL is not set: `dramatiq workers` needs a Redis shared by its worker processes "
            "(e.g. REDIS_URL=redis://127.0.0.1:6379/0). On a single machine without Redis, run `enrich run`."
        )
    broker = build_broker(settings)
except ConfigError as exc:
    # `enrich` and `dramatiq workers` both import this package first: one line, no traceback.
    raise SystemExit(f"enrich: {exc}") from None

dramatiq.set_broker(broker)

from . import actors  # noqa: E402  (actors are declared on the broker set above)

__all__ = ["broker", "settings", "actors"]
