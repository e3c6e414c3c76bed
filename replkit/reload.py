"""Reload edited modules inside the running process, as one transaction, on save.

Clojure keeps the process, and the connections it holds, and re-evaluates the namespaces
that changed. :func:`reload_modules` does that for Python: it executes the changed modules
and every module that imports them into fresh module objects, in dependency order, and swaps
them in only when all of them succeeded; otherwise the last good code keeps running.
:class:`Reloader` does it whenever watchfiles reports a saved ``.py`` file.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib.util
import linecache
import os
import sys
import sysconfig
import threading
import time
import traceback
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import watchfiles

from replkit.errors import ReplkitError

__all__ = [
    "ReloadError",
    "ReloadResult",
    "Reloader",
    "describe",
    "package_root",
    "reload_modules",
]

# Re-executing these would lose the reloader's own state or the defonce registry.
_PINNED = frozenset({"__main__", __name__, "replkit.lifecycle"})
_IGNORED_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".venv", "node_modules", "site-packages", "dist-packages"}
)
_STDLIB_DIRS = tuple(
    os.path.realpath(sysconfig.get_paths()[key]) + os.sep for key in ("stdlib", "platstdlib")
)
_RETRY_SECONDS = 1.0

# module name -> digest of the source it was last executed from
_loaded: dict[str, bytes] = {}
# path -> (stat key, module name, names it imports)
_imports_cache: dict[str, tuple[tuple[int, int, int], str, frozenset[str]]] = {}
# Reentrant: hooks and listeners run under it and may reload too.
_lock = threading.RLock()
_MISSING = object()
# (namespace, key, previous value or _MISSING), undone in reverse when a batch fails
_Undo = list[tuple[dict[str, object], str, object]]


class ReloadError(ReplkitError):
    """Why a batch was not swapped in, as one line: ``app/x.py:12: SyntaxError: invalid syntax``."""


@dataclass(frozen=True)
class ReloadResult:
    """What one batch did: the modules swapped in, or the error that kept the old code."""

    modules: tuple[str, ...]
    seconds: float
    error: ReloadError | None = None
    hook_errors: tuple[ReloadError, ...] = ()

    def __str__(self) -> str:
        if self.error is not None:
            head = f"reload failed: {self.error} (still running the last good code)"
        else:
            ms = round(self.seconds * 1000)
            head = f"reloaded {', '.join(self.modules)} in {f'{ms} ms' if ms else '<1 ms'}"
        return "\n".join([head, *(f"  hook failed: {error}" for error in self.hook_errors)])


@dataclass
class _Step:
    name: str
    path: str
    old: types.ModuleType
    code: types.CodeType
    digest: bytes
    fresh: types.ModuleType | None = None


class _Forwarder(types.ModuleType):
    """The class of a replaced module: every attribute is the current module's of that name.

    Code that kept the old object (``import app.x as x``, a REPL variable) sees the new code,
    while the old functions still running keep their own globals.
    """

    def __getattribute__(self, attr: str) -> object:
        target = _successor(self)
        if target is None:
            return types.ModuleType.__getattribute__(self, attr)
        return getattr(target, attr)

    def __setattr__(self, attr: str, value: object) -> None:
        target = _successor(self)
        types.ModuleType.__setattr__(self if target is None else target, attr, value)

    def __delattr__(self, attr: str) -> None:
        target = _successor(self)
        types.ModuleType.__delattr__(self if target is None else target, attr)

    def __dir__(self) -> Iterable[str]:
        target = _successor(self)
        return types.ModuleType.__dir__(self) if target is None else dir(target)


def _successor(module: types.ModuleType) -> types.ModuleType | None:
    name = _namespace(module).get("__name__")
    current = sys.modules.get(name) if isinstance(name, str) else None
    return None if current is None or current is module else current


def _namespace(module: types.ModuleType) -> dict[str, object]:
    # Bypasses __getattribute__ overrides: forwarders, and lazy modules that would load.
    return object.__getattribute__(module, "__dict__")


def reload_modules(names: Iterable[str]) -> ReloadResult:
    """Reload these modules and every loaded module that imports them (transitively), in
    dependency order, as one transaction.

    Raises ValueError for a name that is not a loaded module with a project ``.py`` file.
    """
    with _lock:
        scope = _scope(None)
        names = list(names)
        unknown = [name for name in names if name not in scope]
        if unknown:
            raise ValueError(f"not loaded from a project .py file: {', '.join(unknown)}")
        return _reload(names, scope)


def package_root(module: types.ModuleType) -> Path:
    """The directory to watch for ``module``: its top-level package's, or its own file's."""
    top = sys.modules.get(module.__name__.partition(".")[0], module)
    locations = getattr(top, "__path__", None)
    if locations:
        return Path(next(iter(locations))).resolve()
    return Path(top.__file__ or ".").resolve().parent


def _scope(roots: tuple[str, ...] | None) -> dict[str, str]:
    """Loaded modules with a project source file under ``roots`` (any, if None): name -> path."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name in _PINNED or not isinstance(module, types.ModuleType):
            continue
        path = _source_path(_namespace(module).get("__file__"))
        if path is not None and (roots is None or path.startswith(roots)):
            found[name] = path
    return found


@functools.lru_cache(maxsize=8192)
def _source_path(file: object) -> str | None:
    if not isinstance(file, str) or not file.endswith(".py"):
        return None
    path = os.path.realpath(file)
    if path.startswith(_STDLIB_DIRS) or not _IGNORED_DIRS.isdisjoint(path.split(os.sep)):
        return None
    return path


def _reload(names: Iterable[str], scope: dict[str, str]) -> ReloadResult:
    started = time.perf_counter()
    with _lock:
        order = _plan(names, scope)
        try:
            steps = [_compile(name, scope[name]) for name in order]
        except ReloadError as error:
            return ReloadResult((), time.perf_counter() - started, error)
        hook_errors = _run_hooks([(step.old, step.path) for step in steps], "__before_reload__")
        error = _transaction(steps)
        if error is None:
            live = [(step.fresh, step.path) for step in steps if step.fresh is not None]
        else:
            # The old modules stay: let them resume whatever __before_reload__ paused.
            live = [(step.old, step.path) for step in steps]
        hook_errors += _run_hooks(live, "__after_reload__")
        modules = tuple(order) if error is None else ()
        return ReloadResult(modules, time.perf_counter() - started, error, tuple(hook_errors))


def _plan(names: Iterable[str], scope: dict[str, str]) -> list[str]:
    """``names`` and their importers in ``scope``, dependencies first (cycles broken by name)."""
    deps = {
        name: sorted((_imports(name, path) & scope.keys()) - {name}) for name, path in scope.items()
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


def _imports(name: str, path: str) -> frozenset[str]:
    """Absolute names ``path`` may import; ``from a import b`` yields ``a`` and ``a.b``."""
    try:
        stat = os.stat(path)
    except OSError:
        return frozenset()
    key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    cached = _imports_cache.get(path)
    if cached is not None and cached[:2] == (key, name):
        return cached[2]
    try:
        tree = ast.parse(Path(path).read_bytes(), path)
    except OSError:
        return frozenset()
    except (SyntaxError, ValueError):
        # Mid-edit: it still imports what it did, and must block the batch, not drop out of it.
        return cached[2] if cached is not None else frozenset()
    package = name if os.path.basename(path) == "__init__.py" else name.rpartition(".")[0]
    found = frozenset(_imported_names(tree, package))
    _imports_cache[path] = (key, name, found)
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


def _compile(name: str, path: str) -> _Step:
    # Compiled from the source itself: a .pyc is trusted by mtime (in seconds) and size, so a
    # same-size edit within the same second would bring back the old code.
    try:
        source = Path(path).read_bytes()
        code = compile(source, path, "exec", dont_inherit=True)
    except Exception as exc:
        raise _error(exc, [path]) from exc
    return _Step(name, path, sys.modules[name], code, _digest_of(source))


def _transaction(steps: Sequence[_Step]) -> ReloadError | None:
    """Execute every step into a fresh module; commit them all, or restore every old one."""
    undo: _Undo = []
    for step in steps:
        try:
            _execute(step, undo)
        except BaseException as exc:
            for namespace, key, value in reversed(undo):
                if value is _MISSING:
                    namespace.pop(key, None)
                else:
                    namespace[key] = value
            if not isinstance(exc, Exception | SystemExit):
                raise
            return _error(exc, [step.path, *(other.path for other in steps)])
    _commit(steps)
    return None


def _execute(step: _Step, undo: _Undo) -> None:
    locations = _namespace(step.old).get("__path__")
    spec = importlib.util.spec_from_file_location(
        step.name, step.path, submodule_search_locations=list(locations) if locations else None
    )
    assert spec is not None  # a .py path always has a loader
    step.fresh = fresh = importlib.util.module_from_spec(spec)
    # Modules executed later in the batch import from this one: they must get the new objects.
    _set(sys.modules, step.name, fresh, undo)
    parent, _, child = step.name.rpartition(".")
    if parent in sys.modules:
        _set(_namespace(sys.modules[parent]), child, fresh, undo)
    exec(step.code, fresh.__dict__)
    if locations:
        _adopt_submodules(step.old, fresh)


def _set(namespace: dict[str, object], key: str, value: object, undo: _Undo) -> None:
    undo.append((namespace, key, namespace.get(key, _MISSING)))
    namespace[key] = value


def _adopt_submodules(old: types.ModuleType, fresh: types.ModuleType) -> None:
    """Keep ``pkg.sub`` reachable: the package's own code did not necessarily import ``sub``."""
    for attr, value in _namespace(old).items():
        name = f"{fresh.__name__}.{attr}"
        if attr in fresh.__dict__ or not isinstance(value, types.ModuleType):
            continue
        if _namespace(value).get("__name__") == name:
            fresh.__dict__[attr] = sys.modules.get(name, value)


def _commit(steps: Sequence[_Step]) -> None:
    _rebind_main(steps)
    for step in steps:
        _loaded[step.name] = step.digest
        # Tracebacks must quote the new lines even if size and mtime did not change.
        linecache.cache.pop(step.path, None)
        # A module class with its own layout cannot be retyped: that one keeps the old code.
        with contextlib.suppress(TypeError):
            step.old.__class__ = _Forwarder


def _rebind_main(steps: Sequence[_Step]) -> None:
    """Point ``__main__`` names (the REPL's) from old modules and their functions and classes
    to the new ones, which covers ``from app.x import start`` typed at the prompt."""
    namespace = getattr(sys.modules.get("__main__"), "__dict__", None)
    if namespace is None:
        return
    new: dict[int, object] = {}
    for step in steps:
        new[id(step.old)] = step.fresh
        for attr, value in _namespace(step.old).items():
            if isinstance(value, types.FunctionType | type) and hasattr(step.fresh, attr):
                new.setdefault(id(value), getattr(step.fresh, attr))
    for key, value in list(namespace.items()):
        if id(value) in new:
            namespace[key] = new[id(value)]


def _run_hooks(modules: Sequence[tuple[types.ModuleType, str]], hook: str) -> list[ReloadError]:
    errors = []
    for module, path in modules:
        function = _namespace(module).get(hook)
        if callable(function):
            try:
                function()
            except Exception as exc:
                errors.append(_error(exc, [path], f" (in {module.__name__}.{hook})"))
    return errors


def describe(exc: BaseException, files: Sequence[str] = ()) -> str:
    """``path:line: ExcType: message`` on one line: where a SyntaxError points, else the
    innermost frame in ``files`` (the first one, without a line, if none is), or in any
    source file if ``files`` is empty."""
    if isinstance(exc, SyntaxError) and exc.filename:
        path, line, detail = exc.filename, exc.lineno, exc.msg
    else:
        path, line = _innermost(exc, files)
        detail = str(exc)
    where = _display_path(path) + (f":{line}" if line else "")
    message = f"{where}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    return " ".join(message.splitlines())


def _error(exc: BaseException, files: Sequence[str], suffix: str = "") -> ReloadError:
    error = ReloadError(describe(exc, files) + suffix)
    error.__cause__ = exc
    return error


def _innermost(exc: BaseException, files: Sequence[str]) -> tuple[str, int | None]:
    tb = traceback.walk_tb(exc.__traceback__)
    frames = [(frame.f_code.co_filename, line) for frame, line in tb]
    for file, line in reversed(frames):
        if file in files if files else not file.startswith("<"):
            return file, line
    return (files[0] if files else "<unknown>"), None


def _display_path(path: str) -> str:
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed
        return path
    return os.path.relpath(path, cwd) if path.startswith(cwd + os.sep) else path


def _digest_of(source: bytes) -> bytes:
    return hashlib.blake2b(source, digest_size=16).digest()


def _digest(path: str) -> bytes | None:
    try:
        return _digest_of(Path(path).read_bytes())
    except OSError:
        return None


def _print(result: ReloadResult) -> None:
    # Looked up at each call: prompt_toolkit's patch_stdout replaces the streams.
    print(result, file=sys.stdout if result.error is None else sys.stderr, flush=True)


def _is_source_change(change: watchfiles.Change, path: str) -> bool:
    """watchfiles filter: a saved ``.py`` file. Editors' swap, backup and temp files
    (``.swp``, ``~``, ``4913``, ``.tmp``) do not end in ``.py``; ``.#`` locks and hidden files
    start with a dot."""
    name = os.path.basename(path)
    return (
        change != watchfiles.Change.deleted
        and name.endswith(".py")
        and not name.startswith(".")
        and _IGNORED_DIRS.isdisjoint(path.split(os.sep))
    )


class _StopSignal:
    """watchfiles' ``stop_event``. Rust polls it only once its watches are in place, so the
    first poll tells :meth:`Reloader.start` that a save from now on will be seen."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.watching = threading.Event()

    def is_set(self) -> bool:
        if not self.watching.is_set():  # polled every step: skip set()'s lock after the first
            self.watching.set()
        return self.stop.is_set()


class Reloader:
    """Reload the loaded modules under ``roots`` whose files changed, on save or on demand.

    ``step_ms`` is how often watchfiles looks at the changes collected by the OS: a batch is
    handed over once a step brings no new change, so save -> reload takes 1-2 steps plus the
    reload itself. ``debounce_ms`` caps how long a stream of changes (a checkout) is grouped.
    """

    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]],
        *,
        report: Callable[[ReloadResult], None] | None = None,
        debounce_ms: int = 200,
        step_ms: int = 10,
    ) -> None:
        self.roots = tuple(Path(root).resolve() for root in roots)
        for root in self.roots:
            if not root.is_dir():
                raise NotADirectoryError(f"not a directory: {root}")
        self.on_reload: list[Callable[[ReloadResult], None]] = []
        self._report = report if report is not None else _print
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._prefixes = tuple(f"{root}{os.sep}" for root in self.roots)
        self._signal = _StopSignal()
        self._thread: threading.Thread | None = None
        # Changed modules of a failed batch: the save that fixes it may be of another file.
        self._pending: set[str] = set()
        self._remember_loaded()

    @property
    def running(self) -> bool:
        """Whether the watcher thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start watching; returns once a file saved from now on will be reloaded."""
        if self.running:
            return
        self._remember_loaded()
        self._signal = signal = _StopSignal()
        self._thread = threading.Thread(
            target=self._watch, args=(signal,), name="replkit-reload", daemon=True
        )
        self._thread.start()
        signal.watching.wait()

    def stop(self) -> None:
        """Stop watching and wait for the watcher thread to end."""
        thread, self._thread = self._thread, None
        self._signal.stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def reload(self) -> ReloadResult | None:
        """Reload now the modules whose source changed since they were loaded; None if none.

        The result is returned, not reported; ``on_reload`` listeners are called as on save.
        """
        with _lock:
            scope = _scope(self._prefixes)
            return self._reload_changed(scope, scope)

    def _remember_loaded(self) -> None:
        # A module imported before the reloader existed is taken as loaded from its file as it
        # is now; one imported later is reloaded on its first change event. Its imports are
        # parsed now, while the file is good, and so the first reload need not parse them all.
        with _lock:
            for name, path in _scope(self._prefixes).items():
                if name not in _loaded and (digest := _digest(path)) is not None:
                    _loaded[name] = digest
                _imports(name, path)

    def _reload_changed(self, names: Iterable[str], scope: dict[str, str]) -> ReloadResult | None:
        candidates = {*names, *(name for name in self._pending if name in scope)}
        changed = sorted(
            name for name in candidates if _digest(scope[name]) not in (None, _loaded.get(name))
        )
        if not changed:
            return None
        result = _reload(changed, scope)
        self._pending = set(changed) if result.error is not None else set()
        return result if result.error is not None else self._notify(result)

    def _notify(self, result: ReloadResult) -> ReloadResult:
        errors = []
        for listener in list(self.on_reload):
            try:
                listener(result)
            except Exception as exc:
                errors.append(_error(exc, [], f" (in on_reload listener {listener!r})"))
        return replace(result, hook_errors=result.hook_errors + tuple(errors)) if errors else result

    def _watch(self, signal: _StopSignal) -> None:
        try:
            self._watch_until_stopped(signal)
        finally:
            signal.watching.set()  # start() must never wait for a thread that has ended

    def _watch_until_stopped(self, signal: _StopSignal) -> None:
        while not signal.stop.is_set():
            try:
                for changes in watchfiles.watch(
                    *self.roots,
                    watch_filter=_is_source_change,
                    debounce=self._debounce_ms,
                    step=self._step_ms,
                    stop_event=signal,
                    raise_interrupt=False,
                ):
                    self._handle(changes)
            except Exception as exc:
                signal.watching.set()  # start() must not wait for a watcher that cannot start
                self._publish(ReloadResult((), 0.0, _error(exc, [], " (watcher restarting)")))
                signal.stop.wait(_RETRY_SECONDS)

    def _handle(self, changes: set[tuple[watchfiles.Change, str]]) -> None:
        try:
            paths = {os.path.realpath(path) for _, path in changes}
            with _lock:
                scope = _scope(self._prefixes)
                result = self._reload_changed([n for n, p in scope.items() if p in paths], scope)
        except Exception as exc:
            result = ReloadResult((), 0.0, _error(exc, []))
        if result is not None:
            self._publish(result)

    def _publish(self, result: ReloadResult) -> None:
        try:
            self._report(result)
        except Exception:
            traceback.print_exc()  # the report callback itself failed: stderr is all that is left
