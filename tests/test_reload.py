"""replkit.reload: transactional in-process reload, and the watcher that triggers it on save.

Every test builds its own package (``rk_<uuid>``) under ``tmp_path``; the ``pkg`` fixture
removes it from ``sys.path``, ``sys.modules`` and ``__main__`` afterwards. Waits are polls or
events with a deadline.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import queue
import re
import sys
import textwrap
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import watchfiles
from conftest import wait_until

import replkit.reload as reload_module
from replkit.reload import Reloader, ReloadResult, reload_modules

DEADLINE = 5.0


@dataclass
class Pkg:
    """A throwaway package ``name`` in directory ``root``."""

    name: str
    root: Path

    def write(self, relpath: str, source: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return path

    def dotted(self, sub: str = "") -> str:
        return f"{self.name}.{sub}" if sub else self.name

    def load(self, sub: str = "") -> types.ModuleType:
        return importlib.import_module(self.dotted(sub))

    def current(self, sub: str = "") -> types.ModuleType:
        return sys.modules[self.dotted(sub)]


@pytest.fixture
def pkg(tmp_path: Path) -> Iterator[Pkg]:
    name = f"rk_{uuid.uuid4().hex[:12]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    main = sys.modules["__main__"].__dict__
    main_names = set(main)
    sys.path.insert(0, str(tmp_path))
    yield Pkg(name, root)
    sys.path.remove(str(tmp_path))
    for key in set(main) - main_names:
        del main[key]
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


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


# --- reload_modules ---------------------------------------------------------------------


def test_reload_executes_the_new_source_into_a_fresh_module(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    old = pkg.load("a")
    pkg.write("a.py", "VALUE = 2\n")

    result = reload_modules([pkg.dotted("a")])

    assert result.error is None
    assert result.modules == (pkg.dotted("a"),)
    assert pkg.current("a") is not old
    assert pkg.current("a").VALUE == 2
    assert pkg.current().a is pkg.current("a")
    assert re.fullmatch(rf"reloaded {pkg.dotted('a')} in (\d+|<1) ms", str(result))


def test_reload_refuses_modules_that_are_not_loaded(pkg: Pkg) -> None:
    with pytest.raises(ValueError, match="rk_nowhere"):
        reload_modules(["rk_nowhere"])


@pytest.mark.parametrize(
    "import_line, seen",
    [
        ("import {pkg}.a", "{pkg}.a.VALUE"),
        ("from {pkg} import a", "a.VALUE"),
        ("from . import a", "a.VALUE"),
        ("from .a import VALUE", "VALUE"),
        ("from {pkg}.a import VALUE", "VALUE"),
    ],
)
def test_importers_are_reloaded_and_get_the_new_objects(
    pkg: Pkg, import_line: str, seen: str
) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.write("b.py", f"{import_line}\nSEEN = {seen}\n".format(pkg=pkg.name))
    pkg.write("unrelated.py", "VALUE = 1\n")
    pkg.load("b")
    pkg.load("unrelated")
    pkg.write("a.py", "VALUE = 2\n")

    result = reload_modules([pkg.dotted("a")])

    assert result.modules == (pkg.dotted("a"), pkg.dotted("b"))
    assert pkg.current("b").SEEN == 2


def test_functions_imported_by_name_call_the_new_code(pkg: Pkg) -> None:
    pkg.write("a.py", "def f():\n    return 1\n")
    pkg.write("b.py", "from .a import f\n\ndef g():\n    return f()\n")
    pkg.load("b")
    pkg.write("a.py", "def f():\n    return 2\n")

    reload_modules([pkg.dotted("a")])

    assert pkg.current("b").g() == 2


def test_a_batch_runs_in_dependency_order(pkg: Pkg) -> None:
    pkg.write("trace.py", "executed = []\n")
    pkg.write("gamma.py", "from . import trace\ntrace.executed.append('gamma')\n")
    pkg.write("beta.py", "from . import gamma, trace\ntrace.executed.append('beta')\n")
    pkg.write("alpha.py", "from . import beta, trace\ntrace.executed.append('alpha')\n")
    pkg.load("alpha")
    trace = pkg.load("trace")
    trace.executed.clear()

    result = reload_modules([pkg.dotted("alpha"), pkg.dotted("gamma")])

    assert result.modules == tuple(pkg.dotted(name) for name in ("gamma", "beta", "alpha"))
    assert trace.executed == ["gamma", "beta", "alpha"]


def test_an_import_cycle_is_reloaded_in_a_stable_order(pkg: Pkg) -> None:
    pkg.write("a.py", "from . import b\nVALUE = 1\n")
    pkg.write("b.py", "from . import a\n\ndef value():\n    return a.VALUE\n")
    pkg.load("a")
    orders = []
    for value in (2, 3):
        pkg.write("a.py", f"from . import b\nVALUE = {value}\n")
        result = reload_modules([pkg.dotted("a")])
        assert result.error is None
        assert pkg.current("b").value() == value
        orders.append(result.modules)

    assert orders[0] == orders[1]
    assert set(orders[0]) == {pkg.dotted("a"), pkg.dotted("b")}


def test_a_syntax_error_changes_nothing(pkg: Pkg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pkg.root.parent)
    pkg.write("trace.py", "executed = []\n")
    pkg.write("a.py", "from . import trace\ntrace.executed.append('a')\nVALUE = 1\n")
    pkg.write("b.py", "from .a import VALUE\n")
    old_a, old_b = pkg.load("a"), pkg.load("b")
    trace = pkg.load("trace")
    pkg.write("a.py", "from . import trace\ntrace.executed.append('a')\nVALUE = 2\n")
    pkg.write("b.py", "from .a import VALUE\n\ndef broken(:\n    pass\n")

    result = reload_modules([pkg.dotted("a"), pkg.dotted("b")])

    assert result.modules == ()
    assert str(result.error) == f"{pkg.name}/b.py:3: SyntaxError: invalid syntax"
    assert str(result) == (
        f"reload failed: {pkg.name}/b.py:3: SyntaxError: invalid syntax"
        " (still running the last good code)"
    )
    # Compiled first, so a.py's new code did not even run.
    assert trace.executed == ["a"]
    assert pkg.current("a") is old_a and pkg.current("b") is old_b
    assert old_a.VALUE == 1
    assert type(old_a) is types.ModuleType


def test_an_importer_broken_mid_edit_still_blocks_the_batch(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.write("b.py", "from .a import VALUE\n")
    old_a = pkg.load("a")
    pkg.load("b")
    Reloader([pkg.root])  # parses the imports while the files are good
    pkg.write("a.py", "VALUE = 2\n")
    pkg.write("b.py", "from .a import VALUE\nif VALUE\n")

    result = reload_modules([pkg.dotted("a")])

    assert str(result.error).endswith("b.py:2: SyntaxError: expected ':'")
    assert pkg.current("a") is old_a


def test_an_error_in_a_later_module_rolls_back_the_earlier_ones(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.write("b.py", "from .a import VALUE\n")
    old_a, old_b = pkg.load("a"), pkg.load("b")
    pkg.write("a.py", "VALUE = 2\n")
    pkg.write("b.py", "from .a import VALUE\nraise RuntimeError('boom')\n")

    result = reload_modules([pkg.dotted("a")])

    assert str(result.error).endswith("b.py:2: RuntimeError: boom")
    assert result.modules == ()
    assert pkg.current("a") is old_a and pkg.current("b") is old_b
    assert pkg.current().a is old_a
    assert old_a.VALUE == 1
    assert type(old_a) is types.ModuleType


def test_an_import_error_reports_the_import_line(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    old = pkg.load("a")
    pkg.write("a.py", "VALUE = 2\n\nimport rk_no_such_module\n")

    result = reload_modules([pkg.dotted("a")])

    assert str(result.error) == (
        f"{pkg.root / 'a.py'}:3: ModuleNotFoundError: No module named 'rk_no_such_module'"
    )
    assert pkg.current("a") is old


def test_an_error_in_a_function_called_at_import_points_at_its_line(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    pkg.write("a.py", "def f():\n    return {}['missing']\n\nVALUE = f()\n")

    result = reload_modules([pkg.dotted("a")])

    assert str(result.error) == f"{pkg.root / 'a.py'}:2: KeyError: 'missing'"


def test_an_error_raised_in_library_code_points_at_the_module_line(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    pkg.write("a.py", "import json\n\nVALUE = json.loads('{')\n")

    result = reload_modules([pkg.dotted("a")])

    assert str(result.error).startswith(f"{pkg.root / 'a.py'}:3: JSONDecodeError: Expecting")


def test_an_importer_whose_file_was_deleted_does_not_block_the_batch(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.write("b.py", "from .a import VALUE\n")
    old_b = pkg.load("b")
    Reloader([pkg.root])  # parses the imports while b.py exists
    pkg.write("a.py", "VALUE = 2\n")
    (pkg.root / "b.py").unlink()

    result = reload_modules([pkg.dotted("a")])

    assert result.error is None and result.modules == (pkg.dotted("a"),)
    assert pkg.current("a").VALUE == 2 and pkg.current("b") is old_b


def test_defonce_values_survive_a_reload(pkg: Pkg) -> None:
    pkg.write(
        "a.py",
        """\
        from replkit.lifecycle import Atom, defonce
        STATE = defonce("state", lambda: Atom(0))
        VALUE = 1
        """,
    )
    state = pkg.load("a").STATE
    state.reset(41)
    pkg.write(
        "a.py",
        """\
        from replkit.lifecycle import Atom, defonce
        STATE = defonce("state", lambda: Atom(0))
        VALUE = 2
        """,
    )

    reload_modules([pkg.dotted("a")])

    assert pkg.current("a").VALUE == 2
    assert pkg.current("a").STATE is state
    assert state.deref() == 41


HOOKED = """\
from . import trace
VALUE = {value}
def __before_reload__():
    trace.calls.append(("before", VALUE))
def __after_reload__():
    trace.calls.append(("after", VALUE))
"""


def test_hooks_run_on_the_old_module_before_and_the_new_one_after(pkg: Pkg) -> None:
    pkg.write("trace.py", "calls = []\n")
    pkg.write("a.py", HOOKED.format(value=1))
    pkg.load("a")
    pkg.write("a.py", HOOKED.format(value=2))

    result = reload_modules([pkg.dotted("a")])

    assert result.error is None and result.hook_errors == ()
    assert pkg.current("trace").calls == [("before", 1), ("after", 2)]


def test_after_a_failed_batch_the_old_module_resumes(pkg: Pkg) -> None:
    pkg.write("trace.py", "calls = []\n")
    pkg.write("a.py", HOOKED.format(value=1))
    pkg.load("a")
    pkg.write("a.py", HOOKED.format(value=2) + "raise ValueError('no')\n")

    result = reload_modules([pkg.dotted("a")])

    assert result.error is not None
    assert pkg.current("trace").calls == [("before", 1), ("after", 1)]


def test_a_failing_hook_is_reported_and_the_other_hooks_still_run(pkg: Pkg) -> None:
    pkg.write("trace.py", "calls = []\n")
    pkg.write("a.py", "def __after_reload__():\n    raise RuntimeError('hook broke')\n")
    pkg.write(
        "b.py", "from . import a, trace\ndef __after_reload__():\n    trace.calls.append('b')\n"
    )
    pkg.load("b")

    result = reload_modules([pkg.dotted("a")])

    assert result.error is None
    assert result.modules == (pkg.dotted("a"), pkg.dotted("b"))
    assert pkg.current("trace").calls == ["b"]
    assert [str(error) for error in result.hook_errors] == [
        f"{pkg.root / 'a.py'}:2: RuntimeError: hook broke (in {pkg.dotted('a')}.__after_reload__)"
    ]
    assert "\n  hook failed: " in str(result)


def test_the_old_module_object_forwards_to_the_new_one(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.write("holder.py", f"import importlib\nheld = importlib.import_module('{pkg.name}.a')\n")
    old = pkg.load("a")
    holder = pkg.load("holder")
    pkg.write("a.py", "VALUE = 2\nADDED = 'new'\n")

    result = reload_modules([pkg.dotted("a")])

    assert result.modules == (pkg.dotted("a"),)
    new = pkg.current("a")
    assert old is not new and holder.held is old
    assert old.VALUE == 2 and holder.held.ADDED == "new"
    assert "ADDED" in dir(old)
    assert isinstance(old, types.ModuleType)
    old.SET_THROUGH_OLD = 3
    assert new.SET_THROUGH_OLD == 3
    del old.SET_THROUGH_OLD
    assert not hasattr(new, "SET_THROUGH_OLD")


def test_names_in_main_are_rebound_to_the_new_objects(pkg: Pkg) -> None:
    pkg.write(
        "a.py",
        """\
        NUMBER = 123456789
        def start():
            return 1
        def removed():
            return 1
        class Server:
            pass
        """,
    )
    a = pkg.load("a")
    main = sys.modules["__main__"].__dict__
    names = {f"{pkg.name}_{key}": key for key in ("mod", "start", "Server", "NUMBER", "removed")}
    main.update({f"{pkg.name}_mod": a, f"{pkg.name}_alias": a.start})
    main.update({name: getattr(a, attr) for name, attr in names.items() if attr != "mod"})
    old_removed, old_number = a.removed, a.NUMBER
    pkg.write(
        "a.py",
        """\
        NUMBER = 123456789
        def start():
            return 2
        class Server:
            pass
        """,
    )

    reload_modules([pkg.dotted("a")])

    new = pkg.current("a")
    assert main[f"{pkg.name}_mod"] is new
    assert main[f"{pkg.name}_start"] is new.start
    assert main[f"{pkg.name}_alias"]() == 2
    assert main[f"{pkg.name}_Server"] is new.Server
    assert main[f"{pkg.name}_removed"] is old_removed
    assert main[f"{pkg.name}_NUMBER"] is old_number


def test_reloading_a_package_keeps_its_submodules(pkg: Pkg) -> None:
    pkg.write("sub/__init__.py", "VALUE = 1\n")
    pkg.write("sub/leaf.py", "LEAF = 1\n")
    leaf = pkg.load("sub.leaf")
    pkg.write("sub/__init__.py", "VALUE = 2\n")
    pkg.write("sub/later.py", "LATER = 1\n")

    result = reload_modules([pkg.dotted("sub")])

    sub = pkg.current("sub")
    assert result.modules == (pkg.dotted("sub"),)
    assert sub.VALUE == 2
    assert sub.leaf is leaf
    assert pkg.current().sub is sub
    assert pkg.load("sub.later").LATER == 1  # still a package: __path__ survived


def test_reloading_a_submodule_updates_the_package_attribute(pkg: Pkg) -> None:
    pkg.write("sub/__init__.py", "")
    pkg.write("sub/leaf.py", "LEAF = 1\n")
    pkg.load("sub.leaf")
    pkg.write("sub/leaf.py", "LEAF = 2\n")

    reload_modules([pkg.dotted("sub.leaf")])

    assert pkg.current("sub").leaf is pkg.current("sub.leaf")
    assert pkg.current("sub").leaf.LEAF == 2


def test_a_same_size_edit_in_the_same_second_is_not_served_from_a_stale_pyc(
    pkg: Pkg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    assert Path(importlib.util.cache_from_source(str(path))).exists()
    stat = path.stat()
    path.write_text("VALUE = 2\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # The hazard is real: the ordinary loader serves the old bytecode.
    spec = importlib.util.spec_from_file_location(pkg.dotted("a"), path)
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.VALUE == 1

    reload_modules([pkg.dotted("a")])

    assert pkg.current("a").VALUE == 2


def test_reloads_are_serialized(pkg: Pkg) -> None:
    pkg.write(
        "gate.py",
        "from threading import Event\narmed = False\nentered, release = Event(), Event()\n",
    )
    slow = "from . import gate\nif gate.armed:\n    gate.entered.set()\n    gate.release.wait(5)\n"
    pkg.write("slow.py", slow)
    pkg.write("other.py", "VALUE = 1\n")
    gate = pkg.load("gate")
    pkg.load("slow")
    pkg.load("other")
    gate.armed = True
    pkg.write("slow.py", slow + "VALUE = 2\n")
    pkg.write("other.py", "VALUE = 2\n")
    results: dict[str, ReloadResult] = {}
    other_done = threading.Event()

    def run(name: str, done: threading.Event | None = None) -> None:
        results[name] = reload_modules([pkg.dotted(name)])
        if done is not None:
            done.set()

    first = threading.Thread(target=run, args=("slow",))
    second = threading.Thread(target=run, args=("other", other_done))
    first.start()
    try:
        assert gate.entered.wait(DEADLINE)
        second.start()
        assert not other_done.wait(0.2), "a second reload ran while the first was executing"
    finally:
        gate.release.set()
        first.join(DEADLINE)
    second.join(DEADLINE)
    assert results["slow"].error is None and results["other"].error is None
    assert pkg.current("other").VALUE == 2


# --- Reloader.reload --------------------------------------------------------------------


def test_reload_now_reloads_only_what_changed_under_the_roots(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.write("b.py", "VALUE = 1\n")
    pkg.write("inner/__init__.py", "VALUE = 1\n")
    pkg.load("a")
    pkg.load("b")
    pkg.load("inner")
    reloader = Reloader([pkg.root / "inner"])
    seen: list[ReloadResult] = []
    reloader.on_reload.append(seen.append)
    assert reloader.reload() is None

    pkg.write("a.py", "VALUE = 2\n")  # outside the root
    pkg.write("b.py", "VALUE = 1\n")  # same content
    assert reloader.reload() is None
    pkg.write("inner/__init__.py", "VALUE = 2\n")
    result = reloader.reload()

    assert result is not None and result.modules == (pkg.dotted("inner"),)
    assert seen == [result]
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
    assert not reload_module._is_source_change(watchfiles.Change.added, path)
    assert not reload_module._is_source_change(watchfiles.Change.modified, path)


def test_the_watch_filter_takes_added_or_modified_sources(tmp_path: Path) -> None:
    path = str(tmp_path / "app" / "a.py")
    assert reload_module._is_source_change(watchfiles.Change.added, path)
    assert reload_module._is_source_change(watchfiles.Change.modified, path)
    assert not reload_module._is_source_change(watchfiles.Change.deleted, path)


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


def test_the_watcher_survives_failing_listeners_and_internal_errors(
    pkg: Pkg, watching: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg.write("a.py", "VALUE = 0\n")
    pkg.load("a")
    reloader, reports = watching()

    def broken_listener(result: ReloadResult) -> None:
        raise RuntimeError("listener broke")

    reloader.on_reload.append(broken_listener)
    pkg.write("a.py", "VALUE = 1\n")
    result = reports.reloaded(pkg.dotted("a"))
    assert "RuntimeError: listener broke (in on_reload listener" in str(result.hook_errors[0])
    reloader.on_reload.remove(broken_listener)

    real_reload = reload_module._reload
    monkeypatch.setattr(reload_module, "_reload", _raise_once(real_reload))
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
