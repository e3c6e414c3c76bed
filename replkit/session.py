"""One app in development: load it, serve it, watch its files, rebuild it on every reload.

``replkit serve``, ``replkit repl`` and ``%replkit start`` each open a :class:`Session`::

    session = Session("app.sse_demo", port=0)
    session.start()   # the module's own start(), if it defines one
    ...               # each save: reload, build a new connector, let it take over the socket
    session.close()

The app is a module with ``create_connector()`` (``"app.sse_demo"``), or a name in a module
(``"app.web:create_app"``): a function returning a connector, an aiohttp
``web.Application``, or a function, plain or ``async def``, returning one.

After every reload the session builds a new connector from the fresh modules and lets it
take over the socket, whatever the app's shape: routes built by helpers, handlers from
other modules, interceptors and settings read once by ``create_connector()`` all follow the
save. Building is part of the reload's transaction: a ``create_connector()`` that raises
fails the reload, and the previous connector keeps serving.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from aiohttp import web

from replkit import connector as conn
from replkit import imports
from replkit.application import ApplicationConnector
from replkit.errors import ReplkitError
from replkit.reload import Batch, ReloadResult, describe, record_imports
from replkit.server import Connector, Server, find_server, open_servers
from replkit.watch import Reloader, print_result

__all__ = ["Session", "load_app_module", "watching"]

LIFECYCLE = ("start", "stop", "restart")


def load_app_module(name: str) -> ModuleType:
    """Import ``name`` with the working directory first on ``sys.path``, as uvicorn does;
    a one-line :class:`ReplkitError` if that fails."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(f"{err.name}.")):
            raise ReplkitError(f"no module named {name!r} (searched {cwd} and sys.path)") from None
        raise ReplkitError(f"importing {name}: {describe(err)}") from None
    except BaseException as err:  # the module's code: SystemExit is its error too
        if isinstance(err, KeyboardInterrupt):
            raise
        raise ReplkitError(f"importing {name}: {describe(err)}") from None


def watching(reloader: Reloader) -> list[str]:
    """What ``reloader`` watches, and the failure it is in, if any, as lines to print."""
    if not reloader.running:
        return []
    roots = ", ".join(str(root) for root in reloader.roots)
    failure = [str(reloader.failure).splitlines()[0]] if reloader.failure is not None else []
    return [f"reloading on save under {roots}", *failure]


class Session:
    """An app loaded from ``spec``, served at ``host``/``port`` (``None``: where the app
    says), and, with ``watch``, reloaded and rebuilt on every save: ``True`` watches with
    a reloader of its own, a :class:`Reloader` shares that one (several apps in one
    process must share one), ``False`` watches nothing."""

    def __init__(
        self,
        spec: str,
        *,
        host: str | None = None,
        port: int | None = None,
        watch: bool | Reloader = True,
        report: Callable[[ReloadResult], None] = print_result,
    ) -> None:
        self.spec = spec
        self.module_name, _, attr = spec.partition(":")
        self.attr = attr or None
        self.name = self.module_name.rpartition(".")[2]
        self.host, self.port = host, port
        if watch is not False:
            # Before the app's import: a save made while the app starts is then a change the
            # reloader catches up with once it watches.
            record_imports()
        module = load_app_module(self.module_name)
        wanted = self.attr or "create_connector"
        if not hasattr(module, wanted):
            hint = "" if self.attr else "; for an aiohttp app, name its factory: MODULE:create_app"
            raise ReplkitError(f"module {self.module_name} has no {wanted}{hint}")
        self._declared: conn.Address | None = None
        self._server: Server | None = None
        if self.attr is None and (host is not None or port is not None):
            # The module's own start() and restart() build their connectors: learn the
            # address create_connector() asks for, to serve it at host/port instead.
            self._place(self.build())
        self._owns_reloader = watch is True
        self.reloader = Reloader(report=report) if watch is True else watch or None
        self._unfollow = (
            self.reloader.follow(self._prepare, self._apply) if self.reloader is not None else None
        )

    # What the app is now.

    @property
    def module(self) -> ModuleType:
        """The app's module, as last reloaded."""
        return sys.modules[self.module_name]

    def own(self, verb: str) -> Callable[..., Any] | None:
        """The module's own ``start``, ``stop`` or ``restart``, if it defines one: a function
        that takes no argument (a route handler named ``start`` is not one)."""
        found = getattr(self.module, verb, None) if self.attr is None else None
        try:
            inspect.signature(found).bind()  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return found

    def _call_app(self, what: str, function: Callable[..., Any], **options: Any) -> Any:
        """``function(**options)``, the app's code: what it raises, as one line saying where."""
        try:
            return function(**options)
        except ReplkitError:
            raise
        except BaseException as exc:  # the app's code: SystemExit is its error too
            if isinstance(exc, KeyboardInterrupt):
                raise
            where = list(imports.project_modules().values())
            raise ReplkitError(f"{describe(exc, where)} (in {what})") from None

    @property
    def connector(self) -> Connector | None:
        """The connector answering for the app now; ``None`` when it is not serving."""
        server = self._server
        if (server is None or not server.is_open) and self._declared is not None:
            host, port = conn.placed(self._declared)
            server = find_server(host, port) if port else None
        self._server = server
        return server.target if server is not None and server.is_open else None

    def build(self) -> Connector:
        """A new, unstarted connector from the module as it is now; a one-line
        :class:`ReplkitError` if the app's code raises or returns something unservable."""
        module = self.module
        what = f"{self.module_name}.{self.attr or 'create_connector'}"
        target = getattr(module, self.attr or "create_connector")
        if isinstance(target, web.Application) or not callable(target):
            made = target
        else:
            what += "()"
            made = self._call_app(what, target)
        if isinstance(made, Connector):
            return made
        if isinstance(made, web.Application) or inspect.isawaitable(made):
            host, port = conn.env_address("localhost", 8080)
            return ApplicationConnector(made, host, port, name=what)
        raise ReplkitError(
            f"{what} is {type(made).__name__}: expected a connector or an aiohttp app"
        )

    # The lifecycle.

    def start(self) -> None:
        """Serve the app (with the module's ``start()`` if it has one) and start watching."""
        if self.connector is not None:
            print(f"replkit: already serving on {self.connector.url}; call restart() to reload it")
        else:
            own = self.own("start")
            before = set(open_servers())
            if own is not None:
                self._call_app(f"{self.module_name}.start()", own)
            else:
                new = self.build()
                self._place(new)
                conn.start(new)
            self._server = next((s for s in open_servers() if s not in before), None)
            if self._declared is None and self._server is not None:
                self._declared = (self._server.host, self._server.requested_port)
        if self.reloader is not None and not self.reloader.running:
            self.reloader.start()

    def _place(self, connector: Connector) -> None:
        self._declared = (connector.host, connector.port)
        conn.override_address(self._declared, self.host, self.port)

    def stop(self) -> None:
        """Stop serving (with the module's ``stop()`` if it has one); keep watching."""
        own = self.own("stop")
        if own is not None:
            self._call_app(f"{self.module_name}.stop()", own)
        else:
            conn.stop(self.connector)

    def restart(self, *, drop_streams: bool = False) -> None:
        """Serve a connector built afresh (with the module's ``restart()`` if it has one) on
        the same socket; ``drop_streams`` closes the streams already open."""
        own = self.own("restart")
        if own is not None:
            options = {"drop_streams": True} if drop_streams else {}
            self._call_app(f"{self.module_name}.restart()", own, **options)
        else:
            conn.restart(self.connector, self.build(), drop_streams=drop_streams)

    def reload(self) -> ReloadResult | None:
        """Reload the changed files now, as a save would; ``None`` if none changed."""
        if self.reloader is None:
            raise ReplkitError("not watching any files (started with --no-watch)")
        return self.reloader.reload()

    def close(self) -> None:
        """Stop watching and serving, quietly; on the server's loop, await :meth:`aclose`."""
        self._stop_watching()
        if (connector := self.connector) is not None:
            connector.stop()

    async def aclose(self) -> None:
        """:meth:`close`, awaiting the server's end."""
        self._stop_watching()
        if (connector := self.connector) is not None:
            await connector.stop_async()

    def _stop_watching(self) -> None:
        if self._unfollow is not None:
            self._unfollow()
        if self.reloader is not None and self._owns_reloader:
            self.reloader.stop()

    def status(self) -> list[str]:
        """One line on what serves where, one on what is watched."""
        connector = self.connector
        where = f"serving on {connector.url}" if connector is not None else "not serving"
        lines = [f"{self.spec} {where}"]
        if self.reloader is not None:
            lines.extend(watching(self.reloader))
        return lines

    # The reloader's two steps around the commit of a batch.

    def _prepare(self, batch: Batch) -> Connector | None:
        """Build the new connector from the fresh modules; raising fails the batch."""
        current = self.connector
        if current is None:
            if self.attr is None:
                self.build()  # still checks create_connector() before the commit
            return None
        return self.build()

    def _apply(self, new: Connector | None) -> str | None:
        """Let ``new`` take over (an application's startup runs then: what it raises leaves
        the previous one serving); what the reload report should add, if anything."""
        current = self.connector
        if new is None or current is None:
            return "not serving: start() serves the new code"
        conn.restart(current, new)
        if new.current:
            return None
        return "the new code is served once its startup is done"
