"""A small Dramatiq app with JobLinking on Redis, run by a real `dramatiq` process in the tests."""

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries

from middleware import DatabaseConnections, JobLinking, MessageOptions, current_job
from models import bind_database, load_settings
from workers.log_buffer import DrainLogsAtShutdown
from workers.logging_setup import configure_logging

configure_logging(load_settings())
bind_database(os.environ["DATABASE_URL"])
broker = RedisBroker(url=os.environ["REDIS_URL"])
broker.add_middleware(MessageOptions(), before=type(broker.middleware[0]))
for m in broker.middleware:
    if isinstance(m, Retries):
        m.min_backoff, m.max_backoff = 100, 300
broker.add_middleware(DrainLogsAtShutdown())
broker.add_middleware(DatabaseConnections())
broker.add_middleware(JobLinking(claim_idle=float(os.environ.get("TEST_CLAIM_IDLE", "30"))))
dramatiq.set_broker(broker)


@dramatiq.actor(operation="enrichment:album")
def chain_root(depth: int = 3):
    chain_step.send(depth)


@dramatiq.actor(operation="chain:step")
def chain_step(remaining: int):
    if remaining > 1:
        chain_step.send(remaining - 1)


@dramatiq.actor(max_retries=3)
def flaky():
    if current_job().attempt == 0:
        raise ConnectionError("upstream 503")


@dramatiq.actor(max_retries=1)
def doomed():
    raise RuntimeError("gone for good")


@dramatiq.actor
def parent_of_doomed():
    doomed.send()


@dramatiq.actor
def slow(seconds: float = 0.2):
    time.sleep(seconds)
