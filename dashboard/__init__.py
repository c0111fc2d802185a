"""The operator's web dashboard: root jobs, live tree timelines, entity history, activity.

A small Starlette app, rendered on the server with Jinja2 and served by
uvicorn (``enrich web``).  It reads the job log only through the query
functions of ``models.timeline``, the same ones ``enrich roots`` and
``enrich timeline`` use, and its JSON API returns their ``as_dict()``.  The
overview also reads the job-log journal's backlog on the workers' Redis
(``journal_status``): rows the database does not hold yet.
"""

from .app import create_app

__all__ = ["create_app"]
