"""``replkit repl MODULE``: ptpython with the module loaded, serving, and hot-reloading.

The REPL runs on an asyncio loop that keeps running between prompts, and the server runs
on that same loop, so it serves while you type and ``await`` works at the prompt. The
module is bound by its last dotted name (``sse_demo``); saving a file under its package
reloads it in place; leaving the REPL stops the server and the watcher.
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
from replkit import connector as conn
from replkit.errors import ReplkitError
from replkit.lifecycle import start_module
from replkit.reload import Reloader, package_root

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


def run_repl(module: types.ModuleType, *, start: bool = True, watch: bool = True) -> int:
    """Open the REPL on ``module``; returns the exit status once the user leaves."""
    return asyncio.run(_session(module, start=start, watch=watch))


async def _session(module: types.ModuleType, *, start: bool, watch: bool) -> int:
    name = module.__name__.rpartition(".")[2]
    # The REPL namespace is __main__, as in python -i and IPython, which is also where the
    # reloader rebinds names such as `sse_demo` to freshly reloaded modules.
    main = types.ModuleType("__main__")
    namespace: dict[str, Any] = main.__dict__
    reloader = Reloader([package_root(module)]) if watch else None
    namespace.update({name: module, "reload": _reload_now(reloader)})
    saved_main = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        if start:
            start_module(module)
        if reloader is not None:
            reloader.start()
        print(_banner(name, reloader), flush=True)
        repl = _Repl(
            get_globals=lambda: namespace,
            get_locals=lambda: namespace,
            history_filename=str(_history_file()),
        )
        repl.confirm_exit = False
        with patch_stdout():
            await repl.run_async()
    finally:
        if reloader is not None:
            reloader.stop()
        for running in conn.serving():
            await running.stop_async()
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
    return 0


def _reload_now(reloader: Reloader | None) -> Any:
    def reload() -> None:
        """Reload the changed files under the watched package now (saving does it too)."""
        if reloader is None:
            print("replkit: not watching any files (started with --no-watch)")
            return
        result = reloader.reload()
        print(result if result is not None else "replkit: nothing changed since the last load")

    return reload


def _banner(name: str, reloader: Reloader | None) -> str:
    served = conn.serving()
    where = f"serving on {served[-1].url}" if served else "not serving yet"
    watching = f"; reloading on save under {reloader.roots[0]}" if reloader else ""
    return (
        f"replkit {__version__}: {name} {where}{watching}\n"
        f"  {name}.start()  {name}.stop()  {name}.restart()   control the server\n"
        "  reload()   reload changed files now        Ctrl-D or exit()   quit"
    )


def _history_file() -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    path = base / "replkit" / "history"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
