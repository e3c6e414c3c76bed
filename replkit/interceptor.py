"""Interceptors and the chain that runs them, after Pedestal's ``interceptor.chain``.

An interceptor is a name plus up to three functions of the *context*, a plain dict that
carries at least ``"request"`` and, once some interceptor has answered, ``"response"``:

- ``enter(context) -> context`` runs on the way in, in queue order;
- ``leave(context) -> context`` runs on the way out, in reverse order;
- ``error(context, exc) -> context`` runs while unwinding after an exception; returning a
  context means "handled" and the chain resumes its leave stage, raising means "not mine".

Any of them may be ``async def``. Entering stops as soon as the context holds a response
(or after :func:`terminate`); :func:`enqueue` adds interceptors to the part still to run.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Context",
    "Interceptor",
    "InterceptorError",
    "enqueue",
    "execute",
    "handler",
    "interceptor",
    "terminate",
]

Context = dict[str, Any]
"""The map threaded through the chain: ``request``, ``response`` and whatever interceptors add."""

ContextFn = Callable[[Context], Context | Awaitable[Context]]
ErrorFn = Callable[[Context, "InterceptorError"], Context | Awaitable[Context]]

QUEUE = "replkit.interceptor/queue"
STACK = "replkit.interceptor/stack"


@dataclass(frozen=True, slots=True)
class Interceptor:
    """A named bundle of ``enter``, ``leave`` and ``error`` functions, each optional."""

    name: str | None = None
    enter: ContextFn | None = None
    leave: ContextFn | None = None
    error: ErrorFn | None = None

    def __repr__(self) -> str:
        stages = [s for s in ("enter", "leave", "error") if getattr(self, s) is not None]
        return f"<Interceptor {self.name or '(anonymous)'} {'/'.join(stages) or 'no-op'}>"


class InterceptorError(Exception):
    """An exception raised inside an interceptor, labelled with where it happened.

    ``exception`` is the original exception (also chained as ``__cause__``), ``interceptor``
    the name of the interceptor and ``stage`` one of ``"enter"``, ``"leave"``, ``"error"``.
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

    async def enter(context: Context) -> Context:
        response = await _call(fn, context["request"])
        if not isinstance(response, Mapping):
            raise TypeError(
                f"handler {name} returned {type(response).__name__} {response!r:.60}; "
                "a handler must return a response dict such as {'status': 200, 'body': '...'}"
            )
        return {**context, "response": dict(response)}

    return Interceptor(name=name, enter=enter)


def interceptor(value: Interceptor | Mapping[str, Any] | Callable[..., Any]) -> Interceptor:
    """Coerce ``value`` into an :class:`Interceptor`.

    Accepts an interceptor (returned as is), a mapping with ``name``/``enter``/``leave``/
    ``error`` keys, or a plain function, which is taken to be a handler (see :func:`handler`).
    """
    if isinstance(value, Interceptor):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - {"name", "enter", "leave", "error"}
        if unknown:
            raise ValueError(
                f"interceptor map has unknown keys {sorted(unknown)}; "
                "allowed keys are name, enter, leave, error"
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
        )
    if callable(value):
        return handler(value)
    raise TypeError(
        f"cannot make an interceptor from {type(value).__name__} {value!r:.60}; "
        "expected an Interceptor, a dict with enter/leave/error, or a handler function"
    )


def enqueue(context: Context, *interceptors: Any) -> Context:
    """Return ``context`` with ``interceptors`` appended to the ones still to enter."""
    queue = [*context.get(QUEUE, ()), *(interceptor(i) for i in interceptors)]
    return {**context, QUEUE: queue}


def terminate(context: Context) -> Context:
    """Return ``context`` with nothing left to enter: the leave stage starts next."""
    return {**context, QUEUE: []}


async def execute(context: Context, interceptors: Iterable[Any] = ()) -> Context:
    """Run the chain over ``context`` and return the final context.

    ``interceptors`` are enqueued after any already in the context. An exception that no
    ``error`` function handles is raised as an :class:`InterceptorError`.
    """
    context = enqueue(context, *interceptors)
    context, error = await _enter_all(context)
    context.pop(QUEUE, None)
    context, error = await _leave_all(context, error)
    context.pop(STACK, None)
    if error is not None:
        raise error
    return context


async def _enter_all(context: Context) -> tuple[Context, InterceptorError | None]:
    stack: list[Interceptor] = []
    while context[QUEUE] and context.get("response") is None:
        current, *rest = context[QUEUE]
        context = {**context, QUEUE: rest}
        stack.append(current)
        if current.enter is None:
            continue
        try:
            context = _checked(await _call(current.enter, context), current, "enter")
        except Exception as exc:
            return {**context, STACK: stack}, _wrap(exc, current, "enter")
    return {**context, STACK: stack}, None


async def _leave_all(
    context: Context, error: InterceptorError | None
) -> tuple[Context, InterceptorError | None]:
    stack: list[Interceptor] = context[STACK]
    while stack:
        current = stack.pop()
        stage = "error" if error is not None else "leave"
        fn = current.error if error is not None else current.leave
        if fn is None:
            continue
        try:
            args = (context, error) if error is not None else (context,)
            context = _checked(await _call(fn, *args), current, stage)
            error = None
        except Exception as exc:
            error = exc if isinstance(exc, InterceptorError) else _wrap(exc, current, stage)
    return context, error


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


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
