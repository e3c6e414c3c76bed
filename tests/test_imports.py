"""replkit.imports: which loaded modules are the project's, what they import, in what order
they are re-executed, and where to watch them."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from conftest import ROOT, Pkg

from replkit import imports
from replkit.reload import reload_modules


def test_project_modules_are_the_loaded_sources_outside_libraries_and_replkit(pkg: Pkg) -> None:
    pkg.write("a.py", "VALUE = 1\n")
    pkg.load("a")
    alias = types.ModuleType("__mp_main__")
    alias.__file__ = str(pkg.root / "a.py")
    sys.modules["__mp_main__"] = alias  # what multiprocessing does to the running script
    try:
        found = imports.project_modules()
    finally:
        del sys.modules["__mp_main__"]
    assert found[pkg.dotted("a")] == str(pkg.root / "a.py")
    assert found[pkg.name] == str(pkg.root / "__init__.py")
    assert "__mp_main__" not in found
    assert not [name for name in found if name.split(".")[0] in {"replkit", "json", "aiohttp"}]


def test_watch_roots_are_package_trees_and_the_directories_of_single_files(
    pkg: Pkg, tmp_path: Path
) -> None:
    pkg.write("sub/leaf.py", "")
    pkg.load("sub.leaf")
    single = f"{pkg.name}_single"
    (tmp_path / f"{single}.py").write_text("")
    __import__(single)
    try:
        trees, flat = imports.watch_roots([pkg.dotted("sub.leaf"), single, "json"])
    finally:
        del sys.modules[single]
    assert trees == [pkg.root.resolve()]
    assert flat == [tmp_path.resolve()]  # watched without its subdirectories (.venv, ...)
    assert imports.watch_roots(["app.sse_demo"]) in (([], []), ([ROOT / "app"], []))


def test_imports_are_read_from_the_source(pkg: Pkg) -> None:
    path = pkg.write(
        "a.py",
        "import os, json.decoder\nfrom . import b\nfrom .c import d\nfrom .. import nowhere\n",
    )
    found = imports.imports(pkg.dotted("a"), str(path), {})
    assert {"os", "json.decoder", pkg.name, pkg.dotted("b"), pkg.dotted("c")} <= found
    assert pkg.dotted("c.d") in found


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
