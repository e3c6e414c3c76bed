"""The Pedestal guide "Server-Sent Events" in Python: its whole shebang, form for form.

Read it beside ``src/sse_demo.clj`` in the guide; each definition below is the one there.
"""

import threading
import time

import replkit.aiohttp as hk  # [io.pedestal.http.http-kit :as hk]
import replkit.connector as conn  # [io.pedestal.connector :as conn]
import replkit.sse as sse  # [io.pedestal.http.sse :as sse]
from replkit import interceptor  # [io.pedestal.interceptor :as interceptor]
from replkit.lifecycle import Atom, defonce


def home_page(_request: dict) -> dict:
    """The home page: a plain response map."""
    return {"status": 200, "body": "Hello, World!"}


def stream_ready(event_chan: sse.EventChannel, context: dict) -> None:
    """Send ten counter events one second apart, then close the stream."""

    def count() -> None:  # (1) the guide's future: the work runs on its own thread
        for i in range(10):
            event_chan.put({"name": "counter", "data": i})  # (2) >!! blocks while full
            time.sleep(1)
        event_chan.close()  # (3) closing the channel ends the response

    threading.Thread(target=count, name="sse-demo-counter", daemon=True).start()


counter_interceptor = interceptor.interceptor(
    {
        "name": f"{__name__}/counter",
        "enter": lambda context: sse.start_stream(stream_ready, context),
    }
)

routes = {
    ("/", "get", home_page),
    ("/counter", "get", counter_interceptor),
}


def create_connector() -> hk.AiohttpConnector:
    """The connector map threaded through the ``with_*`` functions, then made servable."""
    connector_map = conn.default_connector_map(8890)
    connector_map = conn.with_default_interceptors(connector_map)
    connector_map = conn.with_routes(connector_map, routes)
    return hk.create_connector(connector_map, None)


connector = defonce("connector", lambda: Atom(None))  # (defonce *connector (atom nil))


def start() -> None:
    """Start serving on http://localhost:8890."""
    connector.reset(conn.start(create_connector()))


def stop() -> None:
    """Stop serving; open streams are closed."""
    conn.stop(connector.deref())
    connector.reset(None)


def restart(*, drop_streams: bool = False) -> None:
    """Serve a freshly built connector, as the guide's stop-then-start does.

    Unlike stop-then-start, the listening socket never closes, so no request is refused,
    and streams already open run to their end (``drop_streams=True`` cuts them).
    """
    connector.reset(conn.restart(connector.deref(), create_connector(), drop_streams=drop_streams))
