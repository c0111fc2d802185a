"""Writing responses on the socket, whole, cut short or endless."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler

from .exchange import Reply

CHUNK = 64 * 1024
# What a client that hung up looks like to the writer.
_GONE = (BrokenPipeError, ConnectionResetError, TimeoutError, OSError)


def _head(handler: BaseHTTPRequestHandler, status: int, content_type: str, headers: dict[str, str]) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()


def send_reply(handler: BaseHTTPRequestHandler, reply: Reply) -> int:
    """Send a complete response; return the body bytes written."""
    _head(handler, reply.status, reply.content_type, {"Content-Length": str(len(reply.body)), **reply.headers})
    if handler.command != "HEAD":
        handler.wfile.write(reply.body)
    return len(reply.body)


def send_truncated(handler: BaseHTTPRequestHandler, reply: Reply) -> int:
    """Announce the whole body, send half of it and hang up."""
    half = reply.body[: max(1, len(reply.body) // 2)]
    _head(handler, 200, reply.content_type, {"Content-Length": str(len(reply.body))})
    handler.wfile.write(half)
    handler.wfile.flush()
    handler.close_connection = True
    return len(half)


def stream_body(
    handler: BaseHTTPRequestHandler, size: int, *, chunked: bool, content_type: str, stop: threading.Event
) -> int:
    """Stream ``size`` filler bytes (chunked, or with Content-Length) until done or the client leaves.

    Returns how many body bytes were written, so a test can tell the client
    stopped reading early.
    """
    length_header = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(size)}
    _head(handler, 200, content_type, length_header)
    handler.close_connection = True
    filler = b" " * CHUNK
    sent = 0
    try:
        while sent < size and not stop.is_set():
            piece = filler[: min(CHUNK, size - sent)]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked:
            handler.wfile.write(b"0\r\n\r\n")
    except _GONE:
        pass
    return sent
