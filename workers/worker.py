"""The worker processes' entry: ``dramatiq workers.worker`` (the Procfile's ``worker``) loads this module.

In order: the settings from the environment, the JSON logs, the database,
the broker (set as Dramatiq's), then every actor declared on it
(``workers.app.start``).  ``dramatiq`` imports it in each worker process; the
``dramatiq`` parent process and the metrics server it forks never do.

A bad setting, or an actor whose ``operation`` or ``entity`` option is
malformed, stops the process with one line (``enrich: ...``), no traceback.
"""

from __future__ import annotations

from models import ConfigError, bind_database, load_settings

from . import app
from .logging_setup import configure_logging

try:
    settings = load_settings()
    configure_logging(settings)
    if settings.redis_url is None:
        # Worker processes started by `dramatiq` cannot share an in-memory queue.
        raise ConfigError(
            "REDIS_URL is not set: `dramatiq workers.worker` needs a Redis shared by its worker processes "
            "(e.g. REDIS_URL=redis://127.0.0.1:6379/0). On a single machine without Redis, run `enrich run`."
        )
    bind_database(settings.database_url, settings.db_max_connections)
    broker = app.start(settings)
except ConfigError as exc:  # a bad setting, or an actor declared with a typo (BadActorOptions)
    raise SystemExit(f"enrich: {exc}") from None

__all__ = ["broker", "settings"]
