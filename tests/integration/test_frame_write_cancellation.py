"""A cancelled stream write must not corrupt the connection other streams share.

py-libp2p writes one yamux frame (up to 2 MiB with net/transport_tuning.py) as many Noise
messages on the TCP stream. A trio cancellation between two of them (a `write_frame` deadline
on a slow link, a circuit forgotten mid-forward) used to leave half a frame on the wire: the
peer then read the next frame's bytes as body (or failed to decrypt) and closed the connection,
so every other stream to that peer failed ("No valid connections available for peer").
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import NetworkError
from p2pinfer.net.framing import read_frame, write_frame
from p2pinfer.net import transport_tuning
from p2pinfer.net.host import make_host
from tests.conftest import async_wait_until

BIG = "/p2pinfer/test-cancel-big/1.0.0"
ECHO = "/p2pinfer/test-cancel-echo/1.0.0"
LIMIT = 64 << 20
NOISE_MSG_DELAY_S = 0.05  # a slow link: one ~64 KiB Noise message per 50 ms (~10 Mbit/s)


def _slow_link(host, peer: ID) -> None:
    """Delay every raw TCP write of host's connection to peer (the Noise messages)."""
    (conn,) = host.get_network().get_connections(peer)
    raw = conn.muxed_conn.secured_conn.conn.read_writer.read_write_closer
    original = raw.write

    async def slow_write(data: bytes) -> None:
        await trio.sleep(NOISE_MSG_DELAY_S)
        await original(data)

    raw.write = slow_write


async def _drain(stream) -> None:
    with trio.move_on_after(30):
        while await stream.read(1 << 20):
            pass


@asynccontextmanager
async def _connected_pair(**handlers) -> AsyncIterator[tuple]:
    """Two real hosts on loopback, b serving `handlers` (protocol -> handler), a connected to b
    with a stream open on BIG: yields (a's host, b's peer id, that stream)."""
    a, b = Identity.generate(), Identity.generate()
    ha, hb = make_host(a.libp2p_key_pair()), make_host(b.libp2p_key_pair())
    pb = ID.from_base58(b.peer_id)
    listen = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with ha.run(listen_addrs=listen), hb.run(listen_addrs=listen):
        hb.set_stream_handler(BIG, _drain)
        for protocol, handler in handlers.items():
            hb.set_stream_handler(protocol, handler)
        with trio.fail_after(20):
            await ha.connect(PeerInfo(pb, hb.get_addrs()))
            big = await ha.new_stream(pb, [BIG])
        yield ha, pb, big


async def test_a_write_cancelled_mid_frame_leaves_the_connection_usable(caplog):
    async def echo(stream) -> None:
        frame = await read_frame(stream, max_size=LIMIT, timeout=20)
        await write_frame(stream, frame[::-1], max_size=LIMIT, timeout=20)
        await stream.close()

    async with _connected_pair(**{ECHO: echo}) as (ha, pb, big):
        _slow_link(ha, pb)
        # the first yamux frame (the 256 KiB initial window) is 5 Noise messages, ~250 ms here:
        # the 120 ms deadline fires in the middle of it
        with caplog.at_level(logging.INFO, logger="p2pinfer.net.transport_tuning"):
            try:
                await write_frame(big, b"x" * (4 << 20), max_size=LIMIT, timeout=0.12)
            except NetworkError:
                pass
            else:
                raise AssertionError("the 4 MiB write should have hit its deadline")
        assert "waited for the frame to be written" in caplog.text  # the deadline did land mid-frame
        with trio.fail_after(20):
            stream = await ha.new_stream(pb, [ECHO])
            await write_frame(stream, b"ping", max_size=LIMIT, timeout=10)
            assert await read_frame(stream, max_size=LIMIT, timeout=10) == b"gnip"
        assert not ha.get_network().get_connections(pb)[0].muxed_conn.is_closed


async def test_a_frame_stuck_past_its_own_deadline_closes_the_connection(monkeypatch):
    """The shield is bounded: a link too slow to finish a frame gets its connection closed
    (its byte stream is unusable) and the writer an error, instead of hanging."""
    monkeypatch.setattr(transport_tuning, "FRAME_WRITE_DEADLINE_S", 0.1)  # < the ~250 ms frame

    async with _connected_pair() as (ha, pb, big):
        muxed = ha.get_network().get_connections(pb)[0].muxed_conn
        _slow_link(ha, pb)
        try:
            await write_frame(big, b"x" * (4 << 20), max_size=LIMIT, timeout=20)
        except NetworkError as exc:
            assert "not written within" in str(exc)
        else:
            raise AssertionError("the frame should have outlived its deadline")
        await async_wait_until(lambda: muxed.is_closed, timeout=10)
