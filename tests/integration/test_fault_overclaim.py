"""Measured speed feeds the planner: a peer advertising 10x its real compute is chosen at first,
measured on its first hops, and then no longer planned for the spans where it is slower than
the honest peers (its planned speed is its measured one)."""

from __future__ import annotations

from pathlib import Path

import trio

from p2pinfer.swarm import SwarmOptions

from tests.integration.fault_swarm import fault_swarm, inputs, max_error, mlp_node, reference

HONEST_GFLOPS = 0.02  # below what mlp's spans really reach here, so honest peers under-promise
# the liar claims 10x the honest speed (overclaim_factor) but computes ~200x slower than it really can
LIAR = mlp_node("liar", gflops=HONEST_GFLOPS, adversary={"overclaim_factor": 10.0},
                emulation={"compute_slowdown": 300.0})


async def test_overclaiming_peer_is_planned_at_its_measured_speed(tmp_path: Path) -> None:
    configs = [LIAR] + [mlp_node(f"h{i}", gflops=HONEST_GFLOPS) for i in range(4)]
    xs = inputs(8, seed=5)
    async with fault_swarm(tmp_path, configs, swarm_options=SwarmOptions(emulate=True)) as (swarm, requester, hooks):
        liar = swarm.member("liar").peer_id
        want = reference(requester.store, xs)
        used: list[bool] = []
        for x in xs:
            with trio.fail_after(30):
                result = await requester.infer("mlp", x)
            used.append(liar in {h.peer_id for h in result.plan.hops})
            assert max_error([result.output], want[len(used) - 1:len(used)]) <= 1e-5
        assert used[0], "the 10x claim should win the first plan"
        assert not any(used[4:]), f"still planned after being measured: {used}"
        view = hooks.ledger.peer(liar, hooks.clock())
        assert view is not None and view.measured_gflops is not None
        assert view.measured_gflops < view.advertised_gflops / 4 and not view.excluded
        spec = requester.last_specs[liar]
        planned = hooks.ledger.adjust_peer_spec(spec, hooks.clock())
        assert planned.gflops == view.measured_gflops < HONEST_GFLOPS
