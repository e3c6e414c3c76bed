"""Reload edited modules inside the running process, as one transaction.

Clojure keeps the process, and the connections it holds, and re-evaluates the namespaces
that changed. A :class:`Batch` does that for Python: it executes the changed modules and
every project module that imports them into fresh module objects, in dependency order
(:mod:`replkit.imports`), and swaps them in only if all of them succeeded, and whatever
the caller checks before committing (building the app's new connector) succeeded too.
Otherwise the old modules stay, untouched, and the last good code keeps running.

Old module objects, which code and the REPL may still hold, forward every attribute to
their successor; names in ``__main__`` (the REPL's namespace) are rebound to the new
objects. A module may define ``__before_reload__()``, run on the old module before the
batch, and ``__after_reload__()``, run on whichever module is live afterwards.

Process-wide state, all of it, is :data:`state` (see :class:`State`), plus the modules in
:data:`sys.modules`, which a batch changes only while it executes (so that the modules
later in the batch import the fresh ones) and then commits or restores, under
``state.lock``; and, once :func:`record_imports` ran, a finder first on ``sys.meta_path``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import marshal
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replkit import imports
from replkit.errors import ReplkitError
from replkit.imports import namespace

__all__ = [
    "Batch",
    "ReloadError",
    "ReloadResult",
    "changed",
    "describe",
    "digest",
    "error_of",
    "record_imports",
    "reload_modules",
    "remember",
    "run",
]

_MISSING = object()


@dataclass
class State:
    """What the reloader keeps for the life of the process."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    """Guards the fields below and every change a batch makes to ``sys.modules``. Never
    held while module code runs, so a stuck import cannot stop other reloads."""
    loaded: dict[str, bytes] = field(default_factory=dict)
    """Module name -> digest of the source it runs, for each module executed by replkit,
    imported since :func:`record_imports`, or seen when a watch started: a file whose digest
    differs has unloaded changes."""
    imports: imports.ImportsCache = field(default_factory=dict)
    """What each project file imports, parsed once per version of the file."""


state = State()


class ReloadError(ReplkitError):
    """Why a batch was not swapped in, as one line: ``app/x.py:12: SyntaxError: invalid syntax``."""


@dataclass(frozen=True)
class ReloadResult:
    """What one batch did: the modules swapped in, or the error that kept the old code.

    ``notes`` are what the report adds about the result: what the new code reaches (or
    cannot reach), and that an earlier failure is over. ``stuck`` names the module a batch
    has been executing for ``seconds`` when it reports that it has not finished yet.
    """

    modules: tuple[str, ...]
    seconds: float
    error: ReloadError | None = None
    hook_errors: tuple[ReloadError, ...] = ()
    notes: tuple[str, ...] = ()
    stuck: str | None = None

    @property
    def ok(self) -> bool:
        """Whether nothing went wrong (a batch that is stuck, or that failed, is not ok)."""
        return self.error is None and self.stuck is None

    def __str__(self) -> str:
        if self.stuck is not None:
            head = (
                f"reload stuck: {self.stuck} still executing after {self.seconds:.0f} s "
                "(a loop or a blocking call at its top level?); still running the last good "
                "code, save again to retry"
            )
        elif self.error is not None:
            head = f"reload failed: {self.error} (still running the last good code)"
        elif self.modules:
            ms = round(self.seconds * 1000)
            head = f"reloaded {', '.join(self.modules)} in {f'{ms} ms' if ms else '<1 ms'}"
        else:
            head = ""
        head = "; ".join(part for part in (head, *self.notes) if part)
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
    name = namespace(module).get("__name__")
    current = sys.modules.get(name) if isinstance(name, str) else None
    return None if current is None or current is module else current


class Batch:
    """One transaction: plan and compile (in the constructor), :meth:`execute`, then
    :meth:`commit` or :meth:`rollback`.

    ``names`` are the changed modules; their importers among ``scope`` (the loaded project
    modules, name -> path) join the batch. Raises :class:`ReloadError` if a source does not
    compile. Only :meth:`execute` runs user code; it may take long, or never return, and
    any thread may meanwhile :meth:`rollback` it, after which it changes nothing more.
    """

    def __init__(self, names: Iterable[str], scope: dict[str, str]) -> None:
        self.started = time.perf_counter()
        with state.lock:
            self.order = imports.plan(names, scope, state.imports)
            self._steps = [_compile(name, scope[name]) for name in self.order]
        self._undo: list[tuple[dict[str, object], str, object]] = []
        self._done = False
        self.executing: str | None = None
        """The module being executed now, as a path for people to read."""
        self.hook_errors = _run_hooks([(s.old, s.path) for s in self._steps], "__before_reload__")

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules of the batch, dependencies first."""
        return tuple(self.order)

    @property
    def paths(self) -> list[str]:
        """Their source files, in the same order."""
        return [step.path for step in self._steps]

    def execute(self) -> ReloadError | None:
        """Execute every module into a fresh module object; the error that stopped it, if
        any, with everything restored. Module code raising anything, ``SystemExit`` and
        ``KeyboardInterrupt`` included, is an error of that module, never the caller's."""
        for step in self._steps:
            try:
                if not self._begin(step):
                    return None  # rolled back meanwhile
                self.executing = display_path(step.path)
                exec(step.code, namespace(step.fresh))  # type: ignore[arg-type]
                if not self._finish(step):
                    return None
            except BaseException as exc:
                self.rollback()
                return error_of(exc, [step.path, *self.paths])
        self.executing = None
        return None

    def commit(self) -> ReloadResult:
        """Make the fresh modules the live ones; returns the result to report."""
        with state.lock:
            if self._done:
                raise RuntimeError("this batch was already committed or rolled back")
            self._done = True
            _rebind_main(self._steps)
            for step in self._steps:
                state.loaded[step.name] = step.digest
                # Tracebacks must quote the new lines even if size and mtime did not change.
                linecache.cache.pop(step.path, None)
                # A module class with its own layout cannot be retyped: it keeps the old code.
                with contextlib.suppress(TypeError):
                    step.old.__class__ = _Forwarder
        live = [(step.fresh, step.path) for step in self._steps if step.fresh is not None]
        self.hook_errors += _run_hooks(live, "__after_reload__")
        return self.result()

    def rollback(self) -> None:
        """Put every old module back; harmless when already done."""
        with state.lock:
            if self._done:
                return
            self._done = True
            for target, key, value in reversed(self._undo):
                if value is _MISSING:
                    target.pop(key, None)
                else:
                    target[key] = value
            self._undo.clear()
        # The old modules stay: let them resume whatever __before_reload__ paused.
        self.hook_errors += _run_hooks([(s.old, s.path) for s in self._steps], "__after_reload__")

    def failed(self, error: ReloadError) -> ReloadResult:
        """The result to report for a batch that ``error`` stopped (after :meth:`rollback`)."""
        return ReloadResult((), self._elapsed(), error, tuple(self.hook_errors))

    def result(self) -> ReloadResult:
        """The result of a committed batch."""
        return ReloadResult(self.modules, self._elapsed(), None, tuple(self.hook_errors))

    def _elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _begin(self, step: _Step) -> bool:
        locations = namespace(step.old).get("__path__")
        spec = importlib.util.spec_from_file_location(
            step.name,
            step.path,
            submodule_search_locations=list(locations) if locations else None,  # type: ignore[call-overload]
        )
        assert spec is not None  # a .py path always has a loader
        step.fresh = importlib.util.module_from_spec(spec)
        return not self._done

    def _finish(self, step: _Step) -> bool:
        # Installed once executed, never while executing: whoever looks in sys.modules (the
        # REPL, the app's own code) sees a whole module, old or new. The modules later in the
        # batch import this one from there; requests run on the connector of the last
        # committed batch and never look.
        fresh = step.fresh
        assert fresh is not None
        with state.lock:
            if self._done:
                return False
            self._set(sys.modules, step.name, fresh)
            parent, _, child = step.name.rpartition(".")
            if parent in sys.modules:
                self._set(namespace(sys.modules[parent]), child, fresh)
            if namespace(step.old).get("__path__"):
                _adopt_submodules(step.old, fresh)
            return True

    def _set(self, target: dict[str, object], key: str, value: object) -> None:
        self._undo.append((target, key, target.get(key, _MISSING)))
        target[key] = value


def reload_modules(names: Iterable[str]) -> ReloadResult:
    """Reload these modules and every loaded module that imports them (transitively), in
    dependency order, as one transaction, in the calling thread.

    Raises ValueError for a name that is not a loaded module with a project ``.py`` file.
    """
    names = list(names)
    with state.lock:
        scope = imports.project_modules()
        unknown = [name for name in names if name not in scope]
        if unknown:
            raise ValueError(f"not loaded from a project .py file: {', '.join(unknown)}")
        return run(names, scope)


def run(names: Iterable[str], scope: dict[str, str]) -> ReloadResult:
    """Plan, execute and commit (or roll back) a batch in the calling thread."""
    try:
        batch = Batch(names, scope)
    except ReloadError as error:
        return ReloadResult((), 0.0, error)
    error = batch.execute()
    return batch.commit() if error is None else batch.failed(error)


def changed(scope: dict[str, str], candidates: Iterable[str]) -> list[str]:
    """Those of ``candidates`` whose file differs from the source they were loaded from."""
    with state.lock:
        return sorted(
            name
            for name in candidates
            if name in scope and digest(scope[name]) not in (None, state.loaded.get(name))
        )


def remember(scope: dict[str, str]) -> None:
    """Take the modules in ``scope`` that replkit has not executed as loaded from their files
    as they are now, and parse their imports while the files are good."""
    with state.lock:
        for name, path in scope.items():
            if name not in state.loaded and (found := digest(path)) is not None:
                # An import that recorded the module meanwhile knows better.
                state.loaded.setdefault(name, found)
            imports.imports(name, path, state.imports)


def record_imports() -> None:
    """From now on, run each project module Python imports from the very bytes whose digest
    :data:`state` records, so that a save made between the import and the watch on its file
    still counts as a change. Harmless to call again."""
    with state.lock:
        if not any(isinstance(finder, _Recorder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _Recorder())


class _Recorder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``, it asks the finders after it (pytest's assertion
    rewriting, an editable install's finder, PathFinder) and changes only the loader of a
    project source file they would load with the plain ``SourceFileLoader``: to
    :class:`_Recorded`."""

    def __init__(self) -> None:
        self._asking = threading.local()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        # importlib.reload() passes the module: what it executes is not what replkit loaded,
        # so the file's changes stay pending and replkit still reloads its importers.
        asking: set[str] = self._asking.__dict__.setdefault("names", set())
        if target is not None or fullname in asking:  # a finder asking importlib itself
            return None
        asking.add(fullname)
        try:
            finders = list(sys.meta_path)
            spec = next((f for finder in finders if (f := self._ask(finder, fullname, path))), None)
        finally:
            asking.discard(fullname)
        if (
            spec is not None
            and type(spec.loader) is importlib.machinery.SourceFileLoader
            and imports.source_path(spec.origin) is not None
        ):
            spec.loader = _Recorded(fullname, spec.loader.path)
        return spec

    def _ask(
        self, finder: Any, fullname: str, path: Sequence[str] | None
    ) -> importlib.machinery.ModuleSpec | None:
        """What ``finder`` finds, as importlib asks it."""
        if finder is self:
            return None
        if hasattr(finder, "find_spec"):
            return finder.find_spec(fullname, path, None)  # type: ignore[no-any-return]
        if hasattr(finder, "find_module"):  # a legacy finder, which Python 3.11 still asks
            loader = finder.find_module(fullname, path)
            return None if loader is None else importlib.util.spec_from_loader(fullname, loader)
        return None


class _Recorded(importlib.machinery.SourceFileLoader):
    """Reads the source when the import makes the module, records that source's digest as
    the module's, and executes that very source. (importlib's own ``exec_module`` runs it,
    so that tracebacks show none of the import machinery's frames.)"""

    _source: bytes | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        """Read the source; let importlib make the module."""
        self._source = source = self.get_data(self.path)
        # One dict store, without state.lock: reload_modules() holds that lock while module
        # code runs, which may wait for this import.
        state.loaded[self.name] = _digest_of(source)

    def get_code(self, fullname: str) -> types.CodeType:
        """The code of the source read when the module was made (of the file as it is now,
        for a caller that only asks for code, such as ``runpy``): from a ``.pyc`` only if it
        holds the hash of these very bytes (one validated by mtime in seconds and size may be
        of an earlier version, see :func:`_compile`); else compiled, and cached with that
        hash."""
        source, self._source = self._source or self.get_data(self.path), None
        source_hash = importlib.util.source_hash(source)
        cached = importlib.util.cache_from_source(self.path)
        with contextlib.suppress(Exception):  # missing, truncated, corrupt: compile instead
            data = self.get_data(cached)
            hash_based = int.from_bytes(data[4:8], "little") & 1
            if data[:4] == importlib.util.MAGIC_NUMBER and hash_based and data[8:16] == source_hash:
                code = marshal.loads(data[16:])
                # Not one of a file since moved: tracebacks must name the file as it is.
                if isinstance(code, types.CodeType) and code.co_filename == self.path:
                    return code
        code = self.source_to_code(source, self.path)
        if not sys.dont_write_bytecode:
            checked_hash = (0b11).to_bytes(4, "little")  # hash-based, checked by every import
            header = importlib.util.MAGIC_NUMBER + checked_hash + source_hash
            # As importlib caches bytecode: with the source file's permissions.
            self._cache_bytecode(self.path, cached, header + marshal.dumps(code))  # type: ignore[attr-defined]
        return code


def digest(path: str) -> bytes | None:
    """The digest of the file at ``path``; ``None`` if it cannot be read."""
    try:
        return _digest_of(Path(path).read_bytes())
    except OSError:
        return None


def _digest_of(source: bytes) -> bytes:
    return hashlib.blake2b(source, digest_size=16).digest()


def _compile(name: str, path: str) -> _Step:
    # Compiled from the source itself: a .pyc is trusted by mtime (in seconds) and size, so a
    # same-size edit within the same second would bring back the old code.
    try:
        source = Path(path).read_bytes()
        code = compile(source, path, "exec", dont_inherit=True)
    except Exception as exc:
        raise error_of(exc, [path]) from exc
    return _Step(name, path, sys.modules[name], code, _digest_of(source))


def _adopt_submodules(old: types.ModuleType, fresh: types.ModuleType) -> None:
    """Keep ``pkg.sub`` reachable: the package's own code did not necessarily import ``sub``."""
    for attr, value in namespace(old).items():
        name = f"{fresh.__name__}.{attr}"
        if attr in fresh.__dict__ or not isinstance(value, types.ModuleType):
            continue
        if namespace(value).get("__name__") == name:
            fresh.__dict__[attr] = sys.modules.get(name, value)


def _rebind_main(steps: Sequence[_Step]) -> None:
    """Point ``__main__`` names (the REPL's) from old modules and their functions and classes
    to the new ones, which covers ``from app.x import start`` typed at the prompt."""
    main = sys.modules.get("__main__")
    main_namespace = namespace(main) if main is not None else None
    if main_namespace is None:
        return
    new: dict[int, object] = {}
    for step in steps:
        new[id(step.old)] = step.fresh
        for attr, value in namespace(step.old).items():
            if isinstance(value, types.FunctionType | type) and hasattr(step.fresh, attr):
                new.setdefault(id(value), getattr(step.fresh, attr))
    for key, value in list(main_namespace.items()):
        if id(value) in new:
            main_namespace[key] = new[id(value)]


def _run_hooks(modules: Sequence[tuple[types.ModuleType, str]], hook: str) -> list[ReloadError]:
    errors = []
    for module, path in modules:
        function = namespace(module).get(hook)
        if callable(function):
            try:
                function()
            except Exception as exc:
                errors.append(error_of(exc, [path], f" (in {module.__name__}.{hook})"))
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
    where = display_path(path) + (f":{line}" if line else "")
    message = f"{where}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    return " ".join(message.splitlines())


def error_of(exc: BaseException, files: Sequence[str] = (), suffix: str = "") -> ReloadError:
    """``exc`` as a one-line :class:`ReloadError` (see :func:`describe`)."""
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


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it is under it."""
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed
        return path
    return os.path.relpath(path, cwd) if path.startswith(cwd + os.sep) else path
