"""The ``replkit`` command: ``replkit serve APP`` and ``replkit repl APP``.

APP is a module with ``create_connector()`` (``app.sse_demo``) or a name in a module
(``app.web:create_app``, an aiohttp application or its factory); see
:class:`replkit.session.Session`. Like uvicorn, the command puts the current directory
first on ``sys.path``. Mistakes (an unknown module, a taken port) print one line and exit
with status 1; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from replkit.errors import ReplkitError
from replkit.server import tune_collector
from replkit.session import Session

__all__ = ["configure_logging", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``replkit`` command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except ReplkitError as err:
        print(f"replkit: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replkit", description="Live, REPL-driven development of streaming web servers."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve APP until Ctrl-C, reloading it on save",
        description="Serve APP until Ctrl-C or SIGTERM. By default in development mode: "
        "every save reloads the code and the server serves it at once. --no-watch (or "
        "--production) turns off everything that reacts to files.",
    )
    _app_arguments(serve)
    serve.add_argument(
        "--no-watch",
        "--production",
        dest="no_watch",
        action="store_true",
        help="do not watch files: a deploy that rewrites them never reloads this process",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="serve with N worker processes sharing the port (needs --no-watch)",
    )
    serve.set_defaults(command=_serve)

    # Started by `serve --workers`, one per worker: the app on inherited listening sockets.
    worker = commands.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("app")
    worker.add_argument(
        "--fds", required=True, type=lambda text: [int(fd) for fd in text.split(",")]
    )
    worker.set_defaults(command=_worker)

    repl = commands.add_parser("repl", help="open ptpython on APP, serving and hot-reloading")
    _app_arguments(repl)
    repl.add_argument("--no-start", action="store_true", help="do not start the server")
    repl.add_argument("--no-watch", action="store_true", help="do not hot-reload on save")
    repl.set_defaults(command=_repl)
    return parser


def _app_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "app", metavar="APP", help="module to serve (app.sse_demo), or module:name (aiohttp app)"
    )
    parser.add_argument("--host", help="interface to bind (default: the app's, localhost)")
    parser.add_argument(
        "--port", type=int, help="port to bind, 0 for any free one (default: the app's)"
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, so ptpython's patch_stdout, which
    replaces it while the prompt is shown, prints log lines above the prompt."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        # StreamHandler's, with the line flushed at once rather than through flush(), which
        # takes the lock handle() already holds: a sixth of an access-log line's cost.
        try:
            stream = sys.stderr
            stream.write(self.format(record) + self.terminator)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class _LineFormatter(logging.Formatter):
    """``LEVEL logger: message``, then the traceback if there is one. A line without one is
    written straight from the record: the most common line, the access log's, skips the
    general formatter's steps (its time and style lookups), about a third of its cost."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        return f"{record.levelname} {record.name}: {record.message}"


def configure_logging() -> None:
    """Log replkit's INFO lines (requests, errors) to stderr, one line each."""
    handler = _StderrHandler()
    handler.setFormatter(_LineFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # replkit reports each reload itself; watchfiles' own "N changes detected" is noise.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def _session(args: argparse.Namespace) -> Session:
    session = Session(args.app, host=args.host, port=args.port, watch=not args.no_watch)
    configure_logging()
    return session


def _serve(args: argparse.Namespace) -> int:
    if args.workers is not None:
        if not args.no_watch:
            raise ReplkitError(
                "--workers runs production workers, which never reload: add --no-watch "
                "(hot reload is for one process, replkit serve or replkit repl)"
            )
        from replkit.workers import supervise

        return asyncio.run(supervise(_session(args), args.workers))
    tune_collector()
    return asyncio.run(_serve_until_signal(_session(args)))


def _worker(args: argparse.Namespace) -> int:
    from replkit.workers import run_worker

    session = Session(args.app, watch=False)
    configure_logging()
    tune_collector()
    return asyncio.run(run_worker(session, args.fds))


def _repl(args: argparse.Namespace) -> int:
    from replkit.repl import run_repl  # ptpython is only needed here

    return run_repl(_session(args), start=not args.no_start)


async def _serve_until_signal(session: Session) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        # Watching starts before the first line: a save right after it must be seen.
        session.start()
        connector = session.connector
        if connector is None:
            raise ReplkitError(f"{session.spec}: its start() started no server")
        if session.reloader is not None:
            roots = ", ".join(str(root) for root in session.reloader.roots)
            mode = f"development mode, reloading on save under {roots}"
        else:
            mode = "not watching files"
        print(f"serving on {connector.url} ({mode})", flush=True)
        await stopping.wait()
    finally:
        await session.aclose()
    return 0
