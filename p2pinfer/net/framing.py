"""Length-prefixed frames on a libp2p stream, with a size limit and a deadline on every call.

A frame is an unsigned varint length followed by that many bytes (SPEC §5). The length is
decoded and checked against `max_size` BEFORE the body is read (and rejected as soon as its
partial value exceeds the limit), so a peer cannot make us allocate more than the limit.
Every read and write runs under `trio.fail_after(timeout)`. All failures are `WireError` (bad or
oversized frame) or `NetworkError` (deadline, reset, closed).

Why our own read loop instead of py-libp2p's `read_varint_prefixed_bytes_limited`: that one
appends every chunk to a bytearray and copies it once more into bytes; here a body that arrives
in one read (the usual case with net/transport_tuning.py's large yamux frames) is returned as is,
and a body in several chunks is joined once. A frame is written with ONE stream write, so yamux
sends it as few DATA frames as the window allows.
"""

from __future__ import annotations

import trio
from libp2p.abc import INetStream
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.utils.varint import encode_uvarint

from p2pinfer.errors import NetworkError, WireError

MAX_VARINT_BYTES = 10  # a uvarint of up to 64 bits


async def write_frame(stream: INetStream, payload: bytes, *, max_size: int, timeout: float) -> None:
    """Write one frame; refuses payloads over `max_size` before touching the stream."""
    if len(payload) > max_size:
        raise WireError(f"frame of {len(payload)} bytes exceeds the limit of {max_size} bytes")
    try:
        with trio.fail_after(timeout):
            await stream.write(encode_uvarint(len(payload)) + payload)
    except trio.TooSlowError as exc:
        raise NetworkError(f"writing a frame timed out after {timeout}s") from exc
    except (trio.Cancelled, KeyboardInterrupt):
        raise
    except Exception as exc:  # stream errors from py-libp2p (StreamReset, StreamClosed, ...)
        raise NetworkError(f"writing a frame failed: {exc}") from exc


async def read_frame(stream: INetStream, *, max_size: int, timeout: float) -> bytes:
    """Read one frame; the announced length is checked against `max_size` before the body."""
    try:
        with trio.fail_after(timeout):
            length = await _read_length(stream, max_size)
            return await _read_body(stream, length)
    except MessageTooLarge as exc:
        raise WireError(f"peer announced a frame over the limit of {max_size} bytes: {exc}") from exc
    except trio.TooSlowError as exc:
        raise NetworkError(f"reading a frame timed out after {timeout}s") from exc
    except IncompleteReadError as exc:
        raise NetworkError(f"stream ended inside a frame: {exc}") from exc
    except (trio.Cancelled, KeyboardInterrupt, WireError):
        raise
    except Exception as exc:  # stream errors from py-libp2p (StreamEOF, StreamReset, ...)
        raise WireError(f"reading a frame failed: {exc}") from exc


async def _read_length(stream: INetStream, max_size: int) -> int:
    """The varint length prefix, one byte per read (reading further could eat the body)."""
    value = 0
    for index in range(MAX_VARINT_BYTES):
        byte = await stream.read(1)
        if not byte:
            raise IncompleteReadError("stream ended inside a frame length", expected_bytes=1, received_bytes=0)
        value |= (byte[0] & 0x7F) << (7 * index)
        if value > max_size:
            raise MessageTooLarge(f"announced length exceeds maximum allowed {max_size}")
        if not byte[0] & 0x80:
            return value
    raise WireError(f"frame length is not a varint of at most {MAX_VARINT_BYTES} bytes")


async def _read_body(stream: INetStream, length: int) -> bytes:
    """Exactly `length` bytes: the first chunk itself when it is complete, else one join."""
    if length == 0:
        return b""
    chunk = await stream.read(length)
    if len(chunk) == length:
        return chunk
    parts, received = [chunk], len(chunk)
    while chunk and received < length:
        chunk = await stream.read(length - received)
        parts.append(chunk)
        received += len(chunk)
    if received != length:
        raise IncompleteReadError(f"frame body: expected {length} bytes, got {received}",
                                  expected_bytes=length, received_bytes=received)
    return b"".join(parts)
