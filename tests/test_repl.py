"""``replkit repl``: a real ptpython in a real terminal (tmux), driven as a person would."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, free_port, wait_until
from test_hot_reload import AIOHTTP_APP, SHAPES_APP, SHAPES_HANDLERS, fetch


class Terminal:
    """A tmux server of our own (its own socket) running one command in an 160x50 pane."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.socket = f"replkit-test-{uuid.uuid4().hex[:8]}"
        shell_command = " ".join(map(_quote, command))
        self.tmux(
            "new-session", "-d", "-s", "t", "-x", "160", "-y", "50", "-c", str(cwd),
            f"env XDG_DATA_HOME={_quote(str(cwd))} {shell_command}",
        )  # fmt: skip

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return result.stdout if result.returncode == 0 else ""

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-S", "-200", "-t", "t")

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", line)
        self.tmux("send-keys", "-t", "t", "Enter")

    def shows(self, text: str, timeout: float = 10.0) -> str:
        return wait_until(lambda: text in self.screen() and self.screen(), timeout, repr(text))

    def alive(self) -> bool:
        return (
            subprocess.run(
                ["tmux", "-L", self.socket, "has-session", "-t", "t"],
                capture_output=True,
                timeout=10,
            ).returncode
            == 0
        )

    def close(self) -> None:
        if self.alive():
            self.tmux("kill-server")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.fixture
def repl(tmp_path: Path) -> Iterator[tuple[Terminal, str, Path]]:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "replkit",
        "repl",
        "app.sse_demo",
        "--port",
        str(port),
        "--no-start",
    ]
    terminal = Terminal(command, tmp_path)
    try:
        yield terminal, f"http://localhost:{port}", tmp_path / "app" / "sse_demo.py"
    finally:
        terminal.close()


def test_the_guide_workflow_in_ptpython(repl: tuple[Terminal, str, Path]) -> None:
    terminal, url, source = repl
    terminal.shows("sse_demo not serving yet")
    terminal.shows(">>>")
    assert fetch(url).startswith("error:")

    terminal.type("sse_demo.start()")
    wait_until(lambda: fetch(url) == "Hello, World!", what="the server to start")

    terminal.type("sse_demo.start()")
    terminal.shows(f"replkit: already serving on {url}; call restart() to reload it")

    terminal.type("sse_demo.stop()")
    wait_until(lambda: fetch(url).startswith("error:"), what="the server to stop")
    terminal.type("sse_demo.stop()")
    terminal.shows("replkit: not running; nothing to stop")

    terminal.type("sse_demo.restart()")
    wait_until(lambda: fetch(url) == "Hello, World!", what="the restart")

    source.write_text(source.read_text().replace("Hello, World!", "Hello from an edit!"))
    wait_until(lambda: fetch(url) == "Hello from an edit!", what="the edit to be served")
    terminal.shows("reloaded app.sse_demo in")
    terminal.type("sse_demo.home_page(None)")
    terminal.shows("{'status': 200, 'body': 'Hello from an edit!'}")

    # A replkit error at the prompt is one line, not a traceback.
    terminal.type("sse_demo.routes = {('/', 'gett', sse_demo.home_page)}; sse_demo.restart()")
    terminal.shows("replkit: route ('/', 'gett', ...): unknown verb 'gett'")
    assert "Traceback" not in terminal.screen()
    assert fetch(url) == "Hello from an edit!"

    terminal.type("exit()")
    wait_until(lambda: not terminal.alive(), what="ptpython to exit")
    assert fetch(url).startswith("error:")


INTERPRETERS = {
    # name: (command after the interpreter path, how to leave)
    "python -i": (["-i", "-q"], ["exit()"]),
    "ptpython": (["-m", "ptpython"], ["exit()"]),
    "ptpython --asyncio": (["-m", "ptpython", "--asyncio"], ["C-d", "y"]),
    "ipython": (["-m", "IPython", "--no-banner"], ["exit()"]),
}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_start_stop_restart_from_any_interactive_python(tmp_path: Path, interpreter: str) -> None:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    url = f"http://localhost:{port}"
    arguments, leave = INTERPRETERS[interpreter]
    terminal = Terminal(["env", f"REPLKIT_PORT={port}", sys.executable, *arguments], tmp_path)
    try:
        wait_until(
            lambda: ">>>" in terminal.screen() or "In [1]" in terminal.screen(), 20, "a prompt"
        )
        terminal.type("import app.sse_demo as sse_demo; sse_demo.start()")
        wait_until(lambda: fetch(url) == "Hello, World!", 10, "the server to start")
        terminal.type("sse_demo.stop()")
        wait_until(lambda: fetch(url).startswith("error:"), 10, "the server to stop")
        terminal.type("sse_demo.restart()")
        wait_until(lambda: fetch(url) == "Hello, World!", 10, "the restart")
        terminal.type("sse_demo.start()")
        terminal.shows("replkit: already serving on")
        for key in leave:
            if key.startswith("C-"):
                terminal.tmux("send-keys", "-t", "t", key)
            else:
                terminal.type(key)
        wait_until(lambda: not terminal.alive(), 10, f"{interpreter} to exit")
        assert fetch(url).startswith("error:")
    finally:
        terminal.close()


def test_the_replkit_magic_in_terminal_ipython(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    url = f"http://localhost:{port}"
    command = ["env", f"REPLKIT_PORT={port}", sys.executable, "-m", "IPython", "--no-banner"]
    terminal = Terminal(command, tmp_path)
    try:
        terminal.shows("In [1]", 20)
        terminal.type("%load_ext replkit")
        terminal.type("%replkit start app.sse_demo")
        terminal.shows(f"serving on {url}")
        assert fetch(url) == "Hello, World!"
        source = tmp_path / "app" / "sse_demo.py"
        source.write_text(source.read_text().replace("Hello, World!", "Hello, IPython!"))
        wait_until(lambda: fetch(url) == "Hello, IPython!", what="the save to be served")
        terminal.type("%replkit restart")
        terminal.type("%replkit nonsense")
        terminal.shows("replkit: usage: %replkit start APP [--host H] [--port P] | stop [APP]")
        assert "Traceback" not in terminal.screen()
        terminal.type("%replkit stop")
        terminal.shows("not serving")
        assert fetch(url).startswith("error:")
        terminal.type("exit()")
        wait_until(lambda: not terminal.alive(), 10, "IPython to exit")
    finally:
        terminal.close()


def test_an_app_with_only_create_connector_in_the_repl(tmp_path: Path) -> None:
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "__init__.py").write_text("")
    (tmp_path / "shapes" / "handlers.py").write_text(SHAPES_HANDLERS)
    (tmp_path / "shapes" / "app.py").write_text(SHAPES_APP)
    port = free_port()
    url = f"http://localhost:{port}"
    command = [sys.executable, "-m", "replkit", "repl", "shapes.app", "--port", str(port)]
    terminal = Terminal(command, tmp_path)
    try:
        banner = terminal.shows(">>>", 20)
        assert f"shapes.app serving on {url}" in banner
        assert "start()  stop()  restart()   control the server\n" in banner  # no app.start()
        assert fetch(url) == "hello v1"
        curl = subprocess.Popen(["curl", "-sN", f"{url}/ticks"], stdout=subprocess.PIPE)
        handlers = tmp_path / "shapes" / "handlers.py"
        handlers.write_text(SHAPES_HANDLERS.replace("hello v1", "hello v2"))
        wait_until(lambda: fetch(url) == "hello v2", what="the save to be served")
        terminal.shows("reloaded shapes.handlers, shapes.app in")
        out, _ = curl.communicate(timeout=15)
        assert [line for line in out.decode().splitlines() if line] == [
            f"data: {i}" for i in range(40)
        ]
        terminal.type("stop()")
        wait_until(lambda: fetch(url).startswith("error:"), what="stop()")
        terminal.type("start()")
        wait_until(lambda: fetch(url) == "hello v2", what="start()")
        terminal.type("restart()")
        terminal.type("app.create_connector")
        terminal.shows("<function create_connector at")
        assert "Traceback" not in terminal.screen()
        terminal.type("exit()")
        wait_until(lambda: not terminal.alive(), what="ptpython to exit")
        assert fetch(url).startswith("error:")
    finally:
        terminal.close()


def test_a_plain_aiohttp_app_in_the_repl(tmp_path: Path) -> None:
    source = tmp_path / "web_app.py"
    source.write_text(AIOHTTP_APP)
    port = free_port()
    url = f"http://localhost:{port}"
    command = [sys.executable, "-m", "replkit", "repl", "web_app:create_app", "--port", str(port)]
    terminal = Terminal(command, tmp_path)
    try:
        banner = terminal.shows(">>>", 20)
        assert f"web_app:create_app serving on {url}" in banner
        assert fetch(url) == "page v1"
        curl = subprocess.Popen(["curl", "-sN", f"{url}/ticks"], stdout=subprocess.PIPE)
        source.write_text(AIOHTTP_APP.replace('VERSION = "v1"', 'VERSION = "v2"'))
        wait_until(lambda: fetch(url) == "page v2", what="the save to be served")
        out, _ = curl.communicate(timeout=15)
        assert [line for line in out.decode().splitlines() if line.startswith("data:")] == [
            f"data: v1 {i}" for i in range(40)
        ]
        terminal.type("restart()")
        terminal.type("web_app.VERSION")
        terminal.shows("'v2'")
        wait_until(lambda: "cleanup v1" in (tmp_path / "hooks.log").read_text(), what="cleanup")
        terminal.type("exit()")
        wait_until(lambda: not terminal.alive(), what="ptpython to exit")
        assert (tmp_path / "hooks.log").read_text().splitlines()[-1] == "cleanup v2"
    finally:
        terminal.close()
