"""replkit.session: an app served, watched and rebuilt on every save, whatever its shape.

The app under test is built unlike the guide's: routes made by helper functions, handlers
from another module, a partial, a class instance, a closure, a dict lookup, an interceptor
added with ``with_interceptors``, settings read once by ``create_connector()``. One event
stream stays open through every edit and must receive each of its events, in order.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from conftest import Pkg, free_port, wait_until

from replkit import connector as conn
from replkit.errors import ReplkitError
from replkit.reload import ReloadResult
from replkit.server import open_servers
from replkit.session import Session

HANDLERS = """\
def hello(request):
    return {"status": 200, "body": "hello v1"}


def other(request):
    return {"status": 200, "body": "other v1"}
"""

APP = """\
import asyncio
import functools

import replkit.aiohttp as hk
from replkit import connector as conn
from replkit import sse

from . import handlers
from .handlers import hello

GREETING = "partial v1"


def greet(text, request):
    return {"status": 200, "body": text}


class Fixed:
    def __init__(self, label):
        self.label = label

    def __call__(self, request):
        return {"status": 200, "body": self.label}


def closure():
    word = "closure v1"

    def handler(request):
        return {"status": 200, "body": word}

    return handler


LOOKUP = {"page": lambda request: {"status": 200, "body": "lookup v1"}}


def setting(context):
    return {**context, "response": {"status": 200, "body": context["setting"]}}


def stamp(context):
    response = context.get("response")
    if response is None:
        return context
    headers = {**(response.get("headers") or {}), "X-Stamp": "interceptor v1"}
    return {**context, "response": {**response, "headers": headers}}


async def ticks(channel, context):
    for i in range(TICKS):
        await channel.send({"name": "tick", "data": i})
        await asyncio.sleep(0.05)
    channel.close()


TICKS = 60


def rows():
    return [
        ("/hello", "get", hello),
        ("/other", "get", handlers.other),
        ("/partial", "get", functools.partial(greet, GREETING)),
        ("/instance", "get", Fixed("instance v1")),
        ("/closure", "get", closure()),
        ("/lookup", "get", LOOKUP["page"]),
        ("/setting", "get", {"name": "setting", "enter": setting}),
        ("/ticks", "get", {"name": "ticks", "enter": lambda c: sse.start_stream(ticks, c)}),
    ]


def with_table(connector_map, table):
    return conn.with_routes(connector_map, list(table))


def create_connector():
    connector_map = conn.default_connector_map(0, "127.0.0.1")
    connector_map = {
        **connector_map,
        "initial_context": {"setting": "context v1"},
        "allowed_origins": ["http://v1.test"],
    }
    connector_map = conn.with_default_interceptors(connector_map)
    connector_map = conn.with_interceptors(connector_map, {"name": "stamp", "leave": stamp})
    return hk.create_connector(with_table(connector_map, rows()), {"shutdown_grace": 0.5})
"""


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()
    except OSError as err:
        return 0, {}, f"error: {err}"


class Reports:
    """The session's report callback: every result, and a way to wait for one."""

    def __init__(self) -> None:
        self.all: list[ReloadResult] = []

    def __call__(self, result: ReloadResult) -> None:
        self.all.append(result)

    def wait_for(self, predicate: Callable[[ReloadResult], bool], what: str) -> ReloadResult:
        return wait_until(lambda: next(filter(predicate, self.all), None), 10, what)


class Stream:
    """An event stream read on a thread from the first byte; ``events()`` waits for its end."""

    def __init__(self, url: str) -> None:
        self.lines: list[str] = []
        self._response = urllib.request.urlopen(url, timeout=20)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._response:
            self.lines.append(line.decode().rstrip("\n"))

    def data(self, timeout: float = 15) -> list[str]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not end"
        return [line.removeprefix("data: ") for line in self.lines if line.startswith("data: ")]


@pytest.fixture
def shapes(pkg: Pkg) -> Iterator[tuple[Pkg, Session, Reports]]:
    pkg.write("handlers.py", HANDLERS)
    pkg.write("app.py", APP)
    reports = Reports()
    session = Session(pkg.dotted("app"), report=reports)
    session.start()
    try:
        yield pkg, session, reports
    finally:
        session.close()
    assert not [server for server in open_servers() if server.is_open]


def edit(pkg: Pkg, file: str, old: str, new: str) -> None:
    path = pkg.root / file
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_a_save_made_while_the_app_starts_is_served(pkg: Pkg) -> None:
    # The handlers save their next version over themselves as they are imported: a save
    # made after Python read the file, before anything watches it.
    pkg.write(
        "handlers.py",
        """\
        import pathlib

        BODY = "hello v1"
        _path = pathlib.Path(__file__)
        if BODY == "hello v1":
            _path.write_text(_path.read_text().replace('BODY = "hello v1"', 'BODY = "hello v2"', 1))
        """,
    )
    pkg.write(
        "app.py",
        """\
        import replkit.aiohttp as hk
        from replkit import connector as conn

        from . import handlers


        def create_connector():
            connector_map = conn.default_connector_map(0, "127.0.0.1")
            connector_map = conn.with_default_interceptors(connector_map)
            hello = lambda request: {"status": 200, "body": handlers.BODY}
            return hk.create_connector(conn.with_routes(connector_map, [("/hello", "get", hello)]))
        """,
    )
    reports = Reports()
    session = Session(pkg.dotted("app"), report=reports)
    session.start()
    try:
        connector = session.connector
        assert connector is not None
        reports.wait_for(lambda r: pkg.dotted("handlers") in r.modules, "handlers reloaded")

        wait_until(lambda: fetch(f"{connector.url}/hello")[2] == "hello v2", 10, "hello v2")
    finally:
        session.close()


def test_every_shape_follows_every_save_while_a_stream_stays_open(
    shapes: tuple[Pkg, Session, Reports],
) -> None:
    pkg, session, reports = shapes
    connector = session.connector
    assert connector is not None
    url = connector.url
    stream = Stream(f"{url}/ticks")
    port = connector.bound_port

    def serves(path: str, text: str) -> None:
        wait_until(lambda: fetch(f"{url}{path}")[2] == text, 10, f"{path} to serve {text!r}")

    for path, text in [
        ("/hello", "hello v1"),
        ("/partial", "partial v1"),
        ("/setting", "context v1"),
    ]:
        assert fetch(f"{url}{path}")[2] == text
    edits = [
        ("handlers.py", '"hello v1"', '"hello v2"', "/hello", "hello v2"),
        ("handlers.py", '"other v1"', '"other v2"', "/other", "other v2"),
        ("app.py", '"partial v1"', '"partial v2"', "/partial", "partial v2"),
        ("app.py", '"instance v1"', '"instance v2"', "/instance", "instance v2"),
        ("app.py", '"closure v1"', '"closure v2"', "/closure", "closure v2"),
        ("app.py", '"lookup v1"', '"lookup v2"', "/lookup", "lookup v2"),
        ("app.py", '"context v1"', '"context v2"', "/setting", "context v2"),
    ]
    for file, old, new, path, text in edits:
        edit(pkg, file, old, new)
        serves(path, text)

    edit(pkg, "app.py", '"interceptor v1"', '"interceptor v2"')
    wait_until(
        lambda: fetch(f"{url}/hello")[1].get("X-Stamp") == "interceptor v2", 10, "the interceptor"
    )
    edit(pkg, "app.py", '"http://v1.test"', '"http://v2.test"')
    wait_until(
        lambda: fetch(f"{url}/hello", {"Origin": "http://v2.test"})[0] == 200, 10, "allowed_origins"
    )
    assert fetch(f"{url}/hello", {"Origin": "http://v1.test"})[0] == 403

    edit(
        pkg,
        "app.py",
        '    ("/hello", "get", hello),\n',
        '    ("/hello", "get", hello),\n    ("/added", "get", handlers.other),\n',
    )
    serves("/added", "other v2")

    # Every save was reported as served, and the socket never moved.
    assert all(result.ok for result in reports.all), reports.all
    assert session.connector is not None and session.connector.bound_port == port
    # The stream opened first ran to its end on the code it started with.
    assert stream.data() == [str(i) for i in range(60)]


def test_a_create_connector_that_raises_keeps_the_previous_one_serving(
    shapes: tuple[Pkg, Session, Reports],
) -> None:
    pkg, session, reports = shapes
    url = session.connector.url  # type: ignore[union-attr]
    path = pkg.root / "app.py"
    good = path.read_text()
    build = '    connector_map = conn.default_connector_map(0, "127.0.0.1")\n'
    broken = good.replace('"partial v1"', '"partial v2"').replace(
        build, build + "    raise RuntimeError('cannot build')\n"
    )
    path.write_text(broken)

    failed = reports.wait_for(lambda r: r.error is not None, "the failed reload")
    line = broken.splitlines().index("    raise RuntimeError('cannot build')") + 1
    assert f"app.py:{line}: RuntimeError: cannot build (in {pkg.dotted('app')}." in str(failed)
    assert str(failed).endswith("(still running the last good code)")
    # The whole batch was rolled back: the module as much as what it serves.
    assert fetch(f"{url}/partial")[2] == "partial v1"
    assert session.module.GREETING == "partial v1"

    path.write_text(good.replace('"partial v1"', '"partial v3"'))
    result = reports.wait_for(lambda r: r.ok and bool(r.modules), "the recovery")
    assert "the failed reload is over" in str(result)
    assert fetch(f"{url}/partial")[2] == "partial v3"


def test_a_save_when_not_serving_says_so(shapes: tuple[Pkg, Session, Reports]) -> None:
    pkg, session, reports = shapes
    session.stop()
    edit(pkg, "handlers.py", '"hello v1"', '"hello v2"')

    result = reports.wait_for(lambda r: r.modules, "the reload")

    assert str(result).endswith("; not serving: start() serves the new code")
    session.start()
    assert fetch(f"{session.connector.url}/hello")[2] == "hello v2"  # type: ignore[union-attr]


def test_a_module_with_only_create_connector_gets_working_controls(pkg: Pkg) -> None:
    pkg.write("handlers.py", HANDLERS)
    pkg.write("app.py", APP)
    session = Session(pkg.dotted("app"), watch=False)
    assert [session.own(verb) for verb in ("start", "stop", "restart")] == [None, None, None]
    try:
        session.start()
        first = session.connector
        assert first is not None and fetch(f"{first.url}/hello")[2] == "hello v1"
        session.restart()
        assert session.connector is not first and session.connector.url == first.url
        session.stop()
        assert session.connector is None
    finally:
        session.close()


def test_the_modules_own_lifecycle_acts_on_the_one_running_server(
    pkg: Pkg, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg.write("handlers.py", HANDLERS)
    declared = free_port()  # what the app asks for; the session serves it on port 0 instead
    pkg.write(
        "app.py",
        APP.replace("default_connector_map(0,", f"default_connector_map({declared},")
        + """
from replkit.lifecycle import Atom, defonce

connector = defonce("connector", lambda: Atom(None))


def start():
    connector.reset(conn.start(create_connector()))


def stop():
    conn.stop(connector.deref())
    connector.reset(None)


def restart():
    connector.reset(conn.restart(connector.deref(), create_connector()))
""",
    )
    reports = Reports()
    session = Session(pkg.dotted("app"), port=0, report=reports)
    try:
        session.start()
        url = session.connector.url  # type: ignore[union-attr]
        assert session.connector.bound_port != declared  # type: ignore[union-attr]
        edit(pkg, "handlers.py", '"hello v1"', '"hello v2"')
        reports.wait_for(lambda r: r.modules, "the reload")
        assert fetch(f"{url}/hello")[2] == "hello v2"
        module = session.module
        module.start()  # the module's atom holds a connector the reload replaced
        assert capsys.readouterr().out == (
            f"replkit: already serving on {url}; call restart() to reload it\n"
        )
        module.restart()
        assert fetch(f"{url}/hello")[2] == "hello v2"
        module.stop()
        assert session.connector is None and fetch(f"{url}/hello")[0] == 0
        module.start()  # the free port chosen for --port 0 is kept
        assert session.connector is not None and session.connector.url == url
    finally:
        session.close()


def test_an_aiohttp_app_is_served_and_rebuilt(pkg: Pkg) -> None:
    pkg.write(
        "web.py",
        """\
        from aiohttp import web

        EVENTS = []


        async def page(request):
            return web.Response(text="page v1")


        async def create_app():
            app = web.Application()
            app.router.add_get("/", page)

            async def started(app):
                EVENTS.append(("startup", "v1"))

            async def cleaned(app):
                EVENTS.append(("cleanup", "v1"))

            app.on_startup.append(started)
            app.on_cleanup.append(cleaned)
            return app
        """,
    )
    reports = Reports()
    session = Session(f"{pkg.dotted('web')}:create_app", port=0, report=reports)
    try:
        session.start()
        url = session.connector.url  # type: ignore[union-attr]
        assert fetch(f"{url}/")[2] == "page v1"
        events = session.module.EVENTS
        edit(pkg, "web.py", '"v1"', '"v2"')
        edit(pkg, "web.py", '"page v1"', '"page v2"')
        wait_until(lambda: fetch(f"{url}/")[2] == "page v2", 10, "the new app")
        wait_until(lambda: ("cleanup", "v1") in events, 10, "the old app's cleanup")
        assert events == [("startup", "v1"), ("cleanup", "v1")]
        assert session.module.EVENTS == [("startup", "v2")]
    finally:
        session.close()


def test_bad_specs_are_one_line(pkg: Pkg) -> None:
    pkg.write("plain.py", "X = 1\n")
    with pytest.raises(ReplkitError, match=r"has no create_connector; for an aiohttp app"):
        Session(pkg.dotted("plain"))
    with pytest.raises(ReplkitError, match=r"has no create_app$"):
        Session(f"{pkg.dotted('plain')}:create_app")
    session = Session(f"{pkg.dotted('plain')}:X", watch=False)
    with pytest.raises(ReplkitError, match=r"plain.X is int: expected a connector or an aiohttp"):
        session.start()


def test_two_apps_on_port_0_in_one_process(pkg: Pkg) -> None:
    pkg.write("handlers.py", HANDLERS)
    pkg.write("app.py", APP)
    pkg.write(
        "second.py", APP.replace("from . import handlers", "from . import handlers as handlers")
    )
    one = Session(pkg.dotted("app"), watch=False)
    two = Session(pkg.dotted("second"), watch=False)
    try:
        one.start()
        two.start()
        assert one.connector is not None and two.connector is not None
        assert one.connector.bound_port != two.connector.bound_port
        assert [c.url for c in conn.serving()] == [one.connector.url, two.connector.url]
    finally:
        one.close()
        two.close()


def test_handlers_named_like_the_lifecycle_are_not_taken_for_it(pkg: Pkg) -> None:
    pkg.write("handlers.py", HANDLERS)
    pkg.write(
        "app.py",
        APP
        + """

def start(request):  # a route handler, not the module's start()
    return {"status": 200, "body": "a handler"}


def stop():
    raise RuntimeError("cannot stop")
""",
    )
    session = Session(pkg.dotted("app"), watch=False)
    try:
        assert session.own("start") is None and session.own("stop") is not None
        session.start()  # with create_connector(), as a module without start() is
        assert session.connector is not None
        with pytest.raises(ReplkitError) as info:
            session.stop()
        line = APP.count("\n") + 8
        assert str(info.value).endswith(
            f"app.py:{line}: RuntimeError: cannot stop (in {pkg.dotted('app')}.stop())"
        )
    finally:
        session.close()
