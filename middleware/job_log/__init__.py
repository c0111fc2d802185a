"""The job-log engine: every write of a job's row in ``enrichment_logs``, from the journal to the database.

``JobLog`` (``engine``) is the one object the rest of the product talks to:
JobLinking hands it rows, the workers and ``enrich drain`` drain through it,
the dashboard reads its figures.  The parts, one concern each:

* ``rows``: ``JobLogRow``, one write, one constructor per kind (queued, start, retrying, end, lost, rejected);
* ``row_values``: values from any producer made safe for a row; ``is_job_id``;
* ``sent_messages``: what a row keeps of its message, and the message ``enrich resend`` rebuilds;
* ``journal``: the Redis Stream (or in-memory list) every write is appended to;
* ``ride_along``: a send's or a job's end's write sent in one script with its enqueue or ack;
* ``start_rows``: start rows held a moment, so a short job writes one entry;
* ``drainer``: applies the journal to the database in batches;
* ``upsert``: the SQL that moves a row forward, in any order, any number of times;
* ``root_status``: THE rule for a root's ``degraded`` status (read it first);
* ``lost_work``: marks jobs whose message Redis lost;
* ``database``: which database, and the check a process makes before it consumes.
"""

from .database import JobLogRefused
from .engine import JobLog
from .journal import JournalUnavailable
from .rows import JobLogRow

__all__ = ["JobLog", "JobLogRow", "JobLogRefused", "JournalUnavailable"]
