"""replkit.reload: a batch of modules re-executed and swapped in as one transaction.

Every test builds its own package (``rk_<uuid>``, the ``pkg`` fixture of conftest) under
``tmp_path``. Waits are polls or events with a deadline.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import py_compile
import re
import stat
import sys
import threading
import traceback
import types
import uuid
from pathlib import Path

import pytest
from conftest import SAVES_ITSELF, Pkg

from replkit.imports import project_modules
from replkit.reload import (
    Batch,
    ReloadResult,
    changed,
    record_imports,
    reload_modules,
    remember,
    state,
)

DEADLINE = 5.0


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
    remember(project_modules())  # parses the imports while the files are good
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
    remember(project_modules())  # parses the imports while b.py exists
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


def test_a_same_size_edit_in_the_same_second_is_not_served_from_a_stale_pyc(pkg: Pkg) -> None:
    path = pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    py_compile.compile(str(path), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
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


def test_recorded_imports_know_the_source_they_ran_even_if_it_is_saved_at_once(
    pkg: Pkg,
) -> None:
    record_imports()
    record_imports()  # a second reloader records nothing twice
    pkg.write("a.py", SAVES_ITSELF)

    module = pkg.load("a")
    remember(project_modules())  # a watch starting now must not take the new file as loaded

    assert module.VALUE == 1
    assert changed(project_modules(), [pkg.dotted("a")]) == [pkg.dotted("a")]


def test_recording_imports_leaves_other_loaders_alone(pkg: Pkg) -> None:
    record_imports()
    pkg.write("test_probe.py", "def check():\n    assert 1 == 2\n")

    probe = pkg.load("test_probe")

    with pytest.raises(AssertionError, match=re.escape("assert 1 == 2")):
        probe.check()  # pytest's assertion rewriting still had the test file
    spec = importlib.util.find_spec("colorsys")  # the standard library
    assert spec is not None and type(spec.loader) is importlib.machinery.SourceFileLoader


class Editable(importlib.abc.MetaPathFinder):
    """What ``pip install -e`` of a flat project adds after the PathFinder: a finder of
    packages that are not on ``sys.path``."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path

    def find_spec(
        self, fullname: str, path: object, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        init = self.path / "__init__.py"
        return importlib.util.spec_from_file_location(fullname, init)


def test_a_package_of_an_editable_install_is_recorded(tmp_path: Path) -> None:
    record_imports()
    name = f"rk_editable_{uuid.uuid4().hex[:8]}"
    (tmp_path / "src" / name).mkdir(parents=True)
    (tmp_path / "src" / name / "__init__.py").write_text(SAVES_ITSELF)
    finder = Editable(name, tmp_path / "src" / name)
    sys.meta_path.append(finder)
    try:
        assert importlib.import_module(name).VALUE == 1
        remember(project_modules())  # a watch starting now

        assert changed(project_modules(), [name]) == [name]
    finally:
        sys.meta_path.remove(finder)
        sys.modules.pop(name, None)


def test_importlib_reload_leaves_the_change_for_replkit_to_reload(pkg: Pkg) -> None:
    # What importlib.reload() executes is the module alone: its importers still hold the
    # old code, so the change stays pending for a reload that rebuilds them too.
    record_imports()
    pkg.write("a.py", "VALUE = 1\n")
    pkg.write("b.py", "from .a import VALUE\n")
    module = pkg.load("a")
    pkg.load("b")
    pkg.write("a.py", "VALUE = 2\n")

    importlib.reload(module)

    assert changed(project_modules(), [pkg.dotted("a")]) == [pkg.dotted("a")]
    result = reload_modules([pkg.dotted("a")])
    assert result.modules == (pkg.dotted("a"), pkg.dotted("b"))
    assert pkg.current("b").VALUE == 2


def test_a_recorded_import_uses_a_pyc_only_of_the_same_source(
    pkg: Pkg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    record_imports()
    path = pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    assert Path(importlib.util.cache_from_source(str(path))).exists()
    stat = path.stat()
    path.write_text("VALUE = 2\n")  # same size, same mtime: a timestamp .pyc would match
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    del sys.modules[pkg.dotted("a")]

    assert pkg.load("a").VALUE == 2


def test_an_error_in_a_recorded_import_shows_no_import_machinery(pkg: Pkg) -> None:
    record_imports()
    pkg.write("a.py", "from . import b\n")
    pkg.write("b.py", "raise ValueError('in b')\n")

    with pytest.raises(ValueError, match="in b") as raised:
        exec(f"import {pkg.dotted('a')}", {})  # an import statement: Python trims its frames

    frames = [frame.filename for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert [Path(f).name for f in frames if pkg.name in f] == ["a.py", "b.py"]
    assert not [f for f in frames if "importlib" in f or f.endswith("replkit/reload.py")]


def test_a_recorded_pyc_names_the_file_where_it_is_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    record_imports()
    name = f"rk_moved_{uuid.uuid4().hex[:8]}"
    first, second = tmp_path / "first", tmp_path / "second"
    (first / name).mkdir(parents=True)
    (first / name / "__init__.py").write_text("def where():\n    pass\n")
    (first / name / "__init__.py").chmod(0o600)
    monkeypatch.syspath_prepend(str(first))
    importlib.import_module(name)
    cached = importlib.util.cache_from_source(str(first / name / "__init__.py"))
    assert stat.S_IMODE(os.stat(cached).st_mode) == 0o600  # as private as its source
    del sys.modules[name]
    first.rename(second)
    sys.path[sys.path.index(str(first))] = str(second)
    importlib.invalidate_caches()
    try:
        moved = importlib.import_module(name)

        assert moved.where.__code__.co_filename == str(second / name / "__init__.py")
    finally:
        sys.modules.pop(name, None)


def test_a_project_import_never_waits_for_a_reload(pkg: Pkg) -> None:
    record_imports()
    pkg.write("a.py", "VALUE = 1\n")
    imported = threading.Event()
    importer = threading.Thread(target=lambda: (pkg.load("a"), imported.set()))
    with state.lock:  # what reload_modules() holds while module code runs
        importer.start()
        assert imported.wait(5), "the import waited for the reload's lock"
    importer.join()


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


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
        ("import sys; sys.exit(3)", "SystemExit: 3"),
        ("raise SystemExit('bye')", "SystemExit: bye"),
    ],
)
def test_a_module_that_raises_base_exceptions_is_only_an_error(
    pkg: Pkg, statement: str, error: str
) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    old = pkg.load("a")
    pkg.write("a.py", f"VALUE = 2\n{statement}\n")

    result = reload_modules([pkg.dotted("a")])

    assert f"a.py:2: {error}" in str(result.error)
    assert pkg.current("a") is old and old.VALUE == 1


def test_a_batch_rolled_back_while_it_executes_changes_nothing(pkg: Pkg) -> None:
    pkg.write("gate.py", "from threading import Event\nentered, release = Event(), Event()\n")
    pkg.write("a.py", "VALUE = 1\n")
    pkg.write("b.py", "from .a import VALUE\n")
    gate = pkg.load("gate")
    old_a, old_b = pkg.load("a"), pkg.load("b")
    pkg.write("a.py", "VALUE = 2\n")
    pkg.write(
        "b.py",
        "from .a import VALUE\nfrom . import gate\ngate.entered.set()\ngate.release.wait(5)\n",
    )
    batch = Batch([pkg.dotted("a")], project_modules())
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(batch.execute()))
    worker.start()
    try:
        assert gate.entered.wait(DEADLINE)
        # a.py ran: installed for the modules after it. b.py runs: not installed yet.
        assert pkg.current("a") is not old_a and pkg.current("a").VALUE == 2
        assert pkg.current("b") is old_b
        batch.rollback()
        assert pkg.current("a") is old_a and pkg.current().a is old_a
    finally:
        gate.release.set()
        worker.join(DEADLINE)
    assert outcome == [None]  # stopped quietly once b.py returned: nothing is swapped in
    assert pkg.current("a") is old_a and pkg.current("b") is old_b and old_a.VALUE == 1
    with pytest.raises(RuntimeError, match="already committed or rolled back"):
        batch.commit()


def test_a_result_reads_as_one_line_per_outcome() -> None:
    assert str(ReloadResult(("app.x",), 0.0004)) == "reloaded app.x in <1 ms"
    assert str(ReloadResult(("app.x",), 0.002, notes=("not serving",))) == (
        "reloaded app.x in 2 ms; not serving"
    )
    stuck = ReloadResult((), 3.2, stuck="app/slow.py")
    assert not stuck.ok
    assert str(stuck).startswith("reload stuck: app/slow.py still executing after 3 s")
