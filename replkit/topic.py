"""Topics: one sequence of events fanned out to many event streams, resumable on reconnect.

A :class:`Topic` numbers what is published, keeps the last ``history`` events, and feeds
every subscribed stream through its own bounded buffer, so a slow or frozen client never
delays the publisher or the other clients. A client that reconnects with ``Last-Event-ID``
gets what it missed from the history, then the live events: in order, with no gap and no
duplicate, even while events are being published. Hold a topic with
:func:`replkit.lifecycle.defonce` and it survives reloads::

    messages = defonce("messages", lambda: sse.Topic(history=1000))
    routes = {("/events", "get", sse.topic_stream(messages))}
    messages.publish({"name": "message", "data": {"text": "hi"}})

Ids are ``"<epoch>-<seq>"``: ``seq`` counts from 1 per topic, ``epoch`` is 8 hex digits
drawn when the topic is created, so an id from before a restart (or from another topic)
is recognised. An id the topic cannot place gets one ``resync`` event first, whose data is
``{"reason": ..., "last_event_id": ...}`` with ``reason`` ``"expired"`` (older than the
history), ``"epoch"`` (another epoch, or a sequence number this topic has not reached) or
``"malformed"``, and whose id is the topic's latest, so the client reloads its state and
resumes from there.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import re
import secrets
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from replkit.interceptor import Context, Interceptor
from replkit.sse import EventChannel, _Delivery, encode_event, start_stream

__all__ = ["SLOW_POLICIES", "Topic", "topic_stream"]

log = logging.getLogger("replkit.topic")

SLOW_POLICIES = ("disconnect", "drop_oldest")
"""What a topic does to a subscriber whose buffer is full."""

_ID = re.compile(r"(?P<epoch>[0-9a-f]{8})-(?P<seq>[0-9]{1,19})")


@dataclass(eq=False, slots=True)
class _Subscriber:
    channel: EventChannel
    client: str
    slow: bool = field(default=False)
    # Live events held back while the subscriber's replay is fetched (a Redis topic's);
    # None once it is fed directly.
    pending: list[bytes] | None = None


class Topic:
    """Events published once, delivered to every subscribed stream, replayed on resume.

    ``history``: how many past events are kept for clients that resume (0: none).
    ``buffer``: how many live events may wait for one subscriber. ``slow``: what happens
    when they are that many: ``"disconnect"`` closes the stream, and since EventSource
    reconnects and resumes from the history, nothing is lost if ``history`` exceeds
    ``buffer``; ``"drop_oldest"`` drops that subscriber's oldest waiting event (lossy).
    Either is counted in :attr:`slow_clients` and logged once per client.

    ``redis_url`` (or ``REPLKIT_REDIS_URL`` in the environment) keeps the topic in Redis,
    shared by every worker: a :class:`~replkit.redis_topic.RedisTopic`, which needs a
    ``name``.
    """

    def __new__(cls, *args: Any, redis_url: str | None = None, **options: Any) -> Topic:
        # A URL, given or in REPLKIT_REDIS_URL, puts the topic in Redis: the same code then
        # serves one process or many.
        if cls is Topic and (redis_url or os.environ.get("REPLKIT_REDIS_URL")):
            from replkit.redis_topic import RedisTopic  # redis-py is needed only then

            return super().__new__(RedisTopic)
        return super().__new__(cls)

    def __init__(
        self,
        history: int = 1000,
        buffer: int = 100,
        slow: str = "disconnect",
        *,
        name: str | None = None,
        redis_url: str | None = None,
    ) -> None:
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ValueError(f"Topic history must be a non-negative int, got {history!r}")
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"Topic buffer must be a positive int, got {buffer!r}")
        if slow not in SLOW_POLICIES:
            raise ValueError(f"Topic slow must be one of {', '.join(SLOW_POLICIES)}, got {slow!r}")
        self.history = history
        self.buffer = buffer
        self.slow = slow
        self._epoch = secrets.token_hex(4)
        self.name = name or f"topic {self._epoch}"
        self._lock = threading.Lock()
        self._seq = 0
        self._events: deque[tuple[int, bytes, Any]] = deque(maxlen=history)
        self._subscribers: set[_Subscriber] = set()
        self._slow_clients = 0
        self._dropped_events = 0

    @property
    def epoch(self) -> str:
        """8 hex digits drawn when the topic was made: the first part of every id."""
        return self._epoch

    @property
    def last_id(self) -> str:
        """The id of the latest event published (:attr:`start_id` before the first)."""
        return self._id(self._seq)

    @property
    def start_id(self) -> str:
        """The id before the first event: resuming from it replays the whole history."""
        return self._id(0)

    @property
    def subscribers(self) -> int:
        """How many streams are subscribed now."""
        return len(self._subscribers)

    @property
    def slow_clients(self) -> int:
        """How many subscribers hit the ``slow`` policy so far."""
        return self._slow_clients

    @property
    def dropped_events(self) -> int:
        """How many events ``"drop_oldest"`` dropped so far, over all subscribers."""
        return self._dropped_events

    def publish(self, event: Any) -> str:
        """Publish ``event`` to every subscriber and the history; return its id.

        ``event`` is what :meth:`EventChannel.put` takes, without an ``id``: the topic
        gives one. Safe from any thread or coroutine; never blocks on a client, never waits.
        """
        self._check_event(event)
        body = encode_event(event)  # outside the lock, and before a bad event takes an id
        with self._lock:
            self._seq += 1
            ident = self._id(self._seq)
            chunk = b"id: " + ident.encode() + b"\n" + body
            if self.history:
                self._events.append((self._seq, chunk, event))
            slow = self._fan_out(chunk)
        for subscriber in slow:
            self._handle_slow(subscriber)
        return ident

    def _check_event(self, event: Any) -> None:
        if isinstance(event, Mapping) and "id" in event:
            raise ValueError(f"{self.name}: a published event gets its id from the topic, not 'id'")

    async def apublish(self, event: Any) -> str:
        """:meth:`publish` for ``async def`` code: never blocks the event loop, whether the
        topic is in this process or in Redis."""
        return self.publish(event)

    def _fan_out(self, chunk: bytes) -> list[_Subscriber]:
        """Under the lock: hand ``chunk`` to every subscriber; the ones that just turned
        slow, for :meth:`_handle_slow` once the lock is released."""
        slow, gone = [], []
        drop_oldest = self.slow == "drop_oldest"
        for subscriber in self._subscribers:
            if subscriber.pending is not None:
                subscriber.pending.append(chunk)
                continue
            delivery = subscriber.channel._deliver(chunk, self.buffer, drop_oldest=drop_oldest)
            if delivery is _Delivery.SENT:
                continue
            if delivery is _Delivery.DROPPED_OLDEST:
                self._dropped_events += 1
            if delivery is not _Delivery.CLOSED and not subscriber.slow:
                subscriber.slow = True
                self._slow_clients += 1
                slow.append(subscriber)
            if delivery is not _Delivery.DROPPED_OLDEST:
                gone.append(subscriber)
        self._subscribers.difference_update(gone)
        return slow

    async def subscribe(self, event_chan: EventChannel, context: Context) -> None:
        """Feed ``event_chan`` from this topic until its stream ends.

        Call it from an ``async def`` stream_ready. A ``context["last_event_id"]`` (which
        :func:`~replkit.sse.start_stream` sets from the ``Last-Event-ID`` header or the
        ``lastEventId`` query parameter) first replays what came after that id.
        """
        request = context.get("request") or {}
        subscriber = _Subscriber(event_chan, str(request.get("remote_addr") or "a client"))
        with self._lock:
            # Under the publishers' lock: no event is published between the replay and
            # the subscription, so none is missed or sent twice.
            event_chan._replay(self._missed_since(context.get("last_event_id")))
            self._subscribers.add(subscriber)
        try:
            await event_chan.wait_closed()
        finally:
            with self._lock:
                self._subscribers.discard(subscriber)

    def close_streams(self) -> int:
        """End every subscribed stream after what it has buffered; return how many.

        EventSource clients reconnect and resume from the history, losing nothing: after a
        reload this moves open pages onto the new code.
        """
        with self._lock:
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for subscriber in subscribers:
            subscriber.channel.close()
        return len(subscribers)

    def recent(self) -> list[tuple[str, Any]]:
        """The events the history holds, oldest first, as ``(id, event)`` pairs."""
        with self._lock:
            return [(self._id(seq), event) for seq, _, event in self._events]

    def _id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def _missed_since(self, last_id: str | None) -> list[bytes]:
        if not last_id:
            return []
        oldest = self._events[0][0] if self._events else self._seq + 1
        seq, reason = place(last_id, self.epoch, self._seq, oldest)
        if reason is not None:
            return [self._resync(last_id, reason)]
        return [chunk for _, chunk, _ in itertools.islice(self._events, seq + 1 - oldest, None)]

    def _resync(self, last_id: str, reason: str, latest: str | None = None) -> bytes:
        """The ``resync`` event for a client at ``last_id``, carrying the id it resumes from
        (``latest``, by default the topic's last)."""
        data = {"reason": reason, "last_event_id": last_id}
        return encode_event({"name": "resync", "id": latest or self.last_id, "data": data})

    def _handle_slow(self, subscriber: _Subscriber) -> None:
        if self.slow == "disconnect":
            log.warning(
                "%s: %s is too slow (%d events waiting); disconnecting it, it resumes on reconnect",
                self.name,
                subscriber.client,
                self.buffer,
            )
            subscriber.channel._cut()
        else:
            log.warning(
                "%s: %s is too slow (%d events waiting); dropping its oldest events",
                self.name,
                subscriber.client,
                self.buffer,
            )

    def __repr__(self) -> str:
        return (
            f"<Topic {self.name} last_id={self.last_id} subscribers={self.subscribers} "
            f"slow_clients={self.slow_clients}>"
        )


def place(last_id: str, epoch: str, latest: int, oldest: int) -> tuple[int, str | None]:
    """Where ``last_id`` stands in a topic of ``epoch`` whose events ``oldest`` to ``latest``
    are kept: its sequence number, or why it cannot be placed (the ``resync`` reason)."""
    match = _ID.fullmatch(last_id)
    if match is None:
        return 0, "malformed"
    seq = int(match["seq"])
    if match["epoch"] != epoch or seq > latest:
        return 0, "epoch"
    if seq + 1 < oldest:
        return 0, "expired"
    return seq, None


def topic_stream(topic: Topic, *, name: str | None = None, **options: Any) -> Interceptor:
    """An interceptor answering with an event stream fed by ``topic``, resumable.

    ``options`` are :func:`~replkit.sse.start_stream`'s (``heartbeat_delay``, ``buffer``,
    ``on_client_disconnect``), checked now rather than at the first request.
    """
    if not isinstance(topic, Topic):
        raise TypeError(f"topic_stream needs a Topic, got {type(topic).__name__} {topic!r:.60}")

    async def stream_ready(event_chan: EventChannel, context: Context) -> None:
        await topic.subscribe(event_chan, context)

    try:
        inspect.signature(start_stream).bind(stream_ready, {}, **options)
    except TypeError as err:
        raise TypeError(f"topic_stream options: {err}") from None
    start_stream(stream_ready, {"request": {}}, **options)  # raises on a bad value

    def enter(context: Context) -> Context:
        return start_stream(stream_ready, context, **options)

    return Interceptor(name=name or f"replkit.sse/topic-stream {topic.name}", enter=enter)
