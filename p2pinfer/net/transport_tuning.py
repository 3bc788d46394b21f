"""py-libp2p 0.8.1 tuned for activation-sized frames: explicit, version-checked patches.

Measured on loopback (docs/benchmarks.md, per-hop section): a 1 MiB frame took 13 ms through
py-libp2p's TCP + Noise + yamux stack, most of it Python overhead per 64 KiB piece, not bytes.
These patches leave the wire protocol untouched (any yamux / Noise peer interoperates):

1. `yamux.MAX_MESSAGE_SIZE` 64 KiB -> 2 MiB. py-libp2p cuts every stream write into DATA frames
   of this size. 12 + 65524 bytes is one byte more than a Noise message carries (65519), so each
   64 KiB frame became TWO Noise messages, and the reader woke, copied and answered per frame: a
   1 MiB activation was 17 frames. The yamux spec bounds a DATA frame only by the window the
   receiver granted, which py-libp2p never exceeds; go-yamux and py-libp2p accept such frames.
   Noise still chunks them into <= 65535-byte messages. Cost: a large frame holds the
   connection's write lock while written (~10 ms for 2 MiB here), so another stream's frame on
   the SAME connection may wait that long. 1 MiB transfer: 13 -> 5.5 ms.
2. `yamux._yamux_release_on_read` -> never. py-libp2p by default (its PY_YAMUX_RELEASE_ON_READ
   knob) answers nearly every stream read with a WINDOW_UPDATE: 4-5 per activation frame (three
   one-byte reads for the varint length), each a Noise message the sender decrypts and parses.
   Off, credit is released as go-yamux does: once half the receive window is consumed (py-libp2p's
   own hysteresis path). A reader cannot stall: one that drained its buffer while the sender has no
   window left has consumed the whole window, and that read releases it. -0.7 ms per 1 MiB hop.
3. `read_exactly` (as imported by yamux and msgio) and `SecureSession.read`: the same results
   without their bytearray-then-bytes copies (a complete first read is returned as is, pieces
   are joined once): about 9 -> 3 passes over the bytes of each frame on the receiving side.
4. `Yamux._write_frame`: a frame, once started, is written whole (a correctness fix, not speed).
   py-libp2p writes one yamux frame as several Noise messages (encrypting each advances the
   nonce) and lets a trio cancellation stop it between two, or inside one, or after a message
   was encrypted but before it was sent (its nonce is spent: even a 12-byte WINDOW_UPDATE): the
   peer then fails to decrypt ("Failed authentication of message") or reads the next frame's bytes
   as body, and the connection every stream to that peer shares dies. With 2 MiB frames on a 10-20 Mbit/s link a
   write takes ~1 s, so a `write_frame` deadline or a forgotten circuit's cancel lands there
   often. The write is shielded; waiting for the connection's write lock stays cancellable, the
   caller's cancellation takes effect right after the frame, and a frame still not written after
   `FRAME_WRITE_DEADLINE_S` closes the connection explicitly (its byte stream is unusable).

5. `BaseMsgReadWriter.read_msg` (the Noise transport's length-prefixed message read): when the
   first read of a message body from a TCP socket comes back short (the message trickles in),
   SO_RCVLOWAT is set to the bytes still missing (at most 64 KiB) until it is complete, so the
   kernel wakes the reader once per ~32-64 KiB instead of once per 1.4 KiB TCP segment. On a 20 Mbit/s tbf link, receiving 1 MiB with trio
   took 720 reads and ~50 ms of CPU; with the low-water mark, 31 reads and ~4 ms, at the same
   wall time (the link is the limit). Through py-libp2p (Noise + yamux + our framing, two
   processes in two namespaces, 1 MiB frames over that link): 61-69 ms of receiver CPU per frame
   stock, 5-11 ms with this patch; the sender spends 5.5-8 ms. On the IoT testbed's 0.2-core nodes those 50 ms/MiB were
   250 ms of quota per MiB received: a hop receiving while it computed ran 1.5-2x slower than
   its calibration. Safe: the mark never exceeds what the message still owes (an exact-length
   read), and a closed or reset connection wakes the reader whatever the mark.

All or nothing: the patches are applied only on a py-libp2p version they were measured with and
only while every attribute still holds its stock value; otherwise nothing is changed and a
warning is logged (re-measure bench_hop, then extend `SUPPORTED_VERSIONS`). `net.host.make_host`
applies them, so they hold for the whole process (every host in it).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import socket
from typing import Any, Iterator

import libp2p.io.msgio as _msgio
import libp2p.io.utils as _io_utils
import libp2p.stream_muxer.yamux.yamux as _yamux
import trio
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.io.abc import Reader
from libp2p.network.connection.exceptions import RawConnError
from libp2p.security.secure_session import SecureSession

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = frozenset({"0.8.1"})
STOCK_MAX_FRAME = 64 * 1024
YAMUX_MAX_FRAME = 2 * 1024 * 1024  # > a 1 MiB activation frame; 16 MiB ones go as 8 frames
FRAME_WRITE_DEADLINE_S = 20.0  # a 2 MiB frame at 1 Mbit/s takes ~17 s; past this the link is unusable


def _never_release_on_read() -> bool:
    """Replaces yamux._yamux_release_on_read: credit is released by hysteresis only (go-yamux)."""
    return False


async def _read_exactly(reader: Reader, n: int, retry_count: int = _io_utils.DEFAULT_RETRY_READ_COUNT) -> bytes:
    """libp2p.io.utils.read_exactly without copies: the first read itself if complete, else one join."""
    chunk = await reader.read(n)
    if len(chunk) >= n:
        return chunk
    parts, received = [chunk], len(chunk)
    for _ in range(retry_count):
        chunk = await reader.read(n - received)
        parts.append(chunk)
        received += len(chunk)
        if received >= n:
            return b"".join(parts)
    raise _incomplete(n, received)


def _incomplete(expected: int, received: int) -> IncompleteReadError:
    """The error py-libp2p's read_exactly raises for a stream that closed `received` bytes short."""
    return IncompleteReadError(f"Connection closed during read operation: expected {expected} bytes but received "
                               f"{received} bytes", expected_bytes=expected, received_bytes=received)


_STOCK_SESSION_READ = SecureSession.read


async def _session_read(self: SecureSession, n: int | None = None) -> bytes:
    """SecureSession.read for n > 0 with the decrypted Noise messages joined once."""
    if not n:
        return await _STOCK_SESSION_READ(self, n)
    data = self._drain(n)  # everything buffered, up to n: the buffer is empty if this is short
    if len(data) == n:
        return data
    parts, received = [data], len(data)
    while received < n:
        msg = await self.conn.read_msg()
        if msg == b"":
            if received:
                return b"".join(parts)
            raise ConnectionClosedError("Connection closed")
        needed = n - received
        if len(msg) > needed:
            self._fill(msg[needed:])
            msg = msg[:needed]
        parts.append(msg)
        received += len(msg)
    return b"".join(parts)


_STOCK_READ_MSG = _msgio.BaseMsgReadWriter.read_msg
RCVLOWAT_CAP = 64 * 1024  # the largest Noise message; waking per message is what it costs anyway


def _tcp_socket(conn: Any) -> Any:
    """The trio socket under a py-libp2p raw connection (RawConnection -> TrioTCPStream ->
    trio.SocketStream), or None for anything else (then nothing is tuned)."""
    sock = getattr(getattr(getattr(conn, "stream", None), "stream", None), "socket", None)
    return sock if isinstance(sock, trio.socket.SocketType) else None


def _set_rcvlowat(sock: Any, nbytes: int) -> None:
    with contextlib.suppress(OSError):  # a closed socket: the read reports it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(1, nbytes))


async def _read_msg_coalesced(self: _msgio.BaseMsgReadWriter) -> bytes:
    """BaseMsgReadWriter.read_msg that lets the kernel gather a message body before waking us (patch 5)."""
    length = await self.next_msg_len()
    conn = self.read_write_closer
    sock = _tcp_socket(conn)
    first = await conn.read(length)  # a fast link (loopback) delivers the whole message here: no syscalls added
    if len(first) >= length or sock is None or not first:
        return first if len(first) >= length else first + await _read_exactly(conn, length - len(first))
    parts, received = [first], len(first)
    try:
        while received < length:  # the message trickles in: let the kernel gather it
            _set_rcvlowat(sock, min(length - received, RCVLOWAT_CAP))
            chunk = await conn.read(length - received)
            if not chunk:
                raise _incomplete(length, received)
            parts.append(chunk)
            received += len(chunk)
    finally:
        _set_rcvlowat(sock, 1)
    return b"".join(parts)


_STOCK_WRITE_FRAME = _yamux.Yamux._write_frame


async def _write_frame_whole(self: _yamux.Yamux, data: bytes) -> None:
    """Yamux._write_frame that a cancellation cannot stop halfway through a frame (patch 4)."""
    async with self._write_lock:  # waiting here is safe to cancel: nothing written yet
        with trio.CancelScope(shield=True, deadline=trio.current_time() + FRAME_WRITE_DEADLINE_S) as scope:
            await self.secured_conn.write(data)
        if scope.cancelled_caught:
            log.warning("closing the connection to %s: a %d-byte yamux frame was not written within %ss",
                        self.peer_id, len(data), FRAME_WRITE_DEADLINE_S)
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
                await self.secured_conn.close()
            raise RawConnError(f"yamux frame not written within {FRAME_WRITE_DEADLINE_S}s; connection closed")
    try:
        await trio.lowlevel.checkpoint()  # the caller's pending cancellation, if any, is delivered here
    except trio.Cancelled:
        log.info("a cancellation during a %d-byte yamux frame to %s waited for the frame to be written",
                 len(data), self.peer_id)
        raise


# (owner, attribute, stock value, tuned value)
_PATCHES: tuple[tuple[Any, str, Any, Any], ...] = (
    (_yamux, "MAX_MESSAGE_SIZE", STOCK_MAX_FRAME, YAMUX_MAX_FRAME),
    (_yamux, "_yamux_release_on_read", getattr(_yamux, "_yamux_release_on_read", None), _never_release_on_read),
    (_yamux, "read_exactly", _io_utils.read_exactly, _read_exactly),
    (_msgio, "read_exactly", _io_utils.read_exactly, _read_exactly),
    (SecureSession, "read", _STOCK_SESSION_READ, _session_read),
    (_yamux.Yamux, "_write_frame", _STOCK_WRITE_FRAME, _write_frame_whole),
    (_msgio.BaseMsgReadWriter, "read_msg", _STOCK_READ_MSG, _read_msg_coalesced),
)


def installed_libp2p_version() -> str:
    return importlib.metadata.version("libp2p")


def _current(owner: Any, name: str) -> Any:
    return owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)


def tune_libp2p(*, version: str | None = None) -> bool:
    """Apply every patch above; True if the tuning is in effect. Idempotent.

    `version` overrides the installed version (tests).
    """
    if all(_current(owner, name) is tuned for owner, name, _, tuned in _PATCHES):
        return True
    version = version or installed_libp2p_version()
    changed = [f"{getattr(owner, '__name__', owner)}.{name}" for owner, name, stock, _ in _PATCHES
               if stock is None or _current(owner, name) != stock]
    if version not in SUPPORTED_VERSIONS or changed:
        log.warning("not tuning py-libp2p: measured with %s, found %s; attributes not at their stock value: %s",
                    sorted(SUPPORTED_VERSIONS), version, changed or "none")
        return False
    for owner, name, _, tuned in _PATCHES:
        setattr(owner, name, tuned)
    return True


@contextlib.contextmanager
def stock_libp2p() -> Iterator[None]:
    """py-libp2p's own behaviour for the duration (benchmarks compare against it); the patched
    attributes are read at each call, so this applies to hosts that already exist."""
    saved = [_current(owner, name) for owner, name, _, _ in _PATCHES]
    for owner, name, stock, _ in _PATCHES:
        setattr(owner, name, stock)
    try:
        yield
    finally:
        for (owner, name, _, _), value in zip(_PATCHES, saved):
            setattr(owner, name, value)
