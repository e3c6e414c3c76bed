"""Topics in Redis: one topic for every worker process, on one host or many.

``sse.Topic(..., name="chat", redis_url="redis://host:6379/0")`` (or ``REPLKIT_REDIS_URL`` in
the environment and no ``redis_url``) is a :class:`RedisTopic`: the same API and the same
ids as a topic in the process, with its history in a Redis stream, so the app's code does
not change between one process and many.

- ``publish`` runs one atomic script: it numbers the event (``INCR``), ``XADD``s it under the
  entry id ``<seq>-0`` with ``MAXLEN ~ history``, and returns ``"<epoch>-<seq>"``, the id
  of an event in a topic of the process. The epoch is a key the first publisher sets: when
  Redis loses the stream (a restart without persistence), a new epoch tells the clients.
- In each worker, one reader task per topic (``XREAD BLOCK``) fans what any worker
  published out to that worker's streams, through the same per-subscriber buffers and
  ``slow`` policy as a topic in the process: one Redis connection per topic per worker,
  never one per client.
- A client resuming with ``Last-Event-ID`` on any worker gets what it missed from the
  stream (``XRANGE``), then the live events, with no gap and no duplicate; an id the stream
  no longer holds (trimmed), from another epoch, or malformed gets the ``resync`` event.
- Redis going away: ``publish`` raises :class:`TopicError` after ``timeout`` seconds (per
  attempt; it tries twice); open streams stay open (heartbeats flow) and carry on from
  where they were once Redis is back, or get a ``resync`` if Redis lost the events.

Keys: ``replkit:topic:<name>`` (the stream), ``:seq`` (the last number given), ``:epoch``.
Do not let Redis evict them (no ``maxmemory-policy`` that evicts these keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from replkit.errors import ReplkitError
from replkit.interceptor import Context
from replkit.sse import EventChannel, encode_event
from replkit.topic import Topic, _Subscriber, place

__all__ = ["RedisTopic", "TopicError"]

log = logging.getLogger("replkit.topic")

READ_BLOCK_MS = 1000
"""How long one ``XREAD`` waits for an event before the reader looks around again."""

PAGE = 1000
"""Entries fetched per ``XRANGE``/``XREAD`` call."""

_PUBLISH = """
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[2])
local seq = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'body', ARGV[3], 'event', ARGV[4])
return {epoch, seq}
"""

_POSITION = """
redis.call('SET', KEYS[2], ARGV[1], 'NX')
return {redis.call('GET', KEYS[2]), tonumber(redis.call('GET', KEYS[3]) or '0')}
"""


class TopicError(ReplkitError):
    """A topic could not do what was asked: Redis is unreachable, or misconfigured."""


class RedisTopic(Topic):
    """A :class:`~replkit.topic.Topic` whose events live in a Redis stream shared by every
    worker: see the module's documentation. ``timeout`` bounds each Redis call a publisher
    waits on."""

    def __init__(
        self,
        history: int = 1000,
        buffer: int = 100,
        slow: str = "disconnect",
        *,
        name: str | None = None,
        redis_url: str | None = None,
        timeout: float = 1.0,
    ) -> None:
        redis_url = redis_url or os.environ.get("REPLKIT_REDIS_URL") or ""
        if not redis_url:
            raise TopicError("a topic in Redis needs redis_url= or REPLKIT_REDIS_URL")
        if not name:
            raise TopicError(
                f"a topic in Redis ({redis_url}) needs a name, the same in every worker: "
                "sse.Topic(..., name='chat')"
            )
        super().__init__(history, buffer, slow, name=name)
        self.redis_url = redis_url
        self._key = f"replkit:topic:{name}"
        self._keys = [self._key, f"{self._key}:epoch", f"{self._key}:seq"]
        self._redis = redis.Redis.from_url(
            redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One more try: a pooled connection may be a dead one from before a restart.
            retry=Retry(NoBackoff(), 1),
        )
        self._publish = self._redis.register_script(_PUBLISH)
        self._position = self._redis.register_script(_POSITION)
        # The reader's state, under self._lock: its task, the future of the position it
        # starts from, the epoch and sequence number of the last event it delivered (None
        # until it knows them), and whether it can reach Redis (to log once per outage).
        self._reader: asyncio.Task[None] | None = None
        self._positioned: asyncio.Future[tuple[str, int]] | None = None
        self._seen: tuple[str, int] | None = None
        self._reachable = True

    # What a topic of the process answers from memory, asked of Redis.

    @property
    def epoch(self) -> str:
        """The stream's epoch, set by whoever used the topic first."""
        return self._where()[0]

    @property
    def last_id(self) -> str:
        """The id of the latest event published (:attr:`start_id` before the first)."""
        epoch, seq = self._where()
        return f"{epoch}-{seq}"

    @property
    def start_id(self) -> str:
        """The id before the first event: resuming from it replays the whole history."""
        return f"{self.epoch}-0"

    def recent(self) -> list[tuple[str, Any]]:
        """The events the stream holds, oldest first, as ``(id, event)`` pairs."""
        epoch = self.epoch
        entries = self._call(self._redis.xrevrange, self._key, count=max(self.history, 1))
        return [
            (_ident(epoch, entry), json.loads(fields[b"event"]))
            for entry, fields in reversed(entries)
        ]

    def publish(self, event: Any) -> str:
        """Store ``event`` in the stream, for every worker's streams; return its id. Waits
        for Redis (a round trip), at most about twice ``timeout``; raises
        :class:`TopicError` if Redis cannot be reached, and then the event is not published."""
        self._check_event(event)
        body = encode_event(event)
        kept = json.dumps(event, ensure_ascii=False, default=str)
        try:
            epoch, seq = self._publish(
                keys=self._keys, args=[_token(), max(self.history, 1), body, kept]
            )
        except redis.RedisError as err:
            raise TopicError(
                f"{self.name}: Redis at {self.redis_url} failed: {err}; the event was not published"
            ) from None
        return f"{epoch.decode()}-{seq}"

    async def apublish(self, event: Any) -> str:
        """:meth:`publish` without blocking the event loop: the Redis call waits on a thread."""
        return await asyncio.to_thread(self.publish, event)

    async def subscribe(self, event_chan: EventChannel, context: Context) -> None:
        """Feed ``event_chan`` until its stream ends: first what came after the client's
        ``last_event_id`` (from the stream), then what any worker publishes."""
        request = context.get("request") or {}
        client = str(request.get("remote_addr") or "a client")
        subscriber = _Subscriber(event_chan, client, pending=[])
        with self._lock:
            # From now on live events wait in subscriber.pending: the replay fetched below
            # ends where the reader stands at this moment, or where it starts.
            self._subscribers.add(subscriber)
            positioned = self._start_reader()
            since = self._seen
        try:
            if since is None:
                since = await positioned
            chunks = await self._missed(context.get("last_event_id"), since)
            with self._lock:
                event_chan._replay([*chunks, *(subscriber.pending or ())])
                subscriber.pending = None
            await event_chan.wait_closed()
        finally:
            with self._lock:
                self._subscribers.discard(subscriber)
                reader = self._reader if not self._subscribers else None
                if reader is not None:
                    self._reader = None
            if reader is not None:
                # The last stream here ends the reader, and waits for it: a server that
                # stops next must not close the loop under a reader still closing its
                # connection.
                reader.cancel()
                await asyncio.wait([reader])

    # The reader: one task per topic per worker, while the topic has subscribers here.

    def _start_reader(self) -> asyncio.Future[tuple[str, int]]:
        """Under the lock: start the reader on this loop unless it runs; the future of the
        position it starts from."""
        if self._reader is None or self._reader.done():
            loop = asyncio.get_running_loop()
            self._seen = None
            self._positioned = loop.create_future()
            self._reader = loop.create_task(self._read(self._positioned))
        assert self._positioned is not None
        return self._positioned

    async def _read(self, positioned: asyncio.Future[tuple[str, int]]) -> None:
        client = redis.asyncio.Redis.from_url(self.redis_url, socket_connect_timeout=2)
        position = client.register_script(_POSITION)
        backoff = 0.05
        try:
            while True:
                try:
                    epoch, seq = await position(keys=self._keys, args=[_token()])
                    start = self._resume_at(epoch.decode(), seq)
                    if not positioned.done():
                        positioned.set_result(start)
                    backoff = 0.05
                    await self._follow(client)
                except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
                    self._unreachable(err)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    def _resume_at(self, epoch: str, seq: int) -> tuple[str, int]:
        """Take up after a start or an outage, and return where from: the same epoch
        carries on from the last event delivered; a new one, or a count that went back
        (Redis lost events), tells every subscriber to resync and starts the new stream."""
        with self._lock:
            if not self._reachable:
                log.warning("%s: Redis at %s is back", self.name, self.redis_url)
                self._reachable = True
            seen = self._seen
            if seen is None:
                self._seen = (epoch, seq)
                return self._seen
            if seen[0] == epoch and seen[1] <= seq:
                return seen
            self._seen = (epoch, 0)
            resync = self._resync(f"{seen[0]}-{seen[1]}", "epoch", f"{epoch}-0")
            slow = self._fan_out(resync)
        for subscriber in slow:
            self._handle_slow(subscriber)
        return self._seen

    async def _follow(self, client: redis.asyncio.Redis) -> None:
        while True:
            with self._lock:
                assert self._seen is not None
                epoch, seq = self._seen
            reply = await client.xread({self._key: f"{seq}-0"}, count=PAGE, block=READ_BLOCK_MS)
            for _stream, entries in reply:
                for entry, fields in entries:
                    number = _seq(entry)
                    chunk = _chunk(epoch, number, fields[b"body"])
                    with self._lock:
                        self._seen = (epoch, number)
                        slow = self._fan_out(chunk)
                    for subscriber in slow:
                        self._handle_slow(subscriber)
            if not reply:
                return  # quiet for a while: look at the epoch again, in case Redis restarted

    def _unreachable(self, err: BaseException) -> None:
        with self._lock:
            first, self._reachable = self._reachable, False
        if first:
            log.warning(
                "%s: Redis at %s is unreachable (%s); streams stay open and resume when it is back",
                self.name,
                self.redis_url,
                err,
            )

    # Resuming.

    async def _missed(self, last_id: str | None, since: tuple[str, int]) -> list[bytes]:
        """The chunks a client that saw ``last_id`` missed up to ``since`` (the reader's
        position when it subscribed): from the stream, or one ``resync``."""
        if not last_id:
            return []
        epoch, upto = since
        first = await self._retrying(self._redis.xrange, self._key, count=1)
        oldest = _seq(first[0][0]) if first else upto + 1
        seq, reason = place(last_id, epoch, upto, oldest)
        if reason is not None:
            return [self._resync(last_id, reason, f"{epoch}-{upto}")]
        chunks: list[bytes] = []
        while seq < upto:
            entries = await self._retrying(
                self._redis.xrange, self._key, min=f"({seq}-0", max=f"{upto}-0", count=PAGE
            )
            if not entries:
                break
            for entry, fields in entries:
                seq = _seq(entry)
                chunks.append(_chunk(epoch, seq, fields[b"body"]))
        return chunks

    async def _retrying(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        # A client resuming during an outage waits, connected, until Redis is back.
        backoff = 0.05
        while True:
            try:
                return await asyncio.to_thread(call, *args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError) as err:
                self._unreachable(err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _where(self) -> tuple[str, int]:
        epoch, seq = self._call(self._position, keys=self._keys, args=[_token()])
        return epoch.decode(), seq

    def _call(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except redis.RedisError as err:
            raise TopicError(f"{self.name}: Redis at {self.redis_url} failed: {err}") from None

    def __repr__(self) -> str:
        return f"<RedisTopic {self.name} at {self.redis_url} subscribers={self.subscribers}>"


def _token() -> str:
    return secrets.token_hex(4)


def _seq(entry: bytes) -> int:
    return int(entry.partition(b"-")[0])


def _ident(epoch: str, entry: bytes) -> str:
    return f"{epoch}-{_seq(entry)}"


def _chunk(epoch: str, seq: int, body: bytes) -> bytes:
    return b"id: " + f"{epoch}-{seq}".encode() + b"\n" + body
