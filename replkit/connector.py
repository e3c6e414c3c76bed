"""The connector map and the functions threaded through it, after ``io.pedestal.connector``.

A connector map is plain data: host, port, the interceptors every request passes through,
the initial context. ``with_*`` functions each return a new map with something added, and
an adapter such as :func:`replkit.aiohttp.create_connector` turns the final map into a
connector that :func:`start` and :func:`stop` control::

    connector_map = default_connector_map(8890)
    connector_map = with_default_interceptors(connector_map)
    connector_map = with_routes(connector_map, routes)
    connector = start(aiohttp.create_connector(connector_map, None))

The keys a map may have, besides ``host``, ``port``, ``interceptors`` and
``initial_context`` (the context every request starts from):

- ``allowed_origins``: CORS, read by :func:`with_default_interceptors` (see
  :func:`replkit.http.allow_origin`): ``"*"``, a list of origins, a predicate, or a map
  with ``creds``, ``max_age`` and ``allowed_headers``.
- ``secure_headers``: overrides of :data:`replkit.http.SECURE_HEADERS` (``None`` drops a
  header), e.g. ``{"Content-Security-Policy": http.PEDESTAL_CSP}``.
  :func:`with_default_interceptors` sets it (``{}`` when absent); with it the connector adds
  the secure headers to every response it writes, errors and refusals included.
- ``max_body_size``: the largest request body read, in bytes (default 1 MiB; over it: 413).
- ``access_log``: ``True`` (default: one line per response on ``replkit.access`` at INFO,
  ``127.0.0.1 GET /path 200 1.2 ms``), ``False``, or a :class:`logging.Logger`.
- ``max_connections`` (default 10,000), ``header_timeout`` (10 s) and ``keepalive_timeout``
  (15 s): the server's protections against clients that hold connections (see
  :class:`replkit.limits.Limits`); read when the server starts listening.

:func:`start`, :func:`stop` and :func:`restart` are made for a REPL: starting what already
runs, or stopping what is stopped, prints one line instead of failing, and ``restart``
hands the listening socket to the new connector so no request is ever refused.

Process-wide state: the address overrides a :class:`replkit.session.Session` sets for the
app it serves (``replkit serve --port``), see :func:`override_address`. Which servers are
open is :mod:`replkit.server`'s.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from replkit import http
from replkit.errors import ReplkitError
from replkit.routes import router
from replkit.server import Connector, find_server, open_servers

__all__ = [
    "Connector",
    "default_connector_map",
    "override_address",
    "placed",
    "restart",
    "serving",
    "start",
    "stop",
    "with_default_interceptors",
    "with_interceptors",
    "with_routes",
]

ConnectorMap = dict[str, Any]
Address = tuple[str, int]


def env_address(host: str, port: int) -> Address:
    """``(host, port)`` with the user's ``REPLKIT_HOST`` and ``REPLKIT_PORT`` applied."""
    env_port = os.environ.get("REPLKIT_PORT")
    if env_port:
        try:
            port = int(env_port)
        except ValueError:
            raise ReplkitError(f"REPLKIT_PORT={env_port!r} is not a port number") from None
    return os.environ.get("REPLKIT_HOST") or host, port


def default_connector_map(port: int, host: str = "localhost") -> ConnectorMap:
    """A connector map for ``host:port`` with no interceptors yet.

    The environment variables ``REPLKIT_PORT`` and ``REPLKIT_HOST``, when set, override the
    arguments: a way to move an app without editing it.
    """
    host, port = env_address(host, port)
    return {"host": host, "port": port, "interceptors": [], "initial_context": {}}


def with_interceptors(connector_map: ConnectorMap, *interceptors: Any) -> ConnectorMap:
    """Return the map with ``interceptors`` appended to its interceptor list."""
    return {**connector_map, "interceptors": [*connector_map["interceptors"], *interceptors]}


def with_default_interceptors(connector_map: ConnectorMap) -> ConnectorMap:
    """Add request logging, CORS (when ``allowed_origins`` is set), not-found, content type,
    query params, body params and secure headers, in Pedestal's order (see
    :mod:`replkit.http`); ``secure_headers`` is set to ``{}`` when the map has none.

    Raises :class:`ReplkitError` for a malformed ``allowed_origins`` or ``secure_headers``.
    """
    origins = connector_map.get("allowed_origins")
    overrides = connector_map.get("secure_headers") or {}
    return with_interceptors(
        {**connector_map, "secure_headers": overrides},
        http.log_request,
        *([http.allow_origin(origins)] if origins is not None else []),
        http.not_found,
        http.content_type,
        http.query_params,
        http.body_params,
        http.make_secure_headers(overrides) if overrides else http.secure_headers,
    )


def with_routes(connector_map: ConnectorMap, routes: Any) -> ConnectorMap:
    """Add a router for ``routes``: a route table, or a function returning one.

    The table is checked now: a bad one raises :class:`~replkit.routes.RouteError`. A
    function is called for every request and its table re-expanded whenever it returns a
    new one, as Pedestal's dev mode does with ``#(deref #'routes)``: pass
    ``lambda: routes`` to have a table redefined at the prompt served without a restart.
    (Saving a file needs neither: the reload builds a new connector.) See
    :func:`replkit.routes.router` for what the router does with each request.
    """
    return with_interceptors(connector_map, router(routes))


# declared address (the connector map's) -> where a session serves it instead
_overrides: dict[Address, Address] = {}
_lock = threading.RLock()


def override_address(declared: Address, host: str | None, port: int | None) -> Address:
    """Serve connectors whose map says ``declared`` at ``host``/``port`` instead (either may
    be ``None``: keep the map's); returns the address now used.

    This is how ``replkit serve app --port 0`` reaches a ``create_connector()`` that asks
    for port 8890, including through the module's own ``start()`` and ``restart()``. Port
    0 means any free port, chosen once: a later start lands on the same port.
    """
    with _lock:
        actual = (host or declared[0], declared[1] if port is None else port)
        if actual == declared:
            _overrides.pop(declared, None)
        else:
            _overrides[declared] = actual
        return actual


def placed(declared: Address) -> Address:
    """Where a connector whose map says ``declared`` is served (see :func:`override_address`)."""
    with _lock:
        return _overrides.get(declared, declared)


def _place(connector: Connector) -> Address:
    """Move ``connector`` where an override says; returns the address its map declared."""
    declared = connector.declared
    connector.host, connector.port = _overrides.get(declared, declared)
    return declared


def start(connector: Connector) -> Connector:
    """Start ``connector`` and return it; the REPL-friendly ``conn/start!``.

    If a server already listens at its address in this process, nothing is started: a
    one-line message says so and the connector answering there is returned.
    """
    with _lock:
        return _start(connector, _place(connector))


def _start(connector: Connector, declared: Address) -> Connector:
    server = find_server(connector.host, connector.port)
    if server is not None:
        print(f"replkit: already serving on {server.target.url}; call restart() to reload it")
        return server.target
    connector.start()
    if _overrides.get(declared) == (connector.host, 0):
        _overrides[declared] = (connector.host, connector.bound_port)
    return connector


def stop(connector: Connector | None) -> None:
    """Stop the server ``connector`` serves, closing its open streams; a one-line message if
    it is not running."""
    if connector is None or not connector.running:
        print("replkit: not running; nothing to stop")
        return
    connector.stop()


def restart(old: Connector | None, new: Connector, *, drop_streams: bool = False) -> Connector:
    """Replace ``old`` by ``new`` and return ``new``, running.

    When ``new`` asks for the address ``old`` asked for, or for the one ``old`` serves on,
    the listening socket stays open throughout: requests arriving mid-restart are served by
    ``new``, never refused, and streams ``old`` opened run to their end unless
    ``drop_streams`` is true. Otherwise this is ``stop`` then ``start``.
    """
    with _lock:
        server = old.server if old is not None and old.running else None
        if server is not None and old is not None and new.declared == old.declared:
            # The same app built again: it belongs where the old one serves, whatever
            # override moved it there.
            new.host, new.port = server.host, server.requested_port
            return new.take_over(server.target, drop_streams=drop_streams)
        declared = _place(new)
        if server is None:
            return _start(new, declared)
        if new.host == server.host and new.port in (server.port, server.requested_port):
            return new.take_over(server.target, drop_streams=drop_streams)
        stop(old)
        return _start(new, declared)


def serving() -> list[Connector]:
    """The connectors answering on the servers open in this process, oldest server first."""
    return [server.target for server in open_servers()]
