"""The broker module of the linking benchmark's ``project`` mode: the product's own wiring.

What ``dramatiq workers.worker`` runs (``workers.app.start``: the whole
middleware stack and the product's actors, from the settings in the
environment), with its JSON logging (the benchmark runs it with
``--skip-logging``, as the Procfile does), plus the benchmark's two actors.
"""



from bench.thread_ids import ThreadIds
from middleware import JobLinking
from models import bind_database, load_settings
from workers import app
from workers.logging_setup import configure_logging

# As workers/worker.py does.
settings = load_settings()
configure_logging(settings)
bind_database(settings.database_url, settings.db_max_connections)
broker = app.start(settings)
broker.add_middleware(ThreadIds(), before=JobLinking)  # the benchmark's own: tells it which threads are the drainer's

from bench.bench_actors import io_20ms, noop  # noqa: E402, F401  (declared on the broker set above)
