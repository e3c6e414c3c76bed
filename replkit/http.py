"""The interceptors :func:`replkit.connector.with_default_interceptors` installs, and the
HTTP pieces they share, after Pedestal's ``io.pedestal.http`` namespaces.

The defaults, in Pedestal's order: :data:`log_request`, :func:`allow_origin` (when the map
has ``allowed_origins``), :data:`not_found`, :data:`content_type`, :data:`query_params`,
:data:`body_params`, :data:`secure_headers`. ``help()`` on each says which request and
context keys it reads and writes. Also here: :func:`static_files`, a handler serving a
directory, and :class:`RequestError`, how a client's mistake becomes a 4xx.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import mimetypes
import os
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from replkit.errors import ReplkitError
from replkit.interceptor import Context, Interceptor, enqueue

__all__ = [
    "DEFAULT_CSP",
    "MAX_FORM_FIELDS",
    "PEDESTAL_CSP",
    "SECURE_HEADERS",
    "RequestError",
    "allow_origin",
    "body_params",
    "content_type",
    "get_header",
    "log_request",
    "make_secure_headers",
    "not_found",
    "plain",
    "query_params",
    "secure_header_values",
    "secure_headers",
    "static_files",
]

request_log = logging.getLogger("replkit.request")

DEFAULT_CSP = "object-src 'none'; script-src 'self' 'nonce-{nonce}'; base-uri 'self'"
"""The default Content-Security-Policy: a page runs the script files of its own origin and
the inline scripts that carry this request's nonce (``request["csp_nonce"]``), nothing else.
``{nonce}`` is replaced by the nonce of each request."""

PEDESTAL_CSP = (
    "object-src 'none'; script-src 'unsafe-inline' 'unsafe-eval' 'strict-dynamic' https: http:;"
)
"""Pedestal's default policy, under which a browser runs no script of the page at all (no
nonce or hash is allowed, and ``'strict-dynamic'`` disables ``'self'``). Opt in with
``{"secure_headers": {"Content-Security-Policy": PEDESTAL_CSP}}`` in the connector map."""

SECURE_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Strict-Transport-Security": "max-age=31536000; includeSubdomains",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "X-XSS-Protection": "1; mode=block",
        "X-Download-Options": "noopen",
        "X-Permitted-Cross-Domain-Policies": "none",
        "Content-Security-Policy": DEFAULT_CSP,
    }
)
"""Pedestal's secure headers, with :data:`DEFAULT_CSP` as the policy."""

MAX_FORM_FIELDS = 1000
"""A form body with more fields than this is answered 400 (Django's and PHP's default)."""

_OFF_LOOP_BYTES = 64 * 1024  # bodies larger than this are parsed on a worker thread
_TEXT = "text/plain; charset=UTF-8"


class RequestError(Exception):
    """A request that cannot be served as sent: a malformed body, one over the size limit, a
    bad ``Host``. The connector answers it with ``status`` and the one-line ``reason`` as a
    plain-text body, and logs no traceback; raise it from a handler for the same effect."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def response(self) -> dict[str, Any]:
        """The response map answering it."""
        return plain(self.status, self.reason)


def plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A plain-text response map."""
    return {"status": status, "headers": {"Content-Type": _TEXT, **(headers or {})}, "body": text}


def get_header(response: Mapping[str, Any], name: str) -> Any:
    """The value of header ``name`` in a response dict, matched case-insensitively."""
    wanted = name.lower()
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == wanted:
            return value
    return None


def _with_headers(context: Context, extra: Iterable[tuple[str, str, Any]]) -> Context:
    """The context with ``extra`` headers, ``(name, name in lower case, value)``, added to its
    response where not already set (in any case)."""
    response = context["response"]
    given = response.get("headers")
    if given:
        headers = dict(given)
        present = {key.lower() for key in given}
        for name, lower, value in extra:
            if lower not in present:
                headers[name] = value
    else:
        headers = {name: value for name, _, value in extra}
    return {**context, "response": {**response, "headers": headers}}


def _single_or_list(parsed: Mapping[str, list[str]]) -> dict[str, str | list[str]]:
    return {key: values[0] if len(values) == 1 else values for key, values in parsed.items()}


# --- log-request --------------------------------------------------------------------------


def _log_enter(context: Context) -> Context:
    if request_log.isEnabledFor(logging.DEBUG):
        request = context["request"]
        query = f"?{request['query_string']}" if request.get("query_string") else ""
        request_log.debug("%s %s%s", request["request_method"].upper(), request["uri"], query)
    return context


log_request = Interceptor(
    name="replkit.http/log-request",
    enter=_log_enter,
    doc="""Logs ``GET /path?query`` as each request arrives, at DEBUG on ``replkit.request``.

    The line with the status and the duration is the access log's (``replkit.access``, INFO),
    written once the response is complete. Reads ``request_method``, ``uri``,
    ``query_string``.
    """,
)


# --- not-found ----------------------------------------------------------------------------


def _not_found_leave(context: Context) -> Context:
    if context.get("response") is not None:
        return context
    return {**context, "response": plain(404, "Not Found")}


not_found = Interceptor(
    name="replkit.http/not-found",
    leave=_not_found_leave,
    doc="""Answers 404 ``Not Found`` when nothing else set ``context["response"]``.""",
)


# --- content-type -------------------------------------------------------------------------


def _content_type_leave(context: Context) -> Context:
    response = context.get("response")
    if response is None:
        return context
    body = response.get("body")
    if body is None:
        return context
    headers = response.get("headers")
    if headers and "content-type" in map(str.lower, headers):
        return context
    if type(body) is not str and isinstance(body, dict | list):
        guessed: str | None = "application/json"
    elif not isinstance(body, str | bytes) and isinstance(body, os.PathLike):
        # (os.PathLike is an ABC, slow to test: the common bodies skip it.) A file's type is
        # guessed from its own name when it is sent.
        return context
    else:
        uri = context["request"]["uri"]
        # Only a name with an extension can have a type to guess.
        guessed = mimetypes.guess_type(uri)[0] if "." in uri.rpartition("/")[2] else None
        if guessed is None and isinstance(body, str):
            guessed = "text/plain"
    if guessed is None:
        return context
    if guessed.startswith("text/"):
        guessed += "; charset=UTF-8"
    # Known to be missing: added without _with_headers' search.
    return {
        **context,
        "response": {**response, "headers": {**(headers or {}), "Content-Type": guessed}},
    }


content_type = Interceptor(
    name="replkit.http/content-type",
    leave=_content_type_leave,
    doc="""Sets a missing ``Content-Type``: ``application/json`` for a dict or list body,
    else from the path's extension (``/page.html``: ``text/html; charset=UTF-8``), else
    ``text/plain; charset=UTF-8`` for a str body. Reads ``request["uri"]`` and the response.
    """,
)


# --- query-params -------------------------------------------------------------------------


def _query_params_enter(context: Context) -> Context:
    request = context["request"]
    query = request.get("query_string")
    params = _single_or_list(parse_qs(query, keep_blank_values=True)) if query else {}
    return {**context, "request": {**request, "query_params": params}}


query_params = Interceptor(
    name="replkit.http/query-params",
    enter=_query_params_enter,
    doc="""Parses the query string into ``request["query_params"]``: ``?a=1&a=2&b=`` gives
    ``{"a": ["1", "2"], "b": ""}`` (a repeated key gives a list, a lone one a str).
    """,
)


# --- body-params --------------------------------------------------------------------------


def _body_kind(request: Mapping[str, Any]) -> str | None:
    content_type = request["headers"].get("content-type")
    if not content_type:
        return None
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return "json"
    if media_type == "application/x-www-form-urlencoded":
        return "form"
    return None


def _parse_json(data: bytes) -> Any:
    """A JSON body as Python data; :class:`RequestError` 400 when it is not JSON."""
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise RequestError(400, "malformed JSON body: not UTF-8") from None
    except json.JSONDecodeError as err:
        raise RequestError(400, f"malformed JSON body: {err}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON body: nested too deeply") from None


def _parse_form(data: bytes) -> dict[str, str | list[str]]:
    """A form body (``application/x-www-form-urlencoded``) as a dict, as for query params;
    :class:`RequestError` 400 when it is not UTF-8 or has over :data:`MAX_FORM_FIELDS`."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise RequestError(400, "malformed form body: not UTF-8") from None
    try:
        parsed = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        raise RequestError(400, f"form body has more than {MAX_FORM_FIELDS} fields") from None
    return _single_or_list(parsed)


async def _read_body(request: Mapping[str, Any]) -> bytes:
    """The request's whole body: reads ``request["body"]`` (see :mod:`replkit.aiohttp`), or
    takes it as is when a test built the request with bytes."""
    body = request.get("body")
    if body is None or isinstance(body, bytes | bytearray):
        return bytes(body or b"")
    data: bytes = await body.read()
    return data


async def _parse_body_enter(context: Context) -> Context:
    if "route" in context and context["route"] is None:
        return context  # routing found nothing: the body is never read
    request = context["request"]
    kind = _body_kind(request)
    parse = _parse_json if kind == "json" else _parse_form
    try:
        data = await _read_body(request)
        if not data:
            return context
        value = await asyncio.to_thread(parse, data) if len(data) > _OFF_LOOP_BYTES else parse(data)
    except RequestError as err:
        return {**context, "response": err.response()}
    return {**context, "request": {**request, f"{kind}_params": value}}


_parse_body = Interceptor(
    name="replkit.http/parse-body",
    enter=_parse_body_enter,
    doc="""The second half of :data:`body_params`: reads and parses the body.""",
)


def _body_params_enter(context: Context) -> Context | Awaitable[Context]:
    # A plain function: a request without a body to parse (most) costs the chain no coroutine.
    if _body_kind(context["request"]) is None:
        return context
    if "route" in context:  # already routed: body_params is one of the route's interceptors
        return _parse_body_enter(context)
    # Enqueued now, this runs after the router, which enqueues the route's interceptors
    # behind it: so the body is read only for a request some route takes.
    return enqueue(context, _parse_body)


body_params = Interceptor(
    name="replkit.http/body-params",
    enter=_body_params_enter,
    doc="""Parses a JSON body (``application/json`` or ``*+json``) into
    ``request["json_params"]`` and a form body (``application/x-www-form-urlencoded``) into
    ``request["form_params"]``; other bodies are left to the handler
    (``await request["body"].read()``).

    The body is read just before the route's interceptors run: a request that matches no
    route, or that an earlier interceptor answered, is never read. Parsing is bounded
    (at most ``MAX_FORM_FIELDS`` form fields; JSON no deeper than Python's recursion limit)
    and runs on a worker thread for bodies over 64 KiB. A malformed body is answered 400 with
    a one-line reason (``malformed JSON body: Expecting value: line 1 column 1 (char 0)``), a
    body over the connector map's ``max_body_size`` 413. An empty body adds no key.
    """,
)


# --- secure-headers -----------------------------------------------------------------------


def secure_header_values(
    overrides: Mapping[str, str | None] | None = None, nonce: str | None = None
) -> dict[str, str]:
    """:data:`SECURE_HEADERS` with ``overrides`` applied (a value of ``None`` drops that
    header) and ``{nonce}`` replaced by ``nonce`` (a fresh one when ``None``).

    Raises :class:`ReplkitError` naming a header whose name or value is not a one-line str.
    """
    return _filler(_templates(overrides))(nonce or new_nonce())


def _templates(overrides: Mapping[str, str | None] | None) -> dict[str, str]:
    replaced = {str(name).lower() for name in (overrides or {})}
    merged = {k: v for k, v in SECURE_HEADERS.items() if k.lower() not in replaced}
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if not isinstance(name, str) or not isinstance(value, str) or _has_line_break(value):
            raise ReplkitError(
                f"secure_headers: {name!r}: {value!r:.60} is not a one-line str (or None)"
            )
        merged[name] = value
    return merged


def _filler(templates: Mapping[str, str]) -> Callable[[str], dict[str, str]]:
    """A function of a nonce giving the headers of ``templates`` with it in place of
    ``{nonce}``, in their order. Worked out once, here: the values without a nonce are
    copied as they are, in runs, and the others split where the nonce goes."""
    runs: list[dict[str, str] | tuple[str, list[str]]] = []
    for name, value in templates.items():
        if "{nonce}" in value:
            runs.append((name, value.split("{nonce}")))
        elif runs and isinstance(runs[-1], dict):
            runs[-1][name] = value
        else:
            runs.append({name: value})

    def fill(nonce: str) -> dict[str, str]:
        filled: dict[str, str] = {}
        for run in runs:
            if type(run) is dict:
                filled.update(run)
            else:
                filled[run[0]] = nonce.join(run[1])
        return filled

    return fill


_NONCE_BYTES = 18  # 144 random bits: a multiple of 3 bytes, so 24 base64 characters
_NONCES_PER_READ = 256
_nonces: list[str] = []
os.register_at_fork(after_in_child=_nonces.clear)  # a child never repeats its parent's


def new_nonce() -> str:
    """A fresh, unpredictable nonce for a Content-Security-Policy: 24 URL-safe base64
    characters from the operating system's random source (as :mod:`secrets` uses).

    Read 256 at a time: one system call and one encoding a batch instead of one each per
    request; each nonce is handed out once."""
    try:
        return _nonces.pop()
    except IndexError:
        batch = base64.urlsafe_b64encode(os.urandom(_NONCE_BYTES * _NONCES_PER_READ)).decode()
        width = _NONCE_BYTES // 3 * 4
        _nonces.extend(batch[at : at + width] for at in range(width, len(batch), width))
        return batch[:width]


def _has_line_break(value: str) -> bool:
    return "\r" in value or "\n" in value


def make_secure_headers(overrides: Mapping[str, str | None] | None = None) -> Interceptor:
    """A secure-headers interceptor with ``overrides`` applied to :data:`SECURE_HEADERS`
    (see :func:`secure_header_values`); :data:`secure_headers` is the one without."""
    templates = _templates(overrides)  # a bad override fails here, when the map is built
    lowered = frozenset(name.lower() for name in templates)
    fill = _filler(templates)

    def enter(context: Context) -> Context:
        nonce = new_nonce()
        request = {**context["request"], "csp_nonce": nonce}
        return {**context, "request": request, "csp_nonce": nonce}

    def leave(context: Context) -> Context:
        response = context.get("response")
        if response is None:
            return context
        filled = fill(context.get("csp_nonce") or new_nonce())
        given = response.get("headers")
        if not given:
            headers = filled
        elif any(name.lower() in lowered for name in given):
            # The response set some of them itself: its own are kept.
            return _with_headers(context, [(k, k.lower(), v) for k, v in filled.items()])
        else:
            headers = {**given, **filled}
        return {**context, "response": {**response, "headers": headers}}

    return Interceptor(
        name="replkit.http/secure-headers",
        enter=enter,
        leave=leave,
        doc="""Gives each request a fresh CSP nonce, at ``request["csp_nonce"]`` and
        ``context["csp_nonce"]``, and adds the secure headers to the response (headers the
        response already has are kept): Pedestal's, with a Content-Security-Policy that
        lets a page run its own script files and the inline scripts carrying the nonce,
        ``<script nonce="...">``. The connector adds the same headers to the responses it
        writes outside the chain (errors, refusals).
        """,
    )


secure_headers = make_secure_headers()


# --- allow-origin (CORS) ------------------------------------------------------------------


@dataclass(frozen=True)
class _Cors:
    permits: Callable[[str], Any]
    any_origin: bool
    creds: bool
    max_age: int
    allowed_headers: tuple[str, ...]


_CORS_KEYS = {"allowed_origins", "creds", "max_age", "allowed_headers"}


def _cors(config: Any) -> _Cors:
    options = dict(config) if isinstance(config, Mapping) else {"allowed_origins": config}
    unknown = set(options) - _CORS_KEYS
    if unknown or "allowed_origins" not in options:
        raise ReplkitError(
            f"allowed_origins: unknown keys {sorted(unknown)}; a CORS map has "
            f"allowed_origins (required), creds, max_age, allowed_headers"
            if unknown
            else "allowed_origins: a CORS map needs an 'allowed_origins' key"
        )
    origins = options["allowed_origins"]
    any_origin = origins == "*"
    if any_origin:
        permits: Callable[[str], Any] = lambda origin: True  # noqa: E731
    elif callable(origins):
        permits = origins
    elif isinstance(origins, Collection) and not isinstance(origins, str):
        permits = frozenset(origins).__contains__
    else:
        raise ReplkitError(
            f"allowed_origins {origins!r:.60}: expected '*', a list of origins such as "
            "['https://app.example'], a predicate, or a map with allowed_origins"
        )
    creds = bool(options.get("creds", False))
    if any_origin and creds:
        raise ReplkitError(
            "allowed_origins '*' with creds: browsers refuse credentials for any origin; "
            "list the origins instead"
        )
    return _Cors(
        permits=permits,
        any_origin=any_origin,
        creds=creds,
        max_age=int(options.get("max_age", 600)),
        allowed_headers=tuple(options.get("allowed_headers") or ()),
    )


def _same_origin(request: Mapping[str, Any], origin: str) -> bool:
    host = request["headers"].get("host")
    if not host:
        return False
    try:
        return _origin_key(origin) == _origin_key(f"{request.get('scheme', 'http')}://{host}")
    except ValueError:  # a malformed Origin is simply not ours
        return False


def _origin_key(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _add_vary(context: Context, name: str) -> Context:
    response = context["response"]
    headers = {k: v for k, v in (response.get("headers") or {}).items() if k.lower() != "vary"}
    current = get_header(response, "Vary")
    values = [v.strip() for v in str(current).split(",")] if current else []
    if name.lower() not in {v.lower() for v in values}:
        values.append(name)
    headers["Vary"] = ", ".join(values)
    return {**context, "response": {**response, "headers": headers}}


def allow_origin(allowed: Any) -> Interceptor:
    """CORS, after Pedestal's ``allow-origin``: the connector map's ``allowed_origins``.

    ``allowed`` is ``"*"`` (any origin, never with credentials), a collection of origins
    (``["https://app.example"]``), a predicate ``origin -> bool``, or a map
    ``{"allowed_origins": ..., "creds": False, "max_age": 600, "allowed_headers": []}``.

    A request whose ``Origin`` is allowed gets ``Access-Control-Allow-Origin`` (and
    ``Access-Control-Allow-Credentials: true`` only with ``creds``); a preflight
    (``OPTIONS`` with ``Access-Control-Request-Method``) is answered by the router with the
    methods the path has, which this turns into ``Access-Control-Allow-Methods``, with the
    configured ``Access-Control-Allow-Headers`` and ``Access-Control-Max-Age``. An origin
    not allowed gets 403 ``origin not allowed``. A request without ``Origin`` or from the
    server's own origin passes untouched. Responses carry ``Vary: Origin`` unless any origin
    is allowed. Writes ``context["cors_headers"]`` for an allowed cross-origin request.
    """
    cors = _cors(allowed)

    def enter(context: Context) -> Context:
        request = context["request"]
        origin = request["headers"].get("origin")
        if origin is None or _same_origin(request, origin):
            return context
        if not cors.permits(origin):
            return {**context, "response": plain(403, "origin not allowed")}
        headers = {"Access-Control-Allow-Origin": "*" if cors.any_origin else origin}
        if cors.creds:
            headers["Access-Control-Allow-Credentials"] = "true"
        return {**context, "cors_headers": headers}

    def leave(context: Context) -> Context:
        response = context.get("response")
        if response is None:
            return context
        if not cors.any_origin:
            context = _add_vary(context, "Origin")
        headers = dict(context.get("cors_headers") or {})
        if not headers:
            return context
        request = context["request"]
        preflight = request["request_method"] == "options" and (
            "access-control-request-method" in request["headers"]
        )
        allow = get_header(response, "Allow")
        if preflight and allow and response.get("status", 500) < 300:
            headers["Access-Control-Allow-Methods"] = allow
            if cors.allowed_headers:
                headers["Access-Control-Allow-Headers"] = ", ".join(cors.allowed_headers)
            headers["Access-Control-Max-Age"] = str(cors.max_age)
        return _with_headers(context, [(k, k.lower(), v) for k, v in headers.items()])

    return Interceptor(
        name="replkit.http/allow-origin", enter=enter, leave=leave, doc=allow_origin.__doc__
    )


# --- static files -------------------------------------------------------------------------


def static_files(directory: str | os.PathLike[str]) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    """A handler serving the files under ``directory``, for a route such as
    ``("/static/*path", "get", http.static_files("public"))``.

    The file is named by the route's last path param. The response body is the file's
    :class:`~pathlib.Path`, which the connector sends with aiohttp's ``FileResponse``
    (ranges, ``ETag``, ``If-None-Match``/``If-Modified-Since``, sendfile; ``HEAD``). Every
    way out of the directory answers 404: ``..`` (raw or percent-encoded, the router never
    lets one through a wildcard), absolute paths, symlinks leading outside, NUL bytes; so do
    hidden names (``.env``, ``.git/``), directories and missing files.
    """
    root = Path(directory).resolve()
    if not root.is_dir():
        raise ReplkitError(f"static_files: {directory} is not a directory")

    async def serve_file(request: dict[str, Any]) -> dict[str, Any]:
        params = request.get("path_params") or {}
        if not params:
            raise ReplkitError(
                "static_files needs a route with a wildcard path param, as in '/static/*path'"
            )
        found = await asyncio.to_thread(_file_inside, root, str(list(params.values())[-1]))
        if found is None:
            return plain(404, "Not Found")
        return {"status": 200, "body": found}

    return serve_file


def _file_inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` with every symlink resolved, if that is a regular file inside
    ``root`` reached without a hidden name or a ``..``; else ``None``."""
    if "\0" in relative or relative.startswith("/"):
        return None
    if any(part.startswith(".") for part in relative.split("/")):
        return None
    real = os.path.realpath(root / relative)
    if not real.startswith(f"{root}{os.sep}") or not os.path.isfile(real):
        return None
    return Path(real)
