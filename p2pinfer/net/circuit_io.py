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

from p2pinfer.errors import NetworkError

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
