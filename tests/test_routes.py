"""replkit.routes: table routes, matching, url_for and every way a table can be wrong."""

from __future__ import annotations

from typing import Any

import pytest

from replkit.interceptor import Interceptor, execute
from replkit.routes import RouteError, expand_routes, router


def home_page(request: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200, "body": "home"}


def show_user(request: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200, "body": "user"}


async def async_handler(request: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200}


HERE = __name__  # how handlers here are named: module/qualname

counter = Interceptor(name="sse-demo/counter", enter=lambda ctx: ctx)
auth = Interceptor(name="auth", enter=lambda ctx: ctx)

TABLE = [  # a list: rows holding a list or a dict are not hashable, so not a set
    ("/", "get", home_page),
    ("/counter", "get", counter),
    ("/users/new", "get", home_page, "new-user"),
    ("/users/:id", "get", [auth, show_user], {"constraints": {"id": r"[0-9]+"}}),
    ("/users/:name", "get", home_page, "by-name", {"constraints": {"name": r"[a-z]+"}}),
    ("/files/*path", "get", home_page, "files"),
    ("/any", "any", async_handler),
]


def match(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    found = expand_routes(TABLE).match(method, path)
    return None if found is None else (found.route.name, found.path_params)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("get", "/", (f"{HERE}/home_page", {})),
        ("GET", "/counter", ("sse-demo/counter", {})),
        ("get", "/users/new", ("new-user", {})),  # a literal beats a param
        ("get", "/%75sers/n%65w", ("new-user", {})),  # literals are matched decoded
        ("get", "/c%6Funter", ("sse-demo/counter", {})),
        ("get", "/users/new%2Fx", None),  # an encoded slash stays inside its segment
        ("get", "/users/42", (f"{HERE}/show_user", {"id": "42"})),
        ("get", "/users/ada", ("by-name", {"name": "ada"})),  # constraint falls through
        ("get", "/users/Ada", None),  # no constraint fits
        ("get", "/files/a/b/c.txt", ("files", {"path": "a/b/c.txt"})),
        ("get", "/files/", ("files", {"path": ""})),
        ("get", "/files", ("files", {"path": ""})),
        ("get", "/files/caf%C3%A9%20au%2Flait", ("files", {"path": "café au/lait"})),
        ("get", "/files/a/../../etc/passwd", None),  # a wildcard never yields a '..'
        ("get", "/files/..%2f..%2fetc%2fhostname", None),
        ("get", "/files/%2e%2e/x", None),
        ("get", "/files/.%2E", None),
        ("get", "/files/a..b/..c", ("files", {"path": "a..b/..c"})),
        ("head", "/counter", ("sse-demo/counter", {})),  # HEAD falls back to GET
        ("post", "/counter", None),
        ("delete", "/any", (f"{HERE}/async_handler", {})),
        ("get", "/counter/", None),
        ("get", "/nowhere", None),
    ],
)
def test_matching(method: str, path: str, expected: tuple[str, dict[str, str]] | None) -> None:
    assert match(method, path) == expected


def test_params_are_percent_decoded_within_their_segment() -> None:
    router = expand_routes([("/users/:id", "get", show_user)])
    found = router.match("get", "/users/a%2Fb%20c")
    assert found is not None and found.path_params == {"id": "a/b c"}


def test_routes_carry_their_interceptors() -> None:
    found = expand_routes(TABLE).match("get", "/users/7")
    assert found is not None
    assert [i.name for i in found.route.interceptors] == ["auth", f"{HERE}/show_user"]
    assert found.route.method == "get" and found.route.path == "/users/:id"


def test_lambdas_sharing_a_name_get_distinct_default_names() -> None:
    router = expand_routes([("/a", "get", lambda r: {}), ("/b", "get", lambda r: {})])
    names = sorted(route.name for route in router.routes)
    assert names[0].endswith("<lambda> GET /a") and names[1].endswith("<lambda> GET /b")


def test_url_for_round_trips() -> None:
    router = expand_routes(TABLE)
    url = router.url_for(f"{HERE}/show_user", path_params={"id": 7}, query_params={"q": "a b"})
    assert url == "/users/7?q=a+b"
    assert router.url_for("files", path_params={"path": "a/b c.txt"}) == "/files/a/b%20c.txt"
    found = router.match("get", router.url_for("files", path_params={"path": "x y/z"}))
    assert found is not None and found.path_params == {"path": "x y/z"}
    assert router.url_for("sse-demo/counter") == "/counter"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.url_for("nope"), "no route named 'nope'; known: "),
        (
            lambda r: r.url_for("files"),
            "url_for 'files' (/files/*path): path params missing ['path']",
        ),
        (
            lambda r: r.url_for("sse-demo/counter", path_params={"id": 1}),
            "url_for 'sse-demo/counter' (/counter): path params unknown ['id']",
        ),
    ],
)
def test_url_for_errors(call: Any, message: str) -> None:
    with pytest.raises(RouteError) as info:
        call(expand_routes(TABLE))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"/": home_page},
            "a route table is a set or list of (path, verb, handler) tuples, not dict",
        ),
        ("/", "a route table is a set or list of (path, verb, handler) tuples, not str"),
        (42, "a route table is a set or list of (path, verb, handler) tuples, not int"),
        ([["/", "get", home_page]], "route ['/', 'get', "),
        (
            [("/", "get")],
            "route ('/', 'get', ...): a route is a tuple (path, verb, handler, *options)",
        ),
        (
            [("x", "get", home_page)],
            "route ('x', 'get', ...): the path must be a str starting with '/'",
        ),
        (
            [(1, "get", home_page)],
            "route (1, 'get', ...): the path must be a str starting with '/'",
        ),
        (
            [("/", "gett", home_page)],
            "route ('/', 'gett', ...): unknown verb 'gett'; expected one of get, post, put, "
            "delete, patch, head, options, any",
        ),
        ([("/", "get", 42)], "route ('/', 'get', ...): cannot make an interceptor from int 42"),
        ([("/", "get", [])], "route ('/', 'get', ...): no handler or interceptor"),
        (
            [("/a/*rest/b", "get", home_page)],
            "route ('/a/*rest/b', 'get', ...): the wildcard '*rest' must be the last segment",
        ),
        ([("/a/:", "get", home_page)], "route ('/a/:', 'get', ...): a ':' segment needs a name"),
        (
            [("/:id/:id", "get", home_page)],
            "route ('/:id/:id', 'get', ...): the path param 'id' appears twice",
        ),
        (
            [("/", "get", home_page, {"name": "x"})],
            "route ('/', 'get', ...): unknown options ['name']",
        ),
        ([("/", "get", home_page, 3)], "route ('/', 'get', ...): unexpected 3; after the handler"),
        (
            [("/:id", "get", home_page, {"constraints": {"other": "x"}})],
            "route ('/:id', 'get', ...): constraint for 'other', which is not a path param",
        ),
        (
            [("/:id", "get", home_page, {"constraints": {"id": "("}})],
            "route ('/:id', 'get', ...): bad constraint for 'id': missing ), "
            "unterminated subpattern",
        ),
        (
            [("/a", "get", home_page, "same"), ("/b", "get", show_user, "same")],
            "routes ('/a', 'get') and ('/b', 'get') are both named 'same'",
        ),
        (
            [("/users/:id", "get", home_page), ("/users/:name", "get", show_user)],
            "routes ('/users/:id', 'get') and ('/users/:name', 'get') conflict: both match",
        ),
        (
            [("/x", "any", home_page), ("/x", "post", show_user)],
            "routes ('/x', 'any') and ('/x', 'post') conflict: both match /x",
        ),
    ],
)
def test_a_bad_table_names_the_route(table: Any, message: str) -> None:
    with pytest.raises(RouteError) as info:
        expand_routes(table)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_same_path_different_verbs_is_no_conflict() -> None:
    router = expand_routes([("/x", "get", home_page, "read"), ("/x", "post", show_user, "write")])
    assert [router.match(m, "/x").route.name for m in ("get", "post")] == ["read", "write"]  # type: ignore[union-attr]


def test_allowed_methods_are_what_an_allow_header_lists() -> None:
    router_ = expand_routes(TABLE)
    assert router_.allowed_methods("/counter") == ["GET", "HEAD", "OPTIONS"]
    assert router_.allowed_methods("/any") == [
        "GET",
        "POST",
        "PUT",
        "DELETE",
        "PATCH",
        "HEAD",
        "OPTIONS",
    ]
    assert router_.allowed_methods("/nowhere") == []
    both = expand_routes([("/x", "post", home_page, "w"), ("/x", "delete", show_user, "d")])
    assert both.allowed_methods("/x?q=1") == ["POST", "DELETE", "OPTIONS"]


async def route(method: str, path: str) -> dict[str, Any]:
    request = {"request_method": method, "uri": path, "headers": {}}
    return await execute({"request": request}, [router(TABLE)])


async def test_the_router_routes_or_says_why_not() -> None:
    matched = await route("get", "/users/7")
    assert matched["route"].name == f"{HERE}/show_user"
    assert matched["request"]["path_params"] == {"id": "7"}
    assert matched["response"] == {"status": 200, "body": "user"}

    wrong_method = await route("post", "/counter")
    assert wrong_method["route"] is None
    assert wrong_method["response"]["status"] == 405
    assert wrong_method["response"]["headers"]["Allow"] == "GET, HEAD, OPTIONS"

    options = await route("options", "/counter")
    assert options["response"] == {"status": 204, "headers": {"Allow": "GET, HEAD, OPTIONS"}}

    nothing = await route("get", "/nowhere")
    assert nothing["route"] is None and "response" not in nothing
