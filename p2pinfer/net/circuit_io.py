"""Small stream helpers shared by the circuit, hop, result and weights protocols.

Every call has a deadline and turns py-libp2p's many exception types into `NetworkError`.
"""

from __future__ import annotations

import logging
from typing import Sequence

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError, MessageTooLarge
from libp2p.network.stream.exceptions import StreamError
from libp2p.stream_muxer.exceptions import MuxedStreamError

from p2pinfer.errors import NetworkError, WireError
from p2pinfer.net.framing import read_frame

log = logging.getLogger(__name__)


async def open_stream(host: IHost, peer_id: str, protocol: TProtocol, *, timeout: float,
                      addrs: Sequence[str] = ()) -> INetStream:
    """A new stream to `peer_id` (dialing `addrs` if not connected), with a deadline."""
    try:
        pid = ID.from_base58(peer_id)
        with trio.fail_after(timeout):
            if addrs and not host.get_network().connections.get(pid):
                await host.connect(PeerInfo(pid, [_strip_p2p(Multiaddr(a), peer_id) for a in addrs]))
            return await host.new_stream(pid, [protocol])
    except trio.TooSlowError as exc:
        raise NetworkError(f"opening {protocol} to {peer_id} timed out after {timeout}s") from exc
    except (trio.Cancelled, KeyboardInterrupt):
        raise
    except Exception as exc:  # py-libp2p raises many types (SwarmException, StreamFailure, ...)
        raise NetworkError(f"cannot open {protocol} to {peer_id}: {exc}") from exc


def _strip_p2p(ma: Multiaddr, peer_id: str) -> Multiaddr:
    suffix = f"/p2p/{peer_id}"
    text = str(ma)
    return Multiaddr(text[: -len(suffix)]) if text.endswith(suffix) else ma


def remote_peer(stream: INetStream) -> str:
    try:
        return str(stream.muxed_conn.peer_id)
    except AttributeError:
        return "?"


async def close_stream(stream: INetStream) -> None:
    with trio.move_on_after(2):
        try:
            await stream.close()
        except (trio.Cancelled, KeyboardInterrupt):
            raise
        except Exception:  # closing an already-reset stream raises; nothing left to do
            log.debug("closing a stream failed", exc_info=True)


class OversizedFrame(WireError):
    """The peer announced a frame longer than the limit; the body was never read."""


async def next_frame(stream: INetStream, *, max_size: int, timeout: float) -> bytes | None:
    """The next frame, or None when the peer closed/reset the stream or went quiet past `timeout`.

    Only a frame the peer actually sent wrongly raises: `OversizedFrame` for a length over the
    limit, `WireError` for an unparsable length prefix. (framing.read_frame reports a clean
    stream end from py-libp2p as a WireError; this tells the two apart by the cause.)
    """
    try:
        return await read_frame(stream, max_size=max_size, timeout=timeout)
    except NetworkError:
        return None
    except WireError as exc:
        cause = exc.__cause__
        if isinstance(cause, MessageTooLarge):
            raise OversizedFrame(str(exc)) from None
        if isinstance(cause, (StreamError, MuxedStreamError, ConnectionClosedError, IncompleteReadError, EOFError)):
            return None
        raise
