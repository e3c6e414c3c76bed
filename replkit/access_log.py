"""The access log: one line per response, ``127.0.0.1 GET /path?q 200 1.2 ms`` (the path as
sent, percent-encoded), at INFO on the logger of the connector that answered
(:data:`ACCESS_LOG` unless its map says otherwise).

Lines are handed to :mod:`logging` in batches, once per turn of the event loop, rather than
one by one as responses complete: run back to back, logging's code stays in the CPU's
caches, and a line costs about a third of what it costs squeezed in between two requests
(aiohttp's low-level server answering ``GET /`` under load with this log on: 34 us a
request with batches, 50 us without; 26 us with no log). Each record is still one
``LogRecord`` per response, made as ``logger.info`` would make it, dated when its response
completed.

State: a :class:`AccessLog` per server, holding the lines of the current turn of its loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = ["ACCESS_LOG", "LOG_FORMAT", "AccessLog", "AiohttpAccessLogger", "access_record"]

ACCESS_LOG = logging.getLogger("replkit.access")
"""Where responses are logged by default, at INFO."""

LOG_FORMAT = "%s %s %s %d %.1f ms"
"""The message of each line: client address, method, path and query, status, milliseconds."""

# (logger, time the response completed, the message's arguments, the asyncio task's name)
_Line = tuple[logging.Logger, float, tuple[Any, ...], str | None]


class AccessLog:
    """The access log of one server, on its event loop: :meth:`add` a line per response;
    they reach their loggers at the end of the loop's current turn, or at :meth:`flush`."""

    def __init__(self, logger_of: Callable[[web.BaseRequest], logging.Logger | None]) -> None:
        self.logger_of = logger_of
        """Which logger a request's line goes to (``None``: not logged)."""
        self._pending: list[_Line] = []

    def add(self, logger: logging.Logger | None, request: Any, status: int, seconds: float) -> None:
        """Log the response to ``request`` (aiohttp's, or one with its ``remote``, ``method``
        and ``rel_url``) this turn on ``logger``, if it logs INFO (``None``: not logged)."""
        if logger is None or not logger.isEnabledFor(logging.INFO):
            return
        args = (request.remote, request.method, request.rel_url.raw_path_qs, status, seconds * 1e3)
        pending = self._pending
        pending.append((logger, time.time(), args, _task_name()))
        if len(pending) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Hand every pending line to its logger now, oldest first."""
        pending, self._pending = self._pending, []
        for logger, created, args, task in pending:
            logger.handle(access_record(logger, args, created, task))


class AiohttpAccessLogger(AbstractAccessLogger):
    """aiohttp's side of an :class:`AccessLog`: aiohttp makes one per connection, with the
    server's ``AccessLog`` as its ``logger``, and calls :meth:`log` once per response."""

    logger: AccessLog  # type: ignore[assignment]

    def __init__(self, logger: AccessLog, log_format: str) -> None:
        super().__init__(logger, log_format)  # type: ignore[arg-type]

    def log(self, request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> None:
        """Log one response."""
        self.logger.add(self.logger.logger_of(request), request, response.status, seconds)


_LOG_LINE = AccessLog.add.__code__.co_firstlineno
_record_templates: dict[tuple[str, int], dict[str, Any]] = {}
os.register_at_fork(after_in_child=_record_templates.clear)  # the process id is in them


def access_record(
    logger: logging.Logger,
    args: tuple[Any, ...],
    created: float | None = None,
    task: str | None = None,
) -> logging.LogRecord:
    """The record ``logger.info(LOG_FORMAT, *args)`` would make, dated ``created``
    (``time.time()`` by default) and noting asyncio task ``task`` (Python 3.12+), for a
    fraction of its cost: a copy of one that ``logging`` made for this logger, process and
    thread, instead of a walk up the stack and the lookups of the source file, process and
    thread for every line. A custom record factory or logger class makes its records
    itself."""
    if (
        logging.getLogRecordFactory() is not logging.LogRecord
        or type(logger).makeRecord is not logging.Logger.makeRecord
    ):
        return logger.makeRecord(
            logger.name, logging.INFO, __file__, _LOG_LINE, LOG_FORMAT, args, None, "add"
        )
    key = (logger.name, threading.get_ident())
    template = _record_templates.get(key)
    if template is None:
        if len(_record_templates) > 64:  # threads come and go: keep the current ones
            _record_templates.clear()
        template = _record_templates[key] = logging.LogRecord(
            logger.name, logging.INFO, __file__, _LOG_LINE, LOG_FORMAT, (), None, "add"
        ).__dict__
    now = time.time() if created is None else created
    record = logging.LogRecord.__new__(logging.LogRecord)
    record.__dict__ = {
        **template,
        "created": now,
        "msecs": int((now - int(now)) * 1000) + 0.0,
        "relativeCreated": template["relativeCreated"] + (now - template["created"]) * 1000,
        "args": args,
    }
    if "taskName" in template:  # Python 3.12+
        record.taskName = task
    return record


# Python 3.12+ notes the task; asked once, as getattr() with a default raises and catches
# an AttributeError inside on every call where the name is missing.
_NOTES_TASKS = hasattr(logging, "logAsyncioTasks")


def _task_name() -> str | None:
    """The running asyncio task's name, as a LogRecord notes it (Python 3.12+)."""
    if not _NOTES_TASKS or not logging.logAsyncioTasks:
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    return task.get_name() if task is not None else None
