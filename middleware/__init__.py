"""Dramatiq middleware: job linking and per-message database connections.

    from middleware import JobLinking
    broker.add_middleware(JobLinking())

Inside an actor: ``record(...)`` reports the job's outcome, ``current_job()``
tells which job is running, ``new_tree()`` sends messages as new roots.
"""

from .db_connections import DatabaseConnections
from .job_context import JobState, NotInJob, count_api_call, current_job, new_tree, record
from .job_linking import JobLinking

__all__ = [
    "JobLinking",
    "DatabaseConnections",
    "JobState",
    "NotInJob",
    "count_api_call",
    "current_job",
    "new_tree",
    "record",
]
