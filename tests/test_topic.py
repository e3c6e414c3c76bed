"""replkit.topic: fan-out, ids, history, resume with Last-Event-ID, slow clients.

Subscribers are real aiohttp clients of a real server; publishers are threads and coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import wait_until

from replkit import sse
from replkit.aiohttp import AiohttpConnector
from replkit.sse import Topic, topic_stream

# --- a small SSE reader for the tests ---------------------------------------------------------


async def read_events(
    response: aiohttp.ClientResponse,
    until: Callable[[dict[str, str]], bool],
    into: list[dict[str, str]] | None = None,
) -> list[dict[str, str]]:
    """Read events (dicts of their fields, data lines joined) until one satisfies ``until``;
    stop early at the end of the stream. Events are appended to ``into`` as they come."""
    events = [] if into is None else into
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if fields:
                events.append(fields)
                if until(fields):
                    return events
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = f"{fields[key]}\n{value}" if key in fields else value
    return events


def seq(event: dict[str, str]) -> int:
    return int(event["id"].rpartition("-")[2])


async def follow(
    url: str, last_id: str | None, until_id: Callable[[], str | None]
) -> tuple[list[dict[str, str]], int]:
    """Read ``url`` as EventSource does: on every end of stream, reconnect with the last id
    seen. Returns the events and how many connections it took, once ``until_id()`` is seen."""
    events: list[dict[str, str]] = []
    connections = 0
    async with aiohttp.ClientSession() as session:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            connections += 1
            async with session.get(url, headers=headers) as response:
                # A client cut by the server sees an incomplete response, as EventSource does.
                with contextlib.suppress(aiohttp.ClientPayloadError):
                    await read_events(response, lambda e: e.get("id") == until_id(), events)
            if events:
                last_id = events[-1]["id"]
                if last_id == until_id():
                    return events, connections


def topic_app(topic: Topic, **options: Any) -> list[tuple[Any, ...]]:
    def burst(request: dict[str, Any]) -> dict[str, Any]:
        # Handlers run on the server's loop: no writer can run during this burst.
        ids = [topic.publish(i) for i in range(int(request["query_params"]["n"]))]
        return {"status": 200, "body": ids[-1]}

    return [
        ("/", "get", lambda _: {"status": 200, "body": "up"}),
        ("/events", "get", topic_stream(topic, **options)),
        ("/burst", "post", burst),
    ]


# --- the topic on its own ---------------------------------------------------------------


def test_ids_are_epoch_and_sequence_and_a_bad_event_takes_none() -> None:
    topic = Topic(history=3)
    assert len(topic.epoch) == 8 and int(topic.epoch, 16) >= 0
    assert topic.last_id == f"{topic.epoch}-0"
    assert [topic.publish(i) for i in range(2)] == [f"{topic.epoch}-1", f"{topic.epoch}-2"]
    with pytest.raises(ValueError, match="contains CR, LF or NUL"):
        topic.publish({"name": "bad\n", "data": 1})
    with pytest.raises(ValueError, match="gets its id from the topic"):
        topic.publish({"id": "mine", "data": 1})
    assert topic.publish({"name": "n", "data": {"k": "v"}}) == f"{topic.epoch}-3"
    topic.publish("four")
    assert topic.recent() == [
        (f"{topic.epoch}-2", 1),
        (f"{topic.epoch}-3", {"name": "n", "data": {"k": "v"}}),
        (f"{topic.epoch}-4", "four"),
    ]
    assert Topic().epoch != topic.epoch  # a new process, or a new topic, is a new epoch


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"history": -1}, "Topic history must be a non-negative int, got -1"),
        ({"buffer": 0}, "Topic buffer must be a positive int, got 0"),
        ({"slow": "block"}, "Topic slow must be one of disconnect, drop_oldest, got 'block'"),
    ],
)
def test_topic_arguments_are_checked(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        Topic(**arguments)
    assert str(info.value) == message


def test_topic_stream_checks_its_options_when_built() -> None:
    with pytest.raises(TypeError, match=r"topic_stream options: .*'heartbeat'"):
        topic_stream(Topic(), heartbeat=5)
    with pytest.raises(ValueError, match="heartbeat_delay must be positive or None"):
        topic_stream(Topic(), heartbeat_delay=0)
    with pytest.raises(TypeError, match="topic_stream needs a Topic, got dict"):
        topic_stream({})  # type: ignore[arg-type]


# --- served -----------------------------------------------------------------------------


async def test_every_subscriber_gets_every_event_as_json(
    serve: Callable[..., AiohttpConnector],
) -> None:
    topic = Topic()
    server = serve(topic_app(topic))
    async with aiohttp.ClientSession() as session:
        responses = [await session.get(f"{server.url}/events") for _ in range(3)]
        await asyncio.to_thread(wait_until, lambda: topic.subscribers == 3)
        last = ""
        for i in range(5):
            last = topic.publish({"name": "message", "data": {"text": f"hé {i}"}})
        for response in responses:
            assert response.headers["Content-Type"] == "text/event-stream; charset=UTF-8"
            events = await asyncio.wait_for(read_events(response, lambda e: e["id"] == last), 5)
            assert [json.loads(e["data"]) for e in events] == [
                {"text": f"hé {i}"} for i in range(5)
            ]
            assert {e["event"] for e in events} == {"message"}
            assert [seq(e) for e in events] == [1, 2, 3, 4, 5]
            response.close()
    await asyncio.to_thread(wait_until, lambda: topic.subscribers == 0)


async def test_resume_replays_what_was_missed_then_goes_live(
    serve: Callable[..., AiohttpConnector],
) -> None:
    topic = Topic(history=10)
    server = serve(topic_app(topic))
    ids = [topic.publish(i) for i in range(6)]
    async with aiohttp.ClientSession() as session:
        # From the header, then from the query: each replays what followed ids[2].
        for sent, query, missed in [
            ({"Last-Event-ID": ids[2]}, "", ["3", "4", "5"]),
            ({}, f"?lastEventId={ids[2]}", ["3", "4", "5", "live 0"]),
        ]:
            async with session.get(f"{server.url}/events{query}", headers=sent) as response:
                latest = ids[-1]
                replayed = await read_events(response, lambda e, latest=latest: e["id"] == latest)
                assert [e["data"] for e in replayed] == missed
                ids.append(topic.publish(f"live {len(ids) - 6}"))
                events = await read_events(response, lambda e: e["id"] == ids[-1])
                assert [e["data"] for e in events] == [f"live {len(ids) - 7}"]
        # Resuming from the latest id replays nothing.
        async with session.get(f"{server.url}/events", headers={"Last-Event-ID": ids[-1]}) as r:
            await asyncio.to_thread(wait_until, lambda: topic.subscribers == 1)
            live = topic.publish("next")
            assert [e["data"] for e in await read_events(r, lambda e: e["id"] == live)] == ["next"]


@pytest.mark.parametrize(
    ("last_id", "reason"),
    [
        ("{epoch}-1", "expired"),  # older than the history
        ("0badcafe-3", "epoch"),  # from another process, or another topic
        ("{epoch}-99", "epoch"),  # not published by this topic yet: not its id either
        ("tomato", "malformed"),
        ("{epoch}-", "malformed"),
    ],
)
async def test_an_id_the_topic_cannot_place_gets_one_resync_first(
    serve: Callable[..., AiohttpConnector], last_id: str, reason: str
) -> None:
    topic = Topic(history=2)
    server = serve(topic_app(topic))
    for i in range(4):
        topic.publish(i)
    last_id = last_id.format(epoch=topic.epoch)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/events", headers={"Last-Event-ID": last_id}) as response,
    ):
        [resync] = await read_events(response, lambda e: True)
        assert resync["event"] == "resync"
        assert resync["id"] == f"{topic.epoch}-4"  # the latest: resume from there
        assert json.loads(resync["data"]) == {"reason": reason, "last_event_id": last_id}
        live = topic.publish("after")
        assert [e["data"] for e in await read_events(response, lambda e: e["id"] == live)] == [
            "after"
        ]


async def test_replay_racing_publishers_on_several_threads_is_exactly_once_in_order(
    serve: Callable[..., AiohttpConnector],
) -> None:
    topic = Topic(history=50_000, buffer=50_000)
    server = serve(topic_app(topic))
    published: list[str] = []
    all_subscribed = threading.Event()
    final: list[str] = []

    def end() -> str | None:
        return final[0] if final else None

    def publisher(n: int) -> None:
        # Keeps publishing until every subscriber is in, so every replay races publishers.
        for i in range(10_000):
            if all_subscribed.is_set() and i >= 200:
                break
            published.append(topic.publish({"name": "tick", "data": f"{n}:{i}"}))

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    random.seed(7)
    followers = []
    for k in range(1, 17):
        await asyncio.to_thread(wait_until, lambda k=k: len(published) >= 100 * k, 10)
        last_id = random.choice([None, random.choice(published)])
        url = f"{server.url}/events"
        followers.append((last_id, asyncio.ensure_future(follow(url, last_id, end))))
        await asyncio.to_thread(wait_until, lambda k=k: topic.subscribers == k, 10)
    all_subscribed.set()
    for thread in threads:
        await asyncio.to_thread(thread.join, 30)
    final.append(topic.publish("end"))
    for last_id, follower in followers:
        events, connections = await asyncio.wait_for(follower, 30)
        first = seq({"id": last_id}) + 1 if last_id else seq(events[0])
        assert [seq(e) for e in events] == list(range(first, seq({"id": end()}) + 1)), last_id
        assert connections == 1
    assert topic.slow_clients == 0


async def test_disconnected_slow_clients_resume_and_lose_nothing(
    serve: Callable[..., AiohttpConnector], caplog: pytest.LogCaptureFixture
) -> None:
    # A buffer of 2 against publishers that never pause: clients are cut often, and each
    # time they reconnect with Last-Event-ID, as EventSource does.
    topic = Topic(history=10_000, buffer=2, name="tiny")
    server = serve(topic_app(topic))
    first = topic.publish("first")
    end: list[str | None] = [None]

    def publisher() -> None:
        for i in range(3000):
            topic.publish(i)

    with caplog.at_level(logging.WARNING, logger="replkit.topic"):
        followers = [
            asyncio.ensure_future(follow(f"{server.url}/events", first, lambda: end[0]))
            for _ in range(3)
        ]
        await asyncio.to_thread(wait_until, lambda: topic.subscribers == 3)
        threads = [threading.Thread(target=publisher) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
        end[0] = topic.publish("end")
        results = [await asyncio.wait_for(f, 30) for f in followers]
    reconnects = 0
    for events, connections in results:
        assert [seq(e) for e in events] == list(range(2, 6003))
        reconnects += connections - 1
    assert topic.slow_clients == reconnects > 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "replkit.topic"]
    assert len(warnings) == reconnects  # once per client cut, not once per event
    assert all(w.startswith("tiny: 127.0.0.1 is too slow") for w in warnings)


async def test_drop_oldest_keeps_a_slow_client_connected_and_counts(
    serve: Callable[..., AiohttpConnector], caplog: pytest.LogCaptureFixture
) -> None:
    topic = Topic(history=0, buffer=3, slow="drop_oldest", name="lossy")
    server = serve(topic_app(topic))
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/events") as r:
        await asyncio.to_thread(wait_until, lambda: topic.subscribers == 1)
        with caplog.at_level(logging.WARNING, logger="replkit.topic"):
            # Published on the server's loop in one go: its writer cannot run in between.
            async with session.post(f"{server.url}/burst?n=50") as published:
                last = await published.text()
        events = await asyncio.wait_for(read_events(r, lambda e: e["id"] == last), 5)
    assert [e["data"] for e in events] == ["47", "48", "49"]
    assert topic.dropped_events == 47
    assert topic.slow_clients == 1
    assert [r.getMessage() for r in caplog.records if r.name == "replkit.topic"] == [
        "lossy: 127.0.0.1 is too slow (3 events waiting); dropping its oldest events"
    ]


async def test_several_topics_with_routes_from_a_helper_and_a_lambda_stream_ready(
    serve: Callable[..., AiohttpConnector],
) -> None:
    # A plain function returning a coroutine, as a lambda does, is run on the loop.
    def routes_for(topics: dict[str, Topic]) -> list[tuple[Any, ...]]:
        def enter(context: dict[str, Any]) -> dict[str, Any]:
            topic = topics[context["request"]["path_params"]["name"]]
            return sse.start_stream(lambda ch, ctx: topic.subscribe(ch, ctx), context)

        return [("/:name/events", "get", {"name": "events", "enter": enter})]

    topics = {"a": Topic(), "b": Topic()}
    server = serve(routes_for(topics))
    async with aiohttp.ClientSession() as session:
        a = await session.get(f"{server.url}/a/events")
        b = await session.get(f"{server.url}/b/events")
        await asyncio.to_thread(wait_until, lambda: topics["a"].subscribers == 1)
        await asyncio.to_thread(wait_until, lambda: topics["b"].subscribers == 1)
        last_a = [topics["a"].publish(f"a{i}") for i in range(3)][-1]
        last_b = topics["b"].publish("b0")
        assert [e["data"] for e in await read_events(a, lambda e: e["id"] == last_a)] == [
            "a0",
            "a1",
            "a2",
        ]
        assert [e["data"] for e in await read_events(b, lambda e: e["id"] == last_b)] == ["b0"]
        a.close()
        b.close()
    await asyncio.to_thread(wait_until, lambda: topics["a"].subscribers == 0)


async def test_a_client_cut_by_the_topic_loses_its_connection(
    serve: Callable[..., AiohttpConnector],
) -> None:
    # Not a complete response on a kept-alive connection: EventSource must see an error and
    # reconnect, and a client that reads nothing must not keep the connection.
    topic = Topic(buffer=2)
    server = serve(topic_app(topic))
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await asyncio.to_thread(wait_until, lambda: topic.subscribers == 1)
    # Published on the server's loop in one go: the stream's writer cannot run in between.
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/burst?n=10") as published,
    ):
        assert published.status == 200
    received = await asyncio.wait_for(reader.read(), 5)  # to the end: the server closed it
    writer.close()
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert not received.endswith(b"0\r\n\r\n")  # no last chunk: the response never ended
    assert topic.slow_clients == 1
