"""The import graph of a project's modules: which loaded modules come from the project's own
source files, what each of them imports, and the order to re-execute them in.

A module is the project's when it was loaded from a ``.py`` file outside the standard
library, outside installed packages (``site-packages``, ``.venv``, ...) and outside replkit
itself, whose modules hold the server and the reloader and are never re-executed.

Nothing here keeps state of its own: the cache of what each file imports is the reloader's
(:data:`replkit.reload.state`), passed in.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import sys
import sysconfig
import types
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["imports", "namespace", "plan", "project_modules", "source_path", "watch_roots"]

IGNORED_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".venv", "node_modules", "site-packages", "dist-packages"}
)
_STDLIB_DIRS = tuple(
    os.path.realpath(sysconfig.get_paths()[key]) + os.sep for key in ("stdlib", "platstdlib")
)
# The running script (multiprocessing aliases it as __mp_main__) is not a module to reload,
# nor is replkit itself, which holds the server and the reloader.
_PINNED = frozenset({"__main__", "__mp_main__", "replkit"})
_REPLKIT_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep

ImportsCache = dict[str, tuple[tuple[int, int, int], str, frozenset[str]]]
"""path -> (stat key, module name, the names it imports)."""


def namespace(module: types.ModuleType) -> dict[str, object]:
    """``module.__dict__``, bypassing ``__getattribute__`` overrides (forwarding modules,
    lazy modules that would load)."""
    return object.__getattribute__(module, "__dict__")


@functools.lru_cache(maxsize=8192)
def source_path(file: object) -> str | None:
    """The real path of ``file`` if it is a project source file, else ``None``."""
    if not isinstance(file, str) or not file.endswith(".py"):
        return None
    path = os.path.realpath(file)
    if path.startswith((*_STDLIB_DIRS, _REPLKIT_DIR)):
        return None
    return path if IGNORED_DIRS.isdisjoint(path.split(os.sep)) else None


def project_modules() -> dict[str, str]:
    """The loaded project modules: name -> source path."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in _PINNED or not isinstance(module, types.ModuleType):
            continue
        path = source_path(namespace(module).get("__file__"))
        if path is not None:
            found[name] = path
    return found


def watch_roots(modules: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """Where to watch for saves of ``modules``: the directories of their top-level packages,
    to watch with their subdirectories, and the directories of top-level single-file
    modules, to watch without them (a project directory holds ``.venv`` and the like).
    Directories that no longer exist are left out: nothing in them can be saved."""
    trees: set[Path] = set()
    flat: set[Path] = set()
    for name in modules:
        top = sys.modules.get(name.partition(".")[0])
        if top is None:
            continue
        # A namespace package has no __file__: its directories stand for it.
        locations = namespace(top).get("__path__")
        files = [os.path.join(p, "__init__.py") for p in locations] if locations else []  # type: ignore[attr-defined]
        for file in files or [namespace(top).get("__file__")]:
            if (path := source_path(file)) is not None and os.path.isdir(
                parent := Path(path).parent
            ):
                (trees if locations else flat).add(parent)
    return sorted(trees), sorted(flat - trees)


def plan(names: Iterable[str], scope: dict[str, str], cache: ImportsCache) -> list[str]:
    """``names`` and their importers in ``scope``, dependencies first (cycles broken by name).
    ``cache`` keeps what each file imports between calls."""
    deps = {
        name: sorted((imports(name, path, cache) & scope.keys()) - {name})
        for name, path in scope.items()
    }
    importers = defaultdict(list)
    for name, imported in deps.items():
        for dep in imported:
            importers[dep].append(name)
    batch: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in batch:
            batch.add(name)
            todo.extend(importers[name])
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name not in seen:
            seen.add(name)
            for dep in deps[name]:
                if dep in batch:
                    visit(dep)
            order.append(name)

    for name in sorted(batch):
        visit(name)
    return order


def imports(name: str, path: str, cache: ImportsCache) -> frozenset[str]:
    """Absolute names ``path`` may import; ``from a import b`` yields ``a`` and ``a.b``.
    Parsed once per version of the file (by its stat), kept in ``cache``."""
    try:
        stat = os.stat(path)
    except OSError:
        return frozenset()
    key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    cached = cache.get(path)
    if cached is not None and cached[:2] == (key, name):
        return cached[2]
    try:
        tree = ast.parse(Path(path).read_bytes(), path)
    except OSError:
        return frozenset()
    except (SyntaxError, ValueError):
        # Mid-edit: it still imports what it did, and must block the batch, not drop out.
        return cached[2] if cached is not None else frozenset()
    package = name if os.path.basename(path) == "__init__.py" else name.rpartition(".")[0]
    found = frozenset(_imported_names(tree, package))
    cache[path] = (key, name, found)
    return found


def _imported_names(tree: ast.AST, package: str) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            except (ImportError, ValueError):
                continue
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
