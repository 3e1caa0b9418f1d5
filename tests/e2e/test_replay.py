"""Every reference transcript replayed against our server: same answers, same backend requests.

Each ``*.jsonl`` in ``shared/contract/transcripts`` runs against our server with the transcript's own backend
answers served by ``MockBackend`` on 127.0.0.1 (each ``backend_config`` installed before the client line that
follows it). Client lines are sent in the transcript's causal order (see ``replay_support``). Compared:

* every stdout line, exactly, after the normalisation below;
* every backend request: method, path, exact body bytes, and the headers that matter (user-agent,
  authorization, chatgpt-account-id, x-openai-fedramp, x-openai-codex-luna-reserve, originator, content-type,
  accept, accept-encoding) in their order among themselves;
* lines upstream dropped with a log record (``server_log``, CONTRACT §1.3) get one from us too;
* auth.json afterwards (content and mode) when the transcript records it, and the exit status.

In-memory (dispatcher + handlers in the test's event loop) unless the table ``SUBPROCESS`` says otherwise:
61 needs a real process because what it checks is what happens at end of stdin and the exit status. The
terminal part of the user agent comes from the environment, so each run sets TERM / TERM_PROGRAM the way the
reference run had them (``Transcript.process_env``), through ``monkeypatch`` for in-memory runs.

Normalisation table: OUR deliberate deviations, nothing else
------------------------------------------------------------

(a) User agent. Upstream ``<name>/0.169.0 (<os>; <arch>) <terminal> (<name>; <version>)``, ours
    ``codex-limits/<version> (<os>; <arch>) <terminal> (<name>; <version>)``: the part before the terminal is
    replaced by ``<UA>`` on both sides (``userAgent`` in results, ``user-agent`` headers). The terminal and the
    client suffix are compared.
(b) We never send ``configWarning`` or ``remoteControl/status/changed`` (optional, CONTRACT §2.4): dropped
    from the expected lines.
(c) The unknown-method message lists our methods: compared up to ``expected one of ``.
(d) serde wording: upstream names a JSON float ``map`` in ``invalid type: map, expected i32`` (an artifact of
    its number handling; CONTRACT §4.5 says not to copy it); ours says ``invalid type: floating point `42.5`,
    expected i32`` (as upstream itself does for members it does not decode through a flattened struct). Both
    become ``invalid type: <float>, expected …``. Nothing else needs latitude: the rest of every ``Decode
    error …`` (wording, ``at line L column C``, content type, body) and every ``Invalid request: …`` text is
    compared exactly.
(e) Defects we do not copy (CONTRACT §10):
    D2 (61) we answer the read and the consume in flight at end of input, then exit 0;
    D3 (20) the usage call is bounded: ``failed to fetch codex rate limits: request timed out after …``;
    D4 (14b, reads 12 and 13) 2^40 timestamps are accepted: the read succeeds (expected lines written from
       the contract's mapping rules, below); (13, read 27) a null ``reset_at`` is ``expected i64``, not i32;
    D5 (40f, 40k) ChatGPT auth without usable tokens is no auth: ``codex account authentication required …``
       and no backend call;
    D6 (31) an empty-key consume is answered at once, not after the slow consume (asserted as an order).
(f) Token refresh (41*): the recorded JWT ``exp`` and ``last_refresh`` values are absolute; equivalent ones
    are generated relative to now. We refresh lazily, before the first request that needs the token, not at
    start-up: the refresh request is expected right after the first read/consume, with that request's
    originator (the client name) and user agent instead of upstream's pre-initialize ``codex_cli_rs`` ones.
    After a transient failure (41g) we retry once per later request (upstream: about twice); after a
    permanent one (41f) never again (upstream tried twice at start-up). The rewritten auth.json is compared
    byte for byte except the ``last_refresh`` value, which must be a fresh RFC 3339 UTC time with nanoseconds.
(g) = D2 above.
(h) 50 runs model turns (``thread/start``, ``turn/start``), which are outside this surface: ours answers them
    with the unknown-method error and never emits turn notifications. The initialize exchange and the final
    read are compared as usual; ``test_rate_limits_updated_notification_shape`` checks that our wire model
    re-serialises the four recorded ``account/rateLimits/updated`` notifications byte for byte.
(i) 22 edits and deletes auth.json between requests; the transcript does not record the edits, so hooks
    reproduce them before ``after_edit`` (new token and account), ``after_edit_2`` (another edit) and
    ``after_delete`` (file removed). The backend headers must stay the ones loaded at start (CONTRACT §8.3).
(j) 21a–21c: their ``setup.config_toml`` holds the generic base URL; the base each run used is in the
    scenario ``description`` (``chatgpt_base_url = …``), which is what the recorded request paths show. The
    replay writes that one. (Transcript data, not a deviation.)
(k) 0.171.0 behaviour (CONTRACT-0.171.md): every usage, details and consume request carries
    ``accept-encoding: zstd,gzip`` (0.169.0 sent none); it is expected right after ``accept``. The token
    refresh is unchanged.
(l) Redirects are never followed (DESIGN: the bearer token would go with them): 18's read 17, answered 301 to
    another path, fails with ``GET <url> failed: 301 Moved Permanently; redirect to <location> not followed``,
    and the request to the target is not made.

Orders the contract promises inside one chunk (``ORDERS``): 22 "fast" is answered before "slow"; 31 the read
R1 is answered while consume A is still pending, A (timed out) before B before C (FIFO), and BAD before A (D6).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

import pytest

from app_server.config import Settings
from app_server.rpc.codec import notification
from app_server.upstream.useragent import user_agent
from protocol import methods, v2
from tests.support import replay as rs
from tests.support import transcripts
from tests.support.mock_backend import MockBackend, unused_port

pytestmark = pytest.mark.anyio

NAMES: Final = sorted(p.stem for p in transcripts.TRANSCRIPTS_DIR.glob("*.jsonl"))

SUBPROCESS: Final = frozenset({"61_stdin_eof_with_requests_in_flight"})

DROPPED_NOTIFICATIONS: Final = frozenset({"configWarning", "remoteControl/status/changed"})

ORDERS: Final[dict[str, list[tuple[Any, Any]]]] = {
    "22_concurrency_and_auth_caching": [("fast", "slow")],
    "31_consume_timeout_and_queue": [("R1", "A"), ("BAD", "A"), ("A", "B"), ("B", "C")],
}

# D4: what 14b's reads 12 and 13 answer once 64-bit timestamps are accepted. Written from the mapping rules
# (CONTRACT §4.4, §4.5) for the transcript's usage bodies: read 12 is read 1's body with
# `individual_limit.reset_at` = 2^40; read 13 has a 60 s primary window resetting at 2^40 and a null secondary.
_I64_READ_12_SNAPSHOT: Final = (
    '{"limitId":"codex","limitName":null,"normalModelSlug":null,'
    '"primary":{"usedPercent":42,"windowDurationMins":60,"resetsAt":1790000000},'
    '"secondary":{"usedPercent":5,"windowDurationMins":1440,"resetsAt":1790100000},'
    '"credits":{"hasCredits":false,"unlimited":false,"balance":"0"},'
    '"individualLimit":{"limit":"25000","used":"8000","remainingPercent":68,"resetsAt":1099511627776},'
    '"spendControlReached":false,"planType":"pro","rateLimitReachedType":null}'
)
_I64_READ_13_SNAPSHOT: Final = (
    '{"limitId":"codex","limitName":null,"normalModelSlug":null,'
    '"primary":{"usedPercent":1,"windowDurationMins":1,"resetsAt":1099511627776},"secondary":null,'
    '"credits":{"hasCredits":false,"unlimited":false,"balance":"0"},'
    '"individualLimit":null,"spendControlReached":null,"planType":"pro","rateLimitReachedType":null}'
)


def _read_result(request_id: int, snapshot: str) -> str:
    return (
        f'{{"id":{request_id},"result":{{"ordinaryUsageAllowed":null,"rateLimits":{snapshot},'
        f'"rateLimitsByLimitId":{{"codex":{snapshot}}},"rateLimitResetCredits":{{"availableCount":3,"credits":null}},'
        '"accountId":null,"rateLimitUpsell":null}}'
    )


D4_ANSWERS: Final = {12: _read_result(12, _I64_READ_12_SNAPSHOT), 13: _read_result(13, _I64_READ_13_SNAPSHOT)}

AUTH_REQUIRED: Final = {
    rs.READ: "codex account authentication required to read rate limits",
    rs.CONSUME: "codex account authentication required for rate limit reset credits",
}


def error_line(request_id: Any, code: int, message: str) -> str:
    return rs.canonical({"error": {"code": code, "message": message}, "id": request_id})


# -- building the plan --------------------------------------------------------------------------------------------


def base_steps(t: transcripts.Transcript, placeholders: dict[str, str]) -> list[rs.Step]:
    steps: list[rs.Step] = []
    for event in t.events:
        if event.type == "backend_config":
            steps.append(rs.Action("config", routes=event["routes"], label=f"config @{event.t}"))
        elif event.type == "client":
            steps.append(rs.Action("client", line=str(event["line"]), label=str(event.data.get("label", ""))))
        elif event.type == "server":
            line = transcripts.substitute(str(event["line"]), placeholders)
            message = json.loads(line)
            if "id" not in message and message.get("method") in DROPPED_NOTIFICATIONS:  # (b)
                continue
            steps.append(rs.ExpectServer(rs.normalise_line(line, ours=False)))
        elif event.type == "backend_request":
            steps.append(rs.ExpectBackend(rs.call_from_transcript(event.data, placeholders)))
    return steps


def client_index(steps: list[rs.Step], rid: Any) -> int:
    for index, step in enumerate(steps):
        if isinstance(step, rs.Action) and step.kind == "client" and rs.request_id(step.line or "") == rid:
            return index
    raise KeyError(rid)


def answer_index(steps: list[rs.Step], rid: Any) -> int:
    for index, step in enumerate(steps):
        if isinstance(step, rs.ExpectServer) and rs.answer_id(step.line) == rid:
            return index
    raise KeyError(rid)


def requests_of(steps: list[rs.Step], *wanted: str) -> list[tuple[Any, str]]:
    out = []
    for step in steps:
        if isinstance(step, rs.Action) and step.kind == "client" and step.line is not None:
            method = rs.request_method(step.line)
            if method in wanted:
                out.append((rs.request_id(step.line), method))
    return out


def d5_no_usable_tokens(steps: list[rs.Step]) -> list[rs.Step]:
    """(e) D5: reads and consumes that reached the backend now fail with the auth error, with no call."""
    for rid, method in requests_of(steps, rs.READ, rs.CONSUME):
        index = answer_index(steps, rid)
        answer = steps[index]
        if isinstance(answer, rs.ExpectServer) and '"result"' in answer.line:
            steps[index] = rs.ExpectServer(
                rs.normalise_line(error_line(rid, -32600, AUTH_REQUIRED[method]), ours=False)
            )
    return [s for s in steps if not isinstance(s, rs.ExpectBackend)]


def d4_i64_timestamps(steps: list[rs.Step]) -> list[rs.Step]:
    for rid, line in D4_ANSWERS.items():
        steps[answer_index(steps, rid)] = rs.ExpectServer(rs.normalise_line(line, ours=False))
    return steps


def d4_reset_at_is_i64(steps: list[rs.Step]) -> list[rs.Step]:
    """13's read 27 sends `reset_at: null`: the same error, naming our 64-bit type."""
    index = answer_index(steps, 27)
    expected = steps[index]
    assert isinstance(expected, rs.ExpectServer) and "invalid type: null, expected i32 at" in expected.line
    steps[index] = rs.ExpectServer(expected.line.replace("expected i32 at", "expected i64 at"))
    return steps


def d3_usage_timeout(steps: list[rs.Step], port: int) -> list[rs.Step]:
    url = f"http://127.0.0.1:{port}/api/codex/usage"
    detail = f"request timed out after {rs.TIMEOUTS.usage:g} s for url ({url})"
    line = error_line(1, -32603, "failed to fetch codex rate limits: " + detail)
    return [*steps, rs.ExpectServer(rs.normalise_line(line, ours=False))]


def k_accept_encoding(steps: list[rs.Step]) -> list[rs.Step]:
    """(k): 0.171.0's accept-encoding after accept on the usage, details and consume calls."""
    out: list[rs.Step] = []
    for step in steps:
        if isinstance(step, rs.ExpectBackend) and step.call.path != rs.REFRESH_PATH:
            call = step.call
            headers: list[tuple[str, str]] = []
            for name, value in call.headers:
                headers.append((name, value))
                if name == "accept":
                    headers.append(("accept-encoding", "zstd,gzip"))
            assert ("accept-encoding", "zstd,gzip") in headers, f"no accept header in {call.show()}"
            step = rs.ExpectBackend(rs.BackendCall(call.method, call.path, tuple(headers), call.body))
        out.append(step)
    return out


def l_redirect_not_followed(steps: list[rs.Step], port: int) -> list[rs.Step]:
    """(l): 18's read 17 gets a 301; we report it instead of fetching the target."""
    index = answer_index(steps, 17)
    url = f"http://127.0.0.1:{port}/api/codex/usage"
    detail = f"GET {url} failed: 301 Moved Permanently; redirect to /api/codex/usage2 not followed"
    steps[index] = rs.ExpectServer(
        rs.normalise_line(error_line(17, -32603, "failed to fetch codex rate limits: " + detail), ours=False)
    )
    targets = [i for i, s in enumerate(steps) if isinstance(s, rs.ExpectBackend) and s.call.path == "/api/codex/usage2"]
    assert len(targets) == 1, "18 follows exactly one redirect"
    del steps[targets[0]]
    return steps


def standard_read_answer(request_id: int) -> str:
    """03's answer to a details-excluded read of the standard usage body (the body 61 serves too)."""
    t03 = transcripts.load("03_request_id_types")
    line = next(str(e["line"]) for e in t03.events_of("server") if str(e["line"]).startswith('{"id":45,'))
    return line.replace('{"id":45,', f'{{"id":{request_id},', 1)


def d2_drain_at_eof(t: transcripts.Transcript, steps: list[rs.Step]) -> list[rs.Step]:
    """(g) D2: stdin closes while the read and the consume are at the backend; both are still answered."""
    t03 = transcripts.load("03_request_id_types")
    assert (
        t.backend_configs()[0]["routes"]["GET /api/codex/usage"]["json"]
        == (t03.backend_configs()[0]["routes"]["GET /api/codex/usage"]["json"])
    ), "61 and 03 must serve the same usage body for the borrowed expected answer"
    consume_code = t.backend_configs()[0]["routes"]["POST /api/codex/rate-limit-reset-credits/consume"]["json"]
    assert consume_code == {"code": "reset"}
    return [
        *steps,
        rs.Action("eof", label="end of input with two requests in flight"),
        rs.ExpectServer(rs.normalise_line(standard_read_answer(1), ours=False)),
        rs.ExpectServer(rs.normalise_line('{"id":2,"result":{"outcome":"reset"}}', ours=False)),
    ]


REFRESH_POLICY: Final[dict[str, Literal["first", "each"]]] = {
    "41a_refresh_expired_access_token": "first",
    "41b_refresh_access_token_expires_in_2_min": "first",
    "41d_refresh_opaque_token_last_refresh_9_days": "first",
    "41f_refresh_permanent_failure_401": "first",
    "41g_refresh_transient_failure_500": "each",
    "41h_refresh_response_with_access_token_only": "first",
    "41i_refresh_triggered_by_request": "first",
}


def f_lazy_refresh(t: transcripts.Transcript, steps: list[rs.Step]) -> list[rs.Step]:
    """(f): refresh requests move to the first (41g: every) read/consume, with the client's identity."""
    refreshes = [s for s in steps if isinstance(s, rs.ExpectBackend) and s.call.path == rs.REFRESH_PATH]
    policy = REFRESH_POLICY.get(t.name)
    if policy is None:
        assert not refreshes, f"{t.name}: refresh requests but no policy"
        return steps
    assert refreshes, f"{t.name}: a policy but no refresh request"
    init_line = next(str(e["line"]) for e in t.events_of("client") if rs.request_method(str(e["line"])) == "initialize")
    client = json.loads(init_line)["params"]["clientInfo"]
    init_answer = next(json.loads(str(e["line"])) for e in t.events_of("server") if '"userAgent"' in str(e["line"]))
    user_agent = rs.normalise_ua(init_answer["result"]["userAgent"], ours=False)
    template = refreshes[0].call
    headers = tuple(
        (name, client["name"] if name == "originator" else user_agent if name == "user-agent" else value)
        for name, value in template.headers
    )
    refresh = rs.ExpectBackend(rs.BackendCall(template.method, template.path, headers, template.body))
    kept = [s for s in steps if not (isinstance(s, rs.ExpectBackend) and s.call.path == rs.REFRESH_PATH)]
    targets = [rid for rid, _ in requests_of(kept, rs.READ, rs.CONSUME)]
    for rid in targets[:1] if policy == "first" else targets:
        kept.insert(client_index(kept, rid) + 1, refresh)
    return kept


def h_model_turns(steps: list[rs.Step]) -> list[rs.Step]:
    """(h): turns are not ours; their requests get the unknown-method error; only /api/codex calls remain."""
    turn_ids = {
        rs.request_id(s.line or ""): rs.request_method(s.line or "")
        for s in steps
        if isinstance(s, rs.Action)
        and s.kind == "client"
        and rs.request_method(s.line or "") in ("thread/start", "turn/start")
    }
    out: list[rs.Step] = []
    for step in steps:
        if isinstance(step, rs.ExpectServer):
            message = json.loads(step.line)
            if "id" not in message or message["id"] in turn_ids:
                continue
        if isinstance(step, rs.ExpectBackend) and not step.call.path.startswith("/api/codex/"):
            continue
        out.append(step)
        if isinstance(step, rs.Action) and step.kind == "client":
            rid = rs.request_id(step.line or "")
            if rid in turn_ids:
                message = f"Invalid request: unknown variant `{turn_ids[rid]}`, expected one of `initialize`"
                out.append(rs.ExpectServer(rs.normalise_line(error_line(rid, -32600, message), ours=False)))
    return out


def _edit_auth(token: str, account: str) -> Callable[[Path], None]:
    def edit(home: Path) -> None:
        path = home / "auth.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        data["tokens"]["access_token"] = token
        data["tokens"]["account_id"] = account
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")

    return edit


def _delete_auth(home: Path) -> None:
    (home / "auth.json").unlink()


HOOKS: Final[dict[str, dict[Any, Callable[[Path], None]]]] = {
    "22_concurrency_and_auth_caching": {
        "after_edit": _edit_auth("edited-token", "account-edited"),
        "after_edit_2": _edit_auth("edited-token-2", "account-edited-2"),
        "after_delete": _delete_auth,
    }
}


def i_hooks(t: transcripts.Transcript, steps: list[rs.Step]) -> list[rs.Step]:
    for rid, hook in HOOKS.get(t.name, {}).items():
        steps.insert(client_index(steps, rid), rs.Action("hook", hook=hook, label=f"before {rid}"))
    return steps


def build_plan(t: transcripts.Transcript, port: int, codex_home: Path) -> rs.Plan:
    placeholders = {"<PORT>": str(port), "<CODEX_HOME>": str(codex_home)}
    steps = base_steps(t, placeholders)
    name = t.name
    if name in ("40f_auth_chatgpt_without_last_refresh", "40k_auth_chatgpt_mode_without_tokens"):
        steps = d5_no_usable_tokens(steps)
    elif name == "14b_read_individual_limit_and_i32_fields":
        steps = d4_i64_timestamps(steps)
    elif name == "13_read_windows_and_credits":
        steps = d4_reset_at_is_i64(steps)
    elif name == "20_read_usage_no_timeout":
        steps = d3_usage_timeout(steps, port)
    elif name == "61_stdin_eof_with_requests_in_flight":
        steps = d2_drain_at_eof(t, steps)
    elif name == "50_rate_limits_updated_notification":
        steps = h_model_turns(steps)
    elif name.startswith("41"):
        steps = f_lazy_refresh(t, steps)
    elif name == "18_read_usage_errors":
        steps = l_redirect_not_followed(steps, port)
    steps = k_accept_encoding(steps)
    steps = i_hooks(t, steps)
    return rs.Plan(name=name, steps=steps, order=ORDERS.get(name, []))


# -- the test ------------------------------------------------------------------------------------------------------


def set_environment(t: transcripts.Transcript, port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference run's environment (TERM etc.), for the in-memory server, which reads os.environ."""
    wanted = t.process_env(port, base={})
    for key in (*transcripts.REMOVED_ENV_VARS, *wanted):
        monkeypatch.delenv(key, raising=False)
    for key, value in wanted.items():
        monkeypatch.setenv(key, value)


def described_base_url(t: transcripts.Transcript, port: int) -> str | None:
    """(j): the base URL a 21* run really used, from its description."""
    match = re.fullmatch(r"chatgpt_base_url = (\S+)", t.description)
    return transcripts.substitute(match.group(1), {"<PORT>": str(port)}) if match else None


LAST_REFRESH: Final = re.compile(r'"last_refresh": "([^"]*)"')


def check_auth_file(t: transcripts.Transcript, home: Path, written: bytes | None) -> list[str]:
    problems: list[str] = []
    path = home / "auth.json"
    end = t.end
    if end.get("auth_json_unchanged"):
        if written is None or not path.exists() or path.read_bytes() != written:
            problems.append("auth.json changed but the transcript says unchanged")
        elif oct(path.stat().st_mode & 0o777) != end.get("auth_json_mode"):
            problems.append(f"auth.json mode {oct(path.stat().st_mode & 0o777)}, expected {end.get('auth_json_mode')}")
    after = end.get("auth_json_after")
    if isinstance(after, str):
        text = path.read_text(encoding="utf-8")
        stamp = LAST_REFRESH.search(text)
        if stamp is None:
            problems.append(f"rewritten auth.json has no last_refresh: {text}")
        else:
            value = stamp.group(1)
            if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", value):
                problems.append(f"last_refresh {value!r} is not RFC 3339 UTC with nanoseconds")
            else:
                moment = time.mktime(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
                if abs(moment - time.time()) > 120:
                    problems.append(f"last_refresh {value!r} is not now")
        if LAST_REFRESH.sub('"last_refresh": "…"', text) != LAST_REFRESH.sub('"last_refresh": "…"', after):
            problems.append(f"rewritten auth.json differs:\n{text}\nexpected:\n{after}")
        mode = oct(path.stat().st_mode & 0o777)
        if mode != end.get("auth_json_after_mode"):
            problems.append(f"rewritten auth.json mode {mode}, expected {end.get('auth_json_after_mode')}")
    return problems


def check_orders(plan: rs.Plan, answer_order: list[Any]) -> list[str]:
    problems = []
    for first, second in plan.order:
        if first not in answer_order or second not in answer_order:
            problems.append(f"order {first!r} before {second!r}: one of them was not answered")
        elif answer_order.index(first) > answer_order.index(second):
            problems.append(f"{first!r} must be answered before {second!r}; answers came {answer_order}")
    return problems


def test_every_transcript_is_replayed() -> None:
    assert len(NAMES) >= 50, f"transcripts not found in {transcripts.TRANSCRIPTS_DIR}"


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.subprocess) if n in SUBPROCESS else n for n in NAMES]
)
async def test_replay(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = transcripts.load(name)
    if name.startswith("41"):
        t = rs.remap(t, rs.time_map(t, time.time()))
    home = tmp_path / "codex-home"
    data_home = tmp_path / "data"
    mode: Literal["memory", "subprocess"] = "subprocess" if name in SUBPROCESS else "memory"

    with MockBackend() as backend:
        port = backend.port if t.backend_listening else unused_port()
        if not t.backend_listening:
            backend.stop()
        t.write_codex_home(home, port)
        if (base_url := described_base_url(t, port)) is not None:
            (home / "config.toml").write_text(f'chatgpt_base_url = "{base_url}"\n', encoding="utf-8")
        written = (home / "auth.json").read_bytes() if (home / "auth.json").exists() else None
        refresh_url = t.env_for(port).get("CODEX_REFRESH_TOKEN_URL_OVERRIDE", f"http://127.0.0.1:{port}/oauth/token")
        settings = Settings(codex_home=home, data_home=data_home, refresh_url=refresh_url, timeouts=rs.TIMEOUTS)
        env = rs.subprocess_env(t, port, home, data_home)
        if mode == "memory":
            set_environment(t, port, monkeypatch)
        plan = build_plan(t, port, home)
        failure: AssertionError | None = None
        async with rs.running_server(mode, settings, env) as server:
            try:
                observed = await rs.run_plan(plan, server, backend if t.backend_listening else None, home)
            except AssertionError as exc:  # raised here, not as an ExceptionGroup out of the server's task group
                failure = exc
        if failure is not None:
            raise failure

    problems: list[str] = []
    for raw in observed.raw:
        if rs.canonical(json.loads(raw)) != raw:
            problems.append(f"not compact canonical JSON: {raw}")
    problems += rs.compare_chunked("stdout lines", plan.expected_lines(), observed.lines, observed.line_bounds)
    problems += rs.compare_chunked("backend requests", plan.expected_calls(), observed.calls, observed.call_bounds)
    problems += check_orders(plan, observed.answer_order)
    # Every line upstream dropped with a log record is dropped with one by us too. (Ours also logs a line
    # upstream ignores silently, a duplicated "id" key in 03; stderr is not part of the wire contract.)
    dropped_expected = len(t.events_of("server_log"))
    dropped = sum("Failed to deserialize JSONRPCMessage" in line for line in observed.logs)
    if dropped < dropped_expected:
        problems.append(f"dropped-line log records: {dropped}, expected {dropped_expected}")
    problems += check_auth_file(t, home, written)
    if mode == "subprocess" and observed.exit_code != 0:
        problems.append(f"exit status {observed.exit_code}")
    assert not problems, "\n".join(problems)


async def test_rate_limits_updated_notification_shape() -> None:
    """(h): the recorded `account/rateLimits/updated` lines, re-encoded by our wire model and encoder."""
    t = transcripts.load("50_rate_limits_updated_notification")
    recorded = [str(e["line"]) for e in t.events_of("server") if methods.RATE_LIMITS_UPDATED.name in str(e["line"])]
    assert len(recorded) == 4
    for line in recorded:
        message = json.loads(line)
        params = v2.AccountRateLimitsUpdatedNotification.model_validate(message["params"])
        ours = notification(methods.RATE_LIMITS_UPDATED.name, params, message["emittedAtMs"])
        assert ours.decode("utf-8") == line


def test_delay_mapping_keeps_each_side_of_the_timeout() -> None:
    assert rs.map_delay("details", 4.5) <= rs.TIMEOUTS.details / 2
    assert rs.map_delay("details", 5.5) >= rs.TIMEOUTS.details * 1.5
    assert rs.map_delay("consume", 15) >= rs.TIMEOUTS.consume * 1.5
    assert rs.map_delay("consume", 2) <= rs.TIMEOUTS.consume / 2
    assert rs.map_delay("usage", 7) < rs.TIMEOUTS.usage
    assert rs.map_delay("usage", 400) == rs.NEVER


@pytest.mark.parametrize(
    ("name", "version", "suffix"),
    [
        ("probe", "1.0", " (probe; 1.0)"),
        ("", "", " (;)"),  # 05f: upstream trims "<name>; <version>"
        ("my client", "1\n0", " (my client; 1_0)"),  # 05d
        ("clié", "1.0", " (clié; 1.0)"),  # 05e: non-ASCII kept when the whole value is a valid header value
        ("clié", "1\n0", " (cli_; 1_0)"),  # otherwise every character outside printable ASCII becomes "_"
        (" x ", " 2 ", " (x ;  2)"),
        ("x", "\u3000", " (x;)"),  # Rust's trim: Unicode White_Space
        ("x", "\x1f", " (x; _)"),  # U+001F is not White_Space in Rust (Python's strip would drop it)
    ],
)
def test_user_agent_client_suffix(name: str, version: str, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("TERM_PROGRAM", raising=False)
    base = f"{rs.our_ua_prefix()} xterm"
    assert user_agent(name, version) == base + suffix
    assert user_agent() == base


async def test_refresh_tokens_are_regenerated_relative_to_now() -> None:
    """(f): 41i's token expired 308 s after the recorded start and the read came 12 s in: due then, not at start."""
    t = transcripts.load("41i_refresh_triggered_by_request")
    start = time.time()
    mapping = rs.time_map(t, start)
    old = t.setup["auth_json"]["tokens"]["access_token"]
    new = mapping[old]
    exp = json.loads(rs.b64decode(new.split(".")[1]))["exp"]
    assert 0 < exp - start < 300 < exp - start + 12.272
