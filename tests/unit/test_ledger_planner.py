"""Ledger snapshots feed the real planner: over-claimers and excluded peers stop being chosen."""

from __future__ import annotations

from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.planner import plan
from p2pinfer.core.profile import LayerProfile, ModelProfile
from p2pinfer.core.reputation import EventKind
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot
from p2pinfer.ledger import Ledger

GFLOP = 10**9
PROFILE = ModelProfile(name="toy", model_id="toy", input_bytes=1000, layers=tuple(
    LayerProfile(index=i, kind="linear", flops=5 * GFLOP, param_bytes=1000, out_bytes=1000) for i in range(4)))
REQUESTER = RequesterSpec(up_mbps=1000.0, down_mbps=1000.0, latency_ms=1.0)
ADVERTISED = {"liar": 100.0, "honest": 40.0}  # the liar really runs at 10 GFLOP/s


def snapshot(led: Ledger, now: float) -> SwarmSnapshot:
    specs = [PeerSpec(peer_id=p, gflops=g, mem_bytes=10**9, up_mbps=1000.0, down_mbps=1000.0, latency_ms=1.0)
             for p, g in ADVERTISED.items()]
    return SwarmSnapshot(requester=REQUESTER, peers=tuple(led.adjust_peer_spec(s, now) for s in specs))


def used(p) -> set[str]:
    return {hop.peer_id for hop in p.hops}


def test_overclaimer_is_dropped_after_three_measured_hops(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        assert used(plan(PROFILE, snapshot(led, 0.0))) == {"liar"}  # believed at first
        for i in range(3):
            led.record_hop_ok("liar", now=float(i), flops=20 * GFLOP, measured_s=2.0, advertised_gflops=100.0)
            led.record_hop_ok("honest", now=float(i), flops=20 * GFLOP, measured_s=0.5, advertised_gflops=40.0)
        assert used(plan(PROFILE, snapshot(led, 3.0))) == {"honest"}


def test_excluded_peer_is_never_planned(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        for i in range(4):
            led.record_failure("liar", EventKind.TIMEOUT, now=float(i))
        snap = snapshot(led, 4.0)
        assert "liar" in led.excluded(4.0)
        assert used(plan(PROFILE, snap, options=PlannerOptions())) == {"honest"}
