"""The interceptors :func:`replkit.connector.with_default_interceptors` installs.

Each is a small :class:`~replkit.interceptor.Interceptor` over the context, as in Pedestal's
``io.pedestal.http`` namespaces: request logging, CORS, not-found, content type, query and
body params, secure headers.
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import parse_qs

from replkit.interceptor import Context, Interceptor

__all__ = [
    "allow_origin",
    "body_params",
    "content_type",
    "get_header",
    "log_request",
    "not_found",
    "plain",
    "query_params",
    "secure_headers",
]

request_log = logging.getLogger("replkit.request")

SECURE_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubdomains",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "X-XSS-Protection": "1; mode=block",
    "X-Download-Options": "noopen",
    "X-Permitted-Cross-Domain-Policies": "none",
    "Content-Security-Policy": "object-src 'none'; script-src 'unsafe-inline' 'unsafe-eval' "
    "'strict-dynamic' https: http:;",
}


def plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A plain-text response map."""
    return {
        "status": status,
        "headers": {"Content-Type": "text/plain; charset=UTF-8", **(headers or {})},
        "body": text,
    }


def get_header(response: Mapping[str, Any], name: str) -> Any:
    """The value of header ``name`` in a response dict, matched case-insensitively."""
    wanted = name.lower()
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == wanted:
            return value
    return None


def _with_headers(context: Context, extra: Mapping[str, str]) -> Context:
    response = context["response"]
    headers = dict(response.get("headers") or {})
    present = {key.lower() for key in headers}
    headers.update((k, v) for k, v in extra.items() if k.lower() not in present)
    return {**context, "response": {**response, "headers": headers}}


def _log_enter(context: Context) -> Context:
    request = context["request"]
    query = f"?{request['query_string']}" if request.get("query_string") else ""
    request_log.info("%s %s%s", request["request_method"].upper(), request["uri"], query)
    return context


log_request = Interceptor(name="replkit.http/log-request", enter=_log_enter)
"""Logs ``GET /path`` for each request on the ``replkit.request`` logger."""


def _not_found_leave(context: Context) -> Context:
    if context.get("response") is not None:
        return context
    return {
        **context,
        "response": {
            "status": 404,
            "headers": {"Content-Type": "text/plain; charset=UTF-8"},
            "body": "Not Found",
        },
    }


not_found = Interceptor(name="replkit.http/not-found", leave=_not_found_leave)
"""Answers 404 when nothing else set a response."""


def _content_type_leave(context: Context) -> Context:
    response = context.get("response")
    if response is None or get_header(response, "Content-Type") is not None:
        return context
    body = response.get("body")
    guessed, _ = mimetypes.guess_type(context["request"]["uri"])
    if guessed is None and isinstance(body, str):
        guessed = "text/plain"
    if guessed is None:
        return context
    if guessed.startswith("text/") or guessed == "application/json":
        guessed += "; charset=UTF-8"
    return _with_headers(context, {"Content-Type": guessed})


content_type = Interceptor(name="replkit.http/content-type", leave=_content_type_leave)
"""Sets a missing Content-Type from the path's extension, else ``text/plain`` for text."""


def _query_params_enter(context: Context) -> Context:
    parsed = parse_qs(context["request"].get("query_string") or "", keep_blank_values=True)
    params = {key: values[0] if len(values) == 1 else values for key, values in parsed.items()}
    return {**context, "request": {**context["request"], "query_params": params}}


query_params = Interceptor(name="replkit.http/query-params", enter=_query_params_enter)
"""Parses the query string into ``request["query_params"]`` (repeated keys give lists)."""


def _body_params_enter(context: Context) -> Context:
    request = context["request"]
    body: bytes = request.get("body") or b""
    if not body:
        return context
    media_type = (request["headers"].get("content-type") or "").split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            params = {"json_params": json.loads(body)}
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return {**context, "response": _bad_request(f"malformed JSON body: {err}")}
    elif media_type == "application/x-www-form-urlencoded":
        try:
            text = body.decode()
        except UnicodeDecodeError as err:
            return {**context, "response": _bad_request(f"form body is not UTF-8: {err}")}
        parsed = parse_qs(text, keep_blank_values=True)
        params = {"form_params": {k: v[0] if len(v) == 1 else v for k, v in parsed.items()}}
    else:
        return context
    return {**context, "request": {**request, **params}}


def _bad_request(message: str) -> dict[str, Any]:
    return {
        "status": 400,
        "headers": {"Content-Type": "text/plain; charset=UTF-8"},
        "body": message,
    }


body_params = Interceptor(name="replkit.http/body-params", enter=_body_params_enter)
"""Parses JSON bodies into ``json_params`` and form bodies into ``form_params``."""


def _secure_headers_leave(context: Context) -> Context:
    if context.get("response") is None:
        return context
    return _with_headers(context, SECURE_HEADERS)


secure_headers = Interceptor(name="replkit.http/secure-headers", leave=_secure_headers_leave)
"""Adds Pedestal's default security headers to every response, unless already set."""


def allow_origin(allowed: Collection[str] | Callable[[str], bool]) -> Interceptor:
    """CORS: allow requests from ``allowed`` origins (a collection, or a predicate).

    A preflight ``OPTIONS`` from an allowed origin is answered at once; a request from an
    origin that is not allowed gets 403; requests without an ``Origin`` pass untouched.
    """
    permits = allowed if callable(allowed) else frozenset(allowed).__contains__

    def enter(context: Context) -> Context:
        request = context["request"]
        origin = request["headers"].get("origin")
        if origin is None:
            return context
        if not permits(origin):
            return {**context, "response": {"status": 403, "headers": {}, "body": ""}}
        if request["request_method"] == "options":
            asked = request["headers"].get("access-control-request-headers")
            headers = {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS",
                **({"Access-Control-Allow-Headers": asked} if asked else {}),
            }
            return {**context, "response": {"status": 200, "headers": headers, "body": ""}}
        return context

    def leave(context: Context) -> Context:
        origin = context["request"]["headers"].get("origin")
        if origin is None or context.get("response") is None or not permits(origin):
            return context
        return _with_headers(
            context,
            {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"},
        )

    return Interceptor(name="replkit.http/allow-origin", enter=enter, leave=leave)
