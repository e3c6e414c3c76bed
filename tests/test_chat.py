"""The chat demo (app/chat.py): its HTTP API, and its page in Debian's Chromium, whose
EventSource must resume with no gap and no duplicate when the server ends its stream, by
dropping streams or across a hot reload of app/chat.py."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ROOT, Process, app_map, replkit_command, served_url
from test_topic import read_events

import app.chat as chat
from replkit.aiohttp import AiohttpConnector, create_connector


def post(url: str, text: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/messages",
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


async def test_post_get_and_stream_messages(serve: Callable[..., AiohttpConnector]) -> None:
    server = serve(app_map(chat.routes))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/messages") as response:
            before = await response.json()
        async with session.get(
            f"{server.url}/events", params={"lastEventId": before["last_event_id"]}
        ) as stream:
            status, answer = post(server.url, "héllo 🙂\nsecond line")
            assert status == 202
            [event] = await read_events(stream, lambda e: e["id"] == answer["id"])
        assert event["event"] == "message"
        assert json.loads(event["data"]) == {"text": "héllo 🙂\nsecond line"}
        async with session.get(f"{server.url}/messages") as response:
            after = await response.json()
        assert after["last_event_id"] == answer["id"]
        assert after["messages"][-1] == {"id": answer["id"], "text": "héllo 🙂\nsecond line"}
        for bad in ["", "   ", "x" * (chat.MAX_TEXT + 1)]:
            assert post(server.url, bad)[0] == 400
        async with session.post(f"{server.url}/messages", data="text=form") as response:
            assert response.status == 400
            assert (await response.json())["error"].startswith("send JSON")

        async with session.get(f"{server.url}/") as response:
            page = await response.text()
            assert '<script src="/chat.js"></script>' in page
            assert "<script>" not in page  # no inline script: the CSP can forbid them
            assert response.headers["Content-Security-Policy"].startswith(  # the default one
                "object-src 'none'; script-src 'self' 'nonce-"
            )
        async with session.get(f"{server.url}/chat.js") as response:
            assert response.headers["Content-Type"].startswith("text/javascript")
            assert "new EventSource" in await response.text()


class Browser:
    """Debian's Chromium on a page, via tests/js/browser-console.mjs: its console, live."""

    def __init__(self, spawn: Callable[..., Process], url: str, until: str) -> None:
        script = str(ROOT / "tests/js/browser-console.mjs")
        self.process = spawn("node", script, url, until, "60000")
        self.console: list[str] = []

    def wait_for(self, text: str, count: int = 1, timeout: float = 20) -> None:
        """Wait until ``count`` console messages equal (or start with) ``text``."""

        def seen() -> int:
            return sum(line == text or line.startswith(f"{text} ") for line in self.console)

        while seen() < count:
            line = json.loads(self.process.next_line(timeout))
            assert "pageerror" not in line and "timeout" not in line, line
            self.console.append(line.get("console", ""))

    def wait_for_message(self, text: str, timeout: float = 20) -> None:
        while not any(shown == text for _, shown in self.messages()):
            self.wait_for("message", len(self.messages()) + 1, timeout)

    def messages(self) -> list[tuple[int, str]]:
        shown = [line.split(" ", 2) for line in self.console if line.startswith("message ")]
        return [(int(ident.rpartition("-")[2]), text) for _, ident, text in shown]


def check_resumed(browser: Browser, texts: list[str]) -> None:
    """Every message shown once, in id order with no gap; ours among them, in order."""
    shown = browser.messages()
    ids = [ident for ident, _ in shown]
    assert ids == list(range(ids[0], ids[0] + len(ids))), shown
    ours = [text for _, text in shown if text.lower() in {t.lower() for t in texts}]
    assert [t.lower() for t in ours] == [t.lower() for t in texts]
    assert "reconnecting" in browser.console
    assert not [line for line in browser.console if line.startswith("resync")]


def test_the_page_resumes_after_the_server_drops_its_stream(
    serve: Callable[..., AiohttpConnector], spawn: Callable[..., Process]
) -> None:
    server = serve(app_map(chat.routes))
    browser = Browser(spawn, f"{server.url}/", "the end")
    browser.wait_for("open")
    texts = [f"before {i}" for i in range(3)]
    for text in texts:
        post(server.url, text)
    browser.wait_for("message", len(browser.messages()) + 3)

    replacement = create_connector(app_map(chat.routes, port=server.bound_port), None)
    try:
        replacement.take_over(server, drop_streams=True)  # restart(drop_streams=True)
        texts += away_and_back(browser, replacement.url)
        browser.wait_for_message("the end")
    finally:
        replacement.stop()
    check_resumed(browser, texts)


class LiveChat:
    """A copy of app/ served by ``replkit serve app.chat`` with hot reload on."""

    def __init__(self, tmp_path: Path, spawn: Callable[..., Process]) -> None:
        shutil.copytree(
            ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__")
        )
        self.source = tmp_path / "app" / "chat.py"
        self.process = spawn(*replkit_command("serve", "app.chat", "--port", "0"), cwd=tmp_path)
        line = self.process.next_line()
        self.url = served_url(line)

    def edit(self, old: str, new: str) -> None:
        text = self.source.read_text()
        assert old in text, old
        self.source.write_text(text.replace(old, new))


@pytest.mark.timeout(90)
def test_the_page_resumes_across_a_hot_reload_of_the_chat_module(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    app = LiveChat(tmp_path, spawn)
    browser = Browser(spawn, f"{app.url}/", "THE END")
    browser.wait_for("open")
    texts = [f"before {i}" for i in range(3)]
    for text in texts:
        post(app.url, text)
    browser.wait_for("message", 3)

    # The reloaded module publishes upper-case text; its __after_reload__ ends the open
    # streams, and the page must come back to the same topic (defonce), not a new one.
    app.edit('{"text": text}})', '{"text": text.upper()}})')
    texts += away_and_back(browser, app.url)
    browser.wait_for_message("THE END")
    check_resumed(browser, texts)
    assert [text for _, text in browser.messages()[-3:]] == ["WHILE AWAY 2", "BACK", "THE END"]
    assert app.process.wait_for_line(lambda line: line.startswith("reloaded app.chat in"))


def away_and_back(browser: Browser, url: str) -> list[str]:
    """Post three messages while the page reconnects and two once it is back; their texts."""
    browser.wait_for("reconnecting")
    away = [f"while away {i}" for i in range(3)]
    for text in away:
        post(url, text)
    browser.wait_for("open", 2)
    back = ["back", "the end"]
    for text in back:
        post(url, text)
    return away + back
