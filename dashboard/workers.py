"""The workers page and its JSON: which worker processes are alive, and what each runs now.

    GET /workers, /api/workers      every worker with a record, live or gone, and its running jobs

Both read through ``workers/live_workers.py``, as ``enrich workers`` does.
"""

from __future__ import annotations

from typing import Callable

import redis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from workers.live_workers import LIVE, worker_list

from .queues import redis_answer

NO_REDIS = "the dashboard has no REDIS_URL: the workers' records are in their Redis"


class WorkerPages:
    """The workers handlers; ``dashboard`` gives the settings and the rendering."""

    def __init__(self, dashboard, error: Callable[[bool, int, str], Response], partial_header: str):
        self.dashboard = dashboard
        self.error = error
        self.partial_header = partial_header
        url = dashboard.settings.redis_url
        self.client = redis.Redis.from_url(url, socket_timeout=5) if url else None
        self.timeout_ms = dashboard.settings.redis_heartbeat_timeout_ms

    def workers(self, request: Request) -> Response:
        def read():
            workers = worker_list(self.client, self.timeout_ms)
            name = "_workers_body.html" if request.headers.get(self.partial_header) else "workers.html"
            return self.dashboard.render(request, name, nav="workers", workers=workers, live=LIVE,
                                         timeout_seconds=self.timeout_ms / 1000)
        return redis_answer(self.client, request, self.error, read, NO_REDIS)

    def api_workers(self, request: Request) -> Response:
        return redis_answer(self.client, request, self.error, lambda: JSONResponse(
            {"heartbeat_timeout_ms": self.timeout_ms,
             "workers": [w.as_dict() for w in worker_list(self.client, self.timeout_ms)]}), NO_REDIS)

    def routes(self) -> list[Route]:
        return [Route("/workers", self.workers, name="workers"), Route("/api/workers", self.api_workers)]
