"""Bridge py-libp2p's mDNS discoveries into trio.

py-libp2p 0.8.1 reports mDNS finds through a process-global registry
(`libp2p.discovery.events.peerDiscovery`) from zeroconf's own thread, so the callback must hop
onto the trio thread with the run's token and must never block. Every host in the process
hears every find (the registry is global); consumers skip themselves and peers they know.
"""

from __future__ import annotations

import logging
from types import TracebackType

import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.peerinfo import PeerInfo

logger = logging.getLogger(__name__)


class MdnsBridge:
    """Context manager: while open, mDNS-found peers arrive on `self.receive`."""

    def __init__(self, *, buffer: int = 64) -> None:
        self._send, self.receive = trio.open_memory_channel[PeerInfo](buffer)
        self._token: trio.lowlevel.TrioToken | None = None

    def __enter__(self) -> MdnsBridge:
        self._token = trio.lowlevel.current_trio_token()
        peerDiscovery.register_peer_discovered_handler(self._on_peer)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        peerDiscovery.unregister_peer_discovered_handler(self._on_peer)
        self._send.close()

    def _on_peer(self, info: PeerInfo) -> None:
        """Runs on zeroconf's thread (or ours): hand over without blocking; drop if full."""
        token = self._token
        if token is None:
            return
        try:
            token.run_sync_soon(self._deliver, info)
        except trio.RunFinishedError:
            pass

    def _deliver(self, info: PeerInfo) -> None:
        try:
            self._send.send_nowait(info)
        except (trio.WouldBlock, trio.ClosedResourceError):
            logger.debug("mDNS find of %s dropped (consumer busy or closed)", info.peer_id)
