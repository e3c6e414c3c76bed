"""A chat on server-sent events: one topic, many browsers, nothing lost on reconnect.

``POST /messages`` (JSON ``{"text": ...}``) publishes to the topic; ``GET /messages`` is the
history with the id to resume from; ``GET /events`` streams the topic and resumes from
``Last-Event-ID``; ``GET /`` is a page whose script (``/chat.js``) shows the history, then
the live messages, and reconnects by itself. Serve it with ``replkit serve app.chat``.
"""

from pathlib import Path

from aiohttp import web

import replkit.aiohttp as hk
import replkit.connector as conn
import replkit.sse as sse
from replkit.lifecycle import defonce

MAX_TEXT = 2000

# defonce: the topic, its history and its subscribers survive every reload of this module.
messages = defonce("messages", lambda: sse.Topic(history=1000, buffer=100, name="chat"))

PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>replkit chat</title>
<h1>Chat</h1>
<ul id="messages"></ul>
<form id="send"><input id="text" autocomplete="off" autofocus> <button>Send</button></form>
<script src="/chat.js"></script>
</html>
"""


def home_page(_request: dict) -> dict:
    """The chat page: markup only; its script is a same-origin file, which the default
    Content-Security-Policy lets run."""
    return {"status": 200, "headers": {"Content-Type": "text/html; charset=UTF-8"}, "body": PAGE}


def script(_request: dict) -> dict:
    """The page's JavaScript, read at each request so that an edit shows on reload."""
    body = Path(__file__).with_name("chat.js").read_text()
    return {"status": 200, "headers": {"Content-Type": "text/javascript"}, "body": body}


def post_message(request: dict) -> dict:
    """Publish ``{"text": ...}``; answer 202 with the message's event id."""
    params = request.get("json_params")
    text = params.get("text") if isinstance(params, dict) else None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        error = f"send JSON {{'text': ...}}, 1 to {MAX_TEXT} characters"
        return {"status": 400, "body": {"error": error}}
    return {
        "status": 202,
        "body": {"id": messages.publish({"name": "message", "data": {"text": text}})},
    }


def get_messages(_request: dict) -> dict:
    """The messages the topic keeps, and the id a first connection resumes from."""
    recent = messages.recent()
    # Resuming from the start id replays from the first event, so nothing published after
    # this answer is missed even when the history is empty.
    last = recent[-1][0] if recent else messages.start_id
    history = [{"id": ident, "text": event["data"]["text"]} for ident, event in recent]
    return {"status": 200, "body": {"messages": history, "last_event_id": last}}


events = sse.topic_stream(messages, name="app.chat/events")

routes = {
    ("/", "get", home_page),
    ("/chat.js", "get", script),
    ("/messages", "post", post_message),
    ("/messages", "get", get_messages),
    ("/events", "get", events),
}


def create_connector() -> hk.AiohttpConnector:
    """The chat's connector map, made servable on port 8891."""
    connector_map = conn.default_connector_map(8891)
    connector_map = conn.with_default_interceptors(connector_map)
    connector_map = conn.with_routes(connector_map, routes)
    return hk.create_connector(connector_map, None)


async def gunicorn_app() -> web.Application:
    """For gunicorn's aiohttp worker: ``gunicorn app.chat:gunicorn_app --worker-class
    aiohttp.GunicornWebWorker``, with ``REPLKIT_REDIS_URL`` set so the workers share the topic."""
    return hk.application(create_connector())


def __after_reload__() -> None:
    # Open pages still stream through the code they connected with: end their streams so
    # they reconnect to this code, resuming from the topic's history with nothing lost.
    messages.close_streams()
