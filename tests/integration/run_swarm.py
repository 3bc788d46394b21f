"""Helpers for the `p2pinfer run` integration tests: node configs built in code, an embedded
swarm of real Nodes (p2pinfer.swarm.LocalSwarm) plus a Requester on it."""

from __future__ import annotations

import queue
import threading
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Sequence

import trio

from p2pinfer.client import Requester, RequesterConfig, RequesterHooks
from p2pinfer.config import NodeConfig, config_from_dict
from p2pinfer.core.profile import ModelProfile
from p2pinfer.models.store import ModelStore
from p2pinfer.net.circuit_client import ClientConfig
from p2pinfer.swarm import LocalSwarm, SwarmOptions

TEST_REQUESTER = RequesterConfig(use_dht=False, discovery_timeout_s=5.0, max_attempts=3,
                                 circuit=ClientConfig(io_timeout_s=10.0, setup_timeout_s=60.0, result_timeout_s=60.0))
FULL_SPEED = SwarmOptions(emulate=False)


def swarm_dir(tmp: Path, n: int = 3) -> Path:
    """A --swarm DIR of n small heterogeneous node configs (TOML files, as a user would write)."""
    directory = tmp / "swarm"
    directory.mkdir()
    for i in range(n):
        (directory / f"n{i}.toml").write_text("\n".join([
            "[node]", f'name = "n{i}"', 'listen = ["/ip4/127.0.0.1/tcp/0"]',
            "[resources]", 'mem_bytes = "1 GiB"', f"gflops = {10 + 5 * i}",
            "[emulation]", "up_mbps = 500.0", "latency_ms = 1.0"]) + "\n")
    return directory


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


@contextmanager
def swarm_in_thread(configs: Sequence[NodeConfig], store: ModelStore, *,
                    options: SwarmOptions = FULL_SPEED, timeout: float = 60.0) -> Iterator[LocalSwarm]:
    """A LocalSwarm running in its own thread (own trio run), for sync tests that call the CLI's
    `main` (which starts a trio run of its own). Stopped and joined on exit."""
    ready: queue.Queue[tuple[LocalSwarm, trio.lowlevel.TrioToken, trio.CancelScope] | BaseException] = queue.Queue()

    async def serve() -> None:
        with trio.CancelScope() as scope:
            try:
                swarm = LocalSwarm(list(configs), store=store, options=options)
                async with trio.open_nursery() as nursery:
                    await nursery.start(swarm.run)
                    ready.put((swarm, trio.lowlevel.current_trio_token(), scope))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                ready.put(exc)
                raise

    thread = threading.Thread(target=lambda: trio.run(serve), daemon=True)
    thread.start()
    item = ready.get(timeout=timeout)
    if isinstance(item, BaseException):
        raise item
    swarm, token, scope = item
    try:
        yield swarm
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(timeout=timeout)
        assert not thread.is_alive(), "the swarm thread did not stop"
