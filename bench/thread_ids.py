"""Which OS threads of a worker process are the job log's drainer and sweeper (for the linking benchmark).

JobLinking's drainer runs on a thread of each worker process, so its CPU is
only told apart from the jobs' per thread: at boot this middleware writes the
native ids of those threads to ``$BENCH_THREAD_DIR/<pid>``, one per line.
Added before JobLinking: Dramatiq runs the ``after_*`` hooks in reverse order, so
this one runs after JobLinking's ``after_worker_boot`` has started them.
"""

import os
import threading

import dramatiq

JOB_LOG_THREADS = ("job-log-drainer", "lost-work-sweeper")


class ThreadIds(dramatiq.Middleware):
    """Writes the drainer's and sweeper's native thread ids where the benchmark reads them.

    Parameters: none; the directory is BENCH_THREAD_DIR (nothing is written without it).
    """

    def after_worker_boot(self, broker, worker):
        directory = os.environ.get("BENCH_THREAD_DIR")
        if not directory:
            return
        ids = [str(t.native_id) for t in threading.enumerate() if t.name in JOB_LOG_THREADS]
        with open(os.path.join(directory, str(os.getpid())), "w") as f:
            f.write("\n".join(ids))
