"""The ``replkit`` command: ``replkit serve MODULE`` and ``replkit repl MODULE``.

Like uvicorn, it puts the current directory first on ``sys.path`` and imports MODULE, which
provides ``create_connector()``. Mistakes (an unknown module, a taken port) print one line
and exit with status 1; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from replkit import connector as conn
from replkit.errors import ReplkitError
from replkit.reload import Reloader, describe, package_root

__all__ = ["load_app_module", "main"]


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

    serve = commands.add_parser("serve", help="serve MODULE's create_connector() until Ctrl-C")
    _address_arguments(serve)
    serve.add_argument("--no-watch", action="store_true", help="do not hot-reload on save")
    serve.set_defaults(command=_serve)

    repl = commands.add_parser("repl", help="open ptpython on MODULE, serving and hot-reloading")
    _address_arguments(repl)
    repl.add_argument("--no-start", action="store_true", help="do not start the server")
    repl.add_argument("--no-watch", action="store_true", help="do not hot-reload on save")
    repl.set_defaults(command=_repl)
    return parser


def _address_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("module", metavar="MODULE", help="module to serve, e.g. app.sse_demo")
    parser.add_argument("--host", help="interface to bind (default: the module's, localhost)")
    parser.add_argument(
        "--port", type=int, help="port to bind, 0 for any free one (default: the module's)"
    )


def _apply_address(args: argparse.Namespace) -> None:
    # The environment reaches default_connector_map() however the module builds its map,
    # and survives the module's own restart() calls.
    if args.host is not None:
        os.environ["REPLKIT_HOST"] = args.host
    if args.port is not None:
        os.environ["REPLKIT_PORT"] = str(args.port)


def load_app_module(name: str) -> ModuleType:
    """Import ``name`` from the current directory, with a one-line error if it fails."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(f"{err.name}.")):
            raise ReplkitError(f"no module named {name!r} (searched {cwd} and sys.path)") from None
        raise ReplkitError(f"importing {name}: {describe(err)}") from None
    except Exception as err:
        raise ReplkitError(f"importing {name}: {describe(err)}") from None
    if not callable(getattr(module, "create_connector", None)):
        raise ReplkitError(f"module {name} has no create_connector() function to serve")
    return module


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, so ptpython's patch_stdout, which
    replaces it while the prompt is shown, prints log lines above the prompt."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def _configure_logging() -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # replkit reports each reload itself; watchfiles' own "N changes detected" is noise.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    module = _prepare(args)
    return asyncio.run(_serve_until_signal(module, watch=not args.no_watch))


def _repl(args: argparse.Namespace) -> int:
    from replkit.repl import run_repl  # ptpython is only needed here

    module = _prepare(args)
    return run_repl(module, start=not args.no_start, watch=not args.no_watch)


def _prepare(args: argparse.Namespace) -> ModuleType:
    _apply_address(args)
    if not args.no_watch:
        os.environ["REPLKIT_DEV_MODE"] = "1"
    module = load_app_module(args.module)
    _configure_logging()
    return module


async def _serve_until_signal(module: ModuleType, *, watch: bool) -> int:
    connector = conn.start(module.create_connector())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    reloader = Reloader([package_root(module)]) if watch else None
    if reloader is not None:
        reloader.start()  # before saying so: a save right after this line must be seen
    print(f"serving on {connector.url}", flush=True)
    try:
        await stopping.wait()
    finally:
        if reloader is not None:
            reloader.stop()
        await connector.stop_async()
    return 0
