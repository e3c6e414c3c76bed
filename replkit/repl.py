"""``replkit repl APP``: ptpython with the app loaded, serving, and hot-reloading.

The REPL runs on an asyncio loop that keeps running between prompts, and the server runs
on that same loop, so it serves while you type and ``await`` works at the prompt. The
module is bound by its last dotted name (``sse_demo``), and ``start()``, ``stop()``,
``restart()`` and ``reload()`` act on the app; saving a file reloads it in place and the
server serves the new code; leaving the REPL stops the server and the watcher.
"""

from __future__ import annotations

import asyncio
import os
import sys
import types
from pathlib import Path
from typing import Any

from prompt_toolkit.patch_stdout import patch_stdout
from ptpython.repl import PythonRepl, ReplExit

from replkit import __version__
from replkit.errors import ReplkitError
from replkit.session import LIFECYCLE, Session

__all__ = ["run_repl"]


class _Repl(PythonRepl):
    """ptpython, except that replkit's own errors print as one line, not a traceback."""

    def _handle_exception(self, e: BaseException) -> None:
        if isinstance(e, ReplExit):
            # ptpython's asyncio loop (3.0.32) ends on SystemExit but not on its own ReplExit.
            raise SystemExit from None
        if isinstance(e, ReplkitError):
            print(f"replkit: {e}", flush=True)
            return
        super()._handle_exception(e)


def run_repl(session: Session, *, start: bool = True) -> int:
    """Open the REPL on ``session``'s app; returns the exit status once the user leaves."""
    return asyncio.run(_run(session, start=start))


async def _run(session: Session, *, start: bool) -> int:
    # The REPL namespace is __main__, as in python -i and IPython, which is also where the
    # reloader rebinds names such as `sse_demo` to freshly reloaded modules.
    main = types.ModuleType("__main__")
    namespace: dict[str, Any] = main.__dict__
    namespace.update(
        {
            session.name: session.module,
            "start": session.start,
            "stop": session.stop,
            "restart": session.restart,
            "reload": _reload_now(session),
        }
    )
    saved_main = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        if start:
            session.start()
        elif session.reloader is not None:
            session.reloader.start()
        print(_banner(session), flush=True)
        repl = _Repl(
            get_globals=lambda: namespace,
            get_locals=lambda: namespace,
            history_filename=str(_history_file()),
        )
        repl.confirm_exit = False
        with patch_stdout():
            await repl.run_async()
    finally:
        await session.aclose()
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
    return 0


def _reload_now(session: Session) -> Any:
    def reload() -> None:
        """Reload the changed files now (saving does it too)."""
        result = session.reload()
        print(result if result is not None else "replkit: nothing changed since the last load")

    return reload


def _banner(session: Session) -> str:
    connector = session.connector
    where = f"serving on {connector.url}" if connector is not None else "not serving yet"
    watching = ""
    if session.reloader is not None:
        watching = f"; reloading on save under {', '.join(map(str, session.reloader.roots))}"
    own = [f"{session.name}.{verb}()" for verb in LIFECYCLE if session.own(verb) is not None]
    also = f" (also {', '.join(own)})" if own else ""
    return (
        f"replkit {__version__}: {session.spec} {where}{watching}\n"
        f"  start()  stop()  restart()   control the server{also}\n"
        "  reload()   reload changed files now        Ctrl-D or exit()   quit"
    )


def _history_file() -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    path = base / "replkit" / "history"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
