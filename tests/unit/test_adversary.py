"""The [adversary] executor wrapper: crash count, stall, corruption rate and determinism."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from p2pinfer.adversary import (NOISE_FRACTION, AdversarialExecutor, AdversaryCrash, corrupt_decision,
                                perturb, wrap_for_config)
from p2pinfer.config import AdversarySection, NodeConfig, NodeSection


def honest(manifest: object, start: int, stop: int, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"x": tensors["x"] * 2.0, "mask": tensors["mask"]}


def inputs() -> dict[str, torch.Tensor]:
    return {"x": torch.linspace(-1.0, 1.0, 256).reshape(4, 64), "mask": torch.ones(4, 64, dtype=torch.int64)}


def adversarial(section: AdversarySection, **kw: object) -> tuple[AdversarialExecutor, list[str], list[float]]:
    crashes: list[str] = []
    sleeps: list[float] = []
    ex = AdversarialExecutor(honest, section, seed=7, on_crash=lambda: crashes.append("crash"),
                             sleep=sleeps.append, **kw)
    return ex, crashes, sleeps


def test_crash_after_n_hops_calls_on_crash_once_and_keeps_failing() -> None:
    ex, crashes, _ = adversarial(AdversarySection(crash_after_hops=2))
    for _ in range(2):
        assert torch.equal(ex(None, 0, 1, inputs())["x"], inputs()["x"] * 2.0)
    assert crashes == []
    with pytest.raises(AdversaryCrash, match="crashed after 2 hops"):
        ex(None, 0, 1, inputs())
    with pytest.raises(AdversaryCrash):
        ex(None, 0, 1, inputs())
    assert crashes == ["crash"] and ex.hops == 4


def test_stall_holds_every_hop_after_the_threshold() -> None:
    ex, _, sleeps = adversarial(AdversarySection(stall_after_hops=1, stall_seconds=12.5))
    outs = [ex(None, 0, 1, inputs()) for _ in range(3)]
    assert sleeps == [12.5, 12.5] and ex.stalled == 2
    assert all(torch.equal(o["x"], inputs()["x"] * 2.0) for o in outs)  # stalled, not wrong


def test_real_stall_blocks_the_calling_thread() -> None:
    import time

    ex = AdversarialExecutor(honest, AdversarySection(stall_after_hops=0, stall_seconds=0.2), seed=1,
                             on_crash=lambda: None)
    t0 = time.perf_counter()
    ex(None, 0, 1, inputs())
    assert time.perf_counter() - t0 >= 0.2


def test_corruption_rate_and_determinism() -> None:
    q = 0.3
    decisions = [corrupt_decision(7, hop, q) for hop in range(1, 2001)]
    assert 0.26 < sum(decisions) / len(decisions) < 0.34
    assert decisions == [corrupt_decision(7, hop, q) for hop in range(1, 2001)]  # same seed, same hops
    assert decisions != [corrupt_decision(8, hop, q) for hop in range(1, 2001)]
    assert not any(corrupt_decision(7, hop, 0.0) for hop in range(1, 200))
    assert all(corrupt_decision(7, hop, 1.0) for hop in range(1, 200))


def test_corrupted_outputs_are_noisy_floats_and_intact_ints() -> None:
    ex, _, _ = adversarial(AdversarySection(corrupt_probability=0.5))
    twin, _, _ = adversarial(AdversarySection(corrupt_probability=0.5))
    clean = honest(None, 0, 1, inputs())
    corrupted = 0
    for hop in range(1, 41):
        out, again = ex(None, 0, 1, inputs()), twin(None, 0, 1, inputs())
        assert torch.equal(out["x"], again["x"])  # deterministic per (seed, hop)
        assert torch.equal(out["mask"], clean["mask"]) and out["mask"].dtype == torch.int64
        if corrupt_decision(7, hop, 0.5):
            corrupted += 1
            diff = out["x"] - clean["x"]
            rel = float(diff.std() / clean["x"].std())
            assert 0.5 * NOISE_FRACTION < rel < 2 * NOISE_FRACTION
            assert out["x"].dtype == clean["x"].dtype and out["x"].shape == clean["x"].shape
        else:
            assert torch.equal(out["x"], clean["x"])
    assert corrupted == ex.corrupted and 10 <= corrupted <= 30


def test_perturb_constant_tensor_still_changes() -> None:
    out = perturb({"x": torch.full((2, 3), 5.0), "ids": torch.arange(6).reshape(2, 3)}, seed=1, hop=1)
    assert not torch.equal(out["x"], torch.full((2, 3), 5.0))
    assert torch.equal(out["ids"], torch.arange(6).reshape(2, 3))


def test_wrap_for_config_only_wraps_active_sections() -> None:
    base = NodeConfig(node=NodeSection(name="n1"))
    assert wrap_for_config(honest, base, on_crash=lambda: None) is honest
    overclaim = replace(base, adversary=AdversarySection(overclaim_factor=10.0))
    assert wrap_for_config(honest, overclaim, on_crash=lambda: None) is honest  # advertised, not executed
    wrapped = wrap_for_config(honest, replace(base, adversary=AdversarySection(corrupt_probability=0.3)),
                              on_crash=lambda: None)
    assert isinstance(wrapped, AdversarialExecutor) and wrapped.inner is honest
    # the default seed is stable per node name
    again = wrap_for_config(honest, replace(base, adversary=AdversarySection(corrupt_probability=0.3)),
                            on_crash=lambda: None)
    assert isinstance(again, AdversarialExecutor) and again.seed == wrapped.seed


def test_bad_sections_are_rejected() -> None:
    with pytest.raises(ValueError, match="corrupt_probability"):
        AdversarialExecutor(honest, AdversarySection(corrupt_probability=1.5), seed=0, on_crash=lambda: None)
    with pytest.raises(ValueError, match="crash_after_hops"):
        AdversarialExecutor(honest, AdversarySection(crash_after_hops=-1), seed=0, on_crash=lambda: None)
