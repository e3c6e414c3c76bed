"""What every contender's app shares: its settings, the disconnect log, and, for the peers,
the broadcast that stands in for replkit's topic. Standard library only, so that both the
project's environment and the peers' can import it.

Every app answers the same routes (``bench/README.md``):

- ``GET /``: ``Hello, World!`` as text;
- ``GET /burst?n=N``: an event stream of ``N`` events ``data: <i>``, as fast as the app can
  send them, then the end of the stream;
- ``GET /idle``: an event stream that sends only heartbeats, every :data:`HEARTBEAT` s;
  when the app notices the stream ended it notes ``time.monotonic()`` in :data:`DISCONNECTS`;
- ``GET /disconnects``: those times, as JSON ``{"disconnects": [...]}``;
- ``GET /topic``: a stream of what ``POST /publish`` publishes to every subscriber;
- ``GET /subscribers``: ``{"subscribers": N}``;
- ``POST /publish?n=N&size=B``: publish ``N`` events of ``B`` bytes from the event loop,
  yielding to it after every :data:`PUBLISH_BATCH` events; answers once all are published.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

HELLO = "Hello, World!"

HEARTBEAT = float(os.environ.get("BENCH_HEARTBEAT", "15"))
"""Seconds between heartbeat comments on an idle stream (``BENCH_HEARTBEAT``; the libraries'
default is 15 s)."""

TOPIC_BUFFER = 100_000
"""Events that may wait for one subscriber: more than a flood, so that a frozen subscriber
only holds events and nobody is cut for being slow."""

PUBLISH_BATCH = 100
"""Events published between two yields to the event loop, which lets the writers run."""

DISCONNECTS: list[float] = []
"""``time.monotonic()`` each time the app noticed a stream had ended (the clock is shared by
every process of the machine)."""


def noticed_disconnect(*_: object) -> None:
    """Note that a stream has ended, now."""
    DISCONNECTS.append(time.monotonic())


async def publish_many(publish: Callable[[str], object], n: int, size: int) -> None:
    """Publish ``n`` events of ``size`` bytes with ``publish``, yielding to the loop after
    every :data:`PUBLISH_BATCH` so that the streams are written meanwhile."""
    payload = "x" * size
    for i in range(n):
        publish(payload)
        if i % PUBLISH_BATCH == PUBLISH_BATCH - 1:
            await asyncio.sleep(0)


class Broadcast:
    """A topic as an app on aiohttp-sse, sse-starlette or FastAPI writes one: a set of bounded
    queues, one per subscriber. A subscriber whose queue is full is dropped from the set (it
    gets nothing more), as replkit's ``slow="disconnect"`` cuts it; with
    :data:`TOPIC_BUFFER` that never happens in the benchmark."""

    def __init__(self, buffer: int = TOPIC_BUFFER) -> None:
        self.buffer = buffer
        self.queues: set[asyncio.Queue[str]] = set()

    def subscribe(self) -> asyncio.Queue[str]:
        """A new subscriber's queue; pass it to :meth:`unsubscribe` when its stream ends."""
        queue: asyncio.Queue[str] = asyncio.Queue(self.buffer)
        self.queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        """Forget a subscriber."""
        self.queues.discard(queue)

    def publish(self, data: str) -> None:
        """Hand ``data`` to every subscriber, never waiting."""
        full = []
        for queue in self.queues:
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                full.append(queue)
        self.queues.difference_update(full)
