"""Serve a connector map on aiohttp: the analog of Pedestal's ``hk/create-connector``.

:class:`AiohttpConnector` answers each request by running the map's interceptor chain and
writing the response it leaves in the context. It is a :class:`replkit.server.Connector`:
``start()``, ``stop()`` and ``take_over()`` come from there, and so does serving from a
background thread or from the caller's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Mapping
from typing import Any

from aiohttp import web

from replkit.errors import ReplkitError
from replkit.interceptor import Context, InterceptorError, execute, interceptor, terminate_when
from replkit.server import DEFAULT_SHUTDOWN_GRACE, Connector, ServerError

__all__ = ["AiohttpConnector", "ServerError", "create_connector"]

log = logging.getLogger("replkit.server")


def create_connector(
    connector_map: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> AiohttpConnector:
    """Build an aiohttp connector from a connector map; nothing listens until ``start()``.

    ``options`` (may be ``None``, as in the guide) accepts ``shutdown_grace``: seconds open
    requests get to finish on stop, after every event stream has been closed.
    """
    return AiohttpConnector(connector_map, options)


class AiohttpConnector(Connector):
    """A connector map made servable: its interceptor chain, host and port."""

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
        )
        self.connector_map = connector_map
        self.interceptors = tuple(interceptor(i) for i in connector_map["interceptors"])
        self.initial_context: Context = dict(connector_map.get("initial_context") or {})
        # The bodies of the streams this connector is writing, by the task writing each.
        self._streams: dict[asyncio.Task[Any], Any] = {}

    def close_streams(self) -> None:
        """End this connector's event streams after what they have buffered; cut other
        streaming bodies."""
        for task, body in list(self._streams.items()):
            close = getattr(body, "close", None)
            if callable(close):
                close()
            else:
                task.cancel()

    async def shutdown(self) -> None:
        """The server is stopping: end every stream this connector is writing."""
        self.close_streams()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Run the interceptor chain for one request; write the response it produced."""
        context: Context = {**self.initial_context, "request": await _request_map(request)}
        # Entering stops once a response is set: the HTTP layer's rule, not the chain's.
        context = terminate_when(context, _responded)
        try:
            context = await execute(context, self.interceptors)
            response = context.get("response")
            if response is None:
                response = _plain(404, "Not Found")
            return await self._write(request, response)
        except InterceptorError as err:
            log.error(
                "%s %s -> 500: %s", request.method, request.rel_url, err, exc_info=err.exception
            )
            return web.Response(status=500, text="Internal Server Error")
        except _BadResponse as err:
            log.error("%s %s -> 500: %s", request.method, request.rel_url, err)
            return web.Response(status=500, text="Internal Server Error")

    async def _write(self, request: web.BaseRequest, response: Any) -> web.StreamResponse:
        status, headers, body = _checked_response(response)
        if not isinstance(body, AsyncIterable):
            return web.Response(status=status, headers=headers, body=body)
        stream = web.StreamResponse(status=status, headers=headers)
        await stream.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self._streams[task] = body
        chunks = aiter(body)
        try:
            async for chunk in chunks:
                await stream.write(chunk.encode() if isinstance(chunk, str) else chunk)
            await stream.write_eof()
        except ConnectionError:
            pass  # the client left; the body's cleanup below notices
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
        return stream


def _responded(context: Context) -> bool:
    return context.get("response") is not None


class _BadResponse(Exception):
    pass


def _checked_response(response: Any) -> tuple[int, dict[str, str], Any]:
    if not isinstance(response, Mapping):
        raise _BadResponse(f"response is {type(response).__name__}, not a dict")
    status = response.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise _BadResponse(f"response status {status!r} is not an int between 100 and 599")
    headers: dict[str, str] = {}
    for name, value in (response.get("headers") or {}).items():
        values = value if isinstance(value, list | tuple) else [value]
        headers[str(name)] = ", ".join(map(str, values))
    body = response.get("body")
    if isinstance(body, str):
        body = body.encode()
    elif not (body is None or isinstance(body, bytes | bytearray | AsyncIterable)):
        raise _BadResponse(
            f"response body is {type(body).__name__}; expected str, bytes, None "
            "or an async iterable of chunks"
        )
    return status, headers, body


def _plain(status: int, text: str) -> dict[str, Any]:
    return {
        "status": status,
        "headers": {"Content-Type": "text/plain; charset=UTF-8"},
        "body": text,
    }


async def _request_map(request: web.BaseRequest) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return {
        "request_method": request.method.lower(),
        "uri": request.rel_url.raw_path,
        "query_string": request.rel_url.raw_query_string or None,
        "headers": headers,
        "body": await request.read(),
        "scheme": request.scheme,
        "server_name": request.url.host,
        "server_port": sockname[1] if sockname else None,
        "remote_addr": request.remote,
        "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
    }
