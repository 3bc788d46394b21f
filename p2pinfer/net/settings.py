"""Networking settings of a node: one frozen object, built once from the node config + CLI."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from p2pinfer.config import NodeConfig
from p2pinfer.errors import ConfigError
from p2pinfer.net.host import DEFAULT_LISTEN, parse_multiaddr, parse_peer_addr

DEFAULT_RECORD_TTL_S = 300.0


@dataclass(frozen=True)
class NodeSettings:
    """How a node joins and talks to the swarm (its capability is a separate `Capability`).

    record_ttl_s: lifetime of each signed record; republished every `republish_s` (< ttl), so
      a departed peer's record disappears everywhere at most `record_ttl_s` after it left.
    pull_interval_s / fanout: anti-entropy period and how many peers each round asks.
    dht_publish: also put the record and provider keys into the DHT (the exchange works without).
    dht_jitter_s: the first DHT publish waits a random 0..dht_jitter_s (capped at republish_s), so
      a swarm that (re)starts together does not put all at once: py-libp2p 0.8.1 spends ~1 CPU-s
      per put+provide at 50 peers, and 50 concurrent ones starved a 2-core machine (measured).
    """

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    bootstrap: tuple[str, ...] = ()
    swarm: str = "default"
    mdns: bool = False
    record_ttl_s: float = DEFAULT_RECORD_TTL_S
    republish_s: float = 120.0
    pull_interval_s: float = 10.0
    fanout: int = 3
    bootstrap_timeout_s: float = 5.0
    dht_publish: bool = True
    dht_timeout_s: float = 10.0
    dht_jitter_s: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "listen", tuple(self.listen) or (DEFAULT_LISTEN,))
        object.__setattr__(self, "bootstrap", tuple(self.bootstrap))
        for addr in self.listen:
            parse_multiaddr(addr, what="listen multiaddr")
        for addr in self.bootstrap:
            parse_peer_addr(addr)
        if self.dht_jitter_s < 0:
            raise ConfigError("node settings: dht_jitter_s must be >= 0")
        for name in ("record_ttl_s", "republish_s", "pull_interval_s", "bootstrap_timeout_s", "dht_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"node settings: {name} must be > 0, got {getattr(self, name)!r}")
        if not self.republish_s < self.record_ttl_s:
            raise ConfigError(
                f"node settings: republish_s ({self.republish_s}) must be < record_ttl_s ({self.record_ttl_s})"
            )
        if self.fanout < 1:
            raise ConfigError("node settings: fanout must be >= 1")
        if not self.swarm:
            raise ConfigError("node settings: swarm name must be non-empty")


def settings_from_config(config: NodeConfig, **overrides: Any) -> NodeSettings:
    """The networking part of a node config; `overrides` set tuning knobs (tests, benchmarks)."""
    node = config.node
    settings = NodeSettings(
        listen=node.listen,
        bootstrap=node.bootstrap,
        swarm=node.swarm,
        mdns=node.mdns,
        record_ttl_s=node.record_ttl_s,
        republish_s=node.republish_s,
    )
    return replace(settings, **overrides) if overrides else settings
