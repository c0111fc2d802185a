"""The real app (``workers.worker``: its settings, broker, middleware and every actor) plus two test actors.

``dramatiq fault_app`` runs exactly what ``dramatiq workers.worker`` runs, with two
more actors that never touch the database or Redis themselves, so a fault
test can tell what the product's own machinery (JobLinking's journal, the
Redis consumer, Retries) does with a job while a service is gone:

* ``fault_sleep(seconds)``: sleeps, then succeeds;
* ``fault_flaky(seconds)``: sleeps, fails its first attempt (a retry), then succeeds.
"""

import time

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
