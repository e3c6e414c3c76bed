"""Table routes, as the guide writes them, after Pedestal's ``io.pedestal.http.route``.

A table is a set or a list of rows ``(path, verb, handler_or_interceptors, *options)``; a
set, as in the guide, when every row is hashable, a list when a row holds a list or a dict::

    routes = [
        ("/", "get", home_page),
        ("/counter", "get", counter_interceptor),
        ("/users/:id", "get", [auth, show_user], "user-show", {"constraints": {"id": r"\\d+"}}),
        ("/files/*path", "get", serve_file),
    ]

Options are a route name (a str) and/or a dict with ``route_name`` and ``constraints``.
``:param`` matches one segment, ``*wildcard`` the rest of the path; both are percent-decoded,
and a wildcard never matches a path with a ``..`` segment, raw or encoded. A literal segment
beats a parameter, which beats a wildcard. Everything is checked by :func:`expand_routes`: a
bad row or two rows that would match the same requests raise :class:`RouteError` naming them.

:func:`router` makes the interceptor that routes each request (``with_routes`` appends it).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote, urlencode

from replkit.errors import ReplkitError
from replkit.http import plain
from replkit.interceptor import QUEUE, Context, Interceptor, interceptor

__all__ = ["Match", "Route", "RouteError", "Router", "expand_routes", "router"]

log = logging.getLogger("replkit.routes")

VERBS = ("get", "post", "put", "delete", "patch", "head", "options", "any")


class RouteError(ReplkitError, ValueError):
    """A route table that cannot be served; the message names the offending row."""


@dataclass(frozen=True)
class Route:
    """One expanded row of a route table."""

    path: str
    method: str
    interceptors: tuple[Interceptor, ...]
    name: str
    constraints: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    segments: tuple[str, ...] = ()
    named: bool = False

    @property
    def shape(self) -> tuple[str, ...]:
        """The path with parameter names erased: what two conflicting routes share."""
        return tuple(s[0] if s[:1] in (":", "*") else s for s in self.segments)

    def _priority(self) -> tuple[int, ...]:
        return tuple(2 if s[:1] == "*" else 1 if s[:1] == ":" else 0 for s in self.segments)

    def match_segments(self, parts: list[str]) -> dict[str, str] | None:
        """The path params if ``parts`` (a split, still-encoded path) fit this route."""
        params: dict[str, str] = {}
        for i, segment in enumerate(self.segments):
            if segment[:1] == "*":
                rest = unquote("/".join(parts[i:]))
                if ".." in rest.split("/"):
                    return None
                params[segment[1:]] = rest
                break
            if i >= len(parts):
                return None
            value = unquote(parts[i])
            if segment[:1] == ":":
                params[segment[1:]] = value
            elif segment != value:
                return None
        else:
            if len(parts) != len(self.segments):
                return None
        for name, pattern in self.constraints.items():
            if pattern.fullmatch(params[name]) is None:
                return None
        return params


@dataclass(frozen=True)
class Match:
    """A route that matched a request, with its decoded path params."""

    route: Route
    path_params: dict[str, str]


class Router:
    """Matches requests against expanded routes; build it with :func:`expand_routes`."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(sorted(routes, key=Route._priority))
        self._by_name = {route.name: route for route in self.routes}
        # Routes without params, by method and segments: a path one of them matches has no
        # better match (its segments are all literal), so it is found without a scan.
        self._static = {
            (route.method, route.segments): route
            for route in reversed(self.routes)  # the first of equals wins, as in the scan
            if not any(s[:1] in (":", "*") for s in route.segments)
        }

    def match(self, method: str, path: str) -> Match | None:
        """The route for ``method`` and the raw (percent-encoded) ``path``, or ``None``.

        A HEAD request falls back to the GET route when the path has no HEAD route.
        """
        method = method.lower()
        parts = path.split("?", 1)[0][1:].split("/")
        found = self._match(method, parts)
        if found is None and method == "head":
            found = self._match("get", parts)
        return found

    def _match(self, method: str, parts: list[str]) -> Match | None:
        segments = tuple(parts) if "%" not in "".join(parts) else tuple(map(unquote, parts))
        static = self._static.get((method, segments)) or self._static.get(("any", segments))
        if static is not None:
            return Match(static, {})
        for route in self.routes:
            if route.method in (method, "any"):
                params = route.match_segments(parts)
                if params is not None:
                    return Match(route, params)
        return None

    def allowed_methods(self, path: str) -> list[str]:
        """The methods some route answers at ``path``, upper case, as an ``Allow`` header
        lists them: HEAD wherever GET is, OPTIONS wherever anything is; ``[]`` for none."""
        parts = path.split("?", 1)[0][1:].split("/")
        methods = {r.method for r in self.routes if r.match_segments(parts) is not None}
        if "any" in methods:
            methods.update(VERBS)
        if "get" in methods:
            methods.add("head")
        if methods:
            methods.add("options")
        return [verb.upper() for verb in VERBS if verb in methods and verb != "any"]

    def url_for(
        self,
        route_name: str,
        *,
        path_params: Mapping[str, Any] | None = None,
        query_params: Mapping[str, Any] | None = None,
    ) -> str:
        """The URL path of the route named ``route_name``, with params filled in."""
        route = self._by_name.get(route_name)
        if route is None:
            raise RouteError(f"no route named {route_name!r}; known: {sorted(self._by_name)}")
        given = dict(path_params or {})
        needed = [s[1:] for s in route.segments if s[:1] in (":", "*")]
        missing = [name for name in needed if name not in given]
        extra = sorted(set(given) - set(needed))
        if missing or extra:
            problem = f"missing {missing}" if missing else f"unknown {extra}"
            raise RouteError(f"url_for {route_name!r} ({route.path}): path params {problem}")
        parts = []
        for segment in route.segments:
            if segment[:1] == "*":
                parts.append(quote(str(given[segment[1:]]), safe="/"))
            elif segment[:1] == ":":
                parts.append(quote(str(given[segment[1:]]), safe=""))
            else:
                parts.append(quote(segment, safe=""))
        url = "/" + "/".join(parts)
        return f"{url}?{urlencode(query_params, doseq=True)}" if query_params else url


def router(routes: Any) -> Interceptor:
    """The interceptor that routes each request through ``routes``: a route table, or a
    function returning one (called for every request, its table re-expanded whenever it
    returns a new one, as Pedestal's dev mode does; a bad new table is logged and the
    previous one kept).

    On a match it adds ``path_params`` to the request, the :class:`Route` to the context
    under ``"route"``, and enqueues the route's interceptors. Otherwise ``"route"`` is
    ``None`` and, when the path has routes for other methods, it answers: ``OPTIONS`` with
    204 and ``Allow``, any other method with 405 and ``Allow``. Nothing at that path: it
    leaves the response to ``not_found``.
    """
    source, table = (routes, routes()) if callable(routes) else (None, routes)
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
        routing = current_router()
        found = routing.match(request["request_method"], request["uri"])
        if found is not None:
            # enqueue()'s work, for interceptors known to be made already; a new dict, ours.
            context = {**context, QUEUE: [*(context.get(QUEUE) or ()), *found.route.interceptors]}
            context["request"] = {**request, "path_params": found.path_params}
            context["route"] = found.route
            return context
        allowed = routing.allowed_methods(request["uri"])
        if not allowed:
            return {**context, "route": None}
        allow = {"Allow": ", ".join(allowed)}
        if request["request_method"] == "options":
            response: dict[str, Any] = {"status": 204, "headers": allow}
        else:
            response = plain(405, "Method Not Allowed", allow)
        return {**context, "route": None, "response": response}

    return Interceptor(name="replkit.routes/router", enter=enter, doc=router.__doc__)


def expand_routes(table: Any) -> Router:
    """Check a route table and build its :class:`Router`; raises :class:`RouteError`."""
    if isinstance(table, str | bytes | Mapping) or not isinstance(table, Iterable):
        raise RouteError(
            f"a route table is a set or list of (path, verb, handler) tuples, "
            f"not {type(table).__name__}"
        )
    routes = _default_names([_expand_row(row) for row in table])
    _check_unique(routes)
    return Router(routes)


def _default_names(routes: list[Route]) -> list[Route]:
    # Routes without a name are named after their handler; when one handler (or several
    # lambdas) serves more than one route, the verb and path tell those names apart.
    counts = Counter(route.name for route in routes)
    return [
        replace(route, name=f"{route.name} {route.method.upper()} {route.path}")
        if counts[route.name] > 1 and not route.named
        else route
        for route in routes
    ]


def _describe(row: Any) -> str:
    if isinstance(row, tuple) and len(row) >= 2:
        return f"route ({row[0]!r}, {row[1]!r}, ...)"
    return f"route {row!r:.60}"


def _expand_row(row: Any) -> Route:
    where = _describe(row)
    if not isinstance(row, tuple) or len(row) < 3:
        raise RouteError(f"{where}: a route is a tuple (path, verb, handler, *options)")
    path, verb, target, *options = row
    if not isinstance(path, str) or not path.startswith("/"):
        raise RouteError(f"{where}: the path must be a str starting with '/'")
    if not isinstance(verb, str) or verb.lower() not in VERBS:
        raise RouteError(f"{where}: unknown verb {verb!r}; expected one of {', '.join(VERBS)}")
    segments = tuple(path[1:].split("/"))
    _check_segments(where, segments)
    try:
        targets = target if isinstance(target, list | tuple) else [target]
        interceptors = tuple(interceptor(t) for t in targets)
    except (TypeError, ValueError) as err:
        raise RouteError(f"{where}: {err}") from None
    if not interceptors:
        raise RouteError(f"{where}: no handler or interceptor")
    name, constraints = _options(where, options)
    return Route(
        path=path,
        method=verb.lower(),
        interceptors=interceptors,
        name=name or interceptors[-1].name or path,
        named=name is not None,
        constraints=_constraints(where, constraints, segments),
        segments=segments,
    )


def _check_segments(where: str, segments: tuple[str, ...]) -> None:
    names: list[str] = []
    for i, segment in enumerate(segments):
        if segment[:1] not in (":", "*"):
            continue
        if not segment[1:]:
            raise RouteError(f"{where}: a {segment!r} segment needs a name, as in ':id'")
        if segment[0] == "*" and i != len(segments) - 1:
            raise RouteError(f"{where}: the wildcard {segment!r} must be the last segment")
        if segment[1:] in names:
            raise RouteError(f"{where}: the path param {segment[1:]!r} appears twice")
        names.append(segment[1:])


def _options(where: str, options: list[Any]) -> tuple[str | None, Mapping[str, Any]]:
    name: str | None = None
    constraints: Mapping[str, Any] = {}
    for option in options:
        if isinstance(option, str):
            name = option
        elif isinstance(option, Mapping):
            unknown = set(option) - {"route_name", "constraints"}
            if unknown:
                raise RouteError(
                    f"{where}: unknown options {sorted(unknown)}; allowed: route_name, constraints"
                )
            name = option.get("route_name", name)
            constraints = option.get("constraints") or {}
        else:
            raise RouteError(
                f"{where}: unexpected {option!r:.40}; after the handler come a route name "
                "(str) and/or {'route_name': ..., 'constraints': {...}}"
            )
    return name, constraints


def _constraints(
    where: str, constraints: Mapping[str, Any], segments: tuple[str, ...]
) -> dict[str, re.Pattern[str]]:
    params = {s[1:] for s in segments if s[:1] in (":", "*")}
    compiled = {}
    for param, pattern in constraints.items():
        if param not in params:
            raise RouteError(f"{where}: constraint for {param!r}, which is not a path param")
        try:
            compiled[param] = re.compile(pattern)
        except (re.error, TypeError) as err:
            raise RouteError(f"{where}: bad constraint for {param!r}: {err}") from None
    return compiled


def _check_unique(routes: list[Route]) -> None:
    names: dict[str, Route] = {}
    for route in routes:
        if route.name in names:
            other = names[route.name]
            raise RouteError(
                f"routes ({other.path!r}, {other.method!r}) and ({route.path!r}, "
                f"{route.method!r}) are both named {route.name!r}; give one a route name"
            )
        names[route.name] = route
    seen: dict[tuple[str, ...], list[Route]] = {}
    for route in routes:
        for other in seen.get(route.shape, []):
            overlap = "any" in (route.method, other.method) or route.method == other.method
            if overlap and not (route.constraints or other.constraints):
                raise RouteError(
                    f"routes ({other.path!r}, {other.method!r}) and ({route.path!r}, "
                    f"{route.method!r}) conflict: both match {route.path}"
                )
        seen.setdefault(route.shape, []).append(route)
