"""The app: a route table built by a helper, a handler imported from ``handlers``."""

import asyncio

import replkit.aiohttp as hk
from replkit import connector as conn
from replkit import sse

from .handlers import hello


async def ticks(channel: sse.EventChannel, _context: dict) -> None:
    """Ten events a second apart, then the end of the stream."""
    for i in range(10):
        await channel.send({"name": "tick", "data": i})
        await asyncio.sleep(1)
    channel.close()


def table(*rows: tuple) -> list[tuple]:
    """The home page and ``rows``."""
    return [("/", "get", hello), *rows]


def create_connector() -> hk.AiohttpConnector:
    """The connector, its routes from :func:`table`."""
    stream = {"name": "ticks", "enter": lambda context: sse.start_stream(ticks, context)}
    connector_map = conn.with_default_interceptors(conn.default_connector_map(8890))
    return hk.create_connector(conn.with_routes(connector_map, table(("/ticks", "get", stream))))
