"""What the planner knows about the swarm at one instant: peers and the requester.

Immutable, built either from verified capability records (live swarm) or from a JSON peers file
(offline planning). Units follow the reference cost model in docs/cost-model.md: GFLOP/s, bytes,
Mbit/s, milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class PeerSpec:
    """One candidate hop as advertised (and possibly corrected by measurement and reputation).

    `gflops_by_class` refines `gflops` per compute class (see core/profile.py); a class that is
    missing falls back to the scalar. `gflops_by_kind` refines both per layer kind (a layer whose
    kind is listed runs at that speed: layers of one class still differ, e.g. a ResNet bottleneck
    and a plain VGG conv, or a batch-1 matrix-vector product and a batched matmul). `reputation` is in (0, 1]; `load` is the fraction of the
    peer's compute already busy, in [0, 1). `holds` are content hashes of layer weights the peer
    already has (a span whose weights are not held pays a one-time transfer). `frame_ms` and
    `frame_ms_per_mib` are the peer's own cost of handling one input as a hop (read and open the
    frame, hand it to compute, seal and send the output and its commitment), fixed and per MiB
    of activation read or sent, in milliseconds of its wall time (0: not advertised).
    `cpu_quota_ms` per `cpu_period_ms` is the CPU quota (less than a core) the peer computes
    under: a lone request's short work runs at full core speed on a fresh period's quota, not at
    the quota's sustained rate (core/costs.py; both 0: no quota advertised).
    """

    peer_id: str
    gflops: float
    mem_bytes: int
    up_mbps: float
    down_mbps: float
    latency_ms: float
    gflops_by_class: Mapping[str, float] = field(default_factory=dict)
    reputation: float = 1.0
    load: float = 0.0
    holds: frozenset[str] = frozenset()
    addrs: tuple[str, ...] = ()
    gflops_by_kind: Mapping[str, float] = field(default_factory=dict)
    frame_ms: float = 0.0
    frame_ms_per_mib: float = 0.0
    cpu_quota_ms: float = 0.0
    cpu_period_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.peer_id:
            raise ValueError("peer_id must be non-empty")
        for name in ("gflops", "up_mbps", "down_mbps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"peer {self.peer_id}: {name} must be > 0")
        if self.mem_bytes < 0 or self.latency_ms < 0:
            raise ValueError(f"peer {self.peer_id}: mem_bytes and latency_ms must be >= 0")
        if not 0 < self.reputation <= 1:
            raise ValueError(f"peer {self.peer_id}: reputation must be in (0, 1]")
        if not 0 <= self.load < 1:
            raise ValueError(f"peer {self.peer_id}: load must be in [0, 1)")
        if not (self.frame_ms >= 0 and self.frame_ms_per_mib >= 0):
            raise ValueError(f"peer {self.peer_id}: frame_ms and frame_ms_per_mib must be >= 0")
        quota = (self.cpu_quota_ms, self.cpu_period_ms)
        if quota != (0.0, 0.0) and not 0 < self.cpu_quota_ms < self.cpu_period_ms:
            raise ValueError(f"peer {self.peer_id}: cpu_quota_ms and cpu_period_ms must satisfy "
                             "0 < cpu_quota_ms < cpu_period_ms (or both be 0)")
        object.__setattr__(self, "gflops_by_class", MappingProxyType(dict(self.gflops_by_class)))
        object.__setattr__(self, "gflops_by_kind", MappingProxyType(dict(self.gflops_by_kind)))
        object.__setattr__(self, "holds", frozenset(self.holds))
        object.__setattr__(self, "addrs", tuple(self.addrs))


@dataclass(frozen=True)
class RequesterSpec:
    """The requester's access link: it sends the input and receives the output."""

    up_mbps: float
    down_mbps: float
    latency_ms: float

    def __post_init__(self) -> None:
        if not (self.up_mbps > 0 and self.down_mbps > 0 and self.latency_ms >= 0):
            raise ValueError("requester: up/down Mbit/s must be > 0 and latency_ms >= 0")


@dataclass(frozen=True)
class SwarmSnapshot:
    """Peers and requester at one instant; the planner's whole view of the network."""

    requester: RequesterSpec
    peers: tuple[PeerSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "peers", tuple(self.peers))
        ids = [p.peer_id for p in self.peers]
        if len(ids) != len(set(ids)):
            raise ValueError("snapshot: duplicate peer ids")
