"""Length-prefixed frames on a libp2p stream, with a size limit and a deadline on every call.

The varint length is decoded and checked against `max_size` BEFORE the body is read, so a peer
cannot make us allocate more than the limit (py-libp2p's `read_varint_prefixed_bytes_limited`
does exactly that). Every read and write runs under `trio.fail_after(timeout)`. All failures are
`WireError` (bad or oversized frame) or `NetworkError` (deadline, reset, closed).
"""

from __future__ import annotations

import trio
from libp2p.abc import INetStream
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.utils.varint import encode_uvarint, read_varint_prefixed_bytes_limited

from p2pinfer.errors import NetworkError, WireError


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
            return await read_varint_prefixed_bytes_limited(stream, max_size)
    except MessageTooLarge as exc:
        raise WireError(f"peer announced a frame over the limit of {max_size} bytes: {exc}") from exc
    except trio.TooSlowError as exc:
        raise NetworkError(f"reading a frame timed out after {timeout}s") from exc
    except IncompleteReadError as exc:
        raise NetworkError(f"stream ended inside a frame: {exc}") from exc
    except (trio.Cancelled, KeyboardInterrupt):
        raise
    except Exception as exc:  # ParseError for a bad varint, stream errors
        raise WireError(f"reading a frame failed: {exc}") from exc
