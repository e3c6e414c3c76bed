"""Serve a connector map on aiohttp: the analog of Pedestal's ``hk/create-connector``.

:class:`AiohttpConnector` answers each request by building the request map, running the
map's interceptor chain over it, and writing the response the chain leaves in the context.
It is a :class:`replkit.server.Connector`: ``start()``, ``stop()`` and ``take_over()`` come
from there, and so does serving from a background thread or from the caller's event loop.

The request map (``context["request"]``), as the connector builds it::

    {"request_method": "post",            # lower case
     "uri": "/users/caf%C3%A9",           # the path as sent, percent-encoded
     "query_string": "a=1&b=2",           # or None
     "headers": {"content-type": "application/json", ...},  # lower-case names; repeats
                                          # joined with ", "
     "body": <RequestBody>,               # read on demand: await request["body"].read()
     "scheme": "http", "server_name": "localhost", "server_port": 8890,
     "remote_addr": "127.0.0.1", "protocol": "HTTP/1.1"}

The response map: ``status`` (an int), ``headers`` (a dict; a list value is sent as one
header line per value, as two ``Set-Cookie`` need) and ``body``: a str or bytes, ``None``, a
dict or list (sent as JSON, ``Content-Type: application/json`` unless set), a
:class:`pathlib.Path` (the file, with ranges, ``ETag`` and conditional requests), or an async
iterable of str/bytes chunks, written as they come (an event stream). A ``HEAD`` request gets
the headers only: a streaming body is never iterated.

A request the connector cannot make a map of (a bad ``Host``) is answered 400; a
:class:`~replkit.http.RequestError` raised in the chain is answered with its status; any
other exception is a 500 with one log line (a traceback at most once a second per kind).
The connector map's ``secure_headers`` go on every response it writes, these included.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from replkit import http
from replkit.access_log import ACCESS_LOG
from replkit.connection import SEND_LATER_MAX, PlainRequest
from replkit.errors import ReplkitError
from replkit.interceptor import (
    QUEUE,
    Context,
    InterceptorError,
    execute,
    interceptor,
    terminate_when,
)
from replkit.limits import Limits, LogThrottle
from replkit.server import DEFAULT_SHUTDOWN_GRACE, Connector, ServerError

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "AiohttpConnector",
    "RequestBody",
    "ServerError",
    "application",
    "create_connector",
]

log = logging.getLogger("replkit.server")

_AnyRequest = web.BaseRequest | PlainRequest
"""aiohttp's request, or a plain one of replkit's server (see :mod:`replkit.connection`)."""

DEFAULT_MAX_BODY_SIZE = 1024**2
"""The largest request body read, in bytes (the connector map's ``max_body_size``)."""

_LIMIT_KEYS = ("max_connections", "header_timeout", "keepalive_timeout")


def create_connector(
    connector_map: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> AiohttpConnector:
    """Build an aiohttp connector from a connector map; nothing listens until ``start()``.

    ``options`` (may be ``None``, as in the guide) accepts ``shutdown_grace``: seconds open
    requests get to finish on stop, after every event stream has been closed.
    """
    return AiohttpConnector(connector_map, options)


def application(connector: AiohttpConnector) -> web.Application:
    """``connector``'s chain as an aiohttp ``web.Application``, for servers that run aiohttp
    apps themselves, such as gunicorn's ``aiohttp.GunicornWebWorker``::

        async def gunicorn_app():     # gunicorn app.chat:gunicorn_app
            return application(create_connector())  # --worker-class aiohttp.GunicornWebWorker

    Every request, whatever its method and path, runs the chain; stopping the application
    ends the streams, as stopping the connector does. There is no reload: that is
    ``replkit serve``'s.
    """
    app = web.Application(client_max_size=connector.max_body_size)
    app.router.add_route("*", "/{path:.*}", connector.handle)

    async def end_streams(_app: web.Application) -> None:
        await connector.shutdown()

    app.on_shutdown.append(end_streams)
    return app


class AiohttpConnector(Connector):
    """A connector map made servable: its interceptor chain, host and port, and the keys
    documented in :mod:`replkit.connector` (limits, access log, secure headers)."""

    answers_plain = True

    def __init__(
        self, connector_map: Mapping[str, Any], options: Mapping[str, Any] | None = None
    ) -> None:
        for key in ("host", "port", "interceptors"):
            if key not in connector_map:
                raise ReplkitError(
                    f"connector map has no {key!r}; build it with default_connector_map()"
                )
        unknown = set(options or {}) - {"shutdown_grace"}
        if unknown:
            raise ReplkitError(f"unknown aiohttp connector options {sorted(unknown)}")
        super().__init__(
            str(connector_map["host"]),
            int(connector_map["port"]),
            shutdown_grace=float((options or {}).get("shutdown_grace", DEFAULT_SHUTDOWN_GRACE)),
            limits=Limits(
                **{key: connector_map[key] for key in _LIMIT_KEYS if key in connector_map}
            ),
            access_log=_access_log(connector_map.get("access_log", True)),
        )
        self.connector_map = connector_map
        self.interceptors = tuple(interceptor(i) for i in connector_map["interceptors"])
        self.initial_context: Context = dict(connector_map.get("initial_context") or {})
        # Every request's context starts as this one: entering stops once a response is set
        # (the HTTP layer's rule, not the chain's).
        self._context = terminate_when(self.initial_context, _responded)
        self._queue = (*self._context.get(QUEUE, ()), *self.interceptors)
        self.max_body_size = _max_body_size(connector_map.get("max_body_size"))
        self.secure_headers: Mapping[str, str | None] | None = connector_map.get("secure_headers")
        self._secure_names: tuple[str, ...] = ()
        if self.secure_headers is not None:
            self._secure_names = tuple(http.secure_header_values(self.secure_headers))
        self._secure_lower = frozenset(name.lower() for name in self._secure_names)
        self._typed: dict[tuple[str, ...], bool | None] = {}
        self._errors = LogThrottle()
        # The bodies of the streams this connector is writing, by the task writing each.
        self._streams: dict[asyncio.Task[Any], Any] = {}

    def close_streams(self) -> None:
        """End this connector's event streams after what they have buffered, and cut those
        still open ``shutdown_grace`` seconds later (a client that does not read); cut other
        streaming bodies at once. Runs on the server's loop."""
        closed = []
        for task, body in list(self._streams.items()):
            close = getattr(body, "close", None)
            if callable(close):
                close()
                closed.append(task)
            else:
                task.cancel()
        if closed:  # one timer for them all, however many
            asyncio.get_running_loop().call_later(self.shutdown_grace, _cancel, closed)

    async def shutdown(self) -> None:
        """The server is stopping: end every stream this connector is writing, and return
        once they have ended (at most ``shutdown_grace`` seconds: :meth:`close_streams` cuts
        them then). Their connections are then closed, which leaves aiohttp's shutdown,
        one coroutine, future and timer per open connection, next to nothing to do."""
        self.close_streams()
        if self._streams:
            await asyncio.wait(list(self._streams), timeout=self.shutdown_grace)

    def make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
        loop: asyncio.AbstractEventLoop,
    ) -> web.BaseRequest:
        """aiohttp's request, limited to ``max_body_size``, that gets the secure headers."""
        return _Request(
            message,
            payload,
            protocol,
            writer,
            task,
            loop,
            client_max_size=self.max_body_size,
            connector=self,
        )

    async def handle(self, request: _AnyRequest) -> web.StreamResponse | _Written:
        """Run the interceptor chain for one request; write the response it produced: on
        the connection itself, for a plain request in the plain case (a complete one with
        the others of the loop's turn, see ``connection.Outbox``)."""
        # The chain's context is gone once the response is checked: an open stream holds
        # only what its own body keeps.
        status, headers, body = await self._respond(request)
        if body is None or isinstance(body, bytes | bytearray):
            length = f"Content-Length: {len(body) if body else 0}\r\n"
            head = self._head(request, status, headers, length, bool(body))
            if head is None:
                return web.Response(status=status, headers=headers, body=body)
            data = head + (body or b"")
            if not isinstance(request, PlainRequest):
                return _Written(status, request.keep_alive, data)
            if len(data) <= SEND_LATER_MAX:
                request.send(data)
            else:
                await request.writer.write_eof(data)
            return _Written(status, request.keep_alive)
        if isinstance(body, os.PathLike):
            return web.FileResponse(body, status=status, headers=headers)
        if request.method == "HEAD":
            # Headers only: the body is never iterated, its producer never starts.
            return web.StreamResponse(status=status, headers=headers)
        head = self._head(request, status, headers, "Transfer-Encoding: chunked\r\n", True)
        response: web.StreamResponse | _Written
        if head is None:
            response = out = web.StreamResponse(status=status, headers=headers)
            if isinstance(request, PlainRequest):
                request = request.aiohttp_request(self.make_request)
            await response.prepare(request)
        else:
            response, out = _Written(status, request.keep_alive), request.writer
            await out.write(head)
            out.enable_chunking()
        del headers, head  # an open stream holds neither
        began = time.monotonic()
        task = asyncio.current_task()
        assert task is not None
        self._streams[task] = body
        chunks = aiter(body)
        try:
            async for chunk in chunks:
                await out.write(chunk.encode() if isinstance(chunk, str) else chunk)
            await out.write_eof()
        except ConnectionError:
            pass  # the client left; the body's cleanup below notices
        except asyncio.CancelledError:
            # Cut: a client that left, a slow one a topic disconnects, a stop whose grace ran
            # out. Drop what the socket still holds rather than wait for it to be read.
            if request.transport is not None:
                request.transport.abort()
            # aiohttp logs no response whose handler was cancelled: the access log would
            # never show the streams clients leave, most of them.
            if self._server is not None:
                elapsed = time.monotonic() - began
                self._server.access_log.add(self.access_log, request, status, elapsed)
            raise
        except Exception:
            # Headers are out: say why, and cut the connection so that the client sees an
            # incomplete response rather than a complete, truncated one.
            log.exception(
                "%s %s: the response body raised; ending the stream",
                request.method,
                request.rel_url,
            )
            if request.transport is not None:
                request.transport.close()
        finally:
            self._streams.pop(task, None)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        return response

    def _head(
        self,
        request: _AnyRequest,
        status: int,
        headers: _Headers,
        framing: str,
        has_body: bool,
    ) -> bytes | None:
        """The response's head as aiohttp would write it, ``framing`` (its length, or
        chunked) included; ``None`` when it is not the plain case, which aiohttp's own
        response then writes: an HTTP/1.0 request, a ``HEAD``, a status without a body, a
        header aiohttp would work out set by the response itself, a secure header missing
        (the prepare hook adds those), or a request of an aiohttp application's (see
        :func:`application`), whose ``on_response_prepare`` handlers only aiohttp's
        response runs. A body without a ``Content-Type`` gets aiohttp's default one."""
        line = _STATUS_LINES.get(status)
        if (
            line is None
            or request.version != HttpVersion11
            or request.method == "HEAD"
            or not isinstance(request, _Request | PlainRequest)
        ):
            return None
        names = tuple([name for name, _ in headers])
        typed = self._typed.get(names, _UNSEEN)
        if typed is _UNSEEN:
            typed = self._typed_names(names)
        if typed is None:
            return None
        return "".join([
            line,
            "\r\n".join(map(": ".join, headers)),
            "\r\n" if headers else "",
            framing,
            "" if typed or not has_body else "Content-Type: application/octet-stream\r\n",
            f"Date: {rfc822_formatted_time()}\r\nServer: {SERVER_SOFTWARE}\r\n",
            "" if request.keep_alive else "Connection: close\r\n",
            "\r\n",
        ]).encode()  # fmt: skip

    def _typed_names(self, names: tuple[str, ...]) -> bool | None:
        """For a response with headers ``names``: ``None`` when aiohttp's response is to
        write it, else whether it names its ``Content-Type``. Remembered: a server's
        responses come in a handful of shapes."""
        lowered = {name.lower() for name in names}
        plain = lowered.isdisjoint(_WORKED_OUT) and self._secure_lower <= lowered
        if len(self._typed) >= 256:  # names that vary from response to response
            self._typed.clear()
        typed = self._typed[names] = "content-type" in lowered if plain else None
        return typed

    async def _respond(self, request: _AnyRequest) -> _Checked:
        """The chain's response to ``request``, checked; or the error response instead."""
        try:
            request_map = _request_map(request, self)
        except http.RequestError as err:
            return _checked_response(err.response())
        context = {**self._context, "request": request_map, QUEUE: list(self._queue)}
        try:
            context = await execute(context)
            return _checked_response(context.get("response") or http.plain(404, "Not Found"))
        except InterceptorError as err:
            if isinstance(err.exception, http.RequestError):
                return _checked_response(err.exception.response())
            kind = (err.interceptor, err.stage, type(err.exception))
            self._log_500(request, kind, err, err.exception)
        except _BadResponse as err:
            self._log_500(request, str(err), err, None)
        return _checked_response(http.plain(500, "Internal Server Error"))

    def _log_500(
        self, request: _AnyRequest, kind: Any, err: Exception, cause: BaseException | None
    ) -> None:
        self._errors.log(
            log,
            logging.ERROR,
            kind,
            "%s %s -> 500: %s",
            request.method,
            request.rel_url,
            err,
            exc_info=cause,
        )


class _Written:
    """A response replkit writes itself, in the plain case (see ``AiohttpConnector._head``):
    a complete body, head and body in one write, or a stream already written. It is what
    aiohttp's request handler uses of a response (``prepare``, ``write_eof``,
    ``keep_alive``, and ``status`` for the access log), without a ``web.Response`` and its
    header dict, which cost about 15% of a ``GET /`` and 3 KiB of every open stream. For a
    plain request the connector has written it already: replkit's connection reads only
    its ``status`` and ``keep_alive``."""

    __slots__ = ("_data", "_writer", "keep_alive", "status")

    def __init__(self, status: int, keep_alive: bool, data: bytes = b"") -> None:
        self.status = status
        self.keep_alive = keep_alive
        self._data = data
        self._writer: AbstractStreamWriter | None = None

    async def prepare(self, request: _AnyRequest) -> AbstractStreamWriter:
        """Take the request's writer; nothing more is sent before :meth:`write_eof`."""
        self._writer = request.writer
        return self._writer

    async def write_eof(self) -> None:
        """Send what is left (a stream already ended sends nothing)."""
        assert self._writer is not None, "prepare() first"
        await self._writer.write_eof(self._data)


# The statuses a body goes with, as aiohttp words their status lines.
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n"
    for status in HTTPStatus
    if status.value >= 200 and status.value not in (204, 304)
}
_UNSEEN: Any = object()
# Headers whose value aiohttp works out when it writes a response (the length, the
# framing, the connection's fate, the date, the server's name).
_WORKED_OUT = frozenset(["content-length", "transfer-encoding", "connection", "date", "server"])


def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()


def _responded(context: Context) -> bool:
    return context.get("response") is not None


def _access_log(value: Any) -> logging.Logger | None:
    if isinstance(value, logging.Logger):
        return value
    if isinstance(value, bool) or value is None:
        return ACCESS_LOG if value else None
    raise ReplkitError(f"access_log must be True, False or a logging.Logger, got {value!r:.60}")


def _max_body_size(value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_BODY_SIZE
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ReplkitError(f"max_body_size must be a positive number of bytes, got {value!r}")
    return value


class _Request(web.BaseRequest):
    """aiohttp's request, for a connector whose every response gets its secure headers."""

    ATTRS = web.BaseRequest.ATTRS | frozenset(["_connector"])

    def __init__(self, *args: Any, connector: AiohttpConnector, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connector = connector

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        # aiohttp runs this for every response made for this request, right before its
        # headers go out (web.Request sends on_response_prepare from here): the chain's, the
        # connector's own errors, and the 400 aiohttp writes for a request it cannot parse.
        connector = self._connector
        if connector.secure_headers is None:
            return
        headers = response.headers
        for name in connector._secure_names:
            if name not in headers:
                break
        else:
            return  # the chain's secure_headers added them all
        for name, value in http.secure_header_values(connector.secure_headers).items():
            headers.setdefault(name, value)


class RequestBody:
    """``request["body"]``: the request's body, read only when something asks for it.

    ``await body.read()`` returns it whole. Until then nothing is read: a request answered
    without reading (a 404, a refusal) costs no memory for its body, and a client waiting
    on ``Expect: 100-continue`` is told to send it only now.
    """

    __slots__ = ("_continued", "_data", "_request", "limit", "stall_timeout")

    def __init__(self, request: _AnyRequest, limit: int, stall_timeout: float) -> None:
        self._request = request
        self.limit = limit
        self.stall_timeout = stall_timeout
        self._data: bytes | None = None
        self._continued = False

    def __repr__(self) -> str:
        state = "unread" if self._data is None else f"{len(self._data)} bytes"
        return f"<RequestBody {state}>"

    async def read(self) -> bytes:
        """The whole body, read once. Raises :class:`~replkit.http.RequestError`: 413 when it
        is larger than the connector map's ``max_body_size`` (at once when its
        ``Content-Length`` says so), 400 when it cannot be decoded (bad ``Content-Encoding``,
        broken chunks), 408 when it stalls for ``header_timeout`` seconds."""
        if self._data is None:
            declared = self._request.content_length
            if declared is not None and declared > self.limit:
                raise self._too_large()
            await self._continue()
            self._data = await self._read_all()
        return self._data

    def _too_large(self) -> http.RequestError:
        return http.RequestError(413, f"request body larger than {self.limit} bytes")

    async def _continue(self) -> None:
        request = self._request
        expect = request.headers.get("Expect", "").lower()
        if not self._continued and expect == "100-continue" and request.version == HttpVersion11:
            self._continued = True
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            # Like aiohttp's own expect handler: the response proper has not started.
            request.writer.output_size = 0

    async def _read_all(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.stall_timeout) as deadline:
                while chunk := await self._request.content.readany():
                    size += len(chunk)
                    if size > self.limit:
                        raise self._too_large()
                    chunks.append(chunk)
                    deadline.reschedule(loop.time() + self.stall_timeout)
        except TimeoutError:
            raise http.RequestError(
                408, f"request body stalled for {self.stall_timeout:g} s"
            ) from None
        except RequestPayloadError as err:
            raise http.RequestError(400, f"malformed request body: {_reason(err)}") from None
        return b"".join(chunks)


def _reason(err: BaseException) -> str:
    """aiohttp's payload errors read ``400, message:\\n  Can not decode ...``: the last part."""
    return " ".join(str(err).split("message:", 1)[-1].split())


# host or [IPv6], then an optional port: RFC 9110's Host, with no userinfo or path.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s\[\]/@:?#]*)(?::([0-9]{0,5}))?")


def _request_map(request: _AnyRequest, connector: AiohttpConnector) -> dict[str, Any]:
    given = request.headers
    if isinstance(request, PlainRequest):
        headers = given  # read in lower case, none repeated; the request's own is not used
        sockname = request.sockname
    else:
        headers = {name.lower(): value for name, value in given.items()}
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if len(headers) < len(given):  # a repeated header: its values joined, as HTTP allows
        headers = {}
        for name, value in given.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    version = request.version
    return {
        "request_method": request.method.lower(),
        "uri": request.rel_url.raw_path,
        "query_string": request.rel_url.raw_query_string or None,
        "headers": headers,
        "body": RequestBody(request, connector.max_body_size, connector.limits.header_timeout),
        "scheme": request.scheme,
        "server_name": _server_name(headers.get("host"), sockname),
        "server_port": sockname[1] if sockname else None,
        "remote_addr": request.remote,
        "protocol": _PROTOCOLS.get(version) or f"HTTP/{version.major}.{version.minor}",
    }


_PROTOCOLS = {HttpVersion10: "HTTP/1.0", HttpVersion11: "HTTP/1.1"}


def _server_name(host: str | None, sockname: Any) -> str | None:
    if host is None:
        return str(sockname[0]) if sockname else None
    return _host_name(host)


@functools.lru_cache(maxsize=256)  # a server answers to a handful of names
def _host_name(host: str) -> str:
    match = _HOST.fullmatch(host)
    if match is None or (match[2] and int(match[2]) > 65535):
        raise http.RequestError(400, f"bad Host header {host[:100]!r}")
    return match[1].strip("[]")


class _BadResponse(Exception):
    pass


_SEVERAL = (list, tuple)  # a header value sent as one line per item


def _breaks(text: str) -> bool:
    return "\r" in text or "\n" in text or "\0" in text


_Headers = list[tuple[str, str]]  # as aiohttp's responses take them (and copy them)
_Checked = tuple[int, _Headers, Any]


def _pairs(given: Mapping[Any, Any]) -> _Headers:
    """A response's headers as ``(name, value)`` str pairs, values that are lists or
    tuples one pair per item; :class:`_BadResponse` for a name that is not a str."""
    pairs = []
    for name, value in given.items():
        if type(value) is str and type(name) is str:
            pairs.append((name, value))
        elif not isinstance(name, str):
            raise _BadResponse(f"response header {name!r}: {value!r:.60} is not named by a str")
        elif isinstance(value, _SEVERAL):
            pairs.extend((name, item if type(item) is str else str(item)) for item in value)
        else:
            pairs.append((name, str(value)))
    return pairs


def _checked_response(response: Any) -> _Checked:
    if type(response) is not dict and not isinstance(response, Mapping):
        raise _BadResponse(f"response is {type(response).__name__}, not a dict")
    status = response.get("status")
    # type() first: the exact types almost every response has cost one comparison.
    if (
        type(status) is not int and (isinstance(status, bool) or not isinstance(status, int))
    ) or not 100 <= status <= 599:
        raise _BadResponse(f"response status {status!r} is not an int between 100 and 599")
    given = response.get("headers") or {}
    if type(given) is not dict and not isinstance(given, Mapping):
        raise _BadResponse(f"response headers are {type(given).__name__}, not a dict")
    try:
        # Names and values all str, as nearly always: checked by joining them, in C.
        text = "".join(given) + "".join(given.values())
    except TypeError:
        pairs = _pairs(given)
        text = "".join(itertools.chain.from_iterable(pairs))
    else:
        pairs = list(given.items())
    # One scan of every name and value for what would split a header line; the culprit is
    # looked for only once there is one.
    if _breaks(text):
        name, text = next(pair for pair in pairs if _breaks(pair[0] + pair[1]))
        raise _BadResponse(f"response header {name!r}: {text!r:.60} has CR, LF or NUL")
    body = response.get("body")
    if isinstance(body, str):
        body = body.encode()
    elif body is None or isinstance(body, bytes | bytearray):
        pass  # tested before the abstract classes below, whose checks cost more
    elif isinstance(body, dict | list):
        try:
            body = json.dumps(body, ensure_ascii=False).encode()
        except (TypeError, ValueError, RecursionError) as err:
            raise _BadResponse(f"response body is not JSON-serializable: {err}") from None
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
    elif not isinstance(body, AsyncIterable | os.PathLike):
        raise _BadResponse(
            f"response body is {type(body).__name__}; expected str, bytes, dict, list, None, "
            "a pathlib.Path or an async iterable of chunks"
        )
    return status, pairs, body
