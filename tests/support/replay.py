"""Replaying the reference transcripts against our server: plans, drivers, normalisation.

A transcript (CONTRACT §12) is turned into a :class:`Plan`: a time-ordered list of *actions* (install a
route table, send a client line, run a hook, close stdin) and *expectations* (a server line, a backend
request). The runner performs each action only after every expectation listed before it has been observed:
the transcript's causal order is reproduced with events, never with sleeps, and a client line that upstream
sent while a request was still in flight is sent while ours is still in flight too.

Expectations are compared in *chunks*: the expected lines (and backend requests) between two actions against
the same number of observed ones, as multisets. Within a chunk, order is timing (the usage and details calls
of one read run concurrently); across chunks it is causality. Orders that the contract does promise inside a
chunk (out-of-order answers, FIFO consumes) are asserted separately by the test.

Everything in here is mechanism. The list of deliberate deviations (what is normalised and why) lives in the
module docstring of ``test_replay.py`` and in :func:`build_plan`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import anyio
import anyio.abc
import anyio.to_thread

from app_server import __version__
from app_server.config import Settings, Timeouts
from app_server.handlers import routes
from app_server.rpc.dispatcher import Dispatcher
from app_server.rpc.memory import MemoryPipe
from app_server.rpc.outbox import Outbox
from app_server.upstream.useragent import PRODUCT, os_description
from app_server.world import World
from tests.support import transcripts
from tests.support.mock_backend import MockBackend, RecordedRequest

REPO_ROOT: Final = Path(__file__).resolve().parents[2]

# -- time ------------------------------------------------------------------------------------------------------

SCALE: Final = 0.1
"""Transcript seconds -> replay seconds for backend delays."""

TIMEOUTS: Final = Timeouts(usage=1.5, details=0.5, consume=1.0, refresh=2.0, connect=2.0)
"""Ours, shortened. Upstream: details 5 s, consume 10 s, usage none (D3)."""

UPSTREAM_TIMEOUTS: Final = {"details": 5.0, "consume": 10.0}
NEVER: Final = 3600.0
"""A delay that stands for "never answers" (released when the mock stops)."""

WAIT: Final = 10.0
"""Bound on every wait for an expected line or request."""

READ: Final = "account/rateLimits/read"
CONSUME: Final = "account/rateLimitResetCredit/consume"
REFRESH_PATH: Final = "/oauth/token"

HEADERS_THAT_MATTER: Final = (
    "user-agent",
    "authorization",
    "chatgpt-account-id",
    "x-openai-fedramp",
    "x-openai-codex-luna-reserve",
    "originator",
    "content-type",
    "accept",
    "accept-encoding",
)


def route_kind(key: str) -> str:
    path = key.partition(" ")[2]
    if path.endswith("/consume"):
        return "consume"
    if path.endswith("/rate-limit-reset-credits"):
        return "details"
    if path.endswith("/usage"):
        return "usage"
    return "other"


def map_delay(kind: str, delay: float) -> float:
    """A transcript delay, expressed against our (short) timeouts.

    Relative to a call's upstream timeout a delay is either below it (the answer is used) or above it (the call
    times out); the mapping keeps that side with a wide margin: below -> at most half of our timeout, above ->
    at least one and a half times it. Usage has no upstream timeout: delays scale linearly and stay below ours,
    except the "never answers" case (>= 60 s), which waits until the mock stops.
    """
    if kind in UPSTREAM_TIMEOUTS:
        ours: float = getattr(TIMEOUTS, kind)
        if delay < UPSTREAM_TIMEOUTS[kind]:
            return min(delay * SCALE, ours / 2)
        return max(delay * SCALE, ours * 1.5)
    if delay >= 60:
        return NEVER
    scaled = delay * SCALE
    assert kind != "usage" or scaled < TIMEOUTS.usage / 2, f"usage delay {delay} s would hit our usage timeout"
    return scaled


def scaled_routes(routes_: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a ``backend_config`` route table with every ``delay`` mapped by :func:`map_delay`."""

    def one(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        copy = dict(spec)
        if copy.get("delay"):
            copy["delay"] = map_delay(kind, float(copy["delay"]))
        return copy

    out: dict[str, Any] = {}
    for key, value in routes_.items():
        kind = route_kind(key)
        out[key] = [one(kind, s) for s in value] if isinstance(value, list) else one(kind, value)
    return out


# -- the plan ----------------------------------------------------------------------------------------------------

ActionKind = Literal["config", "client", "hook", "eof"]


@dataclass
class Action:
    kind: ActionKind
    routes: Mapping[str, Any] | None = None
    line: str | None = None
    hook: Callable[[Path], None] | None = None
    label: str = ""


@dataclass(frozen=True)
class BackendCall:
    """A backend request reduced to what the contract fixes (CONTRACT §7.2, §8.4)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def show(self) -> str:
        body = self.body if len(self.body) < 200 else self.body[:200] + b"..."
        return f"{self.method} {self.path} {list(self.headers)} {body!r}"


@dataclass
class ExpectServer:
    line: str
    """Normalised (see :func:`normalise_line`)."""


@dataclass
class ExpectBackend:
    call: BackendCall


Step = Action | ExpectServer | ExpectBackend


@dataclass
class Plan:
    name: str
    steps: list[Step]
    order: list[tuple[Any, Any]] = field(default_factory=list)
    """Pairs of request ids (a, b): a's answer must come before b's (contract-promised orders inside a chunk)."""
    client_name: str = "probe"

    def expected_lines(self) -> list[str]:
        return [s.line for s in self.steps if isinstance(s, ExpectServer)]

    def expected_calls(self) -> list[BackendCall]:
        return [s.call for s in self.steps if isinstance(s, ExpectBackend)]


# -- normalisation -----------------------------------------------------------------------------------------------

UA_TOKEN: Final = "<UA>"
UPSTREAM_UA_PREFIX: Final = re.compile(r'[^"]*?/0\.169\.0 \(<OS_TYPE> <OS_VERSION>; <ARCH>\)')


def our_ua_prefix() -> str:
    return f"{PRODUCT}/{__version__} ({os_description()})"


def normalise_ua(text: str, *, ours: bool) -> str:
    """Deviation (a): `<name>/0.169.0 (<os>)` upstream, `codex-limits/<version> (<os>)` ours -> `<UA>`.

    Only the product/os prefix is replaced: the terminal and the ` (<name>; <version>)` suffix stay compared.
    """
    if ours:
        return text.replace(our_ua_prefix(), UA_TOKEN)
    return UPSTREAM_UA_PREFIX.sub(UA_TOKEN, text)


UNKNOWN_VARIANT: Final = re.compile(r"^(Invalid request: unknown variant `.*`, expected one of ).*$", re.DOTALL)
UPSTREAM_FLOAT: Final = "invalid type: map, expected "
OUR_FLOAT: Final = re.compile(r"invalid type: floating point `[^`]*`, expected ")
FLOAT_TOKEN: Final = "invalid type: <float>, expected "


def normalise_message(message: str, *, ours: bool) -> str:
    """Deviations (c) and (d) on an error message."""
    if m := UNKNOWN_VARIANT.match(message):
        return m.group(1) + "…"
    if "Decode error for " in message:
        return OUR_FLOAT.sub(FLOAT_TOKEN, message if ours else message.replace(UPSTREAM_FLOAT, FLOAT_TOKEN))
    return message


def canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def normalise_line(line: str, *, ours: bool) -> str:
    """One stdout line in comparable form: UA prefix, error wording (c)/(d), and the key order of
    `rateLimitsByLimitId`, which is hash-map order upstream (CONTRACT §4.3: any stable order is allowed)."""
    value = json.loads(normalise_ua(line, ours=ours))
    if isinstance(value, dict):
        error = value.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            error["message"] = normalise_message(error["message"], ours=ours)
        result = value.get("result")
        if isinstance(result, dict) and isinstance(result.get("rateLimitsByLimitId"), dict):
            by_id = result["rateLimitsByLimitId"]
            result["rateLimitsByLimitId"] = {key: by_id[key] for key in sorted(by_id)}
    return canonical(value)


def call_from_transcript(record: Mapping[str, Any], placeholders: Mapping[str, str]) -> BackendCall:
    headers = tuple(
        (str(name), normalise_ua(transcripts.substitute(str(value), placeholders), ours=False))
        for name, value in record["headers"]
        if name in HEADERS_THAT_MATTER
    )
    return BackendCall(str(record["method"]), str(record["path"]), headers, str(record["body"]).encode("utf-8"))


def call_from_recording(request: RecordedRequest) -> BackendCall:
    headers = tuple(
        (name, normalise_ua(value, ours=True))
        for name, value in request.transcript_headers()
        if name in HEADERS_THAT_MATTER
    )
    return BackendCall(request.method, request.path, tuple((n, v) for n, v in headers), request.body)


# -- tokens relative to now (deviation f) ---------------------------------------------------------------------------

_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SHIFT_WINDOW: Final = 30 * 86400.0


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _jwt_with_exp(token: str, exp: int) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(b64decode(payload))
    claims["exp"] = exp
    encoded = base64.urlsafe_b64encode(canonical(claims).encode("utf-8")).decode("ascii").rstrip("=")
    return f"{header}.{encoded}.{signature}"


def recording_start(t: transcripts.Transcript) -> float:
    """Unix time at which the reference process started: the first notification's `emittedAtMs` minus its `t`."""
    for event in t.events_of("server"):
        match = re.search(r'"emittedAtMs":(\d+)', str(event["line"]))
        if match:
            return int(match.group(1)) / 1000 - event.t
    raise ValueError(f"{t.name}: no notification to date the recording")


def time_map(t: transcripts.Transcript, now: float) -> dict[str, str]:
    """Old -> new strings for every JWT `exp` and `last_refresh` within 30 days of the recording.

    The reference time is the moment the first read or consume was sent, because that is when we check the
    token (we refresh lazily; upstream also checked at start-up, a few hundred ms earlier, which changes no
    decision except in 41i, where the request came 12 s after start precisely to cross the 5-minute window).
    """
    first = next(e for e in t.events_of("client") if request_method(str(e["line"])) in (READ, CONSUME))
    reference = recording_start(t) + first.t
    shift = now - reference
    text = json.dumps([t.scenario, [e.data for e in t.events], t.end])
    mapping: dict[str, str] = {}
    for token in set(_JWT.findall(text)):
        try:
            exp = json.loads(b64decode(token.split(".")[1])).get("exp")
        except (ValueError, binascii.Error):
            continue
        if isinstance(exp, int) and abs(exp - reference) < _SHIFT_WINDOW:
            mapping[token] = _jwt_with_exp(token, round(exp + shift))
    auth = t.setup.get("auth_json")
    last = auth.get("last_refresh") if isinstance(auth, dict) else None
    if isinstance(last, str):
        moment = datetime.fromisoformat(last.replace("Z", "+00:00"))
        if abs(moment.timestamp() - reference) < _SHIFT_WINDOW:
            shifted = moment + timedelta(seconds=shift)
            mapping[last] = shifted.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return mapping


def replace_strings(value: Any, mapping: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in mapping.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [replace_strings(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: replace_strings(v, mapping) for k, v in value.items()}
    return value


def remap(t: transcripts.Transcript, mapping: Mapping[str, str]) -> transcripts.Transcript:
    events = [transcripts.Event(e.type, e.t, replace_strings(e.data, mapping)) for e in t.events]
    return transcripts.Transcript(
        name=t.name,
        scenario=replace_strings(t.scenario, mapping),
        events=events,
        end=replace_strings(t.end, mapping),
        path=t.path,
    )


# -- helpers on lines ------------------------------------------------------------------------------------------------


def parse_line(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def request_method(line: str) -> str | None:
    message = parse_line(line)
    if isinstance(message, dict) and isinstance(message.get("method"), str) and "id" in message:
        return str(message["method"])
    return None


def request_id(line: str) -> Any:
    message = parse_line(line)
    return message.get("id") if isinstance(message, dict) else None


def answer_id(line: str) -> Any:
    message = json.loads(line)
    return message.get("id")


def is_notification(line: str) -> bool:
    message = json.loads(line)
    return isinstance(message, dict) and "method" in message and "id" not in message


# -- observing the server ----------------------------------------------------------------------------------------


class Output:
    """Lines a server wrote to stdout, and a way to wait for more of them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.raw: list[bytes] = []
        self._partial = b""
        self._changed = anyio.Event()
        self.closed = False

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        for line in complete:
            self.raw.append(line)
            self.lines.append(line.decode("utf-8"))
        self._wake()

    def close(self) -> None:
        if self._partial:
            self.raw.append(self._partial)
            self.lines.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, n: int) -> None:
        while len(self.lines) < n:
            if self.closed:
                raise AssertionError(f"server output ended after {len(self.lines)} line(s), expected {n}")
            await self._changed.wait()


class _OutputSink:
    def __init__(self, output: Output) -> None:
        self._output = output

    async def send(self, data: bytes) -> None:
        self._output.feed(data)


class _LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class ServerUnderTest(Protocol):
    output: Output

    async def send(self, data: bytes) -> None: ...

    async def close_input(self) -> None: ...

    async def wait_exit(self) -> int | None: ...

    def log_lines(self) -> list[str]: ...


class InMemoryServer:
    """Our dispatcher and handlers in this event loop, stdin and stdout replaced by memory pipes."""

    def __init__(self, services: World, tg: anyio.abc.TaskGroup) -> None:
        self.output = Output()
        self._input = MemoryPipe()
        self._finished = anyio.Event()
        self._logs = _LogLines()
        self._dispatcher = Dispatcher(
            routes(), services, Outbox(_OutputSink(self.output)), broadcaster=services.broadcaster
        )
        self._services = services
        logging.getLogger("app_server").addHandler(self._logs)
        tg.start_soon(self._run)

    async def _run(self) -> None:
        try:
            await self._dispatcher.serve(self._input)
        finally:
            self.output.close()
            self._finished.set()

    async def send(self, data: bytes) -> None:
        await self._input.send(data)

    async def close_input(self) -> None:
        self._input.close()

    async def wait_exit(self) -> int | None:
        await self._finished.wait()
        await self._services.aclose()
        logging.getLogger("app_server").removeHandler(self._logs)
        return None

    def log_lines(self) -> list[str]:
        return list(self._logs.lines)


class SubprocessServer:
    """`python -m app_server` as a child process, talking over real pipes."""

    def __init__(self, process: anyio.abc.Process, tg: anyio.abc.TaskGroup) -> None:
        self.output = Output()
        self.stderr = bytearray()
        self._process = process
        self._stderr_done = anyio.Event()
        tg.start_soon(self._pump_stdout)
        tg.start_soon(self._pump_stderr)

    async def _pump_stdout(self) -> None:
        assert self._process.stdout is not None
        try:
            async for chunk in self._process.stdout:
                self.output.feed(chunk)
        finally:
            self.output.close()

    async def _pump_stderr(self) -> None:
        assert self._process.stderr is not None
        try:
            async for chunk in self._process.stderr:
                self.stderr += chunk
        finally:
            self._stderr_done.set()

    async def send(self, data: bytes) -> None:
        assert self._process.stdin is not None
        await self._process.stdin.send(data)

    async def close_input(self) -> None:
        assert self._process.stdin is not None
        await self._process.stdin.aclose()

    async def wait_exit(self) -> int | None:
        code = await self._process.wait()
        await self._stderr_done.wait()
        return code

    def log_lines(self) -> list[str]:
        return self.stderr.decode("utf-8", "replace").splitlines()


def subprocess_env_base() -> dict[str, str]:
    """This process's environment without what could change a server's behaviour (keys, TERM, CODEX_*)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in transcripts.REMOVED_ENV_VARS and not key.startswith("CODEX")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def subprocess_env(t: transcripts.Transcript, port: int, codex_home: Path, data_home: Path) -> dict[str, str]:
    env = t.process_env(port, base=subprocess_env_base(), codex_home=codex_home)
    env.setdefault(transcripts_refresh_env(), f"http://127.0.0.1:{port}{REFRESH_PATH}")
    env["CODEX_LIMITS_HOME"] = str(data_home)
    env["CODEX_LIMITS_USAGE_TIMEOUT"] = str(TIMEOUTS.usage)
    env["CODEX_LIMITS_DETAILS_TIMEOUT"] = str(TIMEOUTS.details)
    env["CODEX_LIMITS_CONSUME_TIMEOUT"] = str(TIMEOUTS.consume)
    env["CODEX_LIMITS_REFRESH_TIMEOUT"] = str(TIMEOUTS.refresh)
    return env


def transcripts_refresh_env() -> str:
    from app_server.config import REFRESH_URL_ENV

    return REFRESH_URL_ENV


@asynccontextmanager
async def running_server(
    mode: Literal["memory", "subprocess"], settings: Settings, env: Mapping[str, str]
) -> AsyncIterator[ServerUnderTest]:
    async with anyio.create_task_group() as tg:
        if mode == "memory":
            yield InMemoryServer(World(settings), tg)
        else:
            process = await anyio.open_process(
                [sys.executable, "-m", "app_server"], env=dict(env), cwd=REPO_ROOT, stderr=-1
            )
            async with process:
                try:
                    yield SubprocessServer(process, tg)
                finally:
                    if process.returncode is None:
                        process.kill()
        tg.cancel_scope.cancel()


# -- running a plan ------------------------------------------------------------------------------------------------


@dataclass
class Observed:
    lines: list[str]
    """Our stdout lines, normalised."""
    raw: list[str]
    calls: list[BackendCall]
    requests: list[RecordedRequest]
    line_bounds: list[int]
    call_bounds: list[int]
    exit_code: int | None
    logs: list[str]
    answer_order: list[Any]


async def wait_requests(backend: MockBackend | None, n: int) -> None:
    if n == 0 or backend is None:
        return
    try:
        await anyio.to_thread.run_sync(backend.wait_for_requests, n, WAIT)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


async def run_plan(plan: Plan, server: ServerUnderTest, backend: MockBackend | None, codex_home: Path) -> Observed:
    """Perform the plan's actions in order, each after the expectations before it were observed."""
    lines_expected = 0
    calls_expected = 0
    line_bounds: list[int] = []
    call_bounds: list[int] = []
    closed = False

    async def catch_up(before: str) -> None:
        try:
            with anyio.fail_after(WAIT):
                await server.output.wait_for(lines_expected)
        except TimeoutError:
            got = "\n    ".join(server.output.lines)
            raise AssertionError(
                f"{plan.name}: {before}: waited for {lines_expected} stdout line(s), got:\n    {got}"
            ) from None
        await wait_requests(backend, calls_expected)

    for step in plan.steps:
        if isinstance(step, ExpectServer):
            lines_expected += 1
            continue
        if isinstance(step, ExpectBackend):
            calls_expected += 1
            continue
        await catch_up(f"before {step.kind} {step.label or step.line!r}")
        line_bounds.append(lines_expected)
        call_bounds.append(calls_expected)
        if step.kind == "config":
            assert backend is not None and step.routes is not None
            backend.set_routes(scaled_routes(step.routes))
        elif step.kind == "client":
            assert step.line is not None
            await server.send(step.line.encode("utf-8") + b"\n")
        elif step.kind == "hook":
            assert step.hook is not None
            step.hook(codex_home)
        elif step.kind == "eof":
            await server.close_input()
            closed = True
    await catch_up("at the end")
    if not closed:
        await server.close_input()
    with anyio.fail_after(WAIT + TIMEOUTS.consume + 5):
        exit_code = await server.wait_exit()
    requests = backend.recorded() if backend is not None else []
    raw = list(server.output.lines)
    return Observed(
        lines=[normalise_line(line, ours=True) for line in raw],
        raw=raw,
        calls=[call_from_recording(r) for r in requests],
        requests=requests,
        line_bounds=line_bounds,
        call_bounds=call_bounds,
        exit_code=exit_code,
        logs=server.log_lines(),
        answer_order=[answer_id(line) for line in raw if not is_notification(line)],
    )


def chunks(items: Sequence[Any], bounds: Sequence[int]) -> list[list[Any]]:
    """`items` cut at the given cumulative counts; the last chunk runs to the end."""
    cuts = [0, *bounds, len(items)]
    return [list(items[a:b]) for a, b in itertools.pairwise(cuts) if a <= b]


def sort_key(value: Any) -> str:
    return value.show() if isinstance(value, BackendCall) else str(value)


def compare_chunked(what: str, expected: Sequence[Any], observed: Sequence[Any], bounds: Sequence[int]) -> list[str]:
    """Differences between expected and observed, chunk by chunk (multisets within a chunk)."""
    problems: list[str] = []
    if len(expected) != len(observed):
        problems.append(f"{what}: expected {len(expected)}, got {len(observed)}")
    for index, (want, got) in enumerate(zip(chunks(expected, bounds), chunks(observed, bounds), strict=False)):
        want_sorted = sorted(want, key=sort_key)
        got_sorted = sorted(got, key=sort_key)
        if want_sorted != got_sorted:
            missing = [sort_key(w) for w in want_sorted if w not in got_sorted]
            extra = [sort_key(g) for g in got_sorted if g not in want_sorted]
            problems.append(f"{what}, chunk {index}:\n  missing: {missing}\n  unexpected: {extra}")
    return problems


def now() -> float:
    return time.time()
