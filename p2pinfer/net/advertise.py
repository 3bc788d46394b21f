"""What this node advertises: its capability, current load and holdings, signed into records.

`Advertiser` is the one place a node's own record is made. It keeps the static capability
(measured or emulated compute, memory, link) and the dynamic part (load, models and weight
hashes held), and `sign_next(addrs, now)` produces the next signed record with a seq newer than
any before (wall-clock ms, so a restarted node still outranks its old record in the DHT) and an
expiry `ttl_s` ahead. No I/O; the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping, Sequence

from p2pinfer.core.records import CapabilityRecord, encode_signed, next_seq
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import ConfigError

MAX_ADVERTISED_ADDRS = 16


@dataclass(frozen=True)
class Capability:
    """The numbers a node advertises (units of the planner's cost model)."""

    gflops: float
    mem_bytes: int
    up_mbps: float
    down_mbps: float
    latency_ms: float
    gflops_by_class: Mapping[str, float] = field(default_factory=dict)
    gflops_by_kind: Mapping[str, float] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    load: float = 0.0
    frame_ms: float = 0.0  # frame handling per input and per MiB (core/records.py); 0: not measured
    frame_ms_per_mib: float = 0.0
    cpu_quota_ms: float = 0.0  # CPU quota per period when under a core (core/records.py); 0: none
    cpu_period_ms: float = 0.0

    def __post_init__(self) -> None:
        if not (self.gflops > 0 and self.up_mbps > 0 and self.down_mbps > 0):
            raise ConfigError("capability: gflops and up/down Mbit/s must be > 0")
        if self.mem_bytes < 0 or self.latency_ms < 0:
            raise ConfigError("capability: mem_bytes and latency_ms must be >= 0")
        if not 0 <= self.load <= 1:
            raise ConfigError(f"capability: load {self.load} must be in [0, 1]")
        if (self.cpu_quota_ms, self.cpu_period_ms) != (0.0, 0.0) and not 0 < self.cpu_quota_ms < self.cpu_period_ms:
            raise ConfigError(f"capability: cpu quota {self.cpu_quota_ms} ms per {self.cpu_period_ms} ms must be "
                              "less than a core (or both 0)")
        object.__setattr__(self, "gflops_by_class", MappingProxyType(dict(self.gflops_by_class)))
        object.__setattr__(self, "gflops_by_kind", MappingProxyType(dict(self.gflops_by_kind)))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "weights", tuple(self.weights))


@dataclass(frozen=True)
class SignedRecord:
    record: CapabilityRecord
    blob: bytes


class Advertiser:
    """Makes this node's successive signed records."""

    def __init__(self, identity: Identity, capability: Capability, *, ttl_s: float, swarm: str = "default") -> None:
        if not ttl_s > 0:
            raise ConfigError(f"record ttl must be > 0 seconds, got {ttl_s}")
        self.identity = identity
        self.capability = capability
        self.ttl_s = ttl_s
        self.swarm = swarm
        self.current: SignedRecord | None = None

    def set_load(self, load: float) -> None:
        self.capability = replace(self.capability, load=min(max(float(load), 0.0), 1.0))

    def set_held(self, *, models: Sequence[str] | None = None, weights: Sequence[str] | None = None) -> None:
        cap = self.capability
        self.capability = replace(
            cap,
            models=tuple(models) if models is not None else cap.models,
            weights=tuple(weights) if weights is not None else cap.weights,
        )

    def sign_next(self, addrs: Sequence[str], *, now: float) -> SignedRecord:
        """A newly signed record (seq strictly above the previous one) valid for ttl_s."""
        cap = self.capability
        previous = self.current.record.seq if self.current else None
        record = CapabilityRecord(
            peer_id=self.identity.peer_id,
            seq=next_seq(previous, now=now),
            expires_at=now + self.ttl_s,
            addrs=tuple(addrs)[:MAX_ADVERTISED_ADDRS],
            gflops=cap.gflops,
            gflops_by_class=dict(cap.gflops_by_class),
            gflops_by_kind=dict(cap.gflops_by_kind),
            mem_bytes=cap.mem_bytes,
            up_mbps=cap.up_mbps,
            down_mbps=cap.down_mbps,
            latency_ms=cap.latency_ms,
            models=cap.models,
            weights=cap.weights,
            load=cap.load,
            swarm=self.swarm,
            frame_ms=cap.frame_ms,
            frame_ms_per_mib=cap.frame_ms_per_mib,
            cpu_quota_ms=cap.cpu_quota_ms,
            cpu_period_ms=cap.cpu_period_ms,
        )
        self.current = SignedRecord(record=record, blob=encode_signed(record, self.identity))
        return self.current
