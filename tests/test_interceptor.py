"""replkit.interceptor: the chain's order, termination, queueing and error unwinding."""

from __future__ import annotations

import pydoc
from typing import Any

import pytest

from replkit.interceptor import (
    QUEUE,
    SUPPRESSED,
    TERMINATORS,
    Interceptor,
    InterceptorError,
    enqueue,
    execute,
    handler,
    interceptor,
    terminate,
    terminate_when,
)


def recording(log: list[str], name: str, **extra: Any) -> Interceptor:
    """An interceptor that logs each stage it runs in, plus any stage functions given."""

    def enter(ctx: dict[str, Any]) -> dict[str, Any]:
        log.append(f"enter {name}")
        return extra["enter"](ctx) if "enter" in extra else ctx

    async def leave(ctx: dict[str, Any]) -> dict[str, Any]:
        log.append(f"leave {name}")
        return ctx

    def error(ctx: dict[str, Any], err: InterceptorError) -> dict[str, Any]:
        log.append(f"error {name}: {err.interceptor}/{err.stage}")
        if "error" in extra:
            return extra["error"](ctx, err)
        raise err

    return Interceptor(name=name, enter=enter, leave=leave, error=error)


def raising(exc: Exception) -> Any:
    def fn(*_: Any) -> Any:
        raise exc

    return fn


async def test_enter_in_order_leave_in_reverse() -> None:
    log: list[str] = []
    result = await execute({"request": {}}, [recording(log, n) for n in "abc"])
    assert log == ["enter a", "enter b", "enter c", "leave c", "leave b", "leave a"]
    assert set(result) == {"request"}  # the chain's bookkeeping does not leak


async def test_terminate_when_stops_entering_after_the_enter_that_satisfies_it() -> None:
    log: list[str] = []
    answer = lambda ctx: {**ctx, "response": {"status": 200}}  # noqa: E731
    chain = [recording(log, "a"), recording(log, "b", enter=answer), recording(log, "c")]
    responded = lambda ctx: "response" in ctx  # noqa: E731
    result = await execute(terminate_when({"request": {}}, responded), chain)
    assert log == ["enter a", "enter b", "leave b", "leave a"]
    assert result["response"] == {"status": 200}
    assert result[TERMINATORS] == [responded] and QUEUE not in result


async def test_the_chain_knows_nothing_of_responses() -> None:
    log: list[str] = []
    answer = lambda ctx: {**ctx, "response": {"status": 200}}  # noqa: E731
    chain = [recording(log, "a", enter=answer), recording(log, "b")]
    await execute({"request": {}}, chain)  # no terminator: a response is just a key
    assert log == ["enter a", "enter b", "leave b", "leave a"]


async def test_a_terminator_that_raises_is_the_interceptors_error() -> None:
    def broken(ctx: dict[str, Any]) -> bool:
        raise ValueError("predicate broke")

    with pytest.raises(InterceptorError) as info:
        await execute(terminate_when({}, broken), [Interceptor("first", enter=lambda c: c)])
    assert (info.value.interceptor, info.value.stage) == ("first", "enter")


async def test_a_fresh_context_without_the_queue_ends_the_enter_stage() -> None:
    log: list[str] = []
    fresh = recording(log, "fresh", enter=lambda ctx: {"request": ctx["request"], "mine": 1})
    result = await execute({"request": {}}, [recording(log, "a"), fresh, recording(log, "b")])
    assert log == ["enter a", "enter fresh", "leave fresh", "leave a"]
    assert result == {"request": {}, "mine": 1}


async def test_terminate_and_enqueue() -> None:
    log: list[str] = []
    stop = recording(log, "stop", enter=terminate)
    await execute({"request": {}}, [stop, recording(log, "never")])
    assert log == ["enter stop", "leave stop"]

    log.clear()
    more = recording(
        log, "more", enter=lambda ctx: enqueue(ctx, recording(log, "queued"), {"name": "dict"})
    )
    result = await execute({"request": {}}, [more, recording(log, "next")])
    assert log == [
        "enter more",
        "enter next",
        "enter queued",
        "leave queued",
        "leave next",
        "leave more",
    ]
    assert "response" not in result


async def test_handlers_plain_and_async_are_wrapped() -> None:
    def plain(request: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "body": request["who"]}

    async def asynchronous(request: dict[str, Any]) -> dict[str, Any]:
        return {"status": 201}

    assert (
        interceptor(plain).name
        == f"{__name__}/test_handlers_plain_and_async_are_wrapped.<locals>.plain"
    )
    result = await execute({"request": {"who": "me"}}, [plain])
    assert result["response"] == {"status": 200, "body": "me"}
    assert (await execute({"request": {}}, [handler(asynchronous)]))["response"] == {"status": 201}


@pytest.mark.parametrize("garbage", [None, "Hello", ["a"]])
async def test_a_handler_returning_garbage_names_itself(garbage: Any) -> None:
    def sloppy(request: dict[str, Any]) -> Any:
        return garbage

    with pytest.raises(InterceptorError) as info:
        await execute({"request": {}}, [sloppy])
    message = str(info.value)
    assert f"handler {__name__}/" in message and "sloppy returned" in message
    assert "a handler must return a response dict" in message
    assert info.value.stage == "enter"


async def test_an_enter_returning_a_non_dict_names_the_interceptor() -> None:
    with pytest.raises(InterceptorError, match="enter of interceptor lazy returned NoneType None"):
        await execute({"request": {}}, [Interceptor("lazy", enter=lambda ctx: None)])


async def test_an_error_unwinds_through_error_functions_of_entered_interceptors() -> None:
    log: list[str] = []
    original = ValueError("bad input")
    chain = [
        recording(log, "outer"),
        recording(log, "inner"),
        recording(log, "boom", enter=raising(original)),
        recording(log, "never"),
    ]
    with pytest.raises(InterceptorError) as info:
        await execute({"request": {}}, chain)
    assert log == [
        "enter outer",
        "enter inner",
        "enter boom",
        "error boom: boom/enter",
        "error inner: boom/enter",
        "error outer: boom/enter",
    ]
    err = info.value
    assert (err.exception, err.interceptor, err.stage, err.__cause__) == (
        original,
        "boom",
        "enter",
        original,
    )
    assert str(err) == "ValueError in interceptor boom during enter: bad input"


async def test_an_error_function_that_returns_resumes_the_leave_stage() -> None:
    log: list[str] = []
    handled = lambda ctx, err: {**ctx, "response": {"status": 400, "body": str(err.exception)}}  # noqa: E731
    chain = [
        recording(log, "outer"),
        recording(log, "catcher", error=handled),
        recording(log, "mid"),
        recording(log, "boom", enter=raising(KeyError("k"))),
    ]
    result = await execute({"request": {}}, chain)
    assert log == [
        "enter outer",
        "enter catcher",
        "enter mid",
        "enter boom",
        "error boom: boom/enter",
        "error mid: boom/enter",
        "error catcher: boom/enter",
        "leave outer",
    ]
    assert result["response"] == {"status": 400, "body": "'k'"}


async def test_reraising_passes_the_same_error_and_a_new_one_replaces_it() -> None:
    seen: list[InterceptorError] = []

    def remember(ctx: dict[str, Any], err: InterceptorError) -> dict[str, Any]:
        seen.append(err)
        raise err

    outer = Interceptor("outer", error=remember)
    middle = Interceptor("middle", error=remember)
    boom = Interceptor("boom", enter=raising(ValueError("first")))
    with pytest.raises(InterceptorError) as info:
        await execute({"request": {}}, [outer, middle, boom])
    assert seen[0] is seen[1] is info.value

    replacer = Interceptor("replacer", error=raising(RuntimeError("second")))
    with pytest.raises(InterceptorError) as info:
        await execute({"request": {}}, [replacer, boom])
    assert (info.value.interceptor, info.value.stage, str(info.value.exception)) == (
        "replacer",
        "error",
        "second",
    )


async def test_an_error_raised_while_handling_an_error_keeps_the_original() -> None:
    seen: list[dict[str, Any]] = []

    def handled(ctx: dict[str, Any], err: InterceptorError) -> dict[str, Any]:
        seen.append(ctx)
        return {**ctx, "response": {"status": 500}}

    boom = Interceptor("boom", enter=raising(ValueError("first")))
    replacer = Interceptor("replacer", error=raising(RuntimeError("second")))
    with pytest.raises(InterceptorError) as info:
        await execute({"request": {}}, [replacer, boom])
    original = info.value.__context__
    assert isinstance(original, InterceptorError)
    assert (original.interceptor, str(original.exception)) == ("boom", "first")
    assert info.value.exception.__context__ is original  # shown in the traceback

    result = await execute({"request": {}}, [Interceptor("outer", error=handled), replacer, boom])
    (suppressed,) = result[SUPPRESSED]
    assert suppressed.interceptor == "boom" and seen[0][SUPPRESSED] == [suppressed]


async def test_raising_what_the_error_wraps_passes_the_same_error_on() -> None:
    def unwrap(ctx: dict[str, Any], err: InterceptorError) -> dict[str, Any]:
        raise err.exception

    boom = Interceptor("boom", enter=raising(KeyError("k")))
    unwrapping = Interceptor("unwrapping", error=unwrap)
    with pytest.raises(InterceptorError) as info:
        await execute({"request": {}}, [unwrapping, boom])
    assert info.value.interceptor == "boom" and info.value.__context__ is None


async def test_an_error_in_leave_unwinds_through_the_outer_error_functions() -> None:
    log: list[str] = []
    bad_leave = Interceptor("bad-leave", leave=raising(OSError("disk")))
    with pytest.raises(InterceptorError) as info:
        await execute(
            {"request": {}}, [recording(log, "outer"), bad_leave, recording(log, "inner")]
        )
    assert log == ["enter outer", "enter inner", "leave inner", "error outer: bad-leave/leave"]
    assert info.value.stage == "leave"


def test_coercion() -> None:
    existing = Interceptor("x")
    assert interceptor(existing) is existing
    made = interceptor({"name": "m", "leave": lambda ctx: ctx})
    assert (made.name, made.enter, made.leave is not None) == ("m", None, True)
    with pytest.raises(
        ValueError,
        match=r"unknown keys \['enterr'\]; allowed keys are name, enter, leave, error, doc",
    ):
        interceptor({"name": "typo", "enterr": lambda ctx: ctx})
    with pytest.raises(TypeError, match="interceptor 'n': enter is not callable"):
        interceptor({"name": "n", "enter": 3})
    for value in (3, None):
        with pytest.raises(TypeError, match="cannot make an interceptor from"):
            interceptor(value)


async def test_a_deep_chain() -> None:
    count = lambda ctx: {**ctx, "n": ctx["n"] + 1}  # noqa: E731
    result = await execute(
        {"request": {}, "n": 0},
        [Interceptor(f"i{i}", enter=count, leave=count) for i in range(2000)],
    )
    assert result["n"] == 4000


def test_help_shows_what_an_interceptor_does() -> None:
    def show_user(request: dict[str, Any]) -> dict[str, Any]:
        """Shows one user."""
        return {"status": 200}

    described = interceptor({"name": "auth", "enter": lambda c: c, "doc": "Checks the token."})
    assert "Checks the token." in pydoc.render_doc(described)
    assert "Shows one user." in pydoc.render_doc(interceptor(show_user))
    assert "Checks the token." not in pydoc.render_doc(Interceptor("plain"))
    assert described == Interceptor("auth", described.enter)  # the doc is not identity


async def test_stages_return_the_same_dict_or_a_new_one_plain_or_awaitable() -> None:
    seen: list[tuple[str, Any]] = []

    def same(ctx: dict[str, Any]) -> dict[str, Any]:
        seen.append(("same", ctx.get("new")))
        return ctx

    def new(ctx: dict[str, Any]) -> dict[str, Any]:
        return {**ctx, "new": True}

    async def later(ctx: dict[str, Any]) -> dict[str, Any]:
        return {**ctx, "later": ctx.get("new")}

    chain = [
        Interceptor("same", enter=same, leave=same),
        Interceptor("new", enter=new),
        Interceptor("later", enter=later),
        Interceptor("coroutine", enter=lambda ctx: later({**ctx, "via": "lambda"})),
        Interceptor("same again", enter=same),
    ]
    start = {"request": {}}
    result = await execute(start, chain)
    assert result == {"request": {}, "new": True, "later": True, "via": "lambda"}
    assert seen == [("same", None), ("same", True), ("same", True)]
    assert start == {"request": {}}  # the caller's dict is never written to


async def test_interceptors_without_enter_still_leave_and_handle_errors() -> None:
    log: list[str] = []
    leave_only = [Interceptor(n, leave=lambda ctx, n=n: log.append(n) or ctx) for n in "ab"]
    await execute({}, [*leave_only, Interceptor("c", enter=lambda ctx: ctx), leave_only[0]])
    assert log == ["a", "b", "a"]

    handled = Interceptor("handler", error=lambda ctx, err: {**ctx, "handled": err.interceptor})
    result = await execute(
        {}, [handled, Interceptor("gap"), Interceptor("boom", enter=raising(KeyError()))]
    )
    assert result == {"handled": "boom"}


async def test_an_async_handler_and_a_handler_returning_an_awaitable() -> None:
    async def answer(request: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "body": request["who"]}

    for fn in (answer, lambda request: answer(request)):
        result = await execute({"request": {"who": "me"}}, [fn])
        assert result["response"] == {"status": 200, "body": "me"}
    with pytest.raises(InterceptorError, match="returned str"):
        await execute({"request": {}}, [lambda request: _text()])


async def _text() -> str:
    return "not a response"
