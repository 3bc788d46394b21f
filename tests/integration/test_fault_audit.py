"""Audits after the fact on real hops (failover.py rule 5): a corrupter that misbehaves ONLY
when it sits inside a multi-hop circuit (and computes honestly whenever it runs alone, as the
old one-hop spot check and the failure probes run it) is still caught, excluded, and none of its
corrupted outputs reaches the caller. Its evidence is its own retained output, pinned by the
commitment it sent before anyone asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trio

from p2pinfer.core.circuit import HopSpec
from p2pinfer.core.verification import VerificationPolicy
from p2pinfer.fault import FaultOptions
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor, span_hashes

from tests.integration.fault_swarm import fault_swarm, inputs, max_error, mlp_node, reference

SECRET = bytes(range(32))


def _corrupt_inside_multihop_circuits(service) -> list[int]:  # type: ignore[no-untyped-def]
    """Patch a hop so it adds 1.0 to its output unless it is alone in its circuit."""
    machine, real, corrupted = service.machine, service.machine.finish, [0]

    def finish(c, output, compute_us):  # type: ignore[no-untyped-def]
        a = machine.assignment(c.circuit_id)
        if a is not None and not (a.in_link == 0 and a.next_hop.final):
            output = {name: np.asarray(v) + 1.0 for name, v in output.items()}
            corrupted[0] += 1
        return real(c, output, compute_us)

    machine.finish = finish
    return corrupted


def _swarm() -> list:
    return [mlp_node("sneak", gflops=400.0)] + [mlp_node(f"h{i}", gflops=10.0 + 2 * i) for i in range(5)]


async def _one_hop(requester, spec: HopSpec, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    circuit = await requester.client.open_circuit(model_id=requester.manifest("mlp").model_id, hops=[spec])
    async with circuit:
        return np.asarray((await circuit.infer({"x": x}, timeout=10)).act["x"])


def _local(store, start: int, stop: int, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    manifest = zoo.get_manifest("mlp", store=store)
    with torch.inference_mode():
        return SpanExecutor(store).run(manifest, start, stop, {"x": torch.from_numpy(x)})["x"].numpy()


@pytest.mark.parametrize("policy", [VerificationPolicy(), VerificationPolicy(fraction=0.1, probation_hops=0)],
                         ids=["probation", "10pct-audits"])
async def test_corrupter_hidden_from_one_hop_checks_is_caught_by_audits(tmp_path: Path, policy: VerificationPolicy) -> None:
    xs = inputs(150, seed=5)
    async with fault_swarm(tmp_path, _swarm(), options=FaultOptions(policy=policy)) as (swarm, requester, hooks):
        hooks.secret = SECRET
        sneak = swarm.member("sneak")
        corrupted = _corrupt_inside_multihop_circuits(sneak.hop.hop)
        # alone in a circuit (how the old spot check and the failure probes run a hop) it is honest
        _snapshot, addrs = await requester.snapshot()
        manifest = requester.manifest("mlp")
        spec = HopSpec(sneak.peer_id, tuple(addrs[sneak.peer_id]), 1, 2, tuple(span_hashes(manifest, 1, 2)))
        h = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256)
        assert np.max(np.abs(await _one_hop(requester, spec, h) - _local(requester.store, 1, 2, h))) <= 1e-5
        assert corrupted[0] == 0
        with trio.fail_after(90):
            result = await requester.infer_stream("mlp", xs)
        assert corrupted[0] >= 1  # it was planned inside a multi-hop circuit and cheated there
        assert max_error(result.outputs, reference(requester.store, xs)) <= 1e-5  # nothing corrupted delivered
        view = hooks.ledger.peer(sneak.peer_id, hooks.clock())
        assert view is not None and view.excluded and view.state.verification_failures == 1
        assert sneak.peer_id not in {hop.peer_id for hop in result.plan.hops}
        honest = [v for v in hooks.ledger.peers(hooks.clock()) if v.peer_id != sneak.peer_id]
        assert all(not v.excluded and v.state.verification_failures == 0 for v in honest)
