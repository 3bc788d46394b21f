"""The hop as a Node service: two real Nodes serve a circuit through HopNodeService, and the
weights a hop fetched for its span show up in its next signed capability record."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import trio

from p2pinfer.core.circuit import HopSpec
from p2pinfer.crypto.identity import Identity
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor, span_hashes
from p2pinfer.models.store import ModelStore
from p2pinfer.net.advertise import Capability
from p2pinfer.net.circuit_client import CircuitClient, ClientConfig
from p2pinfer.net.hop_protocol import HopConfig, HopNodeService
from p2pinfer.net.settings import NodeSettings
from p2pinfer.net.weights_protocol import WeightService
from p2pinfer.node import Node

from tests.integration.circuit_swarm import _host

CAP = Capability(gflops=10.0, mem_bytes=1 << 30, up_mbps=100.0, down_mbps=100.0, latency_ms=1.0)


async def test_nodes_serve_a_circuit_and_advertise_fetched_weights(tmp_path):
    settings = NodeSettings(listen=("/ip4/127.0.0.1/tcp/0",), dht_publish=False)
    services = [HopNodeService(SpanExecutor(ModelStore(tmp_path / f"n{i}")).run, ModelStore(tmp_path / f"n{i}"),
                               config=HopConfig(io_timeout_s=5.0, setup_timeout_s=20.0)) for i in range(2)]
    rid = Identity.generate()
    async with contextlib.AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(Node(settings, capability=CAP, services=[svc])) for svc in services]
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        rhost = await stack.enter_async_context(_host(rid))
        rstore = ModelStore(tmp_path / "requester")
        manifest = zoo.get_manifest("mlp", store=rstore)
        client = CircuitClient(rhost, rid, config=ClientConfig(io_timeout_s=5.0, setup_timeout_s=20.0))
        await nursery.start(client.run)
        await nursery.start(WeightService(rhost, rstore).run)

        spans = [(0, 2), (2, 4)]
        hops = [HopSpec(n.peer_id, tuple(n.listen_addrs), a, b, tuple(span_hashes(manifest, a, b))) for n, (a, b) in zip(nodes, spans)]
        x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
        async with await client.open_circuit(model_id=manifest.model_id, hops=hops) as circuit:
            result = await circuit.infer({"x": x}, timeout=20)
        with torch.inference_mode():
            local = SpanExecutor(rstore).run(manifest, 0, 4, {"x": torch.from_numpy(x)})["x"].numpy()
        np.testing.assert_allclose(result.act["x"], local, atol=1e-5, rtol=0)
        for node, (a, b) in zip(nodes, spans):
            # what the node's next signed record will carry (republishing itself is the node's business)
            assert set(span_hashes(manifest, a, b)) <= set(node.advertiser.capability.weights)
