"""The music catalog's enrichment workers: actors, upstream clients, the ``enrich`` command.

Importing this package has no side effects: nothing reads the environment,
binds the database or builds a broker.  The entry points do, once per
process: ``workers/worker.py`` (``dramatiq workers.worker``), the ``enrich``
command and the dashboard; see ``workers/app.py``.
"""

import sys

# Before the app had an entry module, `dramatiq workers` loaded it from here.  Now
# that command would start worker processes with no actor on Dramatiq's default
# broker, consuming nothing and saying nothing: refuse it in one line instead.
if "dramatiq.cli" in sys.modules and "workers" in sys.argv[1:]:
    raise SystemExit("enrich: `dramatiq workers` is now `dramatiq workers.worker` (the Procfile's worker line)")
