"""Adversarial nodes in a real in-process swarm: a `crash_after_hops` node really dies (its host
closes; the requester gets a clear error, never a hang), and a corrupting node's outputs differ
from an honest run. Failover is the requester's business (tests of p2pinfer/fault.py); these
tests prove the node side misbehaves as configured."""

from __future__ import annotations

import time
from typing import Any
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import trio

from p2pinfer.adversary import AdversarialExecutor
from p2pinfer.config import load_node_config
from p2pinfer.errors import CircuitError, NetworkError
from p2pinfer.models import zoo
from p2pinfer.models.store import ModelStore
from p2pinfer.net.circuit_io import open_stream
from p2pinfer.net.hop_protocol import HOP_PROTOCOL

from tests.integration.run_swarm import TEST_REQUESTER, node_config, swarm_and_requester

ADVERSARIAL = Path(__file__).parents[2] / "node_configs" / "adversarial"
X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
# one attempt, and a result deadline short enough that a dead hop costs seconds (a requester
# without failover has no other way to learn that a hop died after taking its frame)
REQUESTER = replace(TEST_REQUESTER, max_attempts=1, circuit=replace(TEST_REQUESTER.circuit, result_timeout_s=3.0))


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    zoo.get_manifest("mlp", store=store)
    return store


def adversarial_example(name: str, **resources: object):  # type: ignore[no-untyped-def]
    """An example config from node_configs/adversarial/, with a fixed advertised speed (no
    calibration run) and its misbehaviour unchanged."""
    config = load_node_config(ADVERSARIAL / f"{name}.toml")
    return replace(config, resources=replace(config.resources, gflops=20.0, **resources))


async def test_crash_after_hops_node_disappears(store: ModelStore) -> None:
    crasher = adversarial_example("crasher")
    assert crasher.adversary.crash_after_hops == 2
    async with swarm_and_requester([crasher], store, config=REQUESTER) as (swarm, requester):
        member = swarm.member("adv-crasher")
        executor = member.hop.executor_fn
        assert isinstance(executor, AdversarialExecutor)
        for _ in range(2):  # two honest hops
            result = await requester.infer("mlp", X)
            assert [h.peer_id for h in result.hops] == [member.peer_id]
        started = time.monotonic()
        with pytest.raises((NetworkError, CircuitError)):
            with trio.fail_after(20):
                await requester.infer("mlp", X)
        assert time.monotonic() - started < 20
        assert member.killed and executor.crashed and executor.hops == 3
        with trio.fail_after(10):  # the node is gone: no stream can be opened to it any more
            await member.stopped.wait()
        assert not await _reachable(requester.host, member)


async def test_kill_stops_a_member_and_others_keep_serving(store: ModelStore) -> None:
    configs = [node_config("boot"), node_config("victim")]
    async with swarm_and_requester(configs, store, config=REQUESTER) as (swarm, requester):
        victim = swarm.kill("victim")
        assert victim.killed and swarm.kill("victim") is victim  # idempotent
        with pytest.raises(KeyError, match="no swarm member named 'nobody'"):
            swarm.kill("nobody")
        boot = swarm.member("boot")
        with trio.fail_after(10):  # its host shuts down: no stream can be opened to it any more
            await victim.stopped.wait()
        assert not await _reachable(requester.host, victim)
        assert not boot.killed and await _reachable(requester.host, boot)  # the survivor serves


async def _reachable(host: Any, member: Any) -> bool:
    try:
        stream = await open_stream(host, member.peer_id, HOP_PROTOCOL, timeout=2, addrs=member.node.listen_addrs)
    except NetworkError:
        return False
    await stream.reset()
    return True


async def test_corrupting_node_changes_floats_not_shapes(store: ModelStore) -> None:
    corrupter = adversarial_example("corrupter")
    honest = node_config("honest")
    outs: dict[str, np.ndarray] = {}
    for config in (honest, replace(corrupter, adversary=replace(corrupter.adversary, corrupt_probability=1.0))):
        async with swarm_and_requester([config], store, config=REQUESTER) as (_swarm, requester):
            outs[config.node.name] = (await requester.infer("mlp", X)).output
    (name,) = outs["honest"].keys()
    good, bad = outs["honest"][name], outs["adv-corrupter"][name]
    assert good.shape == bad.shape and good.dtype == bad.dtype
    assert not np.allclose(good, bad, rtol=1e-3, atol=1e-4)
