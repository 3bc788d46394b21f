"""net/transport_tuning.py: large yamux DATA frames between real py-libp2p hosts on loopback,
applied only to the py-libp2p version it was measured with."""

from __future__ import annotations

import logging
import struct

import libp2p.stream_muxer.yamux.yamux as yamux
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from p2pinfer.crypto.identity import Identity
from p2pinfer.net.framing import read_frame, write_frame
from p2pinfer.net.host import make_host
from p2pinfer.net.transport_tuning import STOCK_MAX_FRAME, YAMUX_MAX_FRAME, installed_libp2p_version, tune_yamux

PROTO = "/p2pinfer/test-tuning/1.0.0"
LIMIT = 64 << 20


def test_applies_to_the_measured_version_only(monkeypatch, caplog):
    monkeypatch.setattr(yamux, "MAX_MESSAGE_SIZE", STOCK_MAX_FRAME)
    with caplog.at_level(logging.WARNING, logger="p2pinfer.net.transport_tuning"):
        assert tune_yamux(version="0.9.0") is False
    assert yamux.MAX_MESSAGE_SIZE == STOCK_MAX_FRAME
    assert "not tuning yamux" in caplog.text
    assert tune_yamux(version="0.8.1") is True
    assert yamux.MAX_MESSAGE_SIZE == YAMUX_MAX_FRAME
    assert tune_yamux(version="0.8.1") is True  # idempotent


def test_leaves_a_constant_someone_else_changed_alone(monkeypatch):
    monkeypatch.setattr(yamux, "MAX_MESSAGE_SIZE", 128 * 1024)
    assert tune_yamux(version="0.8.1") is False
    assert yamux.MAX_MESSAGE_SIZE == 128 * 1024


def test_the_installed_libp2p_is_the_measured_one():
    """If this fails, py-libp2p was upgraded: re-measure bench_hop, then extend SUPPORTED_VERSIONS."""
    assert installed_libp2p_version() == "0.8.1"


async def _exchange(sizes: list[int]) -> tuple[list[bytes], list[int]]:
    """Send one frame per size from host a to host b; the frames b read and a's DATA frame lengths."""
    data_frames: list[int] = []
    original = yamux.Yamux._write_frame

    async def counting(self, data: bytes) -> None:
        _, typ, _, _, length = struct.unpack(yamux.YAMUX_HEADER_FORMAT, data[:yamux.HEADER_SIZE])
        if typ == yamux.TYPE_DATA and self.is_initiator_value:
            data_frames.append(length)
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
    return got, data_frames


async def test_frames_cross_real_hosts_intact_in_large_yamux_frames():
    sizes = [1 << 20, 5, 3 << 20]
    got, data_frames = await _exchange(sizes)
    assert got == [bytes([i]) * size for i, size in enumerate(sizes)]
    assert yamux.MAX_MESSAGE_SIZE == YAMUX_MAX_FRAME
    # never more than the window the receiver granted (256 KiB initially, auto-tuned upwards) ...
    assert max(data_frames) <= YAMUX_MAX_FRAME - yamux.HEADER_SIZE
    # ... and far fewer frames than stock 64 KiB frames would need (>= 65 for these 4 MiB)
    stock_frames = sum(-(-(size + 4) // (STOCK_MAX_FRAME - yamux.HEADER_SIZE)) for size in sizes)
    assert len(data_frames) < stock_frames // 3, data_frames
