"""Helpers for the fault-handling tests: an embedded swarm of `mlp` nodes (small enough that
every plan needs at least 3 hops), a Requester with LedgerHooks on a fresh ledger, and the
local reference outputs to compare with."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import numpy as np
import torch

from p2pinfer.client import Requester, RequesterConfig
from p2pinfer.config import NodeConfig, config_from_dict
from p2pinfer.fault import FaultOptions, LedgerHooks
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.store import ModelStore
from p2pinfer.net.circuit_client import ClientConfig
from p2pinfer.swarm import LocalSwarm, SwarmOptions

MLP_MEM = 263168  # one of mlp's two big layers (or its two small ones) per peer: >= 3 hops
FAULT_REQUESTER = RequesterConfig(use_dht=False, discovery_timeout_s=5.0, max_attempts=4, max_in_flight=8,
                                  circuit=ClientConfig(io_timeout_s=5.0, setup_timeout_s=10.0, result_timeout_s=20.0,
                                                       close_timeout_s=2.0))
FAST = SwarmOptions(emulate=False)


def mlp_node(name: str, *, gflops: float = 20.0, adversary: dict[str, Any] | None = None,
             emulation: dict[str, Any] | None = None, mem_bytes: int = MLP_MEM) -> NodeConfig:
    doc: dict[str, Any] = {"node": {"name": name, "listen": ["/ip4/127.0.0.1/tcp/0"], "record_ttl_s": 60,
                                    "republish_s": 20},
                           "resources": {"mem_bytes": mem_bytes, "max_concurrent_circuits": 16, "gflops": gflops},
                           "emulation": emulation or {}}
    if adversary:
        doc["adversary"] = adversary
    return config_from_dict(doc, origin=name)


def inputs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(n)]


def reference(store: ModelStore, xs: Sequence[np.ndarray]) -> np.ndarray:
    """run_local's answer for every input (one batch through the whole model here)."""
    manifest = zoo.get_manifest("mlp", store=store)
    executor = SpanExecutor(store)
    with torch.inference_mode():
        outs = [executor.run(manifest, 0, manifest.num_layers, {"x": torch.from_numpy(np.concatenate(xs[i:i + 64]))})["x"]
                for i in range(0, len(xs), 64)]
    return np.concatenate([o.numpy() for o in outs])


def max_error(outputs: Sequence[Any], want: np.ndarray) -> float:
    got = np.concatenate([np.asarray(o["x"]) for o in outputs])
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want)))


@asynccontextmanager
async def fault_swarm(tmp: Path, configs: Sequence[NodeConfig], *, options: FaultOptions = FaultOptions(),
                      config: RequesterConfig = FAULT_REQUESTER,
                      swarm_options: SwarmOptions = FAST) -> AsyncIterator[tuple[LocalSwarm, Requester, LedgerHooks]]:
    store = ModelStore(tmp / "store")
    zoo.get_manifest("mlp", store=store)
    hooks = LedgerHooks.open(tmp / "requester", options=options)
    try:
        async with LocalSwarm(list(configs), store=store, options=swarm_options) as swarm:
            async with Requester(swarm.bootstrap_addrs, store=store, config=config, hooks=hooks) as requester:
                yield swarm, requester, hooks
    finally:
        hooks.close()


def name_of(swarm: LocalSwarm, peer_id: str) -> str:
    return next(m.name for m in swarm.members if m.peer_id == peer_id)


def with_attempts(config: RequesterConfig, n: int) -> RequesterConfig:
    return replace(config, max_attempts=n)
