"""The connector map and the functions threaded through it, after ``io.pedestal.connector``.

A connector map is plain data: host, port, the interceptors every request passes through,
the initial context. ``with_*`` functions each return a new map with something added, and
an adapter such as :func:`replkit.aiohttp.create_connector` turns the final map into a
connector that :func:`start` and :func:`stop` control::

    connector_map = default_connector_map(8890)
    connector_map = with_default_interceptors(connector_map)
    connector_map = with_routes(connector_map, routes)
    connector = start(aiohttp.create_connector(connector_map, None))

:func:`start`, :func:`stop` and :func:`restart` are made for a REPL: starting what already
runs, or stopping what is stopped, prints one line instead of failing, and ``restart``
hands the listening socket to the new connector so no request is ever refused.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol, Self

from replkit import http
from replkit.errors import ReplkitError
from replkit.interceptor import Context, Interceptor, enqueue
from replkit.routes import RouteError, Router, expand_routes

__all__ = [
    "Connector",
    "default_connector_map",
    "dev_mode",
    "restart",
    "serving",
    "start",
    "stop",
    "with_default_interceptors",
    "with_interceptors",
    "with_routes",
]

log = logging.getLogger("replkit.routes")

ConnectorMap = dict[str, Any]


class Connector(Protocol):
    """What :func:`start`, :func:`stop` and :func:`restart` need from an adapter's connector."""

    host: str
    port: int

    @property
    def running(self) -> bool: ...
    @property
    def url(self) -> str: ...
    @property
    def bound_port(self) -> int: ...
    def start(self) -> Self: ...
    def stop(self) -> Self: ...
    async def stop_async(self) -> None: ...
    def take_over(self, old: Any, *, drop_streams: bool = False) -> Self: ...


def dev_mode() -> bool:
    """Whether dev mode is on: ``REPLKIT_DEV_MODE`` is set to 1/true/yes/on.

    ``replkit repl``, ``replkit serve`` (when watching) and ``%load_ext replkit`` turn it on.
    In dev mode :func:`with_routes` re-reads the routes for every request, so redefining
    them takes effect without a restart, as in Pedestal's dev mode.
    """
    return os.environ.get("REPLKIT_DEV_MODE", "").strip().lower() in {"1", "true", "yes", "on"}


def default_connector_map(port: int, host: str = "localhost") -> ConnectorMap:
    """A connector map for ``host:port`` with no interceptors yet.

    The environment variables ``REPLKIT_PORT`` and ``REPLKIT_HOST`` override the arguments;
    the ``replkit`` command sets them from ``--port`` and ``--host``.
    """
    env_port = os.environ.get("REPLKIT_PORT")
    if env_port:
        try:
            port = int(env_port)
        except ValueError:
            raise ReplkitError(f"REPLKIT_PORT={env_port!r} is not a port number") from None
    return {
        "host": os.environ.get("REPLKIT_HOST") or host,
        "port": port,
        "interceptors": [],
        "initial_context": {},
        "dev_mode": dev_mode(),
    }


def with_interceptors(connector_map: ConnectorMap, *interceptors: Any) -> ConnectorMap:
    """Return the map with ``interceptors`` appended to its interceptor list."""
    return {**connector_map, "interceptors": [*connector_map["interceptors"], *interceptors]}


def with_default_interceptors(connector_map: ConnectorMap) -> ConnectorMap:
    """Add request logging, CORS (when ``allowed_origins`` is set), not-found, content type,
    query params, body params and secure headers, in Pedestal's order."""
    origins: Collection[str] | Callable[[str], bool] | None = connector_map.get("allowed_origins")
    return with_interceptors(
        connector_map,
        http.log_request,
        *([http.allow_origin(origins)] if origins is not None else []),
        http.not_found,
        http.content_type,
        http.query_params,
        http.body_params,
        http.secure_headers,
    )


def with_routes(connector_map: ConnectorMap, routes: Any) -> ConnectorMap:
    """Add a router for ``routes``, a route table or a function returning one.

    The table is checked now: a bad one raises :class:`~replkit.routes.RouteError`. A
    function is called for every request and its table re-expanded whenever it returns a
    new one. In dev mode a table passed by name (``with_routes(m, routes)``) is re-read
    from that name in its module for every request, which is how a reloaded or redefined
    ``routes`` reaches a running server.
    """
    if callable(routes):
        source, table = routes, routes()
    elif connector_map.get("dev_mode"):
        source, table = _named_source(sys._getframe(1).f_globals, routes), routes
    else:
        source, table = None, routes
    return with_interceptors(connector_map, _router(table, source))


def _named_source(namespace: Mapping[str, Any], routes: Any) -> Callable[[], Any] | None:
    names = [name for name, value in namespace.items() if value is routes]
    if len(names) != 1:
        return None
    module, name = namespace.get("__name__"), names[0]

    def current() -> Any:
        # The module object changes when the reloader swaps in a fresh one: look it up.
        found = sys.modules.get(module) if isinstance(module, str) else None
        return (found.__dict__ if found is not None else namespace).get(name, routes)

    return current


def _router(table: Any, source: Callable[[], Any] | None) -> Interceptor:
    lock = threading.Lock()
    state: dict[str, Any] = {"table": table, "router": expand_routes(table)}

    def current_router() -> Router:
        if source is None:
            return state["router"]
        table = source()
        if table is state["table"]:
            return state["router"]
        with lock:
            if table is not state["table"]:
                state["table"] = table
                try:
                    state["router"] = expand_routes(table)
                except RouteError as err:
                    log.error("new routes rejected, still serving the previous ones: %s", err)
        return state["router"]

    def enter(context: Context) -> Context:
        request = context["request"]
        match = current_router().match(request["request_method"], request["uri"])
        if match is None:
            return context
        context = {
            **context,
            "request": {**request, "path_params": match.path_params},
            "route": match.route,
        }
        return enqueue(context, *match.route.interceptors)

    return Interceptor(name="replkit.routes/router", enter=enter)


_serving: dict[tuple[str, int], Connector] = {}
_serving_lock = threading.Lock()


def start(connector: Connector) -> Connector:
    """Start ``connector`` and return it; the REPL-friendly ``conn/start!``.

    If a connector started here already serves the same host and port, nothing is started:
    a one-line message says so and that running connector is returned.
    """
    with _serving_lock:
        running = _serving.get((connector.host, connector.port))
        if running is not None and running.running:
            print(f"replkit: already serving on {running.url}; call restart() to reload it")
            return running
        connector.start()
        _remember(connector)
        if connector.port == 0 and os.environ.get("REPLKIT_PORT") == "0":
            # "Any free port" is chosen once: restarts rebuild the map from the environment
            # and must land on the same socket.
            os.environ["REPLKIT_PORT"] = str(connector.bound_port)
        return connector


def stop(connector: Connector | None) -> None:
    """Stop ``connector``, closing its open streams; a one-line message if not running."""
    if connector is None or not connector.running:
        print("replkit: not running; nothing to stop")
        return
    with _serving_lock:
        connector.stop()
        _forget(connector)


def restart(old: Connector | None, new: Connector, *, drop_streams: bool = False) -> Connector:
    """Replace ``old`` by ``new`` and return ``new``, running.

    On the same host and port the listening socket stays open throughout: requests arriving
    mid-restart are served by ``new``, never refused, and streams ``old`` opened run to
    their end unless ``drop_streams`` is true. Otherwise this is ``stop`` then ``start``.
    """
    if old is None or not old.running:
        return start(new)
    if (new.host, new.port) not in {(old.host, old.port), (old.host, old.bound_port)}:
        stop(old)
        return start(new)
    with _serving_lock:
        new.take_over(old, drop_streams=drop_streams)
        _forget(old)
        _remember(new)
    return new


def serving() -> list[Connector]:
    """The connectors started by :func:`start` or :func:`restart` still serving, oldest first."""
    with _serving_lock:
        found = {id(c): c for c in _serving.values() if c.running}
    return list(found.values())


def _remember(connector: Connector) -> None:
    _serving[(connector.host, connector.port)] = connector
    _serving[(connector.host, connector.bound_port)] = connector


def _forget(connector: Connector) -> None:
    for address in [a for a, c in _serving.items() if c is connector]:
        del _serving[address]
