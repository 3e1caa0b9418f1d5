"""The hostile-line corpus (`corpus.py`) and random input: every line answered or ignored as documented,
and the connection always survives to answer the next request."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app_server.rpc.framing import READ_CHUNK
from protocol.jsonrpc import I64_MAX, I64_MIN
from protocol.methods import METHODS
from tests.support.connection import make_settings, server, warnings
from tests.support.corpus import CASES, FINAL, FINAL_ANSWER, OUR_METHODS, PREAMBLE, Case, error, unknown_method

pytestmark = pytest.mark.anyio

PREAMBLE_RESULT = b'{"id":"preamble","result":{"userAgent":"codex-limits/'


def test_corpus_is_big_unique_and_names_our_methods() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)
    assert tuple(METHODS) == OUR_METHODS
    answered = [json.loads(case.answer)["id"] for case in CASES if case.answer is not None]
    assert len(answered) == len({json.dumps(i) for i in answered})  # every answer can be told apart by id
    assert all(case.answer is None for case in CASES if case.logged and b"pad" not in case.line)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_corpus_case(tmp_path: Path, caplog: pytest.LogCaptureFixture, case: Case) -> None:
    async with server(make_settings(tmp_path)) as conn:
        conn.send(PREAMBLE, case.line, FINAL)
        lines = await conn.finish()
    assert lines[0].startswith(PREAMBLE_RESULT)
    expected = [FINAL_ANSWER] if case.answer is None else [case.answer, FINAL_ANSWER]
    assert sorted(lines[1:]) == sorted(expected)  # a task's answer may overtake an inline one
    assert len(warnings(caplog)) == case.logged


async def test_the_whole_corpus_in_one_stream(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """All cases back to back in 64 KiB chunks (as stdin delivers them), then the final request."""
    stream = b"".join(line + b"\n" for line in (PREAMBLE, *(case.line for case in CASES), FINAL))
    async with server(make_settings(tmp_path)) as conn:
        for start in range(0, len(stream), READ_CHUNK):
            conn.input.write(stream[start : start + READ_CHUNK])
        lines = await conn.finish()
    assert lines[0].startswith(PREAMBLE_RESULT)
    expected = [case.answer for case in CASES if case.answer is not None] + [FINAL_ANSWER]
    assert Counter(lines[1:]) == Counter(expected)
    assert len(warnings(caplog)) == sum(case.logged for case in CASES)


# -- random input ------------------------------------------------------------------------------------------------

NEXT = b'{"id":"next \\u2603","method":"nope/next"}'
NEXT_ANSWER = error('"next ☃"', unknown_method("nope/next"))
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


TOKENS = [b"{", b"}", b"[", b"]", b'"id"', b'"method"', b'"params"', b'"nope/x"', b":", b",", b"1", b"-0", b"1e999"]
TOKENS += [
    b'"',
    b"\\",
    b'"\\ud800"',
    b"\\u00e9",
    b"null",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"\r",
    b"\n",
    b" ",
    b"\xef\xbb\xbf",
]
junk_bytes = st.binary(max_size=300) | st.lists(st.sampled_from(TOKENS), max_size=80).map(b"".join)


@EXAMPLES
@given(junk=junk_bytes)
async def test_random_bytes_never_kill_the_server(tmp_path: Path, junk: bytes) -> None:
    async with server(make_settings(tmp_path)) as conn:
        conn.input.write(junk + b"\n" + NEXT + b"\n")
        assert await conn.output.wait_for("next ☃") == NEXT_ANSWER
        lines = await conn.finish()
    # Before initialize everything is answered inline, in order: the probe's answer is the last line,
    # and whatever the junk held was answered as a request error, never as a crash (-32603).
    assert lines[-1] == NEXT_ANSWER
    assert all(json.loads(line)["error"]["code"] == -32600 for line in lines[:-1])


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
)
methods = st.sampled_from(["nope/x", "Initialize", *METHODS]) | json_values


@EXAMPLES
@given(
    messages=st.lists(
        st.fixed_dictionaries(
            {},
            optional={"id": json_values, "method": methods, "params": json_values, "result": json_values},
        ),
        max_size=8,
    )
)
async def test_random_messages_are_answered_exactly_when_they_are_requests(
    tmp_path: Path, messages: list[dict[str, Any]]
) -> None:
    """A line is answered iff it is a request (string or i64 id, string method), once, echoing its id."""
    async with server(make_settings(tmp_path)) as conn:
        conn.send(*(json.dumps(m, ensure_ascii=False) for m in messages), NEXT)
        lines = await conn.finish()

    def is_request(m: dict[str, Any]) -> bool:
        rid = m.get("id")
        valid_id = isinstance(rid, str) or (type(rid) is int and I64_MIN <= rid <= I64_MAX)
        return valid_id and isinstance(m.get("method"), str)

    requests = [m for m in messages if is_request(m)]
    answers = [json.loads(line) for line in lines]
    assert NEXT_ANSWER in lines
    assert Counter(json.dumps(a["id"]) for a in answers) == Counter(
        [json.dumps(m["id"]) for m in requests] + [json.dumps("next ☃")]
    )
    assert all(set(a) in ({"id", "result"}, {"error", "id"}) for a in answers)
    # -32603 is what a crash becomes; nothing here may crash (no account is signed in: refusals are -32600).
    assert all(a["error"]["code"] == -32600 for a in answers if "error" in a)
