"""The py-libp2p host: TCP, Noise, yamux, with the node's own Ed25519 key.

Thin helpers around `libp2p.new_host` so the rest of p2pinfer never touches py-libp2p's moving
API directly: parse user multiaddrs with clear errors, list full dialable addrs (with /p2p/<id>),
and dial with a deadline. Tested against libp2p==0.8.1.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
import libp2p.network.swarm as _swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.utils.address_validation import expand_wildcard_address
from multiaddr import Multiaddr

from p2pinfer.errors import ConfigError, NetworkError
from p2pinfer.net.transport_tuning import tune_libp2p

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/0"
DIAL_TIMEOUT_S = 5.0


def parse_multiaddr(text: str, *, what: str = "multiaddr") -> Multiaddr:
    """Parse a multiaddr given by a user or config; ConfigError names the bad value."""
    try:
        return Multiaddr(text)
    except Exception as exc:  # multiaddr raises several unrelated types for bad input
        raise ConfigError(f"invalid {what} {text!r}: {exc}") from exc


def parse_peer_addr(text: str, *, what: str = "bootstrap multiaddr") -> PeerInfo:
    """Parse a dialable peer address, which must end in /p2p/<peer id>."""
    ma = parse_multiaddr(text, what=what)
    try:
        return info_from_p2p_addr(ma)
    except Exception as exc:
        raise ConfigError(f"invalid {what} {text!r}: it must end in /p2p/<peer id> ({exc})") from exc


def make_host(key_pair: KeyPair, *, enable_mdns: bool = False) -> IHost:
    """A host with the default py-libp2p stack: TCP transport, Noise security, yamux muxer,
    tuned for activation-sized frames (net/transport_tuning.py: a 1 MiB frame crosses loopback
    in ~4 ms instead of ~13 ms; wire-compatible). trio's SocketStream already sets TCP_NODELAY."""
    _no_happy_eyeballs_wait()
    tune_libp2p()
    return new_host(key_pair=key_pair, muxer_preference="YAMUX", enable_mDNS=enable_mdns)


def _no_happy_eyeballs_wait() -> None:
    """py-libp2p 0.8.1's dialer gives each address a 250 ms head start and waits it out even
    after the dial SUCCEEDED (unless 3 connections to the peer exist), so every dial cost
    >= 250 ms (measured; 15 ms without). With no head start the (at most 2) selected addrs of a
    peer are dialed in parallel, which is what we want on a LAN anyway. Limiting connections
    per peer to 1 also avoids the wait but makes simultaneous dials between two peers reset
    each other's streams (measured), so we shorten the head start instead.
    """
    if getattr(_swarm, "_HAPPY_EYEBALLS_DELAY", 0.0) != 0.0:
        _swarm._HAPPY_EYEBALLS_DELAY = 0.0


async def stop_auto_connector(host: IHost) -> None:
    """Switch off py-libp2p's AutoConnector; call right after `host.run` has started.

    py-libp2p 0.8.1 keeps >= 50 connections by dialing every peer in the peerstore (up to 32
    per 10 s cycle while below that floor). Our peerstore holds every verified record's addrs,
    so with 50 in-process nodes every host dialed every other one: start of 50 nodes took
    171 s with connection resets (measured). p2pinfer connects on demand instead.
    """
    auto = getattr(host.get_network(), "auto_connector", None)
    if auto is not None:
        await auto.stop()


def full_addrs(host: IHost) -> list[str]:
    """The host's dialable addrs as strings ending in /p2p/<id>, ready to paste into --bootstrap.

    A wildcard listen addr (/ip4/0.0.0.0/...) is expanded to the machine's interface addrs plus
    loopback: py-libp2p 0.8.1 reports the wildcard itself, which nobody can dial.
    """
    out: list[str] = []
    suffix = f"/p2p/{host.get_id()}"
    for addr in host.get_addrs():
        for concrete in _concrete(addr.decapsulate(Multiaddr(suffix)) if str(addr).endswith(suffix) else addr):
            text = str(concrete) + suffix
            if text not in out:
                out.append(text)
    return out


def _concrete(addr: Multiaddr) -> list[Multiaddr]:
    text = str(addr)
    if not text.startswith("/ip4/0.0.0.0/"):
        return [addr]
    loopback = Multiaddr(text.replace("/ip4/0.0.0.0/", "/ip4/127.0.0.1/", 1))
    return [*expand_wildcard_address(addr), loopback]


def addrs_of(host: IHost, peer_id: ID) -> list[str]:
    """Known addrs of a peer in our peerstore (without /p2p), best effort."""
    try:
        return [str(a) for a in host.get_peerstore().addrs(peer_id)]
    except Exception:  # peerstore raises PeerStoreError for unknown peers
        return []


async def connect(host: IHost, info: PeerInfo, *, timeout: float = DIAL_TIMEOUT_S) -> None:
    """Dial a peer with a deadline; NetworkError says who and why."""
    try:
        with trio.fail_after(timeout):
            await host.connect(info)
    except trio.TooSlowError as exc:
        raise NetworkError(f"dialing {info.peer_id} timed out after {timeout}s") from exc
    except (trio.Cancelled, KeyboardInterrupt):
        raise
    except Exception as exc:  # py-libp2p raises SwarmException and friends
        raise NetworkError(f"cannot connect to {info.peer_id}: {exc}") from exc


def remember_addrs(host: IHost, peer_id: ID, addrs: Iterable[str], *, ttl: int = 3600) -> int:
    """Add a peer's advertised addrs to our peerstore so we can dial it; returns how many parsed."""
    parsed: list[Multiaddr] = []
    for text in addrs:
        try:
            ma = Multiaddr(text)
            if "p2p" in [p.name for p in ma.protocols()]:
                ma = ma.decapsulate(Multiaddr(f"/p2p/{peer_id}"))
            parsed.append(ma)
        except Exception:
            logger.debug("ignoring unparsable addr %r of %s", text, peer_id)
    if parsed:
        host.get_peerstore().add_addrs(peer_id, parsed, ttl)
    return len(parsed)


def listen_addrs_from(texts: Sequence[str]) -> list[Multiaddr]:
    """Listen multiaddrs from config/CLI; the loopback default when none are given."""
    return [parse_multiaddr(t, what="listen multiaddr") for t in (texts or [DEFAULT_LISTEN])]
