"""Test an app over real HTTP, from pytest or any test runner.

Both helpers serve the app for real, on a free port of 127.0.0.1, with its own interceptors,
limits and headers, and stop it afterwards:

- ``async with testing.client(app) as client`` serves on the test's own event loop and gives
  aiohttp's :class:`~aiohttp.test_utils.TestClient` (paths relative to the server, a cookie
  jar, responses closed at the end);
- ``with testing.serve(app) as server`` serves from replkit's background thread, for
  clients that block: ``urllib``, ``requests``, ``curl``, a browser; ``server.url`` is its
  base URL.

``app`` is a route table (served with the default interceptors), a connector map, or an
unstarted connector such as ``sse_demo.create_connector()``. For example, with pytest (and
pytest-asyncio for the async test)::

    import urllib.request
    from replkit import testing
    import app.sse_demo as sse_demo

    async def test_home_page():
        async with testing.client(sse_demo.create_connector()) as client:
            response = await client.get("/")
            assert response.status == 200
            assert await response.text() == "Hello, World!"

    def test_home_page_from_a_blocking_client():
        with testing.serve(sse_demo.routes) as server:
            with urllib.request.urlopen(server.url) as response:
                assert response.read() == b"Hello, World!"
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient
from yarl import URL

from replkit import connector as conn
from replkit.aiohttp import create_connector
from replkit.errors import ReplkitError
from replkit.server import Connector

__all__ = ["LOOPBACK", "client", "connector_for", "serve"]

LOOPBACK = "127.0.0.1"
"""Where the helpers serve: tests touch no other interface."""


def connector_for(app: Any) -> Connector:
    """An unstarted connector serving ``app`` (a route table, a connector map or a
    connector) on :data:`LOOPBACK`, on any free port."""
    if isinstance(app, Connector):
        if app.running:
            raise ReplkitError(f"{app!r} is already running; pass an unstarted connector")
        connector = app
    elif isinstance(app, Mapping):
        connector = create_connector(app, {"shutdown_grace": 0.5})
    else:
        connector_map = conn.with_default_interceptors(conn.default_connector_map(0, LOOPBACK))
        connector = create_connector(conn.with_routes(connector_map, app), {"shutdown_grace": 0.5})
    connector.host, connector.port = LOOPBACK, 0
    return connector


class _ConnectorServer(BaseTestServer):
    """aiohttp's test-server interface over a replkit connector, for its ``TestClient``:
    starts the connector on the running loop, stops it on close."""

    def __init__(self, connector: Connector) -> None:
        super().__init__(host=LOOPBACK)
        self.connector = connector

    @property
    def started(self) -> bool:
        """Whether the connector is serving."""
        return self.connector.running

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **_: Any) -> None:
        """Serve on the running loop; returns with the socket listening."""
        if self.started:
            return
        self.connector.start()
        self.port = self.connector.bound_port
        self._root = URL(f"http://{LOOPBACK}:{self.port}")

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        raise NotImplementedError("the connector's server has its own runner")

    async def close(self) -> None:
        """Stop the connector; idempotent."""
        if self.started and not self.closed:
            await self.connector.stop_async()
            self._root = None
            self._closed = True


@asynccontextmanager
async def client(app: Any, **session_options: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """Serve ``app`` on the running event loop; yield aiohttp's ``TestClient`` for it.

    ``session_options`` go to the client's :class:`aiohttp.ClientSession`.
    """
    async with TestClient(_ConnectorServer(connector_for(app)), **session_options) as test_client:
        yield test_client


@contextmanager
def serve(app: Any) -> Iterator[Connector]:
    """Serve ``app`` from replkit's background thread; yield its (started) connector."""
    connector = connector_for(app)
    # Started from a worker thread it never lands on the caller's loop, where a blocking
    # client in the same thread would wait on a server that cannot run.
    with ThreadPoolExecutor(1) as worker:
        worker.submit(connector.start).result()
    try:
        yield connector
    finally:
        connector.stop()
