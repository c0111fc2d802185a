"""The process ``dramatiq`` forks to serve the workers' metrics (``MetricsExposition``'s server).

An entry point of its own: forked from the ``dramatiq`` parent process, which
never imported ``workers.worker``, it loads the settings, configures the logs
and serves on ``PROMETHEUS_HOST:PROMETHEUS_PORT`` (``middleware.prometheus.serve``).
"""

from __future__ import annotations

from middleware.prometheus import serve
from models import ConfigError, load_settings

from .logging_setup import configure_logging


def serve_metrics() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"metrics: {exc}")  # the worker processes say so too, and stop
        return 0
    configure_logging(settings)
    return serve(settings.prometheus_host, settings.prometheus_port)
