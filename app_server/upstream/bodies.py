"""Response bodies read with a bound: raw bytes from the socket, decoded (gzip, zstd) to at most a cap.

Upstream 0.171.0 advertises `accept-encoding: zstd,gzip` and decodes those two encodings; any other
`content-encoding` (deflate, br, …) is left as it came, as upstream leaves it. A small compressed body
can expand without limit, so the cap applies to the decoded size, and every decompression step is asked
for no more than the room left under it: memory stays near the cap whatever the backend sends.

httpx's own decoders (`GZipDecoder`, `ZStandardDecoder`) decompress each network chunk whole (a 64 KiB
zstd chunk can become gigabytes before any check could run) and accept a truncated gzip stream, so the
body is read with `aiter_raw` and decoded here instead.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Protocol

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

__all__ = ["ACCEPT_ENCODING", "Body", "BodyDecodeError", "read_body"]

ACCEPT_ENCODING: Final = b"zstd,gzip"


class BodyDecodeError(Exception):
    """The body claims an encoding it does not have (or is cut short); upstream's text for it is fixed."""

    def __str__(self) -> str:
        return "error decoding response body"


@dataclass(frozen=True)
class Body:
    """At most `cap` decoded bytes; `overflowed` when the body had more (the rest was never read)."""

    data: bytes
    overflowed: bool


class _Decoder(Protocol):
    def decode(self, data: bytes, max_length: int) -> bytes:
        """Up to `max_length` more decoded bytes; `data` may be b"" to drain what earlier input left."""

    def pending(self) -> bool:
        """True while already fed input can still produce output."""

    def finish(self) -> None:
        """At end of input: raise BodyDecodeError if the stream stopped inside a member or frame."""


class _Identity:
    def __init__(self) -> None:
        self._held = b""

    def decode(self, data: bytes, max_length: int) -> bytes:
        data = self._held + data
        self._held = data[max_length:]
        return data[:max_length]

    def pending(self) -> bool:
        return bool(self._held)

    def finish(self) -> None:
        pass


class _Gzip:
    """gzip members one after another (RFC 1952 allows several); trailing bytes must be another member."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._started = False

    def decode(self, data: bytes, max_length: int) -> bytes:
        try:
            if self._d.eof:
                leftover = self._d.unused_data + data
                if not leftover:
                    return b""
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data = leftover
            data = self._d.unconsumed_tail + data
            if data:
                self._started = True
            return self._d.decompress(data, max_length)
        except zlib.error:
            raise BodyDecodeError from None

    def pending(self) -> bool:
        return bool(self._d.unconsumed_tail) or (self._d.eof and bool(self._d.unused_data))

    def finish(self) -> None:
        if self._started and not self._d.eof:
            raise BodyDecodeError


class _Zstd:
    """zstd frames one after another (RFC 8878 allows several)."""

    def __init__(self) -> None:
        self._d = zstd.ZstdDecompressor()
        self._started = False

    def decode(self, data: bytes, max_length: int) -> bytes:
        try:
            if self._d.eof:
                leftover = self._d.unused_data + data
                if not leftover:
                    return b""
                self._d = zstd.ZstdDecompressor()
                data = leftover
            if data:
                self._started = True
            elif self._d.needs_input:
                return b""
            return self._d.decompress(data, max_length)
        except zstd.ZstdError:
            raise BodyDecodeError from None

    def pending(self) -> bool:
        return (not self._d.eof and not self._d.needs_input) or (self._d.eof and bool(self._d.unused_data))

    def finish(self) -> None:
        if self._started and not self._d.eof:
            raise BodyDecodeError


def _decoder(encodings: list[str]) -> _Decoder:
    # As upstream's HTTP client: an exact, case-sensitive match on one of the content-encoding values.
    if "gzip" in encodings:
        return _Gzip()
    if "zstd" in encodings:
        return _Zstd()
    return _Identity()


async def read_body(chunks: AsyncIterator[bytes], encodings: list[str], cap: int) -> Body:
    """The decoded body from raw `chunks`, stopping as soon as it would exceed `cap` bytes.

    Raises BodyDecodeError when the bytes are not in the encoding they claim. The caller bounds the time.
    """
    decoder = _decoder(encodings)
    out = bytearray()

    def drain(data: bytes) -> bool:
        """Feed `data`; True once more than `cap` bytes have come out."""
        while True:
            room = cap + 1 - len(out)
            out.extend(decoder.decode(data, room))
            data = b""
            if len(out) > cap:
                return True
            if not decoder.pending():
                return False

    async for chunk in chunks:
        if chunk and drain(chunk):
            return Body(bytes(out[:cap]), overflowed=True)
    if drain(b""):
        return Body(bytes(out[:cap]), overflowed=True)
    decoder.finish()
    return Body(bytes(out), overflowed=False)
