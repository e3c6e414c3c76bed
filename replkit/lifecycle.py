"""State that outlives reloads: Clojure's ``atom`` and ``defonce`` for Python modules.

A REPL session reloads modules many times; the running server must not be lost each time.
:func:`defonce` keeps one value per ``(module, name)`` for the life of the process, so a
module re-executed by the reloader (or re-imported after ``del sys.modules[...]``) gets the
same object back. :class:`Atom` is the mutable, thread-safe box usually kept that way.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Atom", "defonce"]

T = TypeVar("T")

_defonce_values: dict[tuple[str, str], Any] = {}
_defonce_lock = threading.Lock()


class Atom(Generic[T]):
    """A thread-safe reference to a value, changed only by :meth:`reset` and :meth:`swap`."""

    def __init__(self, value: T | None = None) -> None:
        self._value = value
        self._lock = threading.RLock()

    def deref(self) -> T | None:
        """The current value."""
        return self._value

    def reset(self, value: T | None) -> T | None:
        """Set the value to ``value`` and return it."""
        with self._lock:
            self._value = value
            return value

    def swap(self, fn: Callable[..., T | None], *args: Any) -> T | None:
        """Set the value to ``fn(current, *args)``, atomically, and return the new value."""
        with self._lock:
            self._value = fn(self._value, *args)
            return self._value

    def __repr__(self) -> str:
        return f"<Atom {self._value!r}>"


def defonce(name: str, init: Callable[[], T]) -> T:
    """Return the value kept under ``name`` for the calling module, creating it with ``init()``.

    The first call in a process runs ``init``; every later call from the same module (after
    a reload, or a fresh import) returns that same object, as Clojure's ``defonce`` does.
    """
    module = sys._getframe(1).f_globals.get("__name__", "__main__")
    key = (module, name)
    with _defonce_lock:
        if key not in _defonce_values:
            _defonce_values[key] = init()
        return _defonce_values[key]
