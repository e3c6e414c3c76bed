"""Watch the project's files and reload what a save changed, never stalling on the way.

:class:`Reloader` runs watchfiles on threads of its own. Each group of saves becomes one
:class:`~replkit.reload.Batch`, executed on a thread of its own too, so that a module whose
import never returns cannot stop the watching: after ``stuck_after`` seconds the report
names it, the last good code goes on serving, and the next save abandons that batch and
starts a new one. A batch that is abandoned changes nothing.

Apps served from the reloaded code take part through :meth:`Reloader.follow`: between
executing the modules and committing them, each app's ``prepare`` runs (it builds the app's
new connector from the fresh modules), and what it raises fails the batch like an error in
a module. After the commit, ``apply`` puts what ``prepare`` built to work (the new
connector takes over the socket) and says what the report should add.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import watchfiles

from replkit import imports
from replkit.errors import ReplkitError
from replkit.reload import (
    Batch,
    ReloadError,
    ReloadResult,
    changed,
    display_path,
    error_of,
    record_imports,
)
from replkit.reload import remember as remember_loaded

__all__ = ["Reloader"]

_RETRY_SECONDS = 1.0

Prepare = Callable[[Batch], Any]
Apply = Callable[[Any], str | None]


def print_result(result: ReloadResult) -> None:
    """Print ``result`` as one write (so no other output lands inside the line): successes
    to stdout, failures to stderr. The streams are looked up at each call: prompt_toolkit's
    ``patch_stdout`` and Jupyter replace them."""
    stream = sys.stdout if result.ok else sys.stderr
    stream.write(f"{result}\n")
    stream.flush()


def is_source_change(change: watchfiles.Change, path: str) -> bool:
    """watchfiles filter: a saved ``.py`` file. Editors' swap, backup and temp files
    (``.swp``, ``~``, ``4913``, ``.tmp``) do not end in ``.py``; ``.#`` locks and hidden files
    start with a dot."""
    name = os.path.basename(path)
    return (
        change != watchfiles.Change.deleted
        and name.endswith(".py")
        and not name.startswith(".")
        and imports.IGNORED_DIRS.isdisjoint(path.split(os.sep))
    )


def _end(watchers: list[threading.Thread], stop: threading.Event, timeout: float) -> None:
    """Stop watcher threads, waiting at most ``timeout`` seconds for them to end."""
    stop.set()
    deadline = time.monotonic() + timeout
    for thread in watchers:
        if thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


class _StopSignal:
    """watchfiles' ``stop_event``. Rust polls it only once its watches are in place, so the
    first poll tells :meth:`Reloader.start` that a save from now on will be seen."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.watching = threading.Event()

    def is_set(self) -> bool:
        if not self.watching.is_set():  # polled every step: skip set()'s lock after the first
            self.watching.set()
        return self.stop.is_set()


@dataclass(eq=False)
class _Job:
    """One batch in flight, and what the watcher knows of it."""

    paths: set[str]
    started: float = field(default_factory=time.monotonic)
    names: set[str] = field(default_factory=set)
    batch: Batch | None = None
    thread: threading.Thread | None = None
    abandoned: bool = False
    finished: bool = False


class _Abandoned(BaseException):
    """Raised into the thread of a batch a newer save replaced, to end a runaway loop."""


class Reloader:
    """Reload the loaded project modules whose files changed, on save or on demand.

    ``roots`` are directories watched with their subdirectories, ``flat_roots`` directories
    watched without them; only modules loaded from files there are reloaded. With neither,
    the reloader watches every loaded project module (see :mod:`replkit.imports`) and
    follows the project as it grows: a reload that imports a new package watches it too.

    ``step_ms`` is how often watchfiles looks at the changes collected by the OS: a batch is
    handed over once a step brings no new change, so save -> reload takes 1-2 steps plus the
    reload itself. ``debounce_ms`` caps how long a stream of changes (a checkout) is grouped.
    ``stuck_after`` is how many seconds a batch may execute before it is reported stuck.
    """

    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]] = (),
        *,
        flat_roots: Sequence[str | os.PathLike[str]] = (),
        report: Callable[[ReloadResult], None] = print_result,
        debounce_ms: int = 200,
        step_ms: int = 10,
        stuck_after: float = 3.0,
    ) -> None:
        self._follow = not roots and not flat_roots
        if self._follow:
            roots, flat_roots = imports.watch_roots(imports.project_modules())
        self._set_roots(roots, flat_roots)
        self._report = report
        self._apps: list[tuple[Prepare, Apply]] = []
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._stuck_after = stuck_after
        self._stop = threading.Event()
        self._watchers: list[threading.Thread] = []
        self._refreshing = threading.Lock()
        # Guards the fields below, and the commit of each batch with what follows it.
        self._turn = threading.RLock()
        self._job: _Job | None = None
        # Changed modules of a failed or abandoned batch: the save that fixes it may be of
        # another file.
        self._pending: set[str] = set()
        self.failure: ReloadResult | None = None
        """The report of the reload that failed, or is stuck, until one succeeds."""
        record_imports()
        remember_loaded(self._scope())

    @property
    def roots(self) -> tuple[Path, ...]:
        """Every directory watched, with or without its subdirectories."""
        return (*self._trees, *self._flat)

    @property
    def running(self) -> bool:
        """Whether the watcher threads are alive."""
        return bool(self._watchers) and all(thread.is_alive() for thread in self._watchers)

    def start(self) -> None:
        """Start watching; returns once a file saved from now on will be reloaded. When
        already watching the project, look again at what it has loaded (see :meth:`refresh`)."""
        if self._watchers:
            self.refresh()
            return
        if self._follow:
            self._set_roots(*imports.watch_roots(imports.project_modules()))
        scope = self._scope()
        remember_loaded(scope)
        self._watchers, self._stop = self._launch(self._trees, self._flat)
        self._catch_up(scope)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop watching and abandon a batch still executing; waits at most ``timeout``
        seconds for the watcher threads to end."""
        with self._turn:
            if self._job is not None:
                self._abandon(self._job)
        watchers, self._watchers = self._watchers, []
        _end(watchers, self._stop, timeout)

    def refresh(self) -> None:
        """When following the project, also watch the packages it has loaded since. The
        new watchers are active before the old ones stop, so no save is missed."""
        if not self._follow:
            return
        with self._refreshing:
            trees, flat = imports.watch_roots(imports.project_modules())
            if set(trees) <= set(self._trees) and set(flat) <= set(self._flat):
                return
            trees, flat = sorted({*trees, *self._trees}), sorted({*flat, *self._flat})
            if not self._watchers:
                self._set_roots(trees, flat)
                return
            watchers, stop = self._launch(tuple(trees), tuple(flat))
            before = self._scope().keys()
            self._set_roots(trees, flat)
            scope = self._scope()
            remember_loaded(scope)
            (old, self._watchers), old_stop = (self._watchers, watchers), self._stop
            self._stop = stop
            _end(old, old_stop, 1.0)
            self._catch_up({name: scope[name] for name in scope.keys() - before})

    def _catch_up(self, scope: dict[str, str]) -> None:
        """Reload the modules of ``scope`` saved while no watcher looked at their files, once
        watchers do: their digests, recorded at import, tell (see ``record_imports``)."""
        if stale := changed(scope, scope):
            self._submit({scope[name] for name in stale})

    def _launch(
        self, trees: tuple[Path, ...], flat: tuple[Path, ...]
    ) -> tuple[list[threading.Thread], threading.Event]:
        stop = threading.Event()
        threads, signals = [], []
        for paths, recursive in ((trees, True), (flat, False)):
            if not paths:
                continue
            signal = _StopSignal(stop)
            thread = threading.Thread(
                target=self._watch,
                args=(list(paths), recursive, signal),
                name="replkit-reload",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
            signals.append(signal)
        for signal in signals:
            signal.watching.wait()
        return threads, stop

    def follow(self, prepare: Prepare, apply: Apply) -> Callable[[], None]:
        """Have an app take part in every batch (see the module's docstring); returns the
        function that ends it."""
        app = (prepare, apply)
        with self._turn:
            self._apps.append(app)

        def unfollow() -> None:
            with self._turn:
                if app in self._apps:
                    self._apps.remove(app)

        return unfollow

    def reload(self) -> ReloadResult | None:
        """Reload now, in the calling thread, the modules whose source changed since they
        were loaded; ``None`` if none did. The result is returned, not reported."""
        with self._turn:
            if self._job is not None:
                self._abandon(self._job)
            job = _Job(paths=set())
            self._job = job
        return self._run(job, everything=True)

    # The watcher threads.

    def _watch(self, paths: list[Path], recursive: bool, signal: _StopSignal) -> None:
        try:
            while not signal.stop.is_set():
                try:
                    for changes in watchfiles.watch(
                        *paths,
                        watch_filter=is_source_change,
                        debounce=self._debounce_ms,
                        step=self._step_ms,
                        stop_event=signal,
                        raise_interrupt=False,
                        recursive=recursive,
                    ):
                        self._submit({os.path.realpath(path) for _, path in changes})
                except Exception as exc:
                    signal.watching.set()  # start() must not wait for a watcher that cannot start
                    self._publish(ReloadResult((), 0.0, error_of(exc, [], " (watcher restarting)")))
                    signal.stop.wait(_RETRY_SECONDS)
        finally:
            signal.watching.set()  # start() must never wait for a thread that has ended

    def _submit(self, paths: set[str]) -> None:
        with self._turn:
            if self._job is not None:
                paths |= self._job.paths
                self._abandon(self._job)
            job = self._job = _Job(paths=paths)
            job.thread = threading.Thread(
                target=self._run_abandonable, args=(job,), name="replkit-reload-batch", daemon=True
            )
            timer = threading.Timer(self._stuck_after, self._check_stuck, args=(job,))
            timer.daemon = True
        job.thread.start()
        timer.start()

    def _abandon(self, job: _Job) -> None:
        """Under ``_turn``: make sure ``job`` changes nothing more, and stop its thread."""
        self._job = None
        if job.finished or job.abandoned:
            return
        job.abandoned = True
        self._pending |= job.names
        if job.batch is not None:
            job.batch.rollback()
        if job.thread is not None and job.thread.ident is not None:
            # A pure-Python loop at a module's top level would run, and hold the GIL, for
            # ever: interrupt it. A blocking call returns to the thread's loop by itself.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(job.thread.ident), ctypes.py_object(_Abandoned)
            )

    def _check_stuck(self, job: _Job) -> None:
        with self._turn:
            if job.finished or job.abandoned or job.batch is None:
                return
            stuck = job.batch.executing or ", ".join(job.batch.modules)
            self.failure = ReloadResult((), time.monotonic() - job.started, stuck=stuck)
            self._publish(self.failure)

    # A batch, on its own thread (or the caller's, for reload()).

    def _run_abandonable(self, job: _Job) -> None:
        # _Abandoned may arrive at any point once the job is abandoned, even in a finally.
        with contextlib.suppress(_Abandoned):
            self._run(job)

    def _run(self, job: _Job, everything: bool = False) -> ReloadResult | None:
        try:
            result = self._reload(job, everything)
        except _Abandoned:
            return None
        except Exception as exc:  # a bug of replkit's: report it, keep watching
            result = ReloadResult((), 0.0, error_of(exc))
            with self._turn:
                result = None if job.abandoned else result
        finally:
            with self._turn:
                job.finished = True
                if self._job is job:
                    self._job = None
        if result is not None and not everything:
            self._publish(result)
        if result is not None and result.ok and result.modules:
            try:
                self.refresh()
            except Exception as exc:  # watching less than it could must not end the batch
                self._publish(ReloadResult((), 0.0, error_of(exc, [], " (watching new packages)")))
        return result

    def _reload(self, job: _Job, everything: bool) -> ReloadResult | None:
        scope = self._scope()
        by_path = {path: name for name, path in scope.items()}
        touched = set(scope) if everything else {by_path[p] for p in job.paths if p in by_path}
        with self._turn:
            job.names = touched | (self._pending & scope.keys())
        names = changed(scope, job.names)
        notes = tuple(
            f"{display_path(path)} changed, but no loaded module comes from it: "
            "nothing to reload (import it from the app)"
            for path in sorted(job.paths - by_path.keys())
        )
        if not names:
            return self._nothing_changed(job, notes)
        try:
            batch = Batch(names, scope)
        except ReloadError as error:
            return self._conclude(job, None, error, [], notes)
        job.batch = batch
        error = batch.execute()
        with self._turn:
            apps = list(self._apps)
        prepared = []
        for prepare, apply in apps if error is None else ():
            try:
                prepared.append((apply, prepare(batch)))
            except _Abandoned:
                raise
            except ReplkitError as exc:  # already one line, saying where
                error = ReloadError(str(exc))
                break
            except BaseException as exc:  # the app's code: SystemExit is its error too
                error = error_of(exc, batch.paths)
                break
        return self._conclude(job, batch, error, prepared, notes)

    def _nothing_changed(self, job: _Job, notes: tuple[str, ...]) -> ReloadResult | None:
        with self._turn:
            if job.abandoned:
                return None
            if self.failure is not None and job.names & self._pending:
                # The files went back to the code that is loaded: nothing failing remains.
                back = sorted(display_path(p) for n, p in self._scope().items() if n in job.names)
                notes = (f"{', '.join(back)} back to the running code; the failed reload is over",)
                self.failure = None
                self._pending.clear()
            return ReloadResult((), 0.0, notes=notes) if notes else None

    def _conclude(
        self,
        job: _Job,
        batch: Batch | None,
        error: ReloadError | None,
        prepared: list[tuple[Apply, Any]],
        notes: tuple[str, ...],
    ) -> ReloadResult | None:
        with self._turn:
            if job.abandoned:
                if batch is not None:
                    batch.rollback()
                return None
            if error is not None:
                if batch is not None:
                    batch.rollback()
                self._pending |= job.names
                result = batch.failed(error) if batch is not None else ReloadResult((), 0, error)
                self.failure = replace(result, notes=notes)
                return self.failure
            assert batch is not None
            result = batch.commit()
            for apply, value in prepared:
                try:
                    note = apply(value)
                except Exception as exc:
                    # Loaded, but what serves it would not start: the old one goes on serving.
                    self._pending |= job.names
                    error = error_of(exc, batch.paths, f" (reloaded {', '.join(batch.modules)})")
                    self.failure = replace(result, modules=(), error=error, notes=notes)
                    return self.failure
                notes = (*notes, *([note] if note else []))
            if self.failure is not None:
                notes = (*notes, "the failed reload is over")
            self.failure = None
            self._pending.clear()
            return replace(result, notes=notes)

    # Where to look.

    def _set_roots(
        self, roots: Iterable[str | os.PathLike[str]], flat_roots: Iterable[str | os.PathLike[str]]
    ) -> None:
        trees = [Path(root).resolve() for root in roots]
        flat = [Path(root).resolve() for root in flat_roots]
        for root in (*trees, *flat):
            if not root.is_dir():
                raise NotADirectoryError(f"not a directory: {root}")
        self._trees, self._flat = tuple(trees), tuple(flat)
        self._prefixes = tuple(f"{root}{os.sep}" for root in self._trees)

    def _scope(self) -> dict[str, str]:
        flat = {str(root) for root in self._flat}
        return {
            name: path
            for name, path in imports.project_modules().items()
            if path.startswith(self._prefixes) or os.path.dirname(path) in flat
        }

    def _publish(self, result: ReloadResult) -> None:
        try:
            self._report(result)
        except Exception:
            # The report callback itself failed: stderr is all that is left.
            with contextlib.suppress(Exception):
                sys.stderr.write(f"replkit: reporting a reload failed: {result}\n")
