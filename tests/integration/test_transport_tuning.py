"""net/transport_tuning.py: large yamux DATA frames between real py-libp2p hosts on loopback,
applied only to the py-libp2p version it was measured with."""

from __future__ import annotations

import logging
import struct

import libp2p.stream_muxer.yamux.yamux as yamux
import pytest
import trio
from libp2p.io.exceptions import IncompleteReadError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.security.noise.io import NoisePacketReadWriter
from libp2p.security.secure_session import SecureSession
from libp2p.transport.tcp.tcp import TrioTCPStream
from multiaddr import Multiaddr

from p2pinfer.crypto.identity import Identity
from p2pinfer.net.framing import read_frame, write_frame
from p2pinfer.net import transport_tuning
from p2pinfer.net.host import make_host
from p2pinfer.net.transport_tuning import STOCK_MAX_FRAME, YAMUX_MAX_FRAME, installed_libp2p_version, tune_libp2p

PROTO = "/p2pinfer/test-tuning/1.0.0"
LIMIT = 64 << 20


def _stock(monkeypatch, **over):
    """Every patched attribute back at py-libp2p's value (monkeypatch restores the tuned ones)."""
    for owner, name, stock, _ in transport_tuning._PATCHES:
        monkeypatch.setattr(owner, name, over.get(name, stock))


def _tuned() -> list[bool]:
    return [transport_tuning._current(owner, name) is tuned for owner, name, _, tuned in transport_tuning._PATCHES]


def test_applies_to_the_measured_version_only(monkeypatch, caplog):
    _stock(monkeypatch)
    assert yamux._yamux_release_on_read() is True  # py-libp2p's default (no PY_YAMUX_* env here)
    with caplog.at_level(logging.WARNING, logger="p2pinfer.net.transport_tuning"):
        assert tune_libp2p(version="0.9.0") is False
    assert _tuned() == [False] * len(transport_tuning._PATCHES)
    assert "not tuning py-libp2p" in caplog.text
    assert tune_libp2p(version="0.8.1") is True
    assert _tuned() == [True] * len(transport_tuning._PATCHES)
    assert (yamux.MAX_MESSAGE_SIZE, yamux._yamux_release_on_read()) == (YAMUX_MAX_FRAME, False)
    assert tune_libp2p(version="0.8.1") is True  # idempotent


@pytest.mark.parametrize("over", [dict(MAX_MESSAGE_SIZE=128 * 1024), dict(_yamux_release_on_read=lambda: True),
                                  dict(read=lambda self, n=None: b"")])
def test_changes_nothing_if_any_attribute_was_changed_by_someone_else(monkeypatch, over):
    _stock(monkeypatch, **over)
    before = [transport_tuning._current(owner, name) for owner, name, _, _ in transport_tuning._PATCHES]
    assert tune_libp2p(version="0.8.1") is False
    assert [transport_tuning._current(owner, name) for owner, name, _, _ in transport_tuning._PATCHES] == before


def test_stock_libp2p_restores_py_libp2p_for_a_while():
    assert tune_libp2p() is True
    with transport_tuning.stock_libp2p():
        assert _tuned() == [False] * len(transport_tuning._PATCHES)
        assert (yamux.MAX_MESSAGE_SIZE, yamux._yamux_release_on_read()) == (STOCK_MAX_FRAME, True)
    assert _tuned() == [True] * len(transport_tuning._PATCHES)


class Pieces:
    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)

    async def read(self, n: int) -> bytes:
        head = self.pieces.pop(0) if self.pieces else b""
        assert len(head) <= n
        return head


async def test_read_exactly_replacement_joins_pieces_and_reports_a_short_stream():
    whole = b"y" * 100
    assert await transport_tuning._read_exactly(Pieces(whole), 100) is whole
    assert await transport_tuning._read_exactly(Pieces(b"ab", b"", b"cde"), 5) == b"abcde"
    with pytest.raises(IncompleteReadError) as info:
        await transport_tuning._read_exactly(Pieces(b"ab"), 5, retry_count=3)
    assert (info.value.expected_bytes, info.value.received_bytes) == (5, 2)


def test_the_installed_libp2p_is_the_measured_one():
    """If this fails, py-libp2p was upgraded: re-measure bench_hop, then extend SUPPORTED_VERSIONS."""
    assert installed_libp2p_version() == "0.8.1"


async def _exchange(sizes: list[int]) -> tuple[list[bytes], list[int], int]:
    """Send one frame per size from host a to host b: the frames b read, a's DATA frame lengths
    and the number of WINDOW_UPDATEs b sent back."""
    data_frames: list[int] = []
    updates = [0]
    original = yamux.Yamux._write_frame

    async def counting(self, data: bytes) -> None:
        _, typ, flags, _, length = struct.unpack(yamux.YAMUX_HEADER_FORMAT, data[:yamux.HEADER_SIZE])
        if typ == yamux.TYPE_DATA and self.is_initiator_value:
            data_frames.append(length)
        if typ == yamux.TYPE_WINDOW_UPDATE and not self.is_initiator_value and not flags:
            updates[0] += 1
        await original(self, data)

    got: list[bytes] = []
    done = trio.Event()

    async def handler(stream) -> None:
        for _ in sizes:
            got.append(await read_frame(stream, max_size=LIMIT, timeout=20))
        done.set()

    a, b = Identity.generate(), Identity.generate()
    ha, hb = make_host(a.libp2p_key_pair()), make_host(b.libp2p_key_pair())
    listen = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with ha.run(listen_addrs=listen), hb.run(listen_addrs=listen):
        hb.set_stream_handler(PROTO, handler)
        with trio.fail_after(20):
            await ha.connect(PeerInfo(ID.from_base58(b.peer_id), hb.get_addrs()))
            stream = await ha.new_stream(ID.from_base58(b.peer_id), [PROTO])
        yamux.Yamux._write_frame = counting
        try:
            for i, size in enumerate(sizes):
                await write_frame(stream, bytes([i]) * size, max_size=LIMIT, timeout=20)
            with trio.fail_after(20):
                await done.wait()
        finally:
            yamux.Yamux._write_frame = original
        await stream.close()
    return got, data_frames, updates[0]


async def test_frames_cross_real_hosts_intact_in_large_yamux_frames():
    sizes = [1 << 20, 5, 3 << 20] + [1 << 20] * 6
    got, data_frames, updates = await _exchange(sizes)
    assert got == [bytes([i]) * size for i, size in enumerate(sizes)]
    assert yamux.MAX_MESSAGE_SIZE == YAMUX_MAX_FRAME
    # py-libp2p's default sends an update for nearly every read (4-5 per frame: 3 for the varint)
    assert updates <= 2 * len(sizes), updates
    # never more than the window the receiver granted (256 KiB initially, auto-tuned upwards) ...
    assert max(data_frames) <= YAMUX_MAX_FRAME - yamux.HEADER_SIZE
    # ... and far fewer frames than stock 64 KiB frames would need (> 160 for these 10 MiB)
    stock_frames = sum(-(-(size + 4) // (STOCK_MAX_FRAME - yamux.HEADER_SIZE)) for size in sizes)
    assert len(data_frames) < stock_frames // 3, data_frames


async def _tcp_pair():
    """A connected pair of real loopback TCP sockets: (py-libp2p raw connection, trio stream)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return RawConnection(TrioTCPStream(server), initiator=False), client


async def test_a_trickling_message_body_is_gathered_by_the_kernel(monkeypatch):
    """Patch 5 on a real TCP socket: a Noise-framed message whose body arrives in pieces is read
    whole; after the short first read the low-water mark is what the message still owes (never
    above 64 KiB, never above the rest: the read cannot wait for bytes that will not come), and
    it is reset to 1 after. A message read whole at once sets no mark."""
    marks: list[int] = []
    first_wait = trio.Event()
    real = transport_tuning._set_rcvlowat

    def recording(sock, nbytes: int) -> None:
        marks.append(nbytes)
        first_wait.set()
        real(sock, nbytes)

    monkeypatch.setattr(transport_tuning, "_set_rcvlowat", recording)
    conn, peer = await _tcp_pair()
    reader = NoisePacketReadWriter(conn)
    body = bytes(range(256)) * 234  # 59904 bytes
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async def read() -> None:
            got.append(await reader.read_msg())
        nursery.start_soon(read)
        with trio.fail_after(10):
            await peer.send_all(struct.pack(">H", len(body)) + body[:1000])
            await first_wait.wait()  # the reader came back short and set the mark
            await peer.send_all(body[1000:30000])
            await peer.send_all(body[30000:])
    assert got == [body]
    assert marks[0] == len(body) - 1000 and marks[-1] == 1 and all(1 <= m <= transport_tuning.RCVLOWAT_CAP for m in marks)
    marks.clear()
    with trio.fail_after(10):
        await peer.send_all(struct.pack(">H", 5000) + body[:5000])
        assert await reader.read_msg() == body[:5000]
    assert marks == []  # arrived whole: no syscalls added
    await peer.aclose()
    with trio.fail_after(10), pytest.raises(IncompleteReadError):
        await reader.read_msg()
    await conn.close()


async def test_a_connection_closed_mid_message_is_reported_and_the_mark_reset(monkeypatch):
    marks: list[int] = []
    waiting = trio.Event()

    def recording(sock, nbytes: int) -> None:
        marks.append(nbytes)
        waiting.set()

    monkeypatch.setattr(transport_tuning, "_set_rcvlowat", recording)
    conn, peer = await _tcp_pair()
    reader = NoisePacketReadWriter(conn)
    await peer.send_all(struct.pack(">H", 50000) + b"x" * 2000)
    async with trio.open_nursery() as nursery:
        async def close_after_first_mark() -> None:
            with trio.fail_after(10):
                await waiting.wait()
            await peer.aclose()
        nursery.start_soon(close_after_first_mark)
        with trio.fail_after(10), pytest.raises(IncompleteReadError, match="expected 50000 bytes but received 2000"):
            await reader.read_msg()
    assert marks == [48000, 1]
    await conn.close()
