"""Spot-check verification on real hops: a peer corrupting 30% of its outputs is caught (during
probation every one of its hops is checked) and excluded within 20 of its hops, and no corrupted
output reaches the caller; after probation (10% checks) the run still returns only correct
outputs, because detection recalls every result that went through the detected peer; and 1,000
honest hops with spot checks never exclude an honest peer."""

from __future__ import annotations

from pathlib import Path

import trio

from p2pinfer.core.verification import VerificationPolicy
from p2pinfer.fault import FaultOptions

from tests.conftest import async_wait_until
from tests.integration.fault_swarm import fault_swarm, inputs, max_error, mlp_node, reference

SECRET = bytes(range(32))  # fixed spot-check selection: the same run every time


def _swarm(corrupter_q: float = 0.3) -> list:
    liar = mlp_node("corrupter", gflops=400.0, adversary={"corrupt_probability": corrupter_q})
    return [liar] + [mlp_node(f"h{i}", gflops=10.0 + 2 * i) for i in range(5)]


async def test_corrupter_excluded_within_20_hops_and_no_corrupted_output_delivered(tmp_path: Path) -> None:
    xs = inputs(60, seed=2)
    async with fault_swarm(tmp_path, _swarm()) as (swarm, requester, hooks):
        hooks.secret = SECRET
        liar = swarm.member("corrupter").peer_id
        with trio.fail_after(60):
            result = await requester.infer_stream("mlp", xs)
        assert max_error(result.outputs, reference(requester.store, xs)) <= 1e-5  # nothing corrupted delivered
        view = hooks.ledger.peer(liar, hooks.clock())
        assert view is not None and view.excluded and view.state.verification_failures == 1
        assert view.state.hops_ok + 1 <= 20  # caught on one of its first 20 hops
        assert liar not in {h.peer_id for h in result.plan.hops}
        honest = [v for v in hooks.ledger.peers(hooks.clock()) if v.peer_id != liar]
        assert all(not v.excluded and v.state.verification_failures == 0 for v in honest)


async def test_after_probation_detection_recalls_every_result_through_the_corrupter(tmp_path: Path) -> None:
    steady = FaultOptions(policy=VerificationPolicy(fraction=0.1, probation_hops=0))
    xs = inputs(150, seed=3)
    async with fault_swarm(tmp_path, _swarm(), options=steady) as (swarm, requester, hooks):
        hooks.secret = SECRET
        liar = swarm.member("corrupter").peer_id
        with trio.fail_after(60):
            result = await requester.infer_stream("mlp", xs)
        view = hooks.ledger.peer(liar, hooks.clock())
        assert view is not None and view.excluded  # detected within this run (seeded)
        assert max_error(result.outputs, reference(requester.store, xs)) <= 1e-5


async def test_zero_false_exclusions_across_1000_honest_hops(tmp_path: Path) -> None:
    configs = [mlp_node(f"h{i}", gflops=10.0 + 3 * i) for i in range(5)]
    xs = inputs(300, seed=4)
    async with fault_swarm(tmp_path, configs) as (swarm, requester, hooks):
        hooks.secret = SECRET
        with trio.fail_after(90):
            result = await requester.infer_stream("mlp", xs)
        # every hop got signed receipts for its work: the requester spent, each planned hop earned
        planned = [m for m in swarm.members if m.peer_id in {h.peer_id for h in result.plan.hops}]
        await async_wait_until(lambda: all(m.ledger.totals()["receipts"] > 0 and m.ledger.credit_of(
            requester.identity.peer_id) < 0 for m in planned), timeout=10, what="hops to credit their receipts")
        assert hooks.ledger.totals()["receipts"] >= len(planned)
        assert max_error(result.outputs, reference(requester.store, xs)) <= 1e-5
        views = hooks.ledger.peers(hooks.clock())
        assert sum(v.state.hops_ok for v in views) >= 1000
        assert all(not v.excluded and v.state.verification_failures == 0 and v.state.failures == 0
                   and v.state.timeouts == 0 and v.reputation >= 2 / 3 - 1e-9 for v in views)
        assert result.attempts == 1
