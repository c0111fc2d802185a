"""The dashboard's routes: pages, the JSON API and (when allowed) the actions.

Handlers are plain functions: Starlette runs them in its thread pool, each
with a pooled database connection of its own, handed back when it returns.
A bad id, cursor or filter answers 400 or 404 with one line; a database that
cannot be reached answers 503; nothing answers with a traceback.
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import quote

import dramatiq
import jinja2
import peewee
import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from models import Settings, database, load_settings, utcnow
from models.entities import get_entity
from models.history import DEFAULT_LIMIT as HISTORY_LIMIT
from models.history import field_history
from models.job_log import DEGRADED, ENTITY_TYPES, STATUSES
from models.timeline import entity_history, get_tree, job_activity, list_roots

from . import present
from .filters import WINDOWS, BadRequest, RootFilters, text_param
from .journal_status import LIST_COMMAND, REPLAY_COMMAND, JournalReader
from .queues import QueuePages
from .security import Csrf, PasswordRequired, SecurityHeaders
from .workers import WorkerPages

HERE = Path(__file__).parent
PARTIAL_HEADER = "x-dashboard-partial"  # the pages' script asks for the live part only
MAX_JOB_ID = 100
OVERVIEW_WINDOWS = {"hour": (dt.timedelta(hours=1), 60), "day": (dt.timedelta(days=1), 600)}  # length, bucket s


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             finalize=present.visible_text, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(fmt_ms=present.fmt_ms, fmt_time=present.fmt_time, fmt_epoch=present.fmt_epoch,
                       STATUSES=STATUSES, WINDOWS=WINDOWS,
                       is_active_root=present.is_active_root,
                       fmt_value=present.fmt_value, pairs=present.pairs)
    return Jinja2Templates(env=env)


def _job_id(request: Request) -> str:
    job_id = request.path_params["job_id"].strip()
    if not job_id or len(job_id) > MAX_JOB_ID or any(ord(c) < 32 or ord(c) == 127 for c in job_id):
        raise BadRequest(f"malformed job id: at most {MAX_JOB_ID} printable characters")
    return job_id


def _reads(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """Run ``handler`` with a pooled connection; bad input is a 400, an unreachable database a 503."""

    @functools.wraps(handler)
    def wrapped(request: Request) -> Response:
        api = request.url.path.startswith("/api/")
        try:
            with database.connection_context():
                return handler(request)
        except ValueError as exc:  # BadRequest, and the query functions' own checks (a bad cursor)
            return _error(api, 400, str(exc))
        except peewee.OperationalError:
            return _error(api, 503, "the database cannot be reached; try again shortly")

    return wrapped


def _resend(broker: dramatiq.Broker, job_id: str, whole_tree: bool) -> list[str]:
    """Send the job (or the tree's failed and lost jobs) again through the workers' broker (Redis)."""
    from workers.resend import resend_job, resend_tree

    with database.connection_context():
        return resend_tree(broker, job_id) if whole_tree else [resend_job(broker, job_id)]


def _error(api: bool, status: int, message: str) -> Response:
    if api:
        return JSONResponse({"error": message}, status_code=status)
    return PlainTextResponse(message + "\n", status_code=status)


class Dashboard:
    """The handlers, with what they share: settings, templates, the CSRF token."""

    def __init__(self, settings: Settings, broker: Optional[dramatiq.Broker] = None):
        self.settings = settings
        self.templates = _templates()
        self.csrf = Csrf()
        # Actions send messages: they need the shared broker, not the in-memory one of this process.
        self.actions = settings.dashboard_actions
        if self.actions and broker is None:
            raise ValueError("the dashboard's actions send messages: create_app(settings, broker) needs the "
                             "workers' broker (enrich web starts it)")
        self.broker = broker
        # The workers' journal (JOB_LOG_STREAM on REDIS_URL): rows the pages do not show yet.
        self.journal = JournalReader(settings.redis_url, settings.job_log.stream,
                                     settings.dashboard_journal_behind_seconds)

    def render(self, request: Request, name: str, **context) -> Response:
        context.update(actions=self.actions, csrf_token=self.csrf.token if self.actions else None)
        response = self.templates.TemplateResponse(request, name, context)
        response.headers["cache-control"] = "no-store"
        return response

    # -- pages ----------------------------------------------------------------------------------

    def roots(self, request: Request) -> Response:
        filters = RootFilters.parse(request.query_params)
        page = list_roots(**filters.query_args())
        refs = present.entity_refs((r.entity_type, r.entity_id) for r in page.roots)
        active = any(present.is_active_root(r) for r in page.roots)
        name = "_roots_table.html" if request.headers.get(PARTIAL_HEADER) else "roots.html"
        return self.render(request, name, page=page, refs=refs, filters=filters, active=active)

    def tree(self, request: Request) -> Response:
        job_id = _job_id(request)
        tree = get_tree(job_id)
        if tree is None:
            return _error(False, 404, f"no job with id {job_id}")
        rows, scale, origin = present.waterfall(tree)
        name = "_tree_body.html" if request.headers.get(PARTIAL_HEADER) else "tree.html"
        sent = request.query_params.get("sent", "")  # after an action: how many jobs it sent again
        return self.render(request, name, tree=tree, rows=rows, job_id=job_id, ticks=present.ticks(scale, origin),
                           changes=present.tree_changes_view(rows),
                           failed=present.failed_children(rows), active=present.is_active_tree(tree),
                           root_ref=rows[0].entity if rows and tree.root else None,
                           sent=int(sent) if sent.isdigit() else None)

    def entity(self, request: Request, entity_type: str) -> Response:
        entity_id = request.path_params["entity_id"]
        filters = RootFilters.parse(request.query_params)
        entity = get_entity(entity_type, entity_id)
        page = entity_history(entity_type, entity_id, limit=filters.limit, cursor=filters.cursor)
        if entity is None and not page.roots:
            return _error(False, 404, f"no {entity_type} with id {entity_id}, and no job touched one")
        refs = present.entity_refs((r.entity_type, r.entity_id) for r in page.roots)
        # ``changes``: the field history's own page cursor, beside the trees list's ``cursor``.
        history = field_history(entity_type, entity_id,
                                cursor=text_param(request.query_params.get("changes"), "changes", 200))
        return self.render(request, "entity.html", entity=entity, entity_type=entity_type, entity_id=entity_id,
                           page=page, refs=refs, filters=filters, history=history)

    def overview(self, request: Request) -> Response:
        window = request.query_params.get("window", "hour")
        if window not in OVERVIEW_WINDOWS:
            raise BadRequest(f"window {window[:20]!r} is not one of {', '.join(OVERVIEW_WINDOWS)}")
        length, bucket = OVERVIEW_WINDOWS[window]
        end = utcnow()
        start = end - length
        chart = present.activity_chart(job_activity(start, end, bucket), start, end, bucket)
        degraded = list_roots(status=DEGRADED, since=end - dt.timedelta(days=1), limit=100)
        refs = present.entity_refs((r.entity_type, r.entity_id) for r in degraded.roots)
        return self.render(request, "overview.html", chart=chart, window=window, windows=list(OVERVIEW_WINDOWS),
                           degraded=degraded, refs=refs, chart_statuses=present.CHART_STATUSES,
                           journal=self.journal.status(), list_command=LIST_COMMAND, replay_command=REPLAY_COMMAND)

    # -- the JSON API -------------------------------------------------------------------------------

    def api_roots(self, request: Request) -> Response:
        return JSONResponse(list_roots(**RootFilters.parse(request.query_params).query_args()).as_dict())

    def api_tree(self, request: Request) -> Response:
        job_id = _job_id(request)
        tree = get_tree(job_id)
        if tree is None:
            return _error(True, 404, f"no job with id {job_id}")
        return JSONResponse(tree.as_dict())

    def api_entity(self, request: Request) -> Response:
        entity_type, entity_id = request.path_params["entity_type"], request.path_params["entity_id"]
        filters = RootFilters.parse(request.query_params)
        entity = get_entity(entity_type, entity_id)
        page = entity_history(entity_type, entity_id, limit=filters.limit, cursor=filters.cursor)
        if entity is None and not page.roots:
            return _error(True, 404, f"no {entity_type} with id {entity_id}, and no job touched one")
        return JSONResponse({"entity": entity.as_dict() if entity else None, **page.as_dict()})

    def api_history(self, request: Request) -> Response:
        entity_type, entity_id = request.path_params["entity_type"], request.path_params["entity_id"]
        limit = request.query_params.get("limit", str(HISTORY_LIMIT))
        if not limit.isdigit():
            raise BadRequest(f"limit {limit[:20]!r} is not a whole number")
        history = field_history(entity_type, entity_id, request.query_params.get("field"), int(limit),
                                text_param(request.query_params.get("cursor"), "cursor", 200))
        if not history.changes and get_entity(entity_type, entity_id) is None:
            return _error(True, 404, f"no {entity_type} with id {entity_id}, and no job changed one")
        return JSONResponse(history.as_dict())

    # -- actions ------------------------------------------------------------------------------------

    async def resend(self, request: Request) -> Response:
        """POST /jobs/{job_id}/resend and /trees/{job_id}/resend: send a failed or lost job, or every one of a
        tree, again (``workers.resend``), then show the tree."""
        if not self.actions:
            return _error(False, 403, "actions are off: they need DASHBOARD_ALLOW_ACTIONS=1, DASHBOARD_PASSWORD "
                                      "and REDIS_URL")
        from workers.resend import ResendRefused

        form = await request.form()
        if not self.csrf.valid(form.get("csrf_token")):
            return _error(False, 403, "the form's CSRF token is missing or wrong: reload the page and try again")
        try:
            job_id = _job_id(request)
            sent = await run_in_threadpool(_resend, self.broker, job_id, request.url.path.startswith("/trees/"))
        except ValueError as exc:
            return _error(False, 400, str(exc))
        except ResendRefused as exc:
            return _error(False, 409, str(exc))
        except (dramatiq.errors.ConnectionError, redis.exceptions.RedisError):
            return _error(False, 503, "the broker (REDIS_URL) cannot be reached; try again shortly")
        except peewee.OperationalError:
            return _error(False, 503, "the database cannot be reached; try again shortly")
        return RedirectResponse(f"/trees/{quote(job_id)}?sent={len(sent)}", status_code=303)

    def routes(self) -> list:
        entity_pages = [Route(f"/{entity_type}s/{{entity_id}}", _reads(functools.partial(self.entity,
                                                                                     entity_type=entity_type)))
                        for entity_type in ENTITY_TYPES]
        return [
            Route("/", _reads(self.roots), name="roots"),
            Route("/jobs/{job_id}/resend", self.resend, methods=["POST"]),
            Route("/trees/{job_id}/resend", self.resend, methods=["POST"]),
            Route("/trees/{job_id}", _reads(self.tree), name="tree"),
            Route("/overview", _reads(self.overview), name="overview"),
            Route("/api/roots", _reads(self.api_roots)),
            Route("/api/trees/{job_id}", _reads(self.api_tree)),
            Route("/api/entities/{entity_type}/{entity_id}", _reads(self.api_entity)),
            *QueuePages(self, _error).routes(_reads),
            *WorkerPages(self, _error, PARTIAL_HEADER).routes(),
            Route("/api/entities/{entity_type}/{entity_id}/history", _reads(self.api_history)),
            *entity_pages,
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]


async def _not_found(request: Request, exc: HTTPException) -> Response:
    api = request.url.path.startswith("/api/")
    return _error(api, exc.status_code, exc.detail if exc.status_code != 404 else f"no page at {request.url.path}")


def create_app(settings: Optional[Settings] = None, broker: Optional[dramatiq.Broker] = None) -> Starlette:
    """The dashboard as an ASGI app, on the database ``models`` is bound to.

    Parameters:
      settings(Settings | None): None reads them from the environment (an ASGI server's factory).
      broker(dramatiq.Broker | None): the workers' broker, with their actors; needed when the actions
        are on (DASHBOARD_ALLOW_ACTIONS, DASHBOARD_PASSWORD and REDIS_URL): ``enrich web`` passes it.
    """
    settings = settings or load_settings()
    dashboard = Dashboard(settings, broker)
    app = Starlette(
        routes=dashboard.routes(),
        middleware=[
            Middleware(SecurityHeaders),  # outermost: every answer carries the CSP, the 401 too
            Middleware(PasswordRequired, password=settings.dashboard_password),
        ],
        exception_handlers={HTTPException: _not_found},
    )
    app.state.dashboard = dashboard
    return app
