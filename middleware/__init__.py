"""Dramatiq middleware: message option and argument checks, job linking and per-message database connections.

    from middleware import JobLinking, MessageOptions
    broker = RedisBroker(middleware=[MessageOptions(), *default_middleware])
    broker.add_middleware(JobLinking())

``WorkerRegistry()`` publishes each worker process and the jobs it runs in the
broker's Redis (``enrich workers``; the lost-work sweeper spares those jobs).

Inside an actor: ``record(...)`` reports the job's outcome, ``current_job()``
tells which job is running, ``new_tree()`` sends messages as new roots.

The job log JobLinking writes (journal, drainers, lost-work sweeper) is the
engine in ``middleware.job_log``: ``JobLinking().job_log`` is its ``JobLog``.
"""

from .actor_arguments import ActorArguments, BadArguments
from .db_connections import DatabaseConnections
from .job_context import JobState, NotInJob, count_api_call, current_job, new_tree, record
from .job_linking import JobLinking
from .message_options import MessageOptions
from .worker_registry import WorkerRegistry

__all__ = [
    "ActorArguments",
    "BadArguments",
    "JobLinking",
    "MessageOptions",
    "DatabaseConnections",
    "JobState",
    "NotInJob",
    "count_api_call",
    "current_job",
    "new_tree",
    "record",
    "WorkerRegistry",
]
