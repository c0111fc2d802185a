"""The dashboard driven in the test's process: httpx against the ASGI app, and HTTP Basic credentials."""

from __future__ import annotations

import asyncio
import base64

import httpx


class Web:
    """httpx against the ASGI app, one request at a time (sync handlers run in Starlette's thread pool)."""

    def __init__(self, app):
        self.app = app

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        async def send():
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
                return await web.request(method, path, **kwargs)

        return asyncio.run(send())

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.request("POST", path, **kwargs)


def basic(password: str, user: str = "operator") -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
