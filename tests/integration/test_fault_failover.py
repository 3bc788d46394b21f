"""Failover: a stream survives a peer killed mid-chain (no input lost, order kept, every output
equal to local compute); a staller misses its per-hop deadline and is routed around; with no
route left the requester fails with an explicit error instead of hanging."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

from p2pinfer.core.verification import VerificationPolicy
from p2pinfer.errors import NoRouteError
from p2pinfer.fault import FaultOptions

from tests.integration.fault_swarm import (FAULT_REQUESTER, fault_swarm, inputs, max_error, mlp_node, name_of,
                                           reference, with_attempts)

NO_CHECKS = FaultOptions(policy=VerificationPolicy.off(), deadline_grace_s=1.0, probe_setup_s=3.0)


async def test_stream_of_200_survives_a_mid_chain_peer_killed(tmp_path: Path) -> None:
    configs = [mlp_node(f"p{i}", gflops=10.0 + 3 * i) for i in range(6)]
    xs = inputs(200)
    async with fault_swarm(tmp_path, configs, options=NO_CHECKS) as (swarm, requester, hooks):
        snapshot, _ = await requester.snapshot()
        plan = requester.plan(requester.manifest("mlp"), snapshot, "throughput")
        assert len(plan.hops) >= 3
        victim = name_of(swarm, plan.hops[1].peer_id)
        killed_at: list[int] = []

        def progress(done: int) -> None:
            if done >= 60 and not killed_at:
                killed_at.append(done)
                swarm.kill(victim)

        with trio.fail_after(90):
            result = await requester.infer_stream("mlp", xs, on_result=progress)
        victim_id = swarm.member(victim).peer_id
        assert killed_at and result.attempts >= 2
        assert len(result.outputs) == 200 and max_error(result.outputs, reference(requester.store, xs)) <= 1e-5
        assert victim_id not in {h.peer_id for h in result.plan.hops}
        view = hooks.ledger.peer(victim_id, hooks.clock())
        assert view is not None and view.state.failures >= 1
        honest = [v for v in hooks.ledger.peers(hooks.clock()) if v.peer_id != victim_id]
        assert honest and all(v.state.failures == 0 and v.state.timeouts == 0 for v in honest)


@pytest.mark.parametrize("resume", [False, True], ids=["restart", "resume"])
async def test_staller_misses_its_deadline_and_is_routed_around(tmp_path: Path, resume: bool) -> None:
    stall = {"stall_after_hops": 2, "stall_seconds": 8.0}
    configs = [mlp_node("s", gflops=500.0, adversary=stall)] + [mlp_node(f"h{i}", gflops=10.0 + i) for i in range(4)]
    xs = inputs(6, seed=1)
    async with fault_swarm(tmp_path, configs, options=replace(NO_CHECKS, resume=resume)) as (swarm, requester, hooks):
        staller = swarm.member("s").peer_id
        started = trio.current_time()
        with trio.fail_after(40):
            result = await requester.infer_stream("mlp", xs, objective="latency")
        assert max_error(result.outputs, reference(requester.store, xs)) <= 1e-5
        handed = sum(m.hop.hop.handoffs.counters.frames_sent for m in swarm.members)
        if resume and result.attempts == 1:  # every input was in flight: the unanswered ones resumed past it
            assert handed >= 1 and staller in {h.peer_id for h in result.plan.hops}
        else:  # re-planned without it (the staller was the first hop, or resumption is off)
            assert result.attempts >= 2 and staller not in {h.peer_id for h in result.plan.hops}
            assert handed == 0 or resume
        view = hooks.ledger.peer(staller, hooks.clock())
        assert view is not None and view.state.timeouts >= 1
        assert trio.current_time() - started < 8.0 + 30  # the deadline fired; nothing waited unbounded


async def test_no_route_left_is_an_explicit_error(tmp_path: Path) -> None:
    """mlp needs 4 of these peers; each crashes on its second hop: after the first crash only 3
    are left, which cannot cover the model."""
    configs = [mlp_node(f"c{i}", adversary={"crash_after_hops": 1}) for i in range(4)]
    async with fault_swarm(tmp_path, configs, options=NO_CHECKS,
                           config=with_attempts(FAULT_REQUESTER, 3)) as (_swarm, requester, hooks):
        with trio.fail_after(40), pytest.raises(NoRouteError, match="no route remains for mlp.*last failure"):
            await requester.infer_stream("mlp", inputs(5))
        crashed = [v for v in hooks.ledger.peers(hooks.clock()) if v.state.failures]
        # a peer completes at most its one hop before it crashes (a hop computes its next input while
        # its last output is still on the wire, so the first crash may take that output with it)
        assert len(crashed) >= 1 and all(v.state.hops_ok <= 1 for v in hooks.ledger.peers(hooks.clock()))
