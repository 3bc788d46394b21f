"""Helpers for the `p2pinfer run` integration tests: node configs built in code, an embedded
swarm of real Nodes (p2pinfer.swarm.LocalSwarm) plus a Requester on it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

from p2pinfer.client import Requester, RequesterConfig, RequesterHooks
from p2pinfer.config import NodeConfig, config_from_dict
from p2pinfer.core.profile import ModelProfile
from p2pinfer.models.store import ModelStore
from p2pinfer.net.circuit_client import ClientConfig
from p2pinfer.swarm import LocalSwarm, SwarmOptions

TEST_REQUESTER = RequesterConfig(use_dht=False, discovery_timeout_s=5.0, max_attempts=3,
                                 circuit=ClientConfig(io_timeout_s=10.0, setup_timeout_s=60.0, result_timeout_s=60.0))
FULL_SPEED = SwarmOptions(emulate=False)


def node_config(name: str, *, mem_bytes: int = 1 << 30, gflops: float | None = 20.0, **emulation: Any) -> NodeConfig:
    """A loopback node; a `gflops` override skips the compute calibration (fast, deterministic)."""
    resources: dict[str, Any] = {"mem_bytes": mem_bytes, "max_concurrent_circuits": 4}
    if gflops is not None:
        resources["gflops"] = gflops
    doc = {"node": {"name": name, "listen": ["/ip4/127.0.0.1/tcp/0"], "record_ttl_s": 60, "republish_s": 20},
           "resources": resources, "emulation": emulation}
    return config_from_dict(doc, origin=name)


def memories_for_hops(profile: ModelProfile, peers: int = 5) -> list[int]:
    """Per-peer memory that forces a multi-hop plan: one peer just fits the largest layer, the
    others just fit half of the remaining weights (and every other layer). A model whose
    weights are spread over its chain then needs at least 3 hops; the test asserts it."""
    sizes = [layer.param_bytes for layer in profile.layers]
    big = max(sizes)
    rest = sorted(sizes)[:-1]
    small = max(max(rest, default=0), (sum(sizes) - big) // 2 + 1)
    return [big] + [small] * (peers - 1)


@asynccontextmanager
async def swarm_and_requester(configs: Sequence[NodeConfig], store: ModelStore, *,
                              options: SwarmOptions = FULL_SPEED, hooks: RequesterHooks | None = None,
                              config: RequesterConfig = TEST_REQUESTER) -> AsyncIterator[tuple[LocalSwarm, Requester]]:
    async with LocalSwarm(list(configs), store=store, options=options) as swarm:
        async with Requester(swarm.bootstrap_addrs, store=store, config=config, hooks=hooks) as requester:
            yield swarm, requester
