"""The real MiniLM over 3 hops: named int64 + float32 activations ({"hidden", "attention_mask"})
cross every link, ~89 MB of real weights are fetched by hash, and the sentence embedding equals
local compute."""

from __future__ import annotations

import numpy as np
import torch

from p2pinfer.core.circuit import HopSpec
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor, span_hashes

from tests.integration.circuit_swarm import swarm


async def test_minilm_three_hops_equals_local(tmp_path):
    async with swarm(tmp_path, 3) as s:
        manifest = zoo.get_manifest("minilm", store=s.requester.store)
        spans = [(0, 3), (3, 6), (6, 8)]
        hops = [HopSpec(p.peer_id, p.addrs, a, b, tuple(span_hashes(manifest, a, b))) for p, (a, b) in zip(s.hops, spans)]
        ids = np.zeros((1, 128), np.int64)
        ids[0, :9] = [101, 7592, 1010, 2088, 999, 2023, 2003, 1037, 102]  # "[CLS] hello, world! this is a [SEP]"
        mask = (ids != 0).astype(np.int64)
        async with await s.client.open_circuit(model_id=manifest.model_id, hops=hops) as circuit:
            result = await circuit.infer({"input_ids": ids, "attention_mask": mask}, timeout=60)
        with torch.inference_mode():
            local = SpanExecutor(s.requester.store).run(
                manifest, 0, 8, {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)})["embedding"].numpy()
        assert set(result.act) == {"embedding"} and result.act["embedding"].shape == (1, 384)
        np.testing.assert_allclose(result.act["embedding"], local, atol=1e-5, rtol=0)
        assert len(result.trace) == 3
