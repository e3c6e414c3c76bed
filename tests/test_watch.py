"""replkit.watch: the Reloader, which turns saves into reload batches without ever stalling.

Every test builds its own package (``rk_<uuid>``, the ``pkg`` fixture of conftest) under
``tmp_path`` and stops every reloader it starts. Waits are polls or events with a deadline.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import watchfiles
from conftest import SAVES_ITSELF, Pkg, wait_until

from replkit import watch
from replkit.reload import ReloadResult
from replkit.watch import Reloader

DEADLINE = 5.0


class Reports:
    """A ``report`` callback that keeps every result and lets a test wait for one."""

    def __init__(self) -> None:
        self.all: list[ReloadResult] = []
        self._queue: queue.Queue[ReloadResult] = queue.Queue()

    def __call__(self, result: ReloadResult) -> None:
        self.all.append(result)
        self._queue.put(result)

    def wait_for(self, predicate: Callable[[ReloadResult], bool], what: str) -> ReloadResult:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                result = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no report of {what} within {DEADLINE} s: {self.all}"
                ) from None
            if predicate(result):
                return result

    def reloaded(self, module: str) -> ReloadResult:
        return self.wait_for(
            lambda r: r.error is None and module in r.modules, f"{module} reloaded"
        )


def reload_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "replkit-reload"}


@pytest.fixture
def watching(pkg: Pkg) -> Iterator[Callable[..., tuple[Reloader, Reports]]]:
    """Start Reloaders on ``pkg.root``; all are stopped, and their threads gone, afterwards."""
    started: list[Reloader] = []
    before = reload_threads()

    def start(**options: Any) -> tuple[Reloader, Reports]:
        reports = Reports()
        reloader = Reloader([pkg.root], report=reports, **options)
        started.append(reloader)
        reloader.start()
        return reloader, reports

    yield start
    for reloader in started:
        reloader.stop()
    assert reload_threads() <= before


# --- Reloader.reload --------------------------------------------------------------------


def test_reload_now_reloads_only_what_changed_under_the_roots(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.write("b.py", "VALUE = 1\n")
    pkg.write("inner/__init__.py", "VALUE = 1\n")
    pkg.load("a")
    pkg.load("b")
    pkg.load("inner")
    reloader = Reloader([pkg.root / "inner"])
    assert reloader.reload() is None

    pkg.write("a.py", "VALUE = 2\n")  # outside the root
    pkg.write("b.py", "VALUE = 1\n")  # same content
    assert reloader.reload() is None
    pkg.write("inner/__init__.py", "VALUE = 2\n")
    result = reloader.reload()

    assert result is not None and result.modules == (pkg.dotted("inner"),)
    assert pkg.current("inner").VALUE == 2 and pkg.current("a").VALUE == 1
    assert reloader.reload() is None


# --- the watcher ------------------------------------------------------------------------


def test_saving_a_file_reloads_it(pkg: Pkg, watching: Callable[..., Any]) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    _, reports = watching()
    pkg.write("a.py", "VALUE = 2\n")  # right after start(): the watcher must already see it

    reports.reloaded(pkg.dotted("a"))

    assert pkg.current("a").VALUE == 2


def test_start_returns_only_once_the_watcher_is_active(
    pkg: Pkg, watching: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_watch = watchfiles.watch

    def slow_watch(*paths: Any, **options: Any) -> Iterator[Any]:
        time.sleep(0.3)  # stands for a large tree, whose watches take a while to set up
        yield from real_watch(*paths, **options)

    monkeypatch.setattr(watchfiles, "watch", slow_watch)
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    _, reports = watching()
    pkg.write("a.py", "VALUE = 2\n")

    reports.reloaded(pkg.dotted("a"))


def test_saving_a_package_init_reloads_the_package(pkg: Pkg, watching: Callable[..., Any]) -> None:
    pkg.write("sub/__init__.py", "VALUE = 1\n")
    pkg.load("sub")
    _, reports = watching()
    pkg.write("sub/__init__.py", "VALUE = 2\n")

    reports.reloaded(pkg.dotted("sub"))

    assert pkg.current("sub").VALUE == 2


def test_an_atomic_rename_save_reloads(pkg: Pkg, watching: Callable[..., Any]) -> None:
    path = pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    _, reports = watching()
    temporary = path.with_name("a.py.tmp")
    temporary.write_text("VALUE = 2\n")
    os.replace(temporary, path)

    reports.reloaded(pkg.dotted("a"))

    assert pkg.current("a").VALUE == 2


def test_a_vim_style_save_reloads_once(pkg: Pkg, watching: Callable[..., Any]) -> None:
    path = pkg.write("a.py", "VALUE = 1\n")
    pkg.write("b.py", "VALUE = 1\n")
    pkg.load("a")
    pkg.load("b")
    _, reports = watching()
    probe = pkg.root / "4913"
    probe.write_text("")
    probe.unlink()
    backup = path.with_name("a.py~")
    os.replace(path, backup)
    path.write_text("VALUE = 2\n")
    backup.unlink()
    reports.reloaded(pkg.dotted("a"))
    pkg.write("b.py", "VALUE = 2\n")  # a later save, to know every earlier event was handled
    reports.reloaded(pkg.dotted("b"))

    assert pkg.current("a").VALUE == 2
    assert [result.modules for result in reports.all] == [(pkg.dotted("a"),), (pkg.dotted("b"),)]


def test_rapid_saves_end_with_the_last_content(pkg: Pkg, watching: Callable[..., Any]) -> None:
    pkg.write("a.py", "VALUE = 0\n")
    pkg.load("a")
    _, reports = watching()
    saves = 10
    for value in range(1, saves + 1):
        pkg.write("a.py", f"VALUE = {value}\n")

    wait_until(lambda: getattr(pkg.current("a"), "VALUE", None) == saves, DEADLINE, "the last save")

    batches = [result for result in reports.all if pkg.dotted("a") in result.modules]
    assert 1 <= len(batches) <= saves // 2, reports.all
    assert all(result.error is None for result in reports.all)


def test_a_touch_with_the_same_content_reloads_nothing(
    pkg: Pkg, watching: Callable[..., Any]
) -> None:
    path = pkg.write("a.py", "VALUE = 1\n")
    pkg.write("b.py", "VALUE = 1\n")
    pkg.load("a")
    pkg.load("b")
    _, reports = watching()
    path.write_text("VALUE = 1\n")
    os.utime(path)
    pkg.write("b.py", "VALUE = 2\n")

    reports.reloaded(pkg.dotted("b"))

    assert all(pkg.dotted("a") not in result.modules for result in reports.all)


@pytest.mark.parametrize(
    "name",
    [
        *("a.py.swp", ".a.py.swp", ".a.py.swx", "a.py~", ".#a.py", "4913", "a.py.tmp", "a.txt"),
        *(".hidden.py", "__pycache__/a.py", ".venv/lib/a.py", ".git/a.py", "node_modules/a.py"),
    ],
)
def test_the_watch_filter_ignores_editor_and_tool_files(name: str, tmp_path: Path) -> None:
    path = str(tmp_path / name)
    assert not watch.is_source_change(watchfiles.Change.added, path)
    assert not watch.is_source_change(watchfiles.Change.modified, path)


def test_the_watch_filter_takes_added_or_modified_sources(tmp_path: Path) -> None:
    path = str(tmp_path / "app" / "a.py")
    assert watch.is_source_change(watchfiles.Change.added, path)
    assert watch.is_source_change(watchfiles.Change.modified, path)
    assert not watch.is_source_change(watchfiles.Change.deleted, path)


def test_a_broken_save_is_reported_and_the_next_good_save_recovers(
    pkg: Pkg, watching: Callable[..., Any]
) -> None:
    pkg.write("a.py", "def f():\n    return 1\n")
    pkg.write("b.py", "from .a import f\n")
    pkg.load("b")
    _, reports = watching()
    pkg.write("a.py", "def g():\n    return 2\n")  # b.py's import now fails

    failed = reports.wait_for(lambda r: r.error is not None, "the failed batch")
    assert "b.py:1: ImportError: cannot import name 'f'" in str(failed.error)
    assert pkg.current("a").f() == 1
    pkg.write("b.py", "from .a import g\n")  # the fix is in the other file

    result = reports.reloaded(pkg.dotted("b"))

    assert result.modules == (pkg.dotted("a"), pkg.dotted("b"))
    assert pkg.current("b").g() == 2


def test_the_watcher_survives_a_failing_app_and_internal_errors(
    pkg: Pkg, watching: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg.write("a.py", "VALUE = 0\n")
    pkg.load("a")
    reloader, reports = watching()

    def broken_apply(prepared: Any) -> str | None:
        raise RuntimeError("app broke")

    unfollow = reloader.follow(lambda batch: None, broken_apply)
    pkg.write("a.py", "VALUE = 1\n")
    failed = reports.wait_for(lambda r: r.error is not None, "the failed apply")
    assert "RuntimeError: app broke (reloaded" in str(failed.error)
    unfollow()

    real_changed = watch.changed
    monkeypatch.setattr(watch, "changed", _raise_once(real_changed))
    pkg.write("a.py", "VALUE = 2\n")
    failure = reports.wait_for(lambda r: r.error is not None, "the internal error")
    assert "RuntimeError: reloader bug" in str(failure.error)

    pkg.write("a.py", "VALUE = 3\n")
    reports.reloaded(pkg.dotted("a"))
    assert pkg.current("a").VALUE == 3
    assert reloader.running


def _raise_once(function: Callable[..., Any]) -> Callable[..., Any]:
    calls = []

    def wrapper(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("reloader bug")
        return function(*args)

    return wrapper


def test_the_default_report_prints_successes_to_stdout_and_failures_to_stderr(
    pkg: Pkg, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    reloader = Reloader([pkg.root])
    reloader.start()
    out, err = [], []

    def printed(stream: list[str], text: str) -> bool:
        captured = capsys.readouterr()
        out.append(captured.out)
        err.append(captured.err)
        return text in "".join(stream)

    try:
        pkg.write("a.py", "VALUE = 2\n")
        wait_until(
            lambda: printed(out, f"reloaded {pkg.dotted('a')} in "), DEADLINE, "the success line"
        )
        pkg.write("a.py", "VALUE = (\n")
        wait_until(lambda: printed(err, "reload failed: "), DEADLINE, "the failure line")
    finally:
        reloader.stop()
    assert "(still running the last good code)" in "".join(err)
    assert "reload failed" not in "".join(out)


def test_stop_ends_and_joins_the_watcher_thread(pkg: Pkg) -> None:
    before = reload_threads()
    reloader = Reloader([pkg.root])
    reloader.start()
    reloader.start()  # idempotent: still one thread
    threads = reload_threads() - before
    assert len(threads) == 1 and reloader.running
    (thread,) = threads
    assert thread.daemon

    reloader.stop()

    assert not thread.is_alive()
    assert not reloader.running
    reloader.stop()  # idempotent


def test_a_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        Reloader([tmp_path / "missing"])


# --- saves that never finish, break the watcher, or undo a failure -----------------------


def batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "replkit-reload-batch"]


@pytest.mark.parametrize(
    "stuck",
    ["while True:\n    pass\n", "import time\ntime.sleep(3)\n"],
    ids=["endless loop", "blocking call"],
)
def test_a_module_stuck_at_import_is_reported_and_the_next_save_recovers(
    pkg: Pkg, watching: Callable[..., Any], stuck: str
) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    old = pkg.load("a")
    reloader, reports = watching(stuck_after=0.3)
    pkg.write("a.py", f"VALUE = 2\n{stuck}")

    report = reports.wait_for(lambda r: r.stuck is not None, "the stuck report")
    assert report.stuck.endswith("a.py") and "still executing after" in str(report)
    assert pkg.current("a") is old and old.VALUE == 1  # the last good code, untouched
    pkg.write("a.py", "VALUE = 3\n")

    result = reports.reloaded(pkg.dotted("a"))
    assert pkg.current("a").VALUE == 3
    assert "the failed reload is over" in str(result)
    if "while" in stuck:  # an endless loop is interrupted: its thread does not linger
        wait_until(lambda: not batch_threads(), DEADLINE, "the stuck batch's thread to end")
    assert reloader.running


def test_stop_does_not_wait_for_a_stuck_module(pkg: Pkg, watching: Callable[..., Any]) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    reloader, reports = watching(stuck_after=0.2)
    pkg.write("a.py", "import time\ntime.sleep(10)\n")
    reports.wait_for(lambda r: r.stuck is not None, "the stuck report")

    started = time.monotonic()
    reloader.stop()

    assert time.monotonic() - started < 1.0
    assert not reloader.running


def test_a_slow_import_that_finishes_is_reloaded(pkg: Pkg, watching: Callable[..., Any]) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    _, reports = watching(stuck_after=0.2)
    pkg.write("a.py", "import time\ntime.sleep(0.6)\nVALUE = 2\n")

    reports.wait_for(lambda r: r.stuck is not None, "the stuck report")
    result = reports.reloaded(pkg.dotted("a"))  # no newer save: the slow batch commits

    assert pkg.current("a").VALUE == 2
    assert "the failed reload is over" in str(result)


def test_keyboard_interrupt_at_import_leaves_the_watcher_working(
    pkg: Pkg, watching: Callable[..., Any]
) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    reloader, reports = watching()
    pkg.write("a.py", "raise KeyboardInterrupt\n")
    failed = reports.wait_for(lambda r: r.error is not None, "the failure")
    assert "a.py:1: KeyboardInterrupt" in str(failed.error)

    pkg.write("a.py", "VALUE = 2\n")

    reports.reloaded(pkg.dotted("a"))
    assert pkg.current("a").VALUE == 2 and reloader.running


def test_saving_back_the_running_code_ends_a_failure(
    pkg: Pkg, watching: Callable[..., Any]
) -> None:
    path = pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    _, reports = watching()
    path.write_text("VALUE = (\n")
    reports.wait_for(lambda r: r.error is not None, "the failure")

    path.write_text("VALUE = 1\n")

    over = reports.wait_for(lambda r: bool(r.notes), "the end of the failure")
    assert over.ok and over.modules == ()
    assert str(over).endswith("a.py back to the running code; the failed reload is over")


def test_a_saved_file_no_module_comes_from_is_said_so(
    pkg: Pkg, watching: Callable[..., Any]
) -> None:
    _, reports = watching()
    pkg.write("notes.py", "TODO = 1\n")

    said = reports.wait_for(lambda r: bool(r.notes), "the note")

    assert said.ok and said.modules == ()
    assert "notes.py changed, but no loaded module comes from it" in str(said)


def test_an_app_that_cannot_build_fails_the_batch(pkg: Pkg, watching: Callable[..., Any]) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    old = pkg.load("a")
    reloader, reports = watching()
    applied: list[Any] = []

    def prepare(batch: object) -> int:
        value = pkg.current("a").VALUE  # the fresh module, not yet committed
        if value == 2:
            raise ValueError("cannot build with 2")
        return value

    reloader.follow(prepare, lambda value: applied.append(value) or f"serving {value}")
    pkg.write("a.py", "VALUE = 2\n")
    failed = reports.wait_for(lambda r: r.error is not None, "the failed build")
    assert "ValueError: cannot build with 2" in str(failed.error)
    assert pkg.current("a") is old and applied == []

    pkg.write("a.py", "VALUE = 3\n")

    result = reports.reloaded(pkg.dotted("a"))
    assert applied == [3]
    assert str(result).split("; ")[1:] == ["serving 3", "the failed reload is over"]


def test_two_hundred_saves_in_two_seconds_end_with_the_last(
    pkg: Pkg, watching: Callable[..., Any]
) -> None:
    path = pkg.write("a.py", "VALUE = 0\n")
    pkg.load("a")
    reloader, _ = watching()
    for value in range(1, 201):
        path.write_text(f"VALUE = {value}\n")
        time.sleep(0.01)  # pacing the saves is the scenario itself, not a wait

    wait_until(lambda: getattr(pkg.current("a"), "VALUE", None) == 200, DEADLINE, "the last save")
    assert reloader.running


def test_deleting_and_renaming_modules_leaves_the_reloader_working(
    pkg: Pkg, watching: Callable[..., Any]
) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    gone = pkg.write("gone.py", "VALUE = 1\n")
    pkg.load("a")
    pkg.load("gone")
    reloader, reports = watching()
    gone.unlink()
    os.replace(pkg.root / "a.py", pkg.root / "renamed.py")
    (pkg.root / "renamed.py").rename(pkg.root / "a.py")
    pkg.write("a.py", "VALUE = 2\n")

    reports.reloaded(pkg.dotted("a"))
    assert pkg.current("a").VALUE == 2 and reloader.running


def test_following_the_project_watches_packages_imported_later(pkg: Pkg, tmp_path: Path) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    other = tmp_path / f"{pkg.name}_other"
    other.mkdir()
    (other / "__init__.py").write_text("VALUE = 1\n")
    reports = Reports()
    reloader = Reloader(report=reports)  # no roots: the whole loaded project
    reloader.start()
    try:
        assert pkg.root.resolve() in reloader.roots
        pkg.write("a.py", f"import {other.name}\nVALUE = 2\n")
        reports.reloaded(pkg.dotted("a"))
        wait_until(lambda: other.resolve() in reloader.roots, DEADLINE, "the new package watched")

        (other / "__init__.py").write_text("VALUE = 2\n")

        reports.reloaded(other.name)
    finally:
        reloader.stop()
        sys.modules.pop(other.name, None)


def test_a_package_saved_between_its_import_and_its_watch_is_reloaded(
    pkg: Pkg, tmp_path: Path
) -> None:
    # The new package saves itself as it is imported: a save no watcher can see, made after
    # Python read the file, the worst moment for a reloader that looks at files afterwards.
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    other = tmp_path / f"{pkg.name}_late"
    other.mkdir()
    (other / "__init__.py").write_text(SAVES_ITSELF)
    reports = Reports()
    reloader = Reloader(report=reports)
    reloader.start()
    try:
        pkg.write("a.py", f"import {other.name}\nVALUE = 2\n")
        reports.reloaded(pkg.dotted("a"))

        reports.reloaded(other.name)

        assert sys.modules[other.name].VALUE == 2
    finally:
        reloader.stop()
        sys.modules.pop(other.name, None)


def test_a_save_made_before_start_is_reloaded_by_start(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    reports = Reports()
    reloader = Reloader([pkg.root], report=reports)
    pkg.write("b.py", "VALUE = 1\n")
    pkg.load("b")  # imported after the reloader exists: recorded as Python runs it
    pkg.write("a.py", "VALUE = 2\n")
    pkg.write("b.py", "VALUE = 2\n")

    reloader.start()
    try:
        result = reports.wait_for(lambda r: bool(r.modules), "the saves reloaded")

        assert sorted(result.modules) == [pkg.dotted("a"), pkg.dotted("b")]
        assert pkg.current("a").VALUE == 2 and pkg.current("b").VALUE == 2
    finally:
        reloader.stop()
