"""``%load_ext replkit``: the REPL workflow as one IPython magic, in a terminal or Jupyter.

::

    %replkit start app.sse_demo   # import, bind `sse_demo`, start its server, watch the project
    %replkit start app.web:create_app --port 0   # an aiohttp app, on a free port
    %replkit restart              # new connector, same socket (the last app started)
    %replkit reload               # reload changed files now (saving does it too)
    %replkit status               # what serves where, what is watched
    %replkit stop                 # stop every app started here, and the watcher

In Jupyter the server runs on the kernel's own event loop; talk to it with an async client
and top-level ``await`` (a blocking client there would wait on the very loop that serves).
Loading the extension prints replkit's errors as one line.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_magic, magics_class

from replkit.errors import ReplkitError
from replkit.session import Session, watching
from replkit.watch import Reloader

__all__ = ["ReplkitMagics", "load_ipython_extension", "unload_ipython_extension"]

USAGE = "usage: %replkit start APP [--host H] [--port P] | stop [APP] | restart | reload | status"


class _Arguments(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ReplkitError(USAGE)


_START = _Arguments(prog="%replkit start", add_help=False)
_START.add_argument("app")
_START.add_argument("--host")
_START.add_argument("--port", type=int)


@magics_class
class ReplkitMagics(Magics):
    """The ``%replkit`` line magic and its state: the apps started here, by spec, and the
    one watcher they share."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self.sessions: dict[str, Session] = {}
        self.reloader: Reloader | None = None

    @line_magic
    def replkit(self, line: str) -> None:
        """``%replkit start APP [--host H] [--port P] | stop [APP] | restart | reload | status``."""
        command, *args = shlex.split(line) or ["status"]
        if command == "start":
            self.start(*args)
            return
        action = {
            "stop": self.stop,
            "restart": self.restart,
            "reload": self.reload,
            "status": self.status,
        }.get(command)
        if action is None or len(args) > (1 if command == "stop" else 0):
            raise ReplkitError(USAGE)
        action(*args)

    def start(self, *args: str) -> None:
        """Load APP, bind its module by its last dotted name, serve it, watch the project."""
        options = _START.parse_args(args)
        session = self.sessions.get(options.app)
        if session is None:
            if self.reloader is None:
                self.reloader = Reloader()
            session = Session(
                options.app, host=options.host, port=options.port, watch=self.reloader
            )
            self.sessions[options.app] = session
        self.shell.user_ns[session.name] = session.module
        session.start()
        self.reloader.start()  # type: ignore[union-attr]
        self.status()

    def stop(self, app: str | None = None) -> None:
        """Stop APP, or every app started here and the watcher."""
        for spec in [app] if app else list(self.sessions):
            session = self.sessions.pop(spec, None)
            if session is None:
                raise ReplkitError(f"{spec} was not started here; started: {sorted(self.sessions)}")
            session.stop()
            session.close()
        if not self.sessions and self.reloader is not None:
            self.reloader.stop()
            self.reloader = None
        self.status()

    def restart(self) -> None:
        """Restart the app started last: a new connector on the same socket."""
        self._last().restart()
        self.status()

    def reload(self) -> None:
        """Reload the changed files now."""
        if self.reloader is None:
            raise ReplkitError("nothing is watched yet; %replkit start APP first")
        result = self.reloader.reload()
        print(result if result is not None else "nothing changed since the last load")

    def status(self) -> None:
        """One line per app, one for the watcher."""
        for session in self.sessions.values():
            print(session.status()[0])
        if not self.sessions:
            print("not serving")
        for line in watching(self.reloader) if self.reloader is not None else []:
            print(line)

    def close(self) -> None:
        """Stop everything the magic started, quietly."""
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()
        if self.reloader is not None:
            self.reloader.stop()
            self.reloader = None

    def _last(self) -> Session:
        if not self.sessions:
            raise ReplkitError("no app yet; %replkit start APP first")
        return list(self.sessions.values())[-1]


def _one_line(
    shell: InteractiveShell, etype: type, value: BaseException, tb: Any, tb_offset: Any = None
) -> None:
    print(f"replkit: {value}", file=sys.stderr)


_magics: ReplkitMagics | None = None


def load_ipython_extension(shell: InteractiveShell) -> None:
    """Register ``%replkit`` and show replkit's errors as one line."""
    global _magics
    _magics = ReplkitMagics(shell)
    shell.register_magics(_magics)
    shell.set_custom_exc((ReplkitError,), _one_line)


def unload_ipython_extension(shell: InteractiveShell) -> None:
    """Stop what the extension started."""
    global _magics
    if _magics is not None:
        _magics.close()
        _magics = None
    shell.set_custom_exc((), None)
