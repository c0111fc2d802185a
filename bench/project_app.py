"""The broker module of the linking benchmark's ``project`` mode: the product's own wiring.

What ``dramatiq workers.worker`` builds (``workers.broker.build_broker``: its
whole middleware stack, from the settings in the environment), with its JSON
logging (the benchmark runs it with ``--skip-logging``, as the Procfile does),
and the benchmark's two actors instead of the product's.
"""

import time

import dramatiq

from bench.thread_ids import ThreadIds
from models import bind_database, load_settings
from workers import app
from workers.broker import build_broker
from workers.logging_setup import configure_logging

settings = load_settings()
configure_logging(settings)
bind_database(settings.database_url, settings.db_max_connections)
broker = build_broker(settings)
broker.add_middleware(ThreadIds())  # the benchmark's own: tells it which threads are the drainer's
dramatiq.set_broker(broker)
app.use_settings(settings)


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop():
    pass


@dramatiq.actor(queue_name="bench", max_retries=0)
def io_20ms():
    time.sleep(0.02)
