"""The benchmark's routes (``bench/apps/common.py``) in replkit, in the guide's forms.

Served as users serve an app: ``replkit serve bench.apps.replkit_app --no-watch``, which
logs every response at INFO (the access log is on by default).
"""

from __future__ import annotations

import replkit.aiohttp as hk
import replkit.connector as conn
import replkit.sse as sse
from bench.apps.common import (
    DISCONNECTS,
    HEARTBEAT,
    HELLO,
    TOPIC_BUFFER,
    noticed_disconnect,
    publish_many,
)
from replkit import interceptor

# With REPLKIT_REDIS_URL set (the workers scenario), the topic lives in Redis.
topic = sse.Topic(buffer=TOPIC_BUFFER, name="bench")


def home_page(_request: dict) -> dict:
    """``GET /``: the guide's home page."""
    return {"status": 200, "body": HELLO}


async def burst_ready(event_chan: sse.EventChannel, context: dict) -> None:
    """Send ``n`` events as fast as the channel takes them, then end the stream."""
    for i in range(int(context["request"]["query_params"]["n"])):
        await event_chan.send({"data": i})
    event_chan.close()


async def idle_ready(_event_chan: sse.EventChannel, _context: dict) -> None:
    """Send nothing: the stream stays open with heartbeats until the client leaves."""


burst = interceptor.interceptor(
    {
        "name": f"{__name__}/burst",
        "enter": lambda context: sse.start_stream(burst_ready, context, HEARTBEAT),
    }
)
idle = interceptor.interceptor(
    {
        "name": f"{__name__}/idle",
        "enter": lambda context: sse.start_stream(
            idle_ready, context, HEARTBEAT, on_client_disconnect=noticed_disconnect
        ),
    }
)


def disconnects(_request: dict) -> dict:
    """``GET /disconnects``: when the app noticed streams end."""
    return {"status": 200, "body": {"disconnects": DISCONNECTS}}


def start(_request: dict) -> dict:
    """``GET /start``: the id a client resumes from to get every event of the topic."""
    return {"status": 200, "body": {"start": topic.start_id}}


def subscribers(_request: dict) -> dict:
    """``GET /subscribers``: how many streams the topic feeds."""
    return {"status": 200, "body": {"subscribers": topic.subscribers}}


async def publish(request: dict) -> dict:
    """``POST /publish?n=N&size=B``: publish ``N`` events of ``B`` bytes to the topic."""
    params = request["query_params"]
    await publish_many(topic.publish, int(params["n"]), int(params["size"]))
    return {"status": 200, "body": {"published": int(params["n"])}}


routes = {
    ("/", "get", home_page),
    ("/burst", "get", burst),
    ("/idle", "get", idle),
    ("/disconnects", "get", disconnects),
    ("/topic", "get", sse.topic_stream(topic, heartbeat_delay=HEARTBEAT)),
    ("/subscribers", "get", subscribers),
    ("/start", "get", start),
    ("/publish", "post", publish),
}


def _connector_map() -> dict:
    # Room for 10,000 streams plus the benchmark's own requests (the default cap is 10,000).
    return conn.default_connector_map(8890) | {"max_connections": 12_000}


def create_connector() -> hk.AiohttpConnector:
    """The guide's connector map: the default interceptors, the routes, the access log."""
    connector_map = conn.with_default_interceptors(_connector_map())
    return hk.create_connector(conn.with_routes(connector_map, routes), None)


def without_access_log() -> hk.AiohttpConnector:
    """:func:`create_connector` with the access log off (``"access_log": False``)."""
    connector_map = conn.with_default_interceptors(_connector_map() | {"access_log": False})
    return hk.create_connector(conn.with_routes(connector_map, routes), None)


def routes_only() -> hk.AiohttpConnector:
    """The router alone: no default interceptors (so no secure headers), no access log.
    What replkit's request path costs before anything it does for the app."""
    connector_map = _connector_map() | {"access_log": False}
    return hk.create_connector(conn.with_routes(connector_map, routes), None)
