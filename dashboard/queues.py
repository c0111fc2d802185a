"""The queue pages, their JSON and the dead letters' actions: what waits in the workers' Redis.

    GET  /queues, /api/queues                       every queue's counts and oldest ages
    GET  /queues/{queue}, /api/queues/{queue}       one page of a queue's messages (?state=ready|delayed|dead,
                                                    ?offset=, ?limit=)
    POST /queues/{queue}/dead/{id}/requeue|delete   one dead letter (actions on, CSRF token)
    POST /queues/{queue}/dead/requeue|delete        every dead letter of the queue (actions on, CSRF token)

Everything reads through ``workers/queues.py`` and acts through
``workers/dead_letters.py``, as ``enrich queues`` and ``enrich dead-letters`` do.
"""

from __future__ import annotations

import time
from typing import Callable
from urllib.parse import quote

import dramatiq
import peewee
import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from models import database
from workers.queues import (
    LISTED_STATES,
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    QueueNotFound,
    add_ack_rates,
    add_job_log,
    check_message_id,
    check_queue_name,
    ended_per_minute,
    queue_messages,
    queue_names,
    queue_summaries,
)

from .filters import BadRequest

NO_REDIS = "the dashboard has no REDIS_URL: the queues live in the workers' Redis"
RATES_FOR = 10.0  # seconds the ended-per-minute figures are shown before the job log is read again
REDIS_DOWN = "the broker (REDIS_URL) cannot be reached; try again shortly"


def _number(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name, str(default))
    if not value.isdigit() or not low <= int(value) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(value)


def redis_answer(client, request: Request, error: Callable[[bool, int, str], Response], read: Callable[[], Response],
                 no_redis: str) -> Response:
    """``read()``'s answer; 503 without a Redis (``no_redis`` says why) or when it cannot be reached, 404 for a
    queue or message that is not there."""
    api = request.url.path.startswith("/api/")
    if client is None:
        return error(api, 503, no_redis)
    try:
        return read()
    except QueueNotFound as exc:
        return error(api, 404, str(exc))
    except redis.exceptions.RedisError:
        return error(api, 503, REDIS_DOWN)


class QueuePages:
    """The queue handlers; ``dashboard`` gives the settings, rendering, CSRF token and broker."""

    def __init__(self, dashboard, error: Callable[[bool, int, str], Response]):
        self.dashboard = dashboard
        self.error = error
        url = dashboard.settings.redis_url
        self.client = redis.Redis.from_url(url, socket_timeout=5) if url else None
        self._rates_read: tuple[float, dict[str, float]] = (float("-inf"), {})

    def _queue(self, request: Request) -> str:
        name = check_queue_name(request.path_params["queue"])  # ValueError: 400
        if name not in queue_names(self.client):
            raise QueueNotFound(f"no queue named {name} on the broker")
        return name

    def _answer(self, request: Request, read: Callable[[], Response]) -> Response:
        return redis_answer(self.client, request, self.error, read, NO_REDIS)

    # -- reading ------------------------------------------------------------------------------------

    def _summaries(self):
        return add_ack_rates(queue_summaries(self.client), self._rates())

    def _rates(self) -> dict[str, float]:
        """The job log's ended-per-minute figures, read again when older than ``RATES_FOR`` seconds: they are a
        5-minute average, and their query grows with the jobs that ended in those minutes."""
        read_at, rates = self._rates_read
        if time.monotonic() - read_at > RATES_FOR:
            rates = ended_per_minute()
            self._rates_read = (time.monotonic(), rates)
        return rates

    def _page(self, request: Request):
        queue = self._queue(request)
        state = request.query_params.get("state", "ready")
        if state not in LISTED_STATES:
            raise BadRequest(f"state {state[:20]!r} is not one of {', '.join(LISTED_STATES)}")
        page = queue_messages(self.client, queue, state, _number(request, "offset", 0, 0, 10**9),
                              _number(request, "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE),
                              self.dashboard.settings.secrets())
        add_job_log(page.messages)
        return page

    def queues(self, request: Request) -> Response:
        return self._answer(request, lambda: self.dashboard.render(request, "queues.html", nav="queues",
                                                                   queues=self._summaries()))

    def api_queues(self, request: Request) -> Response:
        return self._answer(request, lambda: JSONResponse({"queues": [s.as_dict() for s in self._summaries()]}))

    def queue(self, request: Request) -> Response:
        def read():
            page = self._page(request)
            done = {key: int(value) for key in ("requeued", "deleted", "left")
                    if (value := request.query_params.get(key, "")).isdigit()}
            return self.dashboard.render(request, "queue.html", nav="queues", page=page, states=LISTED_STATES,
                                         done=done)
        return self._answer(request, read)

    def api_queue(self, request: Request) -> Response:
        return self._answer(request, lambda: JSONResponse(self._page(request).as_dict()))

    # -- actions ------------------------------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        """Requeue or delete one dead letter, or all of a queue's; then show the queue's dead letters."""
        from workers.dead_letters import DeadLetterRefused, delete_all, delete_dead, requeue_all, requeue_dead

        dashboard = self.dashboard
        if not dashboard.actions:
            return self.error(False, 403, "actions are off: they need DASHBOARD_ALLOW_ACTIONS=1, DASHBOARD_PASSWORD "
                                          "and REDIS_URL")
        form = await request.form()
        if not dashboard.csrf.valid(form.get("csrf_token")):
            return self.error(False, 403, "the form's CSRF token is missing or wrong: reload the page and try again")
        action, one = request.path_params["action"], "message_id" in request.path_params
        if action not in ("requeue", "delete"):
            return self.error(False, 404, f"no action {action[:20]!r}: requeue or delete")
        broker, client = dashboard.broker, self.client

        def run() -> str:
            with database.connection_context():
                return act()

        def act() -> str:
            """The redirect's query: what was done, as counts."""
            queue = self._queue(request)
            if one:
                redis_id = check_message_id(request.path_params["message_id"])
                if action == "requeue":
                    requeue_dead(broker, client, queue, redis_id)
                else:
                    delete_dead(client, queue, redis_id)
                return f"{action}d=1"
            outcome = requeue_all(broker, client, queue) if action == "requeue" else delete_all(client, queue)
            return f"{action}d={len(outcome.done)}&left={len(outcome.refused)}"

        try:
            done = await run_in_threadpool(run)
        except ValueError as exc:
            return self.error(False, 400, str(exc))
        except QueueNotFound as exc:
            return self.error(False, 404, str(exc))
        except DeadLetterRefused as exc:
            return self.error(False, 409, str(exc))
        except (dramatiq.errors.ConnectionError, redis.exceptions.RedisError):
            return self.error(False, 503, REDIS_DOWN)
        except peewee.OperationalError:
            return self.error(False, 503, "the database cannot be reached; try again shortly")
        queue = quote(request.path_params["queue"])
        return RedirectResponse(f"/queues/{queue}?state=dead&{done}", status_code=303)

    def routes(self, reads: Callable) -> list[Route]:
        actions = "{action:str}"
        return [
            Route("/queues", reads(self.queues), name="queues"),
            Route("/api/queues", reads(self.api_queues)),
            Route("/queues/{queue}", reads(self.queue)),
            Route("/api/queues/{queue}", reads(self.api_queue)),
            Route(f"/queues/{{queue}}/dead/{{message_id}}/{actions}", self.act, methods=["POST"]),
            Route(f"/queues/{{queue}}/dead/{actions}", self.act, methods=["POST"]),
        ]
