"""MetricsExposition: Dramatiq's own Prometheus middleware, served where the settings say.

    broker.add_middleware(MetricsExposition(host="127.0.0.1", port=9191))

Dramatiq's ``Prometheus`` middleware counts messages in every worker process
(``prometheus_client`` in multiprocess mode, one file per process under
Dramatiq's ``dramatiq_prom_db`` directory) and forks one process that serves
the sum of those files over HTTP.  This subclass changes three things:

* the exposition server listens on ``host:port`` from our settings
  (``PROMETHEUS_HOST``, ``PROMETHEUS_PORT``) instead of Dramatiq's own
  environment variables;
* the multiprocess directory is cleared once per ``dramatiq`` run, before
  any worker process writes to it, as ``prometheus_client`` asks (files of a
  previous run would be added to this one's);
* a port already in use is one error line, and the workers run on without
  metrics, instead of a traceback.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from http.server import HTTPServer

from dramatiq.middleware import prometheus as dramatiq_prometheus

RUN_MARKER = ".dramatiq-run"  # holds the pid of the `dramatiq` process whose run the files belong to


def clear_for_this_run(directory: str, run_id: str) -> bool:
    """Empty ``directory`` unless it already belongs to ``run_id``; True when it was cleared.

    Every worker process of one ``dramatiq`` run calls this at boot with the
    same ``run_id`` (their parent's pid): the first one clears, under a lock,
    and the others leave the files already written alone.
    """
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = os.path.join(directory, RUN_MARKER)
        try:
            with open(marker) as f:
                if f.read() == run_id:
                    return False
        except FileNotFoundError:
            pass
        for name in os.listdir(directory):
            if name in (".lock", RUN_MARKER):
                continue
            path = os.path.join(directory, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        with open(marker, "w") as f:
            f.write(run_id)
        return True


def serve_metrics() -> int:
    """The exposition server, run by ``dramatiq`` in a process of its own (a "fork").

    It reads ``PROMETHEUS_HOST``/``PROMETHEUS_PORT`` itself: it is forked from
    the ``dramatiq`` parent process, which never imported the broker module.
    """
    import structlog

    from models import ConfigError, load_settings
    from workers.logging_setup import configure_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"metrics: {exc}")  # the worker processes say so too, and stop
        return 0
    configure_logging(settings)
    logger = structlog.get_logger("middleware.prometheus")
    address = (settings.prometheus_host, settings.prometheus_port)
    try:
        server = HTTPServer(address, dramatiq_prometheus._metrics_handler)
    except OSError as exc:
        logger.error(
            f"cannot serve metrics on {address[0]}:{address[1]} ({exc.strerror or exc}); the workers run "
            "without a metrics endpoint: set PROMETHEUS_PORT to a free port, or to 0 to turn metrics off",
            host=address[0], port=address[1],
        )
        return 0  # the workers are fine: exiting quietly keeps a supervisor from restarting them
    logger.info("serving metrics", url=f"http://{address[0]}:{address[1]}/metrics")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


class MetricsExposition(dramatiq_prometheus.Prometheus):
    """Dramatiq's ``Prometheus`` middleware on our host and port, its directory cleared per run.

    Parameters:
      host(str): The address the exposition server listens on.  Read again by
        the server process from ``PROMETHEUS_HOST``; given here for the record.
      port(int): The port, likewise from ``PROMETHEUS_PORT``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9191) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self.directory = dramatiq_prometheus.DB_PATH

    @property
    def forks(self):
        return [serve_metrics]

    def after_process_boot(self, broker):
        # Worker processes are children of one `dramatiq` process: its pid names the run.
        clear_for_this_run(self.directory, str(os.getppid()))
        super().after_process_boot(broker)
