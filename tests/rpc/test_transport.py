"""The transport on its own: line splitting with a bound, the single-writer outbox, and the fd threads."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app_server.config import Settings
from app_server.handlers import routes
from app_server.rpc.dispatcher import Dispatcher
from app_server.rpc.framing import OVERLONG_PREFIX, READ_CHUNK, LineSplitter, Overlong
from app_server.rpc.outbox import Outbox
from app_server.rpc.stdio import FdSink, FdSource
from app_server.world import World
from tests.support.connection import Input, make_settings

WAIT = 10.0

# -- LineSplitter ----------------------------------------------------------------------------------------------


def split_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes | Overlong]:
    out: list[bytes | Overlong] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out + splitter.finish()


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    newline_at_end=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    max_line=st.integers(min_value=0, max_value=30),
)
def test_splitter_matches_a_plain_split_in_any_chunking(
    lines: list[bytes], newline_at_end: bool, cuts: list[int], max_line: int
) -> None:
    data = b"\n".join(lines) + (b"\n" if newline_at_end and lines else b"")
    got = split_all(LineSplitter(max_line), chunked(data, cuts))
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()  # a trailing newline ends the last line; it does not start an empty one
    assert len(got) == len(expected)
    for line, item in zip(expected, got, strict=True):
        if len(line) <= max_line:
            assert item == line
        else:
            assert isinstance(item, Overlong)
            assert item.size == len(line)
            assert line.startswith(item.prefix)
            assert min(len(line), max_line + 1) <= len(item.prefix) <= OVERLONG_PREFIX


def test_splitter_splits_on_newline_only() -> None:
    data = "a\rb\r\nc\x85d\u2028e\x0bf\x0cg\x00h\n".encode()
    assert split_all(LineSplitter(), [data]) == [b"a\rb\r", "c\x85d\u2028e\x0bf\x0cg\x00h".encode()]


def test_splitter_keeps_the_start_of_an_over_long_line() -> None:
    line = b'{"id":7,' + b"x" * (3 * OVERLONG_PREFIX)
    (item,) = split_all(LineSplitter(OVERLONG_PREFIX), chunked(line + b"\n", list(range(0, len(line), 1000))))
    assert item == Overlong(line[:OVERLONG_PREFIX], len(line))


@pytest.mark.parametrize("newline", [True, False])
def test_splitter_memory_stays_bounded_for_a_20_mb_line(newline: bool) -> None:
    """Never more than the bound plus a chunk is buffered, however long the line."""
    max_line = 256 * 1024
    chunk = b"y" * READ_CHUNK
    total = 20 * 1024 * 1024
    splitter = LineSplitter(max_line)
    tracemalloc.start()
    try:
        out = [item for _ in range(total // READ_CHUNK) for item in splitter.feed(chunk)]
        out += splitter.feed(b"\nnext\n") if newline else splitter.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out[0] == Overlong(b"y" * OVERLONG_PREFIX, total)
    assert out[1:] == ([b"next"] if newline else [])
    assert peak < max_line + 4 * READ_CHUNK + OVERLONG_PREFIX  # 20 MB went through, well under 1 MB stayed


# -- Outbox -----------------------------------------------------------------------------------------------------


class GatedSink:
    """Records each write; waits for `go` before writing."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.go = anyio.Event()
        self.waiting = anyio.Event()

    async def send(self, data: bytes) -> None:
        self.waiting.set()
        await self.go.wait()
        self.writes.append(data)


@pytest.mark.anyio
async def test_outbox_writes_in_order_in_batches_and_waits_when_full() -> None:
    sink = GatedSink()
    outbox = Outbox(sink, capacity=4, batch_bytes=10)
    messages = [b"m%02d" % i for i in range(20)]
    done: list[bytes] = []

    async def producer() -> None:
        for message in messages:
            await outbox.put(message)
            done.append(message)
        outbox.close()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.pump)
            tg.start_soon(producer)
            await sink.waiting.wait()
            await anyio.wait_all_tasks_blocked()
            assert len(done) <= 4 + 4  # a batch in the blocked write, four queued: the producer waits
            sink.go.set()
    assert b"".join(sink.writes) == b"".join(m + b"\n" for m in messages)
    assert max(len(w) for w in sink.writes) <= 4 * 4  # 3-byte messages up to 10 bytes: 9 < 10 admits a 4th
    assert len(sink.writes) < len(messages)
    assert outbox.drained.is_set() and not outbox.broken.is_set()


@pytest.mark.anyio
async def test_outbox_with_a_broken_sink_drops_quietly_and_releases_waiters() -> None:
    class Broken:
        async def send(self, data: bytes) -> None:
            raise anyio.BrokenResourceError

    outbox = Outbox(Broken(), capacity=1)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for i in range(5):  # these pile up behind the first write
                tg.start_soon(outbox.put, b"%d" % i)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(outbox.pump)
            await outbox.broken.wait()
        await outbox.put(b"late")  # returns at once
    assert outbox.drained.is_set()


# -- FdSource and FdSink ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fd_source_reads_a_regular_file_to_the_end(tmp_path: Path) -> None:
    data = os.urandom(5 * READ_CHUNK + 123)
    path = tmp_path / "input"
    path.write_bytes(data)
    got = bytearray()
    with path.open("rb") as f, anyio.fail_after(WAIT):
        source = FdSource(f.fileno())
        while len(got) < len(data):
            got += await source.receive()
        with pytest.raises(anyio.EndOfStream):
            await source.receive()
    assert got == data
    assert not source.ended.is_set()  # a file is read to its end in order: it is not a client going away


def reader_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "stdin-reader"}


@pytest.mark.anyio
async def test_fd_source_close_ends_a_thread_stuck_handing_over_a_chunk(tmp_path: Path) -> None:
    path = tmp_path / "input"
    path.write_bytes(b"z" * (20 * READ_CHUNK))
    before = reader_threads()
    with path.open("rb") as f, anyio.fail_after(WAIT):
        source = FdSource(f.fileno(), buffered_chunks=1)
        assert await source.receive() == b"z" * READ_CHUNK
        (thread,) = reader_threads() - before
        await anyio.wait_all_tasks_blocked()
        assert thread.is_alive()  # the buffer is full: the thread waits to hand over the next chunk
        source.close()
        await anyio.to_thread.run_sync(thread.join, WAIT)
        assert not thread.is_alive()
        with pytest.raises(anyio.ClosedResourceError):
            await source.receive()


@pytest.mark.anyio
async def test_fd_source_sees_the_end_of_a_pipe_before_the_chunks_ahead_of_it_are_received() -> None:
    """A client that wrote a burst and closed its end: the end is known before the burst is consumed."""
    read_fd, write_fd = os.pipe()
    data = os.urandom(3 * READ_CHUNK)

    def write_and_close() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view) :]
        os.close(write_fd)

    source = FdSource(read_fd, buffered_chunks=8)
    got = bytearray()
    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, write_and_close)
                got += await source.receive()
            await source.ended.wait()
            assert len(got) < len(data)  # the end is known; most of the data is still to be received
            while len(got) < len(data):
                got += await source.receive()
            with pytest.raises(anyio.EndOfStream):
                await source.receive()
    finally:
        source.close()
        os.close(read_fd)
    assert got == data


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def drain(fd: int, until: int) -> bytes:
    got = bytearray()
    while len(got) < until and (chunk := os.read(fd, 1 << 20)):
        got += chunk
    return bytes(got)


@pytest.mark.anyio
async def test_fd_sink_writes_everything_to_a_pipe(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    data = os.urandom(3 * 1024 * 1024)  # far more than a pipe holds: written while read
    sink = FdSink(write_fd)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.send, data)
            got = await anyio.to_thread.run_sync(drain, read_fd, len(data))
    assert got == data


@pytest.mark.anyio
async def test_fd_sink_reports_a_reader_that_went_away(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.close(read_fd)
    with anyio.fail_after(WAIT), pytest.raises(anyio.BrokenResourceError):
        await FdSink(write_fd).send(b"hello\n")


@pytest.mark.anyio
async def test_fd_sink_write_to_a_reader_that_stopped_can_be_abandoned(pipe: tuple[int, int]) -> None:
    """The writer may block for ever; the server must still be able to give up on it and exit."""
    read_fd, write_fd = pipe
    data = b"w" * (2 * 1024 * 1024)
    with anyio.fail_after(WAIT):
        with anyio.move_on_after(0.2) as scope:
            await FdSink(write_fd).send(data)
        assert scope.cancelled_caught
        assert len(await anyio.to_thread.run_sync(drain, read_fd, len(data))) == len(data)  # lets the thread finish


@pytest.mark.anyio
async def test_server_exits_after_the_grace_when_its_client_stops_reading(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    """SIGTERM or end of input while stdout is full and nobody reads: exit after the grace, not never."""
    read_fd, write_fd = pipe
    settings: Settings = make_settings(tmp_path)
    source = Input()
    big_id = "i" * (1024 * 1024)
    source.write(json.dumps({"id": big_id, "method": "nope/x"}).encode() + b"\n")
    source.close()
    services = World(settings)
    dispatcher = Dispatcher(
        routes(), services, Outbox(FdSink(write_fd)), shutdown_grace=0.2, broadcaster=services.broadcaster
    )
    try:
        with anyio.fail_after(WAIT):
            await dispatcher.serve(source)
    finally:
        await services.aclose()
    answer = await anyio.to_thread.run_sync(drain, read_fd, len(big_id) + 100)
    assert answer.startswith(b'{"error":{"code":-32600,"message":"Invalid request: unknown variant `nope/x`')
