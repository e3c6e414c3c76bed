"""Interceptors and the chain that runs them, after Pedestal's ``interceptor.chain``.

An interceptor is a name plus up to three functions of the *context*, a plain dict that
the chain threads through them:

- ``enter(context) -> context`` runs on the way in, in queue order;
- ``leave(context) -> context`` runs on the way out, in reverse order;
- ``error(context, exc) -> context`` runs while unwinding after an exception; returning a
  context means "handled" and the chain resumes its leave stage, raising means "not mine".

Any of them may be ``async def``. The chain knows nothing about HTTP: entering stops when
the queue is empty or missing (:func:`terminate`), or when a predicate added with
:func:`terminate_when` holds after an ``enter``; :func:`enqueue` adds interceptors to the
part still to run. Its bookkeeping lives in the context under ``replkit.interceptor/...``
keys; an interceptor that returns a fresh dict without them just ends the enter stage.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "QUEUE",
    "SUPPRESSED",
    "TERMINATORS",
    "Context",
    "Interceptor",
    "InterceptorError",
    "enqueue",
    "execute",
    "handler",
    "interceptor",
    "terminate",
    "terminate_when",
]

Context = dict[str, Any]
"""The map threaded through the chain: ``request``, ``response`` and whatever interceptors add."""

ContextFn = Callable[[Context], Context | Awaitable[Context]]
ErrorFn = Callable[[Context, "InterceptorError"], Context | Awaitable[Context]]

QUEUE = "replkit.interceptor/queue"
"""Context key: the interceptors still to enter (see :func:`enqueue`, :func:`terminate`)."""

TERMINATORS = "replkit.interceptor/terminators"
"""Context key: predicates that end the enter stage (see :func:`terminate_when`)."""

SUPPRESSED = "replkit.interceptor/suppressed"
"""Context key: errors an ``error`` function replaced by raising a new one, oldest first."""


@dataclass(frozen=True)
class Interceptor:
    """A named bundle of ``enter``, ``leave`` and ``error`` functions, each optional.

    ``doc`` describes what it does; ``help(an_interceptor)`` shows it.
    """

    name: str | None = None
    enter: ContextFn | None = None
    leave: ContextFn | None = None
    error: ErrorFn | None = None
    doc: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.doc:
            # An instance's own __doc__ is what help() and pydoc show for it.
            object.__setattr__(self, "__doc__", inspect.cleandoc(self.doc))

    def __repr__(self) -> str:
        stages = [s for s in ("enter", "leave", "error") if getattr(self, s) is not None]
        return f"<Interceptor {self.name or '(anonymous)'} {'/'.join(stages) or 'no-op'}>"


class InterceptorError(Exception):
    """An exception raised inside an interceptor, labelled with where it happened.

    ``exception`` is the original exception (also chained as ``__cause__``), ``interceptor``
    the name of the interceptor and ``stage`` one of ``"enter"``, ``"leave"``, ``"error"``.
    When an ``error`` function raised it while handling an earlier error, that earlier
    :class:`InterceptorError` is its ``__context__`` and is listed in the context under
    :data:`SUPPRESSED`.
    """

    def __init__(self, exception: BaseException, interceptor: str | None, stage: str) -> None:
        self.exception = exception
        self.interceptor = interceptor
        self.stage = stage
        super().__init__(
            f"{type(exception).__name__} in interceptor {interceptor or '(anonymous)'} "
            f"during {stage}: {exception}"
        )


def name_of(fn: Callable[..., Any]) -> str:
    """A readable ``module/qualname`` name for a function, the way Pedestal names handlers."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}/{qualname}" if module else qualname


def handler(fn: Callable[[Any], Any]) -> Interceptor:
    """Wrap a handler ``request -> response`` into an interceptor that sets the response.

    The handler may be ``async def``. Its result must be a response dict; anything else
    raises :class:`TypeError` naming the handler, so garbage never reaches the wire.
    """
    name = name_of(fn)

    def respond(context: Context, response: Any) -> Context:
        if type(response) is not dict and not isinstance(response, Mapping):
            raise TypeError(
                f"handler {name} returned {type(response).__name__} {response!r:.60}; "
                "a handler must return a response dict such as {'status': 200, 'body': '...'}"
            )
        return {**context, "response": dict(response)}

    async def respond_later(context: Context, response: Awaitable[Any]) -> Context:
        return respond(context, await response)

    def enter(context: Context) -> Context | Awaitable[Context]:
        # A plain enter, so that a plain handler costs the chain no coroutine; an awaitable
        # result (an async handler's) is awaited by the chain through respond_later.
        response = fn(context["request"])
        if type(response) is not dict and inspect.isawaitable(response):
            return respond_later(context, response)
        return respond(context, response)

    return Interceptor(name=name, enter=enter, doc=inspect.getdoc(fn))


def interceptor(value: Interceptor | Mapping[str, Any] | Callable[..., Any]) -> Interceptor:
    """Coerce ``value`` into an :class:`Interceptor`.

    Accepts an interceptor (returned as is), a mapping with ``name``/``enter``/``leave``/
    ``error``/``doc`` keys, or a plain function, which is taken to be a handler (see
    :func:`handler`).
    """
    if isinstance(value, Interceptor):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - {"name", "enter", "leave", "error", "doc"}
        if unknown:
            raise ValueError(
                f"interceptor map has unknown keys {sorted(unknown)}; "
                "allowed keys are name, enter, leave, error, doc"
            )
        for stage in ("enter", "leave", "error"):
            if value.get(stage) is not None and not callable(value[stage]):
                raise TypeError(f"interceptor {value.get('name')!r}: {stage} is not callable")
        name = value.get("name")
        return Interceptor(
            name=None if name is None else str(name),
            enter=value.get("enter"),
            leave=value.get("leave"),
            error=value.get("error"),
            doc=value.get("doc"),
        )
    if callable(value):
        return handler(value)
    raise TypeError(
        f"cannot make an interceptor from {type(value).__name__} {value!r:.60}; "
        "expected an Interceptor, a dict with enter/leave/error, or a handler function"
    )


def enqueue(context: Context, *interceptors: Any) -> Context:
    """Return ``context`` with ``interceptors`` appended to the ones still to enter."""
    added = [i if isinstance(i, Interceptor) else interceptor(i) for i in interceptors]
    return {**context, QUEUE: [*(context.get(QUEUE) or ()), *added]}


def terminate(context: Context) -> Context:
    """Return ``context`` with nothing left to enter: the leave stage starts next."""
    if QUEUE not in context:
        return context
    rest = dict(context)
    del rest[QUEUE]
    return rest


def terminate_when(context: Context, predicate: Callable[[Context], Any]) -> Context:
    """Return ``context`` with ``predicate`` added to the conditions that end the enter stage.

    The chain calls each predicate on the context after every ``enter`` function; the first
    true one ends entering there, as :func:`terminate` would. The HTTP connector adds "a
    response is set" this way.
    """
    return {**context, TERMINATORS: [*(context.get(TERMINATORS) or ()), predicate]}


async def execute(context: Context, interceptors: Iterable[Any] = ()) -> Context:
    """Run the chain over ``context`` and return the final context.

    ``interceptors`` are enqueued after any already in the context. An exception that no
    ``error`` function handles is raised as an :class:`InterceptorError`.
    """
    if interceptors:
        context = enqueue(context, *interceptors)
    # One coroutine for both stages, and a stage's result awaited only when it is not the
    # plain dict most stages return: the chain's own cost is a few dict operations a step.
    stack: list[Interceptor] = []
    error: InterceptorError | None = None
    while queue := context.get(QUEUE):
        # Interceptors without an enter are only stacked (their leave and error still run):
        # the context is copied once per enter actually called, not once per interceptor.
        skip = 0
        while skip < len(queue) and queue[skip].enter is None:
            stack.append(queue[skip])
            skip += 1
        if skip == len(queue):
            break
        current = queue[skip]
        context = {**context, QUEUE: queue[skip + 1 :]}
        stack.append(current)
        try:
            result = current.enter(context)  # type: ignore[misc]
            if type(result) is not dict:
                result = await _settled(result, current, "enter")
            context = result
            for predicate in context.get(TERMINATORS) or ():
                if predicate(context):
                    raise _Terminated
        except _Terminated:
            break
        except Exception as exc:
            error = _wrap(exc, current, "enter")
            break
    context = terminate(context)
    while stack:
        current = stack.pop()
        if error is None:
            leave = current.leave
            if leave is None:
                continue
            try:
                result = leave(context)
                if type(result) is not dict:
                    result = await _settled(result, current, "leave")
                context = result
            except Exception as exc:
                error = _wrap(exc, current, "leave")
            continue
        if current.error is None:
            continue
        try:
            context = await _settled(current.error(context, error), current, "error")
            error = None
        except Exception as exc:
            # Raising the error it was given (or what it wraps) means "not mine".
            if exc is not error and exc is not error.exception:
                context, error = _replaced(context, error, _wrap(exc, current, "error"))
    if error is not None:
        raise error
    return context


class _Terminated(Exception):
    """A predicate of :func:`terminate_when` held: the enter stage ends here."""


def _replaced(
    context: Context, original: InterceptorError, new: InterceptorError
) -> tuple[Context, InterceptorError]:
    """An error function raised ``new`` while handling ``original``: keep both, as Python
    does for an exception raised in an ``except`` block (Pedestal keeps it as suppressed)."""
    if new.__context__ is None:
        new.__context__ = original
    if new.exception.__context__ is None:
        new.exception.__context__ = original
    return {**context, SUPPRESSED: [*(context.get(SUPPRESSED) or ()), original]}, new


async def _settled(result: Any, current: Interceptor, stage: str) -> Context:
    """A stage's result that is not a plain dict: awaited if it is awaitable, then checked.
    (A plain dict, what most stages return, needs neither: the chain tests for it first.)"""
    if inspect.isawaitable(result):
        result = await result
    return _checked(result, current, stage)


def _checked(result: Any, current: Interceptor, stage: str) -> Context:
    if not isinstance(result, dict):
        raise TypeError(
            f"{stage} of interceptor {current.name or '(anonymous)'} returned "
            f"{type(result).__name__} {result!r:.60}; it must return the context dict"
        )
    return result


def _wrap(exc: Exception, current: Interceptor, stage: str) -> InterceptorError:
    if isinstance(exc, InterceptorError):
        return exc
    wrapped = InterceptorError(exc, current.name, stage)
    wrapped.__cause__ = exc
    return wrapped
