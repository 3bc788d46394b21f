"""Replicated streams on an embedded swarm of real loopback hosts: inputs spread over several
disjoint chains, pull-based; every output equals local compute in input order; a chain whose
node is killed mid-stream has its inputs re-dispatched to the surviving chains."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import trio

from p2pinfer.cli import main
from p2pinfer.core.replicas import ReplicaOptions
from p2pinfer.errors import CircuitError
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.store import ModelStore
from p2pinfer.net.replicated_run import run_replicated
from p2pinfer.replicated_stream import ReplicatedStreamResult, plan_for

from tests.integration.fault_swarm import FAULT_REQUESTER, fault_swarm, inputs, max_error, mlp_node, reference
from tests.integration.run_swarm import TEST_REQUESTER, node_config, swarm_and_requester, swarm_dir

REPLICATED = replace(TEST_REQUESTER, replicas=ReplicaOptions(max_chains=None))


def _local(store: ModelStore, xs: np.ndarray) -> np.ndarray:
    manifest = zoo.get_manifest("mlp", store=store)
    with torch.inference_mode():
        return SpanExecutor(store).run(manifest, 0, manifest.num_layers, {"x": torch.from_numpy(xs)})["x"].numpy()


def _got(result: ReplicatedStreamResult) -> np.ndarray:
    return np.concatenate([np.asarray(o["x"]) for o in result.outputs])


async def test_stream_spreads_over_chains_and_equals_local(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    xs = np.random.default_rng(5).standard_normal((16, 64)).astype(np.float32)
    configs = [node_config(f"r{i}", gflops=10.0 + 5 * i) for i in range(3)]
    async with swarm_and_requester(configs, store, config=REPLICATED) as (_swarm, requester):
        done: list[int] = []
        result = await requester.infer_stream("mlp", [x[None] for x in xs], on_result=done.append)
    assert isinstance(result, ReplicatedStreamResult)
    assert result.replicated is not None and len(result.replicated.chains) == 3
    assert float(np.max(np.abs(_got(result) - _local(store, xs)))) <= 1e-5
    assert done == list(range(1, 17))
    assert all(c.error is None and c.inputs >= 1 for c in result.chains)  # every chain pulled work
    assert sum(c.inputs for c in result.chains) == 16 and sorted(set(result.chain_of)) == [0, 1, 2]
    doc = result.to_json_dict()
    assert doc["count"] == 16 and doc["plan"]["objective"] == "throughput" and len(doc["replicated"]["chains"]) == 3
    peers = [h["peer"] for c in doc["replicated"]["chains"] for h in c["hops"]]
    assert len(peers) == len(set(peers))  # disjoint


async def test_a_killed_chain_is_redispatched_to_the_survivors(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    xs = np.random.default_rng(6).standard_normal((40, 64)).astype(np.float32)
    configs = [node_config(f"k{i}", gflops=10.0 + i) for i in range(3)]
    async with swarm_and_requester(configs, store, config=REPLICATED) as (swarm, requester):
        manifest = requester.manifest("mlp")
        snapshot, addrs = await requester.snapshot()
        rplan = plan_for(requester, manifest, snapshot)
        assert len(rplan.chains) == 3
        victim_id = rplan.chains[1].hops[0].peer_id
        victim = next(m.name for m in swarm.members if m.peer_id == victim_id)

        def on_result(done: int, _chain: int) -> None:
            if done == 4:
                swarm.kill(victim)

        run = await run_replicated(requester.client, plan=rplan, manifest=manifest, inputs=[{"x": x[None]} for x in xs],
                                   peer_addrs=addrs, timeout_s=30.0, on_result=on_result)
    got = np.concatenate([np.asarray(o["x"]) for o in run.outputs])
    assert float(np.max(np.abs(got - _local(store, xs)))) <= 1e-5  # no input lost, all in order
    dead = run.chains[1]
    assert dead.error is not None  # the chain of the killed node stopped early, with its reason
    assert all(c.error is None for i, c in enumerate(run.chains) if i != 1)
    assert sum(c.inputs for c in run.chains) == 40 and dead.inputs < 40 - 2


async def test_every_chain_failing_is_a_clear_error(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    configs = [node_config(f"d{i}", gflops=10.0 + i) for i in range(2)]
    async with swarm_and_requester(configs, store, config=REPLICATED) as (swarm, requester):
        manifest = requester.manifest("mlp")
        snapshot, addrs = await requester.snapshot()
        rplan = plan_for(requester, manifest, snapshot)
        assert len(rplan.chains) == 2

        def on_result(done: int, _chain: int) -> None:
            if done == 2:
                for m in swarm.members:
                    swarm.kill(m.name)

        xs = [{"x": np.full((1, 64), float(i), np.float32)} for i in range(30)]
        with pytest.raises(CircuitError, match="without a result: every chain failed"):
            await run_replicated(requester.client, plan=rplan, manifest=manifest, inputs=xs, peer_addrs=addrs,
                                 timeout_s=20.0, on_result=on_result)


def test_cli_streams_over_chains_unless_single_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ModelStore(tmp_path / "store")
    xs = np.random.default_rng(8).standard_normal((9, 64)).astype(np.float32)
    np.save(tmp_path / "batch.npy", xs)
    swarm = swarm_dir(tmp_path)
    common = ["run", "mlp", "--input-file", str(tmp_path / "batch.npy"), "--swarm", str(swarm),
              "--data-dir", str(store.root), "--json"]
    want = _local(store, xs)
    assert main(common) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert "3 chains at once" in out.err
    chains = doc["replicated"]["chains"]
    assert len(chains) == 3 and sum(c["inputs"] for c in chains) == 9 and doc["replicated"]["upper_bound_rps"] > 0
    assert {"model", "outputs", "count", "throughput_rps", "plan", "hops"} <= set(doc)  # the existing keys stay
    got = np.stack([np.asarray(o["data"], np.float32) for o in doc["outputs"]])
    assert float(np.max(np.abs(got - want))) <= 1e-5
    assert main([*common, "--single-chain"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "replicated" not in doc and doc["count"] == 9
    got = np.stack([np.asarray(o["data"], np.float32) for o in doc["outputs"]])
    assert float(np.max(np.abs(got - want))) <= 1e-5


def test_cli_rejects_bad_chain_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "batch.npy", np.zeros((2, 64), np.float32))
    assert main(["run", "mlp", "--input-file", str(tmp_path / "batch.npy"), "--chains", "0",
                 "--data-dir", str(tmp_path / "store")]) == 2
    assert "--chains must be >= 1, got 0" in capsys.readouterr().err


async def test_replicated_stream_spot_checks_catch_a_corrupter_and_recompute_its_results(tmp_path: Path) -> None:
    """With the ledger's hooks every chain is audited like a single-chain stream: a peer that
    corrupts 30% of its outputs is convicted (probation: all its hops are checked), its chain
    is dropped and every result it delivered is recomputed elsewhere; honest peers are credited."""
    mem = 66560 + 263168  # mlp's first two layers: two hops per chain, so audits also fetch retained outputs
    liar_config = mlp_node("corrupter", gflops=400.0, adversary={"corrupt_probability": 0.3}, mem_bytes=mem)
    configs = [liar_config] + [mlp_node(f"h{i}", gflops=10.0 + 2 * i, mem_bytes=mem) for i in range(5)]
    xs = inputs(40, seed=4)
    config = replace(FAULT_REQUESTER, replicas=ReplicaOptions(max_chains=None))
    async with fault_swarm(tmp_path, configs, config=config) as (swarm, requester, hooks):
        hooks.secret = bytes(range(32))  # fixed spot-check selection
        liar = swarm.member("corrupter").peer_id
        with trio.fail_after(60):
            result = await requester.infer_stream("mlp", xs)
        assert isinstance(result, ReplicatedStreamResult) and result.replicated is not None
        assert len(result.replicated.chains) >= 2 and liar in result.replicated.peers
        assert max_error(result.outputs, reference(requester.store, xs)) <= 1e-5  # nothing corrupted delivered
        view = hooks.ledger.peer(liar, hooks.clock())
        assert view is not None and view.excluded and view.state.verification_failures == 1
        dead = [c for c, plan in zip(result.chains, result.replicated.chains) if liar in {h.peer_id for h in plan.hops}]
        assert dead[0].error is not None and dead[0].inputs == 0  # its results were recalled
        honest = [v for v in hooks.ledger.peers(hooks.clock()) if v.peer_id != liar]
        assert all(not v.excluded and v.state.verification_failures == 0 for v in honest)
        assert sum(v.state.hops_ok for v in honest) >= 40  # the survivors' hops were credited


async def test_a_stalling_chain_misses_its_deadline_and_the_others_finish(tmp_path: Path) -> None:
    """With the ledger's hooks a chain gets the single-chain engine's result deadline (from its
    predicted times), so a hop that stalls costs seconds, not the 20 s result timeout."""
    configs = [mlp_node("staller", gflops=30.0, adversary={"stall_after_hops": 2, "stall_seconds": 60.0}, mem_bytes=1 << 30)]
    configs += [mlp_node(f"s{i}", gflops=10.0 + i, mem_bytes=1 << 30) for i in range(2)]
    xs = inputs(30, seed=9)
    config = replace(FAULT_REQUESTER, replicas=ReplicaOptions(max_chains=None))
    async with fault_swarm(tmp_path, configs, config=config) as (swarm, requester, hooks):
        staller = swarm.member("staller").peer_id
        with trio.fail_after(15):  # well under the 20 s result timeout of FAULT_REQUESTER
            result = await requester.infer_stream("mlp", xs)
        assert isinstance(result, ReplicatedStreamResult) and result.replicated is not None
        assert max_error(result.outputs, reference(requester.store, xs)) <= 1e-5
        stalled = [c for c, plan in zip(result.chains, result.replicated.chains) if staller in {h.peer_id for h in plan.hops}]
        assert stalled and stalled[0].error is not None and "no result within" in stalled[0].error
        assert stalled[0].inputs <= 2
