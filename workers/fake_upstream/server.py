"""The fake upstream server: every fake service on one local port, with faults and a request log.

SAMPLE DATA: everything it serves comes from ``sample_data/`` and generated
images; it stands in for MusicBrainz, Discogs, Spotify, the Cover Art
Archive and Cloudflare Images in tests and the offline demo.

Services live under path prefixes (see ``PREFIXES``).  ``/_control/...``
configures faults and reads the request log over HTTP, for tests whose
workers run in other processes.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from .cloudflare_routes import handle_cloudflare
from .discogs_routes import error_body as discogs_error_body
from .discogs_routes import handle_discogs
from .exchange import Call, Reply, json_reply
from .faults import FaultRegistry, canned_reply, plain_error_body
from .image_routes import handle_cover_art, handle_images
from .musicbrainz_routes import error_body as musicbrainz_error_body
from .musicbrainz_routes import handle_musicbrainz
from .sample import SampleCatalog
from .spotify_routes import error_body as spotify_error_body
from .spotify_routes import handle_spotify_accounts, handle_spotify_api
from .state import FakeCredentials, FakeState
from .wire import send_reply, send_truncated, stream_body

log = logging.getLogger(__name__)

MUSICBRAINZ = "/musicbrainz/ws/2"
DISCOGS = "/discogs"
SPOTIFY_API = "/spotify/v1"
SPOTIFY_ACCOUNTS = "/spotify-accounts"
CLOUDFLARE = "/cloudflare/client/v4"
IMAGES = "/images"
COVER_ART = "/coverartarchive"

Route = Callable[[Call, FakeState], Reply]
PREFIXES: dict[str, tuple[str, Route]] = {
    MUSICBRAINZ: ("musicbrainz", lambda call, state: handle_musicbrainz(call, state.catalog)),
    DISCOGS: ("discogs", handle_discogs),
    SPOTIFY_API: ("spotify", handle_spotify_api),
    SPOTIFY_ACCOUNTS: ("spotify_accounts", handle_spotify_accounts),
    CLOUDFLARE: ("cloudflare", handle_cloudflare),
    IMAGES: ("image", handle_images),
    COVER_ART: ("image", handle_cover_art),
}
ERROR_BODIES = {  # a fault's JSON body, as each service shapes errors
    "musicbrainz": musicbrainz_error_body,
    "discogs": discogs_error_body,
    "spotify": spotify_error_body,
}
LOG_LIMIT = 10_000  # requests kept in the log; a long demo run forgets the oldest
_SECRET_HEADERS = {"authorization", "cookie", "proxy-authorization", "x-api-key"}
_SECRET_PARAMS = {"token", "key", "secret", "client_secret", "access_token"}


def _redacted_query(query: str) -> str:
    pairs = [p.partition("=") for p in query.split("&") if p]
    return "&".join(k + "=" + ("[redacted]" if k.lower() in _SECRET_PARAMS else v) for k, _, v in pairs)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services
    timeout = 15  # a client that stops reading cannot hold a thread forever
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stalls
    server: "_Server"

    def _dispatch(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake upstream: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: "FakeUpstream"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer is what the faults are for; no traceback for that.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("fake upstream: client %s went away", client_address)
            return
        super().handle_error(request, client_address)


class FakeUpstream:
    """All fake services on one port of 127.0.0.1.

    Parameters:
        host: interface to bind.
        port: TCP port; 0 picks a free one.
        credentials: what the fake services accept (sample values by default).
        spotify_page_size: most items per Spotify page (20, so the 23-track
            Spotify-only album spans two pages).
        spotify_token_expires_in: ``expires_in`` of issued Spotify tokens.

    The socket is bound at construction (``url`` is known at once); ``start()``
    serves in a background thread; ``stop()`` or leaving ``with`` ends it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        credentials: Optional[FakeCredentials] = None,
        spotify_page_size: int = 20,
        spotify_token_expires_in: int = 3600,
    ) -> None:
        self._httpd = _Server((host, port), _Handler)
        self._httpd.fake = self
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        catalog = SampleCatalog(self.url, discogs_prefix=DISCOGS, spotify_prefix=SPOTIFY_API)
        self.state = FakeState(catalog, credentials or FakeCredentials(), spotify_page_size, spotify_token_expires_in)
        self.faults = FaultRegistry()
        self._log: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_LIMIT)
        self._log_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> "FakeUpstream":
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-upstream", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the standalone command)."""
        self._httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving, wake sleeping faults and close the socket."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "FakeUpstream":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- where things are ----------------------------------------------------------

    def env(self, *, credentials: bool = True, cloudflare: bool = True) -> dict[str, str]:
        """Environment variables pointing the workers at this server.

        Parameters:
            credentials: include the sample Discogs and Spotify credentials.
            cloudflare: include the Cloudflare credentials (without them images go to the local cache).
        """
        env = {
            "MUSICBRAINZ_URL": self.url + MUSICBRAINZ,
            "DISCOGS_URL": self.url + DISCOGS,
            "SPOTIFY_API_URL": self.url + SPOTIFY_API,
            "SPOTIFY_ACCOUNTS_URL": self.url + SPOTIFY_ACCOUNTS,
            "CLOUDFLARE_API_URL": self.url + CLOUDFLARE,
            "COVERART_URL": self.url + COVER_ART,
        }
        creds = self.state.credentials
        if credentials:
            env.update(
                DISCOGS_TOKEN=creds.discogs_token,
                SPOTIFY_CLIENT_ID=creds.spotify_client_id,
                SPOTIFY_CLIENT_SECRET=creds.spotify_client_secret,
            )
        if cloudflare:
            env.update(CLOUDFLARE_ACCOUNT_ID=creds.cloudflare_account_id, CLOUDFLARE_API_TOKEN=creds.cloudflare_api_token)
        return env

    def cover_art_url(self, mbid: str, entity: str = "release-group") -> str:
        """The fake Cover Art Archive URL of a release group's (or release's) front cover."""
        return f"{self.url}{COVER_ART}/{entity}/{mbid}/front"

    # -- faults and the request log -------------------------------------------------

    def fail(self, path: str, kind: str, **options: Any) -> int:
        """Make matching requests misbehave; returns the fault id.

        Parameters:
            path: full path prefix (``/musicbrainz/ws/2/artist``) or ``^regex``.
            kind: one of ``faults.KINDS`` (the ``faults`` module describes each).
            options: ``times`` (default 1; None for every request until cleared),
                ``retry_after`` (seconds or HTTP-date for rate_limit/server_error,
                default 1; None omits the header), ``delay`` (seconds a timeout
                waits), ``status`` (for status/server_error), ``size`` (huge bodies).
        """
        return self.faults.add(path, kind, **options).id

    def clear_faults(self) -> None:
        self.faults.clear()

    def requests(self, service: Optional[str] = None, path: Optional[str] = None) -> list[dict[str, Any]]:
        """Recorded requests, oldest first, optionally of one service or under one path prefix.

        Each has ``id``, ``method``, ``path``, ``query``, ``service``, ``headers``
        (credentials redacted), ``time`` (UNIX seconds), ``monotonic`` (seconds,
        for spacing), ``status`` (None when hung up), ``fault`` and ``bytes_sent``.
        """
        with self._log_lock:
            entries = [dict(e) for e in self._log]
        return [
            e for e in entries if (service is None or e["service"] == service) and (path is None or e["path"].startswith(path))
        ]

    def reset_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    def reset(self) -> None:
        """Clear faults, the request log, issued tokens and uploads."""
        self.clear_faults()
        self.reset_requests()
        self.state.reset()

    def expire_spotify_tokens(self) -> None:
        """Expire every issued Spotify token: the next API call gets a 401."""
        self.state.expire_tokens()

    @property
    def uploads(self) -> dict[str, dict]:
        """Images uploaded to the fake Cloudflare, by image id (``filename``, ``data``...)."""
        with self.state.lock:
            return dict(self.state.uploads)

    # -- request handling -------------------------------------------------------------

    def _record(self, handler: BaseHTTPRequestHandler, path: str, query: str, service: str) -> dict[str, Any]:
        headers = {
            k.lower(): ("[redacted]" if k.lower() in _SECRET_HEADERS else v) for k, v in handler.headers.items()
        }
        entry = {
            "id": next(self._ids),
            "method": handler.command,
            "path": path,
            "query": _redacted_query(query),
            "service": service,
            "headers": headers,
            "time": time.time(),
            "monotonic": time.monotonic(),
            "status": None,
            "fault": None,
            "bytes_sent": 0,
        }
        with self._log_lock:
            self._log.append(entry)
        return entry

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        if path.startswith("/_control"):
            send_reply(handler, self._control(handler.command, path, query, body))
            return
        prefix, (service, route) = next(
            ((p, r) for p, r in PREFIXES.items() if path == p or path.startswith(p + "/")), ("", ("unknown", None))
        )
        entry = self._record(handler, path, split.query, service)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        call = Call(handler.command, path[len(prefix) :], query, headers, body, self.url, self.url + prefix)

        def answer() -> Reply:
            if route is None:
                return json_reply({"error": f"no fake service at {path}"}, 404)
            try:
                return route(call, self.state)
            except Exception as exc:  # a bug in a fake route: say so instead of hanging the client
                log.exception("fake upstream route failed")
                return json_reply({"error": f"fake upstream failed: {type(exc).__name__}: {exc}"}, 500)

        fault = self.faults.take(path)
        if fault is None:
            reply = answer()
            entry["status"], entry["bytes_sent"] = reply.status, send_reply(handler, reply)
            return
        entry["fault"] = fault.kind
        canned = canned_reply(fault, ERROR_BODIES.get(service, plain_error_body))
        if canned is not None:
            entry["status"], entry["bytes_sent"] = canned.status, send_reply(handler, canned)
        elif fault.kind == "timeout":
            self._stopping.wait(fault.delay)
            handler.close_connection = True
        elif fault.kind == "disconnect":
            handler.close_connection = True
        elif fault.kind == "truncated_json":
            reply = answer()
            if reply.status != 200 or not reply.body:
                reply = json_reply({"padding": "x" * 200, "note": "truncated on purpose"})
            entry["status"], entry["bytes_sent"] = 200, send_truncated(handler, reply)
        else:  # huge_body, huge_body_declared
            content_type = "image/jpeg" if service == "image" else "application/json"
            entry["status"] = 200
            entry["bytes_sent"] = stream_body(
                handler, fault.size, chunked=fault.kind == "huge_body", content_type=content_type, stop=self._stopping
            )

    def _control(self, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
        """``/_control``: faults, the request log, resets and Spotify token expiry, over HTTP."""
        if path == "/_control/health" and method == "GET":
            return json_reply({"ok": True, "url": self.url, "sample_data": True,
                               "env": self.env(credentials=False, cloudflare=False)})
        if path == "/_control/requests":
            if method == "GET":
                return json_reply({"requests": self.requests(query.get("service"), query.get("path"))})
            if method == "DELETE":
                self.reset_requests()
                return json_reply({"cleared": True})
        if path == "/_control/faults":
            if method == "GET":
                return json_reply({"faults": self.faults.list()})
            if method == "DELETE":
                self.clear_faults()
                return json_reply({"cleared": True})
            if method == "POST":
                try:
                    spec = json.loads(body or b"{}")
                    fault = self.faults.add(**spec)
                except (TypeError, ValueError, re.error) as exc:
                    return json_reply({"error": str(exc)}, 400)
                return json_reply(fault.to_dict(), 201)
        match = re.fullmatch(r"/_control/faults/(\d+)", path)
        if match and method == "DELETE":
            removed = self.faults.remove(int(match.group(1)))
            return json_reply({"removed": removed}, 200 if removed else 404)
        if path == "/_control/reset" and method == "POST":
            self.reset()
            return json_reply({"reset": True})
        if path == "/_control/spotify/expire-tokens" and method == "POST":
            self.expire_spotify_tokens()
            return json_reply({"expired": True})
        return json_reply({"error": f"no control endpoint {method} {path}"}, 404)
