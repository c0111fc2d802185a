"""MetricsExposition: Dramatiq's own Prometheus middleware, served where the settings say.

    broker.add_middleware(MetricsExposition(host="127.0.0.1", port=9191, server=serve_metrics))

Dramatiq's ``Prometheus`` middleware counts messages in every worker process
(``prometheus_client`` in multiprocess mode, one file per process under
Dramatiq's ``dramatiq_prom_db`` directory) and forks one process that serves
the sum of those files over HTTP.  This subclass changes three things:

* the exposition server is the function the app gives (``server``), so that
  it listens where the app's settings say (``PROMETHEUS_HOST``,
  ``PROMETHEUS_PORT``; ``workers/metrics_server.py``) instead of on
  Dramatiq's own environment variables; ``serve`` is what it runs;
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
from typing import Callable

import structlog
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


def serve(host: str, port: int) -> int:
    """Serve the sum of the worker processes' metrics on ``host:port`` until the process ends.

    A port already in use is one error line and exit status 0: the workers
    are fine, and exiting quietly keeps a supervisor from restarting them.
    """
    logger = structlog.get_logger("middleware.prometheus")
    try:
        server = HTTPServer((host, port), dramatiq_prometheus._metrics_handler)
    except OSError as exc:
        logger.error(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); the workers run "
            "without a metrics endpoint: set PROMETHEUS_PORT to a free port, or to 0 to turn metrics off",
            host=host, port=port,
        )
        return 0
    logger.info("serving metrics", url=f"http://{host}:{port}/metrics")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


class MetricsExposition(dramatiq_prometheus.Prometheus):
    """Dramatiq's ``Prometheus`` middleware on our host and port, its directory cleared per run.

    Parameters:
      host(str): The address the exposition server listens on.  Read again by
        the server process (forked by ``dramatiq``, it has nothing of this
        process but the function's name); given here for the record.
      port(int): The port, likewise.
      server(Callable[[], int]): The exposition server, a module-level
        function ``dramatiq`` forks a process to run: it reads the host and
        port and calls ``serve``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9191, *, server: Callable[[], int]) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self.server = server
        self.directory = dramatiq_prometheus.DB_PATH

    @property
    def forks(self):
        return [self.server]

    def after_process_boot(self, broker):
        # Worker processes are children of one `dramatiq` process: its pid names the run.
        clear_for_this_run(self.directory, str(os.getppid()))
        super().after_process_boot(broker)
