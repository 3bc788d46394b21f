"""What each hop of a requester's circuit did, for the ledger and for its receipt.

`HopWork` counts, per hop of one circuit, the inputs it completed, their FLOPs and measured
seconds; when the circuit ends the requester signs one receipt per hop from it
(`issue_receipts`). A resumed input (p2pinfer/resume.py) went through two circuits: `SplitWork`
credits its prefix hops to the failed circuit's receipts and its suffix hops to the suffix's.
`HopRecord` is what `LedgerHooks.hops_ok` records for one completed hop; `hop_record` makes one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from p2pinfer.core.circuit import HopSpec
from p2pinfer.core.costs import span_seconds
from p2pinfer.core.profile import ModelProfile

log = logging.getLogger(__name__)


class HopWork:
    """Per hop of one circuit: completed inputs, flops and measured seconds (for its receipt)."""

    def __init__(self, hops: int) -> None:
        self.count, self.flops, self.seconds = [0] * hops, [0] * hops, [0.0] * hops

    def add(self, i: int, flops: int, seconds: float) -> None:
        if i < len(self.count):
            self.count[i] += 1
            self.flops[i] += flops
            self.seconds[i] += seconds


class SplitWork:
    """A resumed input's work: hops [0, prefix_hops) to `prefix`, the rest to `suffix`."""

    def __init__(self, prefix: HopWork, prefix_hops: int, suffix: HopWork) -> None:
        self.prefix, self.n, self.suffix = prefix, prefix_hops, suffix

    def add(self, i: int, flops: int, seconds: float) -> None:
        if i < self.n:
            self.prefix.add(i, flops, seconds)
        else:
            self.suffix.add(i - self.n, flops, seconds)


def span_flops(profile: ModelProfile, spec: HopSpec) -> int:
    return int(sum(layer.flops for layer in profile.layers[spec.start:spec.stop]))


@dataclass(frozen=True)
class HopRecord:
    """One completed hop for the ledger: its span's FLOPs (per class), the measured compute
    seconds, the speeds the peer advertised and the compute time the planner predicted from them
    (None: the peer's advertisement was not at hand; the ledger predicts from the class speeds)."""

    peer_id: str
    flops: int
    flops_by_class: Mapping[str, int]
    measured_s: float
    advertised_gflops: float
    advertised_by_class: Mapping[str, float] = field(default_factory=dict)
    predicted_s: float | None = None


def hop_record(profile: ModelProfile, advertised: Mapping[str, Any], peer_id: str, start: int, stop: int,
               measured: float) -> HopRecord:
    """The record of `peer_id` computing layers [start, stop) in `measured` seconds; `advertised`
    maps peer ids to their PeerSpec as advertised (Requester.last_specs)."""
    peer = advertised.get(peer_id)
    layers = profile.layers[start:stop]
    by_class: dict[str, int] = {}
    for layer in layers:
        for cls, f in layer.flops_by_class.items():
            by_class[cls] = by_class.get(cls, 0) + int(f)
    if peer is None:
        return HopRecord(peer_id, int(sum(lay.flops for lay in layers)), by_class, measured, 1.0)
    return HopRecord(peer_id, int(sum(lay.flops for lay in layers)), by_class, measured, peer.gflops,
                     dict(peer.gflops_by_class), span_seconds(layers, peer))


async def issue_receipts(hooks: Any, model_id: str, circuit_id: bytes, specs: Sequence[HopSpec], work: HopWork) -> None:
    """One signed receipt per hop that completed work on the circuit (hooks.issue_receipts)."""
    items = [(s.peer_id, s.addrs, s.start, s.stop, work.flops[i], work.seconds[i])
             for i, s in enumerate(specs) if work.count[i]]
    try:
        await hooks.issue_receipts(circuit_id=circuit_id, model_id=model_id, work=items)
    except Exception:  # task boundary: receipts never fail a request
        log.exception("issuing receipts for circuit %s failed", circuit_id.hex()[:8])
