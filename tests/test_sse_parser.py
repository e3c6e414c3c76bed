"""Property: what ``encode_event`` writes, the npm ``eventsource-parser`` package reads back
as the same event (name, data, id, retry), whatever the text: several lines, CR, CRLF,
empty strings, characters outside the BMP, data sent as JSON."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from replkit.sse import encode_event

# A name or id is one line: SSE forbids CR, LF and NUL there (encode_event refuses them).
one_line = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=12)
text = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\r\n", "\r", "\n", "\n\n", " ", ":", "🙂", "\U0010fffd", "\ufeff"]),
    ),
    max_size=30,
).map("".join)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
data = st.one_of(
    text,
    st.integers(),
    st.lists(json_value, max_size=3),
    st.dictionaries(text, json_value, max_size=3),
)
event = st.fixed_dictionaries(
    {"data": data},
    optional={"name": one_line, "id": one_line, "retry": st.integers(0, 10**9)},
)


@pytest.fixture(scope="module")
def parser() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        ["node", str(ROOT / "tests/js/parse-events.mjs")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield process
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=10)


def parse(parser: subprocess.Popen[str], stream: bytes) -> list[dict[str, Any]]:
    assert parser.stdin is not None and parser.stdout is not None
    parser.stdin.write(base64.b64encode(stream).decode() + "\n")
    parser.stdin.flush()
    line = parser.stdout.readline()
    assert line, "the parser exited"
    return json.loads(line)


def read_back(event: dict[str, Any]) -> dict[str, Any]:
    """What a client reads: line breaks become LF, blank names and ids are absent."""
    value = event["data"]
    if isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return {
        "event": event.get("name") or None,
        "data": re.sub(r"\r\n|\r", "\n", str(value)),
        "id": event.get("id") or None,
        "retry": event.get("retry"),
    }


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(event, min_size=1, max_size=4))
def test_eventsource_parser_reads_back_every_encoded_event(
    parser: subprocess.Popen[str], events: list[dict[str, Any]]
) -> None:
    parsed = parse(parser, b"".join(encode_event(e) for e in events))
    assert parsed == [read_back(e) for e in events]
    for sent, got in zip(events, parsed, strict=True):
        if isinstance(sent["data"], dict | list):
            assert json.loads(got["data"]) == sent["data"]
