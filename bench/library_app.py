"""The broker module of the linking benchmark's ``library`` mode: JobLinking as a Dramatiq user adds it.

A ``RedisBroker`` with the middleware ``docs/library.md`` shows, Dramatiq's own
logging (the ``dramatiq`` command's stdlib ``basicConfig`` at INFO: the
benchmark runs it without ``--skip-logging``) and structlog rendering its
lines into the standard library, as structlog's documentation sets it up;
nothing of the project's own wiring (its JSON logging, buffered lines,
settings).  Rows go to DATABASE_URL.
"""

import os

import dramatiq
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import default_middleware

from bench.thread_ids import ThreadIds
from middleware import ActorArguments, DatabaseConnections, JobLinking, MessageOptions
from models import bind_database

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.filter_by_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        structlog.processors.JSONRenderer(),
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)

bind_database(os.environ["DATABASE_URL"])
broker = RedisBroker(url=os.environ["REDIS_URL"],
                     middleware=[MessageOptions(), ActorArguments(), *(m() for m in default_middleware)])
broker.add_middleware(DatabaseConnections())
broker.add_middleware(ThreadIds())  # the benchmark's own: tells it which threads are the drainer's
broker.add_middleware(JobLinking())
dramatiq.set_broker(broker)

from bench.bench_actors import io_20ms, noop  # noqa: E402, F401  (declared on the broker set above)
