"""The broker module the linking benchmark runs under ``dramatiq``.

BENCH_LINKING=1 adds JobLinking (rows go to DATABASE_URL); 0 runs plain Dramatiq.
"""

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from middleware import DatabaseConnections, JobLinking, MessageOptions
from models import bind_database, load_settings
from workers.log_buffer import DrainLogsAtShutdown
from workers.logging_setup import configure_logging

configure_logging(load_settings())  # production logging in both modes (workers run with --skip-logging)

broker = RedisBroker(url=os.environ["REDIS_URL"])
broker.add_middleware(DrainLogsAtShutdown())
if os.environ.get("BENCH_LINKING") == "1":
    bind_database(os.environ["DATABASE_URL"])
    broker.add_middleware(MessageOptions(), before=type(broker.middleware[0]))
    broker.add_middleware(DatabaseConnections())
    broker.add_middleware(JobLinking())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop():
    pass


@dramatiq.actor(queue_name="bench", max_retries=0)
def io_20ms():
    time.sleep(0.02)
