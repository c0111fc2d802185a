"""A Dramatiq app that adds JobLinking() and binds no database, as a library user might."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from middleware import DatabaseConnections, JobLinking

broker = RedisBroker(url=os.environ["REDIS_URL"])
broker.add_middleware(DatabaseConnections())
broker.add_middleware(JobLinking())
dramatiq.set_broker(broker)


@dramatiq.actor
def job():
    pass
