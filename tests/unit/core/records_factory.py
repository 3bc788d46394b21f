"""Shared builders for record tests: fixed identities, a fixed clock, valid records."""

from __future__ import annotations

from typing import Any

from p2pinfer.core.records import CapabilityRecord
from p2pinfer.crypto.identity import Identity

NOW = 1_800_000_000.0
ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
CAROL = Identity.from_seed(b"c" * 32)


def make_record(identity: Identity = ALICE, **overrides: Any) -> CapabilityRecord:
    """A realistic valid record of `identity`, fresh at NOW for 5 minutes."""
    fields: dict[str, Any] = dict(
        peer_id=identity.peer_id,
        seq=int(NOW * 1000),
        expires_at=NOW + 300.0,
        addrs=(
            f"/ip4/192.168.1.20/tcp/4001/p2p/{identity.peer_id}",
            f"/ip6/::1/tcp/4001/p2p/{identity.peer_id}",
        ),
        gflops=41.5,
        gflops_by_class={"linear": 48.0, "conv": 30.25, "attention": 22.0, "other": 3.5},
        mem_bytes=3 * 2**30,
        up_mbps=20.0,
        down_mbps=80.0,
        latency_ms=12.5,
        models=("all-minilm-l6-v2",),
        weights=tuple(f"sha256:{i:064x}" for i in range(3)),
        load=0.25,
        swarm="default",
    )
    fields.update(overrides)
    return CapabilityRecord(**fields)
