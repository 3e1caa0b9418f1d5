"""Tests for the test-support code: the mock HTTP backend and the transcript loader."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import transcripts
from tests.support.mock_backend import MockBackend, RecordedRequest, unused_port

TIMEOUT = httpx.Timeout(5.0)


@pytest.fixture
def backend() -> Iterator[MockBackend]:
    with MockBackend() as mock:
        yield mock


@pytest.fixture
def client(backend: MockBackend) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend.base_url, timeout=TIMEOUT) as http:
        yield http


def _raw_exchange(port: int, request: bytes) -> bytes:
    """Send raw request bytes and read until the server has sent a complete Content-Length response."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early: {data!r}"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk
            rest += chunk
        return head + b"\r\n\r\n" + rest


# -- responses -----------------------------------------------------------------------------------------------


def test_json_route_status_headers_and_transcript_serialization(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"GET /api/x": {"status": 201, "json": {"a": 1, "b": [1, 2]}, "headers": {"x-k": "v"}}})
    response = client.get("/api/x")
    assert response.status_code == 201
    assert response.json() == {"a": 1, "b": [1, 2]}
    # json.dumps default separators, as in the transcripts' embedded bodies (`{"detail": "internal"}`).
    assert response.content == b'{"a": 1, "b": [1, 2]}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-k"] == "v"
    assert response.headers["content-length"] == str(len(response.content))


def test_default_status_is_200(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"GET /ok": {"json": {}}})
    response = client.get("/ok")
    assert (response.status_code, response.content) == (200, b"{}")


def test_explicit_content_type_overrides_default(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes(
        {
            "GET /x": {
                "status": 429,
                "json": {"d": 1},
                "headers": {"content-type": "text/json", "retry-after": "5"},
            }
        }
    )
    response = client.get("/x")
    assert response.status_code == 429
    assert response.headers.get_list("content-type") == ["text/json"]
    assert response.headers["retry-after"] == "5"


def test_body_route_is_verbatim_utf8_without_content_type(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"GET /t": {"status": 500, "body": "é中😀\nline2", "headers": {}}})
    response = client.get("/t")
    assert response.status_code == 500
    assert response.content == "é中😀\nline2".encode()
    assert "content-type" not in response.headers
    assert response.headers["content-length"] == str(len("é中😀\nline2".encode()))


def test_empty_body_and_204(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"GET /empty": {"status": 500, "body": ""}, "GET /none": {"status": 204, "body": ""}})
    empty = client.get("/empty")
    assert (empty.status_code, empty.content, empty.headers["content-length"]) == (500, b"", "0")
    none = client.get("/none")
    assert (none.status_code, none.content) == (204, b"")
    # The keep-alive connection stays usable after a bodiless response.
    assert client.get("/empty").status_code == 500


def test_unknown_status_code_is_sent(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"GET /odd": {"status": 599, "body": "x"}})
    response = client.get("/odd")
    assert (response.status_code, response.text) == (599, "x")


def test_unknown_route_is_404_json(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"GET /known": {"json": {}}})
    response = client.post("/unknown", content=b"{}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["route"] == "POST /unknown"
    assert client.get("/known").status_code == 200


def test_query_string_falls_back_to_bare_path_route(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"GET /p": {"json": {"bare": True}}, "GET /p?x=1": {"json": {"exact": True}}})
    assert client.get("/p?x=1").json() == {"exact": True}
    assert client.get("/p?x=2").json() == {"bare": True}
    assert [r.path for r in backend.recorded()] == ["/p?x=1", "/p?x=2"]


def test_redirect_is_sent_as_given(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes(
        {
            "GET /a": {"status": 301, "body": "", "headers": {"location": "/b"}},
            "GET /b": {"json": {"here": 1}},
        }
    )
    plain = client.get("/a")
    assert (plain.status_code, plain.headers["location"]) == (301, "/b")
    followed = client.get("/a", follow_redirects=True)
    assert followed.json() == {"here": 1}
    assert [r.path for r in backend.recorded()] == ["/a", "/a", "/b"]


# -- route tables --------------------------------------------------------------------------------------------


def test_list_value_gives_successive_answers_and_last_repeats(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"POST /c": [{"json": {"n": 0}}, {"status": 500, "body": "one"}, {"json": {"n": 2}}]})
    answers = [client.post("/c") for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 500, 200, 200, 200]
    assert [a.content for a in answers] == [b'{"n": 0}', b"one", b'{"n": 2}', b'{"n": 2}', b'{"n": 2}']
    assert backend.route_calls("POST /c") == 5


def test_set_routes_replaces_and_update_routes_merges(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"GET /a": [{"json": 1}, {"json": 2}], "GET /b": {"json": "b"}})
    assert client.get("/a").json() == 1
    backend.set_routes({"GET /a": [{"json": 1}, {"json": 2}]})
    assert client.get("/b").status_code == 404
    assert client.get("/a").json() == 1  # counters restart on set_routes
    backend.update_routes({"GET /b": {"json": "b2"}})
    assert client.get("/a").json() == 2  # untouched route keeps its counter
    assert client.get("/b").json() == "b2"
    backend.update_routes({"GET /a": [{"json": 1}, {"json": 2}]})
    assert client.get("/a").json() == 1  # an updated route restarts


def test_invalid_route_table_is_rejected(backend: MockBackend) -> None:
    with pytest.raises(ValueError, match="METHOD /path"):
        backend.set_routes({"/no-method": {"json": {}}})
    with pytest.raises(ValueError, match="empty list"):
        backend.set_routes({"GET /x": []})


# -- delays and connection drops -----------------------------------------------------------------------------


def test_delay_does_not_block_a_concurrent_request(backend: MockBackend) -> None:
    backend.set_routes({"GET /slow": {"delay": 3, "json": {"slow": 1}}, "GET /fast": {"json": {"fast": 1}}})
    slow_result: list[Any] = []

    def slow_call() -> None:
        with httpx.Client(base_url=backend.base_url, timeout=TIMEOUT) as http:
            slow_result.append(http.get("/slow").json())

    started = time.monotonic()
    worker = threading.Thread(target=slow_call, daemon=True)
    worker.start()
    backend.wait_for_requests(1, timeout=5)
    with httpx.Client(base_url=backend.base_url, timeout=TIMEOUT) as http:
        fast = http.get("/fast")
    fast_elapsed = time.monotonic() - started
    assert fast.json() == {"fast": 1}
    assert fast_elapsed < 1.5
    assert not slow_result, "the slow answer must still be pending"
    worker.join(timeout=6)
    assert slow_result == [{"slow": 1}]
    assert time.monotonic() - started >= 2.9


def test_release_delays_answers_at_once(backend: MockBackend) -> None:
    backend.set_routes({"GET /slow": {"delay": 30, "json": {"late": True}}})
    result: list[Any] = []

    def slow_call() -> None:
        with httpx.Client(base_url=backend.base_url, timeout=TIMEOUT) as http:
            result.append(http.get("/slow").json())

    worker = threading.Thread(target=slow_call, daemon=True)
    worker.start()
    backend.wait_for_requests(1, timeout=5)
    started = time.monotonic()
    backend.release_delays()
    worker.join(timeout=5)
    assert result == [{"late": True}]
    assert time.monotonic() - started < 2


def test_stop_is_fast_with_a_delayed_handler_in_flight() -> None:
    backend = MockBackend()
    backend.start()
    backend.set_routes({"GET /slow": {"delay": 60, "json": {}}})
    outcome: list[BaseException | int] = []

    def slow_call() -> None:
        try:
            with httpx.Client(base_url=backend.base_url, timeout=TIMEOUT) as http:
                outcome.append(http.get("/slow").status_code)
        except httpx.TransportError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=slow_call, daemon=True)
    worker.start()
    backend.wait_for_requests(1, timeout=5)
    started = time.monotonic()
    backend.stop()
    worker.join(timeout=5)
    assert time.monotonic() - started < 2
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.TransportError)


def test_close_action_is_a_transport_error(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"GET /drop": {"action": "close"}, "GET /ok": {"json": {"ok": 1}}})
    with pytest.raises(httpx.TransportError):
        client.get("/drop")
    assert client.get("/ok").json() == {"ok": 1}
    assert [r.path for r in backend.recorded()] == ["/drop", "/ok"]


def test_close_action_after_delay(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"GET /drop": {"action": "close", "delay": 0.2}})
    started = time.monotonic()
    with pytest.raises(httpx.TransportError):
        client.get("/drop")
    assert time.monotonic() - started >= 0.19


def test_keep_alive_connection_is_reused(backend: MockBackend) -> None:
    backend.set_routes({"GET /k": {"json": {"k": 1}}})
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=5)
    try:
        conn.request("GET", "/k")
        first = conn.getresponse()
        assert first.read() == b'{"k": 1}'
        assert not first.will_close
        sock = conn.sock
        conn.request("GET", "/k")
        second = conn.getresponse()
        assert second.read() == b'{"k": 1}'
        assert conn.sock is sock
    finally:
        conn.close()


# -- recording -----------------------------------------------------------------------------------------------


def test_request_recording_keeps_header_order_and_body_bytes(backend: MockBackend) -> None:
    backend.set_routes({"POST /api/consume": {"json": {"code": "reset"}}})
    body = b'{"redeem_request_id":"k"}'
    raw = (
        b"POST /api/consume?x=1 HTTP/1.1\r\n"
        b"User-Agent: cli\xc3\xa9/1.0\r\n"
        b"Authorization: Bearer t\r\n"
        b"Content-Type: application/json\r\n"
        b"Accept: */*\r\n"
        b"Host: 127.0.0.1:" + str(backend.port).encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    before = time.monotonic()
    response = _raw_exchange(backend.port, raw)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b'{"code": "reset"}')
    [request] = backend.wait_for_requests(1, timeout=5)
    assert isinstance(request, RecordedRequest)
    assert (request.method, request.path) == ("POST", "/api/consume?x=1")
    assert request.header_names() == [
        "user-agent",
        "authorization",
        "content-type",
        "accept",
        "host",
        "content-length",
    ]
    assert request.header("User-Agent") == "clié/1.0"
    assert request.header("x-missing") is None
    # The transcripts' form: latin-1 decoding of the raw bytes, as the reference mock recorded them.
    assert request.transcript_headers()[0] == ["user-agent", "cliÃ©/1.0"]
    assert request.body == body
    assert request.json() == {"redeem_request_id": "k"}
    assert request.text() == body.decode()
    assert before <= request.t <= time.monotonic()


def test_chunked_request_body_is_recorded(backend: MockBackend, client: httpx.Client) -> None:
    backend.set_routes({"POST /up": {"json": {}}})

    def chunks() -> Iterator[bytes]:
        yield b"hello "
        yield b"world"

    assert client.post("/up", content=chunks()).status_code == 200
    [request] = backend.recorded()
    assert request.header("transfer-encoding") == "chunked"
    assert request.body == b"hello world"


def test_wait_for_requests_blocks_until_arrival_then_times_out(backend: MockBackend) -> None:
    backend.set_routes({"GET /w": {"json": {}}})

    def later() -> None:
        time.sleep(0.2)
        with httpx.Client(base_url=backend.base_url, timeout=TIMEOUT) as http:
            http.get("/w")
            http.get("/w")

    worker = threading.Thread(target=later, daemon=True)
    worker.start()
    got = backend.wait_for_requests(2, timeout=5)
    assert [r.path for r in got] == ["/w", "/w"]
    worker.join(timeout=5)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="expected 3"):
        backend.wait_for_requests(3, timeout=0.2)
    assert time.monotonic() - started < 2
    backend.clear()
    assert backend.recorded() == []
    assert backend.requests == []


def test_nothing_listens_on_unused_port() -> None:
    port = unused_port()
    with pytest.raises(httpx.ConnectError), httpx.Client(timeout=TIMEOUT) as http:
        http.get(f"http://127.0.0.1:{port}/")


def test_port_requires_start() -> None:
    backend = MockBackend()
    with pytest.raises(RuntimeError):
        _ = backend.port
    with backend:
        assert backend.base_url == f"http://127.0.0.1:{backend.port}"
    assert backend.handler_errors == []


# -- transcripts ---------------------------------------------------------------------------------------------


def test_every_transcript_loads() -> None:
    files = sorted(transcripts.TRANSCRIPTS_DIR.glob("*.jsonl"))
    loaded = transcripts.all_transcripts()
    assert len(files) > 0
    assert len(loaded) == len(files)
    assert [t.name for t in loaded] == [f.stem for f in files]
    for transcript in loaded:
        assert transcript.scenario["type"] == "scenario"
        assert transcript.end["type"] == "end"
        assert "exit_status" in transcript.end
        assert transcript.config_toml(4321).startswith('chatgpt_base_url = "http://127.0.0.1:4321"')
        times = [event.t for event in transcript.events]
        assert times == sorted(times), transcript.name
        assert {e.type for e in transcript.events} <= {
            "backend_config",
            "client",
            "server",
            "backend_request",
            "server_log",
        }


def test_transcript_accessors() -> None:
    transcript = transcripts.load("17_read_timing")
    assert transcript.name == "17_read_timing"
    assert transcript.client_lines()[0].startswith('{"id":0,"method":"initialize"')
    assert all(isinstance(line, str) for line in transcript.server_lines())
    requests = transcript.backend_requests()
    assert requests
    assert {"method", "path", "headers", "body"} <= set(requests[0])
    assert transcript.backend_configs()[0].data["routes"]
    assert transcripts.load("17_read_timing.jsonl").events == transcript.events


def test_transcript_setup_variants(tmp_path: Path) -> None:
    malformed = transcripts.load("40e_auth_malformed_json")
    assert malformed.auth_json_text == "{not json"
    assert malformed.auth_json is None
    assert malformed.has_auth_file

    missing = transcripts.load("40a_auth_none")
    assert missing.auth_json is None
    assert not missing.has_auth_file
    missing.write_codex_home(tmp_path / "a", 1234)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.toml"]

    malformed.write_codex_home(tmp_path / "e", 1234)
    auth_path = tmp_path / "e" / "auth.json"
    assert auth_path.read_text() == "{not json"
    assert auth_path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "e" / "config.toml").read_text() == 'chatgpt_base_url = "http://127.0.0.1:1234"\n'

    normal = transcripts.load("01_handshake")
    auth = normal.auth_json
    assert isinstance(auth, dict)
    assert auth["auth_mode"] == "chatgpt"
    assert json.loads(normal.auth_json_text or "") == normal.auth_json
    assert normal.term == "xterm"
    assert transcripts.load("05h_initialize_term_program").term is None
    assert transcripts.load("05i_initialize_no_term").term is None
    assert not transcripts.load("19_connection_refused").backend_listening
    assert normal.backend_listening

    refresh = transcripts.load("41a_refresh_expired_access_token")
    assert refresh.env == {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "http://127.0.0.1:<PORT>/oauth/token"}
    assert refresh.env_for(99) == {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "http://127.0.0.1:99/oauth/token"}

    env_key = transcripts.load("40d_auth_none_env_OPENAI_API_KEY")
    base = {"PATH": "/bin", "OPENAI_API_KEY": "leak", "CODEX_API_KEY": "leak", "TERM": "dumb"}
    env = env_key.process_env(5, base=base, codex_home=tmp_path)
    assert env == {
        "PATH": "/bin",
        "OPENAI_API_KEY": "sk-env-1",
        "TERM": "xterm",
        "CODEX_HOME": os.fspath(tmp_path),
    }
    vscode = transcripts.load("05h_initialize_term_program").process_env(5, base=base)
    assert vscode == {"PATH": "/bin", "TERM_PROGRAM": "vscode", "TERM_PROGRAM_VERSION": "1.99"}


def test_substitute_is_single_pass() -> None:
    mapping = {"<PORT>": "<HOSTNAME>", "<HOSTNAME>": "h", "<OS_TYPE> <OS_VERSION>; <ARCH>": "Linux 6; x86_64"}
    text = "a <PORT> b <HOSTNAME> (<OS_TYPE> <OS_VERSION>; <ARCH>)"
    assert transcripts.substitute(text, mapping) == "a <HOSTNAME> b h (Linux 6; x86_64)"
    assert transcripts.substitute("x", {}) == "x"


def test_summaries_load() -> None:
    assert transcripts.load_summary("62_huge_lines")["type"] == "summary"
    assert transcripts.load_summary("60_burst_pipelined_requests.json")["runs"]


def test_every_backend_config_is_accepted_by_the_mock(backend: MockBackend) -> None:
    applied = 0
    for transcript in transcripts.all_transcripts():
        for event in transcript.backend_configs():
            transcripts.apply_backend_config(backend, event)
            applied += 1
    assert applied > 0
    with pytest.raises(ValueError, match="backend_config"):
        transcripts.apply_backend_config(backend, transcripts.load("01_handshake").events_of("client")[0])


def test_mock_reproduces_transcript_error_bodies(backend: MockBackend, client: httpx.Client) -> None:
    """Replaying 18_read_usage_errors: each configured answer is what the reference embedded in its error."""
    transcript = transcripts.load("18_read_usage_errors")
    checked = 0
    events = transcript.events
    for index, event in enumerate(events):
        if event.type != "backend_config":
            continue
        transcripts.apply_backend_config(backend, event)
        route = event.data["routes"]["GET /api/codex/usage"]
        if route.get("action") == "close" or route.get("status", 200) < 400:
            continue
        answer = next(e for e in events[index + 1 :] if e.type == "server" and '"error"' in e.data["line"])
        message = json.loads(answer.data["line"])["error"]["message"]
        response = client.get("/api/codex/usage")
        assert response.status_code == route["status"]
        content_type = response.headers.get("content-type", "")
        assert message.endswith(f"; content-type={content_type}; body={response.text}")
        checked += 1
    assert checked >= 10
