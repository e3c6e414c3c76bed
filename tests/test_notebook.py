"""Jupyter: the guide's notebook run top to bottom, and a real kernel's rough edges."""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import ROOT, free_port, wait_until
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from test_hot_reload import AIOHTTP_APP, SHAPES_APP, SHAPES_HANDLERS


def texts(cell: Any) -> str:
    """Everything a code cell showed, as text, but for reload reports: the watcher's thread
    prints them, and they land in whichever cell is running then."""
    shown = []
    for output in cell.get("outputs", []):
        text = output.get("text") or output.get("data", {}).get("text/plain", "")
        if output.get("output_type") == "stream":
            lines = text.splitlines(keepends=True)
            text = "".join(line for line in lines if not line.startswith("reloaded app."))
        shown.append(text)
    return "".join(shown)


def test_the_guide_notebook_runs_top_to_bottom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    source = (tmp_path / "app" / "sse_demo.py").read_text()
    port = free_port()
    monkeypatch.setenv("REPLKIT_PORT", str(port))
    notebook = nbformat.read(ROOT / "notebooks" / "sse_demo.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    shown = [texts(cell) for cell in notebook.cells if cell.cell_type == "code"]
    assert f"serving on http://localhost:{port}" in shown[1]
    assert shown[2] == "'Hello, World!'"
    assert shown[3].startswith("text/event-stream; charset=UTF-8\n")
    assert [line.split("data: ")[1] for line in shown[3].splitlines()[1:]] == [
        str(i) for i in range(10)
    ]
    assert shown[4] == "'Hello from a notebook cell!'"
    assert re.fullmatch(r"served \d+ ms after the save\n", shown[5])
    assert shown[6] == "'Hello, World!'"
    assert shown[7] == "not serving\n"
    assert shown[8:11] == ["'hello, world'", "('HELLO, WORLD!', 'bye')", "'bye!!'"]
    assert shown[11] == "not serving\n"
    assert (tmp_path / "app" / "sse_demo.py").read_text() == source  # put back as it was
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # nothing left listening


class Kernel:
    """A real IPython kernel in ``cwd``, run cell by cell."""

    def __init__(self, cwd: Path) -> None:
        self.manager, self.client = start_new_kernel(kernel_name="python3", cwd=str(cwd))

    def run(self, code: str, timeout: float = 30) -> tuple[str, str, str | None]:
        """Run ``code``; return its stdout, its stderr and the error name, if any."""
        out: list[str] = []
        err: list[str] = []
        error: list[str] = []

        def collect(message: dict[str, Any]) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                (out if content["name"] == "stdout" else err).append(content["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                error.append(content["ename"])
                err.append("\n".join(content["traceback"]))

        self.client.execute_interactive(code, timeout=timeout, output_hook=collect)
        return "".join(out), "".join(err), error[0] if error else None

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Kernel, int]]:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    monkeypatch.setenv("REPLKIT_PORT", str(port))
    started = Kernel(tmp_path)
    try:
        started.run("%load_ext replkit\nimport asyncio, threading, aiohttp")
        yield started, port
    finally:
        started.close()


GET = """
async with aiohttp.ClientSession() as session:
    async with session.get("http://localhost:{port}{path}") as response:
        print(response.status, await response.text())
"""


def get(kernel: Kernel, port: int, path: str) -> str:
    """``GET path`` from a cell, as ``"STATUS BODY\\n"``; what the cell raised, if it did."""
    out, err, error = kernel.run(GET.format(port=port, path=path))
    assert error is None, err
    return out


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def replkit_threads(kernel: Kernel) -> str:
    return kernel.run("print([t.name for t in threading.enumerate() if 'replkit' in t.name])")[0]


def test_error_paths_in_a_kernel(kernel: tuple[Kernel, int]) -> None:
    k, port = kernel
    started = k.run("%replkit start app.sse_demo")[0]
    assert started.startswith(f"app.sse_demo serving on http://localhost:{port}\n")
    for _ in range(3):  # re-running the cell that starts the server
        out, _, error = k.run("sse_demo.start()")
        assert (out, error) == (
            f"replkit: already serving on http://localhost:{port}; call restart() to reload it\n",
            None,
        )
    assert k.run("from replkit import connector as conn; print(len(conn.serving()))")[0] == "1\n"

    k.run("sse_demo.stop()")
    assert port_is_free(port)
    out, err, error = k.run("sse_demo.stop()")
    assert (out, error) == ("replkit: not running; nothing to stop\n", None)

    k.run("def boom(request):\n    raise RuntimeError('handler failed')\n"
          "sse_demo.routes = {('/', 'get', sse_demo.home_page), ('/boom', 'get', boom)}\n"
          "sse_demo.start()")  # fmt: skip
    assert get(k, port, "/boom") == "500 Internal Server Error\n"
    assert get(k, port, "/") == "200 Hello, World!\n"

    out, err, error = k.run(
        "sse_demo.routes = {('/', 'gett', sse_demo.home_page)}\nsse_demo.restart()"
    )
    assert err.strip() == (
        "replkit: route ('/', 'gett', ...): unknown verb 'gett'; "
        "expected one of get, post, put, delete, patch, head, options, any"
    )
    assert "Traceback" not in err
    assert k.run("%replkit frobnicate")[1].strip() == (
        "replkit: usage: %replkit start APP [--host H] [--port P] | stop [APP] | restart | "
        "reload | status"
    )
    assert get(k, port, "/") == "200 Hello, World!\n"  # still serving
    k.run("%replkit stop")
    assert port_is_free(port)
    assert replkit_threads(k) == "[]\n"


def test_interrupting_the_kernel_leaves_the_server_serving(
    kernel: tuple[Kernel, int], tmp_path: Path
) -> None:
    k, port = kernel
    k.run("%replkit start app.sse_demo")
    # Interrupted once the cell's own code runs: a SIGINT that lands in ipykernel's output
    # machinery (between execute_input and the cell) can leave the kernel's stdout silent.
    sleeping = tmp_path / "sleeping"
    cell = f"import pathlib, time\npathlib.Path({str(sleeping)!r}).touch()\ntime.sleep(60)"
    message_id = k.client.execute(cell)
    wait_until(sleeping.exists, 10, "the cell to run")
    k.manager.interrupt_kernel()
    reply = k.client.get_shell_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == message_id
    assert (
        reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    )
    assert get(k, port, "/") == "200 Hello, World!\n"
    k.run("%replkit stop")
    assert port_is_free(port)
    assert replkit_threads(k) == "[]\n"


def test_restarting_the_kernel_frees_the_port(kernel: tuple[Kernel, int]) -> None:
    k, port = kernel
    k.run("%replkit start app.sse_demo")
    assert not port_is_free(port)
    k.manager.restart_kernel(now=True)
    wait_until(lambda: port_is_free(port), 10, f"port {port} to be free after the restart")
    assert k.manager.is_alive()
    k.client.wait_for_ready(timeout=30)
    assert k.run("print('fresh kernel')")[0] == "fresh kernel\n"


def test_two_apps_on_port_0_in_one_kernel_follow_a_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPLKIT_PORT", raising=False)
    shapes = tmp_path / "shapes"
    shapes.mkdir()
    (shapes / "__init__.py").write_text("")
    (shapes / "handlers.py").write_text(SHAPES_HANDLERS)
    (shapes / "app.py").write_text(SHAPES_APP)
    (shapes / "second.py").write_text(SHAPES_APP.replace("stamp v1", "second v1"))
    k = Kernel(tmp_path)
    try:
        k.run("%load_ext replkit\nimport aiohttp, threading")
        assert k.run("%replkit start shapes.app --port 0")[2] is None
        out, err, error = k.run("%replkit start shapes.second --port 0")
        assert error is None, err
        urls = re.findall(r"shapes\.\w+ serving on (http://localhost:\d+)", out)
        assert len(set(urls)) == 2, out
        k.run(FETCHER)
        k.run(f"stream = asyncio.ensure_future(fetch({urls[0] + '/ticks'!r}))")

        (shapes / "handlers.py").write_text(SHAPES_HANDLERS.replace("hello v1", "hello v2"))
        for url in urls:
            wait_until(lambda u=url: _get(k, u) == "hello v2", 10, f"{url} to serve the save")

        (shapes / "app.py").write_text(
            SHAPES_APP.replace("def create_connector():\n", "def create_connector():\n    1 / 0\n")
        )
        wait_until(lambda: _get(k, urls[1]) == "hello v2", 10, "the second app")
        (shapes / "handlers.py").write_text(SHAPES_HANDLERS.replace("hello v1", "hello v3"))
        # app.py is broken: the batch fails for both apps, and both keep the last good code.
        wait_until(lambda: "ZeroDivisionError" in k.run("%replkit reload")[0], 10, "the failure")
        assert [_get(k, url) for url in urls] == ["hello v2", "hello v2"]
        (shapes / "app.py").write_text(
            SHAPES_APP.replace("import asyncio\n", "while True:\n    pass\n")
        )

        def stuck_status() -> str | None:
            status = k.run("%replkit status")[0]
            return status if "reload stuck" in status else None

        status = wait_until(stuck_status, 10, "the stuck report in %replkit status")
        assert "reload stuck: shapes/app.py still executing after" in status
        assert [_get(k, url) for url in urls] == ["hello v2", "hello v2"]
        (shapes / "app.py").write_text(SHAPES_APP)
        for url in urls:
            wait_until(lambda u=url: _get(k, u) == "hello v3", 10, f"{url} to recover")

        out = k.run("print(await stream)")[0]
        assert [line for line in out.splitlines() if line] == [f"data: {i}" for i in range(40)]
        k.run("%replkit stop")
        assert replkit_threads(k) == "[]\n"
    finally:
        k.close()


FETCHER = """
import asyncio

async def fetch(url):
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return (await response.text()).replace("\\n\\n", "\\n")
"""


def _get(k: Kernel, url: str) -> str:
    return k.run(f"print(await fetch({url + '/'!r}))")[0].strip()


def test_a_plain_aiohttp_app_in_a_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLKIT_PORT", raising=False)
    source = tmp_path / "web_app.py"
    source.write_text(AIOHTTP_APP)
    k = Kernel(tmp_path)
    try:
        k.run("%load_ext replkit\nimport aiohttp, threading")
        out, err, error = k.run("%replkit start web_app:create_app --port 0")
        assert error is None, err
        (url,) = re.findall(r"web_app:create_app serving on (http://localhost:\d+)", out)
        k.run(FETCHER)
        assert _get(k, url) == "page v1"
        k.run(f"stream = asyncio.ensure_future(fetch({url + '/ticks'!r}))")
        source.write_text(AIOHTTP_APP.replace('VERSION = "v1"', 'VERSION = "v2"'))
        wait_until(lambda: _get(k, url) == "page v2", 10, "the save to be served")
        out = k.run("print(await stream)")[0]
        assert [line for line in out.splitlines() if line.startswith("data:")] == [
            f"data: v1 {i}" for i in range(40)
        ]
        log = tmp_path / "hooks.log"
        wait_until(lambda: "cleanup v1" in log.read_text(), 10, "the replaced app's cleanup")
        k.run("%replkit stop")
        wait_until(lambda: log.read_text().endswith("cleanup v2\n"), 10, "the app's cleanup")
        assert replkit_threads(k) == "[]\n"
    finally:
        k.close()
