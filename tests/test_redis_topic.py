"""replkit.redis_topic: topics in Redis, against a real redis-server the tests start.

Two ``RedisTopic`` objects of one name stand for two workers: each serves its own streams
on its own server, and what either publishes reaches both, resumable on either.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import RedisServer, wait_until

from replkit import sse
from replkit.aiohttp import AiohttpConnector
from replkit.redis_topic import RedisTopic, TopicError


def worker(serve: Callable[..., AiohttpConnector], topic: sse.Topic) -> str:
    """A server streaming ``topic`` at /events; its base URL."""
    return serve([("/events", "get", sse.topic_stream(topic, heartbeat_delay=0.2))]).url


class Reader:
    """An EventSource-like client: reads events, remembers their ids, can resume."""

    def __init__(self, session: aiohttp.ClientSession, url: str, last_id: str | None = None):
        self.session, self.url, self.last_id = session, url, last_id
        self.events: list[tuple[str | None, str, str]] = []  # (name, id, data)
        self.response: aiohttp.ClientResponse | None = None

    async def open(self) -> Reader:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        self.response = await self.session.get(f"{self.url}/events", headers=headers)
        return self

    async def read(self, count: int, timeout: float = 10) -> list[tuple[str | None, str, str]]:
        """Read until ``count`` events in all have arrived."""
        assert self.response is not None
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                block = (await self.response.content.readuntil(b"\n\n")).decode()
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if "id" in fields:
                    self.last_id = fields["id"]
                    self.events.append((fields.get("event"), fields["id"], fields["data"]))
        return self.events

    def close(self) -> None:
        if self.response is not None:
            self.response.close()


def seqs(events: list[tuple[str | None, str, str]]) -> list[int]:
    return [int(ident.rpartition("-")[2]) for name, ident, _ in events if name != "resync"]


def test_a_url_puts_a_named_topic_in_redis(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = sse.Topic(name="t", redis_url=redis_server.url)
    assert isinstance(topic, RedisTopic)
    monkeypatch.setenv("REPLKIT_REDIS_URL", redis_server.url)
    from_env = sse.Topic(history=10, name="t")
    assert isinstance(from_env, RedisTopic) and from_env.redis_url == redis_server.url
    assert from_env.epoch == topic.epoch  # one stream, one epoch, whoever asks
    with pytest.raises(TopicError) as info:
        sse.Topic()
    assert str(info.value) == (
        f"a topic in Redis ({redis_server.url}) needs a name, the same in every worker: "
        "sse.Topic(..., name='chat')"
    )
    monkeypatch.delenv("REPLKIT_REDIS_URL")
    assert type(sse.Topic()) is sse.Topic


def test_publish_numbers_events_like_a_topic_in_the_process(redis_server: RedisServer) -> None:
    one = sse.Topic(history=100, name="numbers", redis_url=redis_server.url)
    two = sse.Topic(history=100, name="numbers", redis_url=redis_server.url)
    assert one.last_id == f"{one.epoch}-0" == one.start_id
    ids = [one.publish({"name": "n", "data": {"i": i}}) for i in range(3)]
    ids.append(two.publish("plain"))
    assert ids == [f"{one.epoch}-{seq}" for seq in (1, 2, 3, 4)]
    assert two.last_id == ids[-1]
    assert two.recent() == [
        (ids[0], {"name": "n", "data": {"i": 0}}),
        (ids[1], {"name": "n", "data": {"i": 1}}),
        (ids[2], {"name": "n", "data": {"i": 2}}),
        (ids[3], "plain"),
    ]
    with pytest.raises(ValueError, match="gets its id from the topic"):
        one.publish({"id": "mine", "data": 1})


async def test_two_workers_share_events_and_resume_on_either(
    redis_server: RedisServer, serve: Callable[..., AiohttpConnector]
) -> None:
    first = sse.Topic(history=100, name="chat", redis_url=redis_server.url)
    second = sse.Topic(history=100, name="chat", redis_url=redis_server.url)
    url_one, url_two = worker(serve, first), worker(serve, second)
    async with aiohttp.ClientSession() as session:
        a = await Reader(session, url_one).open()
        b = await Reader(session, url_two).open()
        await wait_for_subscribers([first, second])
        ids = [first.publish({"data": "one"}), await second.apublish({"data": "two"})]
        assert [e[1] for e in await a.read(2)] == ids
        assert [e[1] for e in await b.read(2)] == ids
        a.close()
        missed = [second.publish({"data": f"missed {i}"}) for i in range(5)]
        # The client of the first worker comes back on the second one.
        resumed = await Reader(session, url_two, last_id=ids[-1]).open()
        live = first.publish({"data": "live"})
        events = await resumed.read(6)
        assert [e[1] for e in events] == [*missed, live]
        assert [e[2] for e in events][:2] == ["missed 0", "missed 1"]
        resumed.close()
        b.close()


async def wait_for_subscribers(topics: list[sse.Topic], count: int = 1) -> None:
    async with asyncio.timeout(5):
        while not all(topic.subscribers >= count for topic in topics):
            await asyncio.sleep(0.01)
    # A subscriber is counted at once; it is fed directly once its replay is fetched.
    async with asyncio.timeout(5):
        while any(s.pending is not None for t in topics for s in t._subscribers):
            await asyncio.sleep(0.01)


async def test_replay_racing_publishers_on_threads_loses_and_repeats_nothing(
    redis_server: RedisServer, serve: Callable[..., AiohttpConnector]
) -> None:
    # A buffer that holds every event: a slow reader on a loaded machine is not what is tested.
    topics = [
        sse.Topic(history=5000, buffer=1000, name="race", redis_url=redis_server.url)
        for _ in range(2)
    ]
    urls = [worker(serve, topic) for topic in topics]
    start = topics[0].publish("before")
    published: list[str] = []
    stop = threading.Event()

    def publish(topic: sse.Topic) -> None:
        while not stop.is_set() and len(published) < 400:
            published.append(topic.publish("x"))

    threads = [threading.Thread(target=publish, args=(t,)) for t in topics for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        async with aiohttp.ClientSession() as session:
            readers = []
            for i in range(8):  # subscribing while the publishers run, resuming from the start
                readers.append(await Reader(session, urls[i % 2], last_id=start).open())
                await asyncio.sleep(0.005)  # spread the subscriptions over the publishing
            wait_until(lambda: len(published) >= 400, 20, "400 events")
            stop.set()
            last = max(int(ident.rpartition("-")[2]) for ident in published)
            for reader in readers:
                events = await reader.read(last - 1, timeout=20)
                assert seqs(events) == list(range(2, last + 1))
                reader.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)


async def test_ids_the_stream_cannot_place_get_a_resync(
    redis_server: RedisServer, serve: Callable[..., AiohttpConnector]
) -> None:
    topic = sse.Topic(history=5, name="short", redis_url=redis_server.url)
    url = worker(serve, topic)
    first = topic.publish("first")
    for i in range(600):  # MAXLEN ~ 5 trims whole blocks: the first ids are gone
        topic.publish(i)
    latest = topic.last_id
    cases = {
        first: "expired",
        "nonsense": "malformed",
        f"{'0' * 8}-1": "epoch",
        f"{topic.epoch}-99999": "epoch",
    }
    async with aiohttp.ClientSession() as session:
        for last_id, reason in cases.items():
            reader = await Reader(session, url, last_id=last_id).open()
            (name, ident, data), *_ = await reader.read(1)
            assert (name, ident) == ("resync", latest)
            assert data == f'{{"reason":"{reason}","last_event_id":"{last_id}"}}'
            reader.close()


def test_publishing_without_redis_is_one_clear_error(tmp_path: Path) -> None:
    gone = RedisServer(tmp_path)  # never started: nothing listens on its port
    topic = sse.Topic(name="offline", redis_url=gone.url, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(TopicError) as info:
        topic.publish("lost")
    assert time.monotonic() - started < 2
    message = str(info.value)
    assert message.startswith(f"offline: Redis at {gone.url} failed: ")
    assert message.endswith("the event was not published") and "\n" not in message


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "volatile"])
async def test_a_redis_restart_mid_stream_is_resumed_or_reported(
    tmp_path: Path, serve: Callable[..., AiohttpConnector], persistent: bool
) -> None:
    server = RedisServer(tmp_path, persistent=persistent)
    server.start()
    try:
        topic = sse.Topic(history=100, name="restart", redis_url=server.url)
        url = worker(serve, topic)
        async with aiohttp.ClientSession() as session:
            reader = await Reader(session, url).open()
            await wait_for_subscribers([topic])
            before = [topic.publish(f"before {i}") for i in range(3)]
            assert [e[1] for e in await reader.read(3)] == before
            server.stop()
            with pytest.raises(TopicError):
                topic.publish("while down")  # reported to the publisher, not dropped silently
            server.start()
            after = wait_until(lambda: _publish_when_up(topic, "after"), 10, "Redis back")
            events = await reader.read(4 if persistent else 5, timeout=15)
            if persistent:  # the stream survived: it carries on, no gap, no duplicate
                assert [e[1] for e in events] == [*before, after]
            else:  # the stream was lost: the client is told, then gets the new events
                name, ident, data = events[3]
                assert name == "resync" and '"reason":"epoch"' in data
                assert events[4][1] == after and after.startswith(ident.rpartition("-")[0])
            reader.close()
    finally:
        server.stop()


def _publish_when_up(topic: sse.Topic, data: Any) -> str | None:
    try:
        return topic.publish(data)
    except TopicError:
        return None
