"""replkit.lifecycle: Atom, and defonce values that outlive re-imports and reloads."""

from __future__ import annotations

import importlib
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from replkit.lifecycle import Atom, defonce
from replkit.reload import reload_modules


def test_atom() -> None:
    atom: Atom[int] = Atom(1)
    assert atom.deref() == 1
    assert atom.reset(5) == 5
    assert atom.swap(lambda value, a, b: value * a + b, 2, 1) == 11
    assert atom.deref() == 11
    assert Atom().deref() is None


def test_swap_is_atomic_under_contention() -> None:
    atom = Atom(0)

    def bump() -> None:
        for _ in range(1000):
            atom.swap(lambda value: value + 1)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert atom.deref() == 8000


def test_defonce_runs_init_once_per_module_and_name() -> None:
    calls: list[str] = []
    name = uuid.uuid4().hex

    def init() -> list[str]:
        calls.append("init")
        return ["value"]

    first = defonce(name, init)
    assert defonce(name, init) is first
    assert calls == ["init"]
    assert defonce(f"{name}-other", init) is not first


@pytest.fixture
def state_module(tmp_path: Path) -> Iterator[str]:
    name = f"rk_state_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from replkit.lifecycle import Atom, defonce\n"
        "state = defonce('state', lambda: Atom(0))\n"
        "VERSION = 1\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_defonce_survives_reimport_and_reload(state_module: str, tmp_path: Path) -> None:
    module = importlib.import_module(state_module)
    module.state.swap(lambda value: value + 1)
    atom = module.state

    del sys.modules[state_module]
    assert importlib.import_module(state_module).state is atom

    source = tmp_path / f"{state_module}.py"
    source.write_text(source.read_text().replace("VERSION = 1", "VERSION = 2"))
    result = reload_modules([state_module])
    assert result.error is None
    reloaded = sys.modules[state_module]
    assert reloaded.VERSION == 2
    assert reloaded.state is atom and atom.deref() == 1
