"""The real app (``workers.worker``: its settings, broker, middleware and every actor) plus a few test actors.

``dramatiq fault_app`` runs exactly what ``dramatiq workers.worker`` runs, with a few
more actors that never touch the database or Redis themselves, so a fault
test can tell what the product's own machinery (JobLinking's journal, the
Redis consumer, Retries) does with a job while a service is gone:

* ``fault_sleep(seconds)``: sleeps, then succeeds;
* ``fault_flaky(seconds)``: sleeps, fails its first attempt (a retry), then succeeds;
* ``fault_parent(child, *args)``: sends a child job, then succeeds;
* ``fault_gated(gate)`` and ``fault_dies_running(mark)``: see each.
"""

import os
import threading
import time

import dramatiq

import workers.worker  # noqa: F401  (the app: broker set, actors declared)
from middleware import current_job
from workers.jobs import enrichment_actor


@enrichment_actor("fault:sleep")
def fault_sleep(seconds: float = 0.1):
    time.sleep(seconds)


@enrichment_actor("fault:flaky")
def fault_flaky(seconds: float = 0.1):
    time.sleep(seconds)
    if current_job().attempt == 0:
        raise ConnectionError("first attempt fails on purpose (a retry follows)")


@enrichment_actor("fault:parent")
def fault_parent(child: str, *args):
    """Sends one job of the actor ``child`` (with ``args``), a child in its tree, and succeeds."""
    dramatiq.get_broker().get_actor(child).send(*args)


@enrichment_actor("fault:gated")
def fault_gated(gate: str):
    """Its first attempt waits until the file ``gate`` exists, then fails (a retry follows); the next succeeds."""
    if current_job().attempt == 0:
        while not os.path.exists(gate):
            time.sleep(0.02)
        raise ConnectionError("first attempt fails on purpose (a retry follows)")


@enrichment_actor("fault:dies-running", max_retries=0)
def fault_dies_running(mark: str):
    """Its first delivery creates the file ``mark`` and runs until its worker is killed (its ``running``
    start already in the journal, appended once it ran 50 ms); a later delivery succeeds."""
    if not os.path.exists(mark):
        open(mark, "w").close()
        threading.Event().wait()
