"""Replicated stream -> single-chain fallback, end to end on real loopback hosts.

When every chain of a replicated plan fails, `stream_replicated` returns None and the
requester's single-chain path (re-planning, failover) must take over and still deliver every
input's result. Here each of the replicated plan's three chains holds one of the swarm's three
fast peers, and each of those crashes (its node stops, as a power cut would) on its third
input; the slow fourth peer, the bootstrap, is what the single-chain path re-plans onto. The
requester has the default 3 attempts: the fallback must not spend them on the dead peers.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from p2pinfer.core.replicas import ReplicaOptions
from p2pinfer.replicated_stream import ReplicatedStreamResult, plan_for
from p2pinfer.results import StreamResult

from tests.integration.fault_swarm import FAULT_REQUESTER, fault_swarm, inputs, max_error, mlp_node, reference

WHOLE_MODEL = 1 << 30  # every peer could hold all of mlp
THREE_CHAINS = replace(FAULT_REQUESTER, max_attempts=3, replicas=ReplicaOptions(max_chains=3))


async def test_every_chain_failing_falls_back_to_one_chain_and_delivers_every_result(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="p2pinfer")
    crash = {"crash_after_hops": 2}
    configs = [mlp_node("spare", gflops=5.0, mem_bytes=WHOLE_MODEL)]  # the bootstrap: outlives the crashes
    configs += [mlp_node(f"fast{i}", gflops=50.0 + 10 * i, adversary=crash, mem_bytes=WHOLE_MODEL) for i in range(3)]
    xs = inputs(12, seed=11)
    async with fault_swarm(tmp_path, configs, config=THREE_CHAINS) as (swarm, requester, hooks):
        spare = swarm.member("spare").peer_id
        fast = {swarm.member(f"fast{i}").peer_id for i in range(3)}
        snapshot, _ = await requester.snapshot()
        rplan = plan_for(requester, requester.manifest("mlp"), snapshot)
        assert len(rplan.chains) == 3 and all(fast & {h.peer_id for h in c.hops} for c in rplan.chains)

        progress: list[int] = []
        with trio.fail_after(30):
            result = await requester.infer_stream("mlp", xs, on_result=progress.append)

        assert all(swarm.member(f"fast{i}").killed for i in range(3))  # every chain really lost a peer
        messages = [r.getMessage() for r in caplog.records]
        assert any("replicated stream of 12 input(s) over 3 chains" in m for m in messages)
        assert any("replicated stream failed" in m and "every chain failed" in m for m in messages)
        forgotten = [m for m in messages if m.startswith("the single-chain fallback plans without")]
        assert len(forgotten) == 1 and spare not in forgotten[0]
        left_out = {p for p in fast if p in forgotten[0]}
        assert left_out  # spotting the dead is best-effort (a connection may not have closed yet) ...
        # ... and each dead peer left out saves the single-chain path one attempt: with all three
        # left out it answers on its first attempt, over the surviving peer
        assert type(result) is StreamResult and not isinstance(result, ReplicatedStreamResult)
        assert [h.peer_id for h in result.plan.hops] == [spare] and result.attempts <= 1 + len(fast - left_out)
        assert progress[-12:] == list(range(1, 13))  # it computed the whole batch itself
        assert len(result.outputs) == 12 and max_error(result.outputs, reference(requester.store, xs)) <= 1e-5
        view = hooks.ledger.peer(spare, hooks.clock())
        assert view is not None and view.state.hops_ok >= 12 and not view.excluded
