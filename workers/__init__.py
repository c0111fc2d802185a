"""The music catalog's enrichment workers: actors, upstream clients, the ``enrich`` command.

Importing this package has no side effects: nothing reads the environment,
binds the database or builds a broker.  The entry points do, once per
process: ``workers/worker.py`` (``dramatiq workers.worker``), the ``enrich``
command and the dashboard; see ``workers/app.py``.
"""
