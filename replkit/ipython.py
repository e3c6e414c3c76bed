"""``%load_ext replkit``: the REPL workflow as one IPython magic, in a terminal or Jupyter.

::

    %replkit start app.sse_demo   # import, bind `sse_demo`, start its server, watch its package
    %replkit restart              # the module's restart(): new connector, same socket
    %replkit reload               # reload changed files now (saving does it too)
    %replkit status               # what serves where, what is watched
    %replkit stop                 # stop the servers and the watcher

In Jupyter the server runs on the kernel's own event loop; talk to it with an async client
and top-level ``await`` (a blocking client there would wait on the very loop that serves).
Loading the extension turns on dev mode and prints replkit's errors as one line.
"""

from __future__ import annotations

import os
import shlex
import sys
import types
from typing import Any

from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_magic, magics_class

from replkit import connector as conn
from replkit.cli import load_app_module
from replkit.errors import ReplkitError
from replkit.lifecycle import start_module
from replkit.reload import Reloader, package_root

__all__ = ["ReplkitMagics", "load_ipython_extension", "unload_ipython_extension"]

USAGE = "usage: %replkit start MODULE | stop | restart | reload | status"


@magics_class
class ReplkitMagics(Magics):
    """The ``%replkit`` line magic and the state behind it: the current module and watcher."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self.module: types.ModuleType | None = None
        self.reloader: Reloader | None = None

    @line_magic
    def replkit(self, line: str) -> None:
        """``%replkit start MODULE | stop | restart | reload | status``."""
        command, *args = shlex.split(line) or ["status"]
        action = {
            "start": self.start,
            "stop": self.stop,
            "restart": self.restart,
            "reload": self.reload,
            "status": self.status,
        }.get(command)
        if action is None or (command == "start") != bool(args) or len(args) > 1:
            raise ReplkitError(USAGE)
        action(*args)

    def start(self, name: str) -> None:
        """Import ``name``, bind it by its last dotted name, start it, watch its package."""
        module = load_app_module(name)
        self.module = module
        self.shell.user_ns[name.rpartition(".")[2]] = module
        start_module(module)
        root = package_root(module)
        if self.reloader is None or root not in self.reloader.roots:
            self._stop_watching()
            self.reloader = Reloader([root])
            self.reloader.start()
        self.status()

    def stop(self) -> None:
        """Stop every server started here and the file watcher."""
        stop = getattr(self._current(), "stop", None)
        if callable(stop):
            stop()
        for running in conn.serving():
            conn.stop(running)
        self._stop_watching()
        self.status()

    def restart(self) -> None:
        """Call the current module's ``restart()``."""
        module = self._current()
        restart = getattr(module, "restart", None)
        if not callable(restart):
            raise ReplkitError(f"module {module.__name__} has no restart() function")
        restart()
        self.status()

    def reload(self) -> None:
        """Reload the changed files under the watched package now."""
        if self.reloader is None:
            raise ReplkitError("nothing is watched yet; %replkit start MODULE first")
        result = self.reloader.reload()
        print(result if result is not None else "nothing changed since the last load")

    def status(self) -> None:
        """One line per running server, one for the watcher."""
        servers = conn.serving()
        for running in servers:
            print(f"serving on {running.url}")
        if not servers:
            print("not serving")
        if self.reloader is not None and self.reloader.running:
            print(f"reloading on save under {', '.join(map(str, self.reloader.roots))}")

    def _current(self) -> types.ModuleType:
        if self.module is None:
            raise ReplkitError("no module yet; %replkit start MODULE first")
        return sys.modules.get(self.module.__name__, self.module)

    def _stop_watching(self) -> None:
        if self.reloader is not None:
            self.reloader.stop()
            self.reloader = None


def _one_line(
    shell: InteractiveShell, etype: type, value: BaseException, tb: Any, tb_offset: Any = None
) -> None:
    print(f"replkit: {value}", file=sys.stderr)


_magics: ReplkitMagics | None = None


def load_ipython_extension(shell: InteractiveShell) -> None:
    """Register ``%replkit``, turn on dev mode, show replkit errors as one line."""
    global _magics
    os.environ["REPLKIT_DEV_MODE"] = "1"
    _magics = ReplkitMagics(shell)
    shell.register_magics(_magics)
    shell.set_custom_exc((ReplkitError,), _one_line)


def unload_ipython_extension(shell: InteractiveShell) -> None:
    """Stop what the extension started."""
    global _magics
    if _magics is not None:
        _magics._stop_watching()
        _magics = None
    for running in conn.serving():
        conn.stop(running)
    shell.set_custom_exc((), None)
