"""Pure parts of the requester's fault handling: how a spot-checked input is cut into segments,
how activations are compared, and the options' validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.core.verification import VerificationPolicy, outputs_agree
from p2pinfer.errors import ConfigError
from p2pinfer.failover import _segments, flat
from p2pinfer.fault import FaultOptions


@given(st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_segments_cover_the_chain_and_isolate_every_checked_hop(case: tuple[int, set[int]]) -> None:
    n, checked = case
    segs = _segments(n, checked)
    assert segs[0][0] == 0 and segs[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(segs, segs[1:])) and all(lo < hi for lo, hi in segs)
    for i in checked:
        assert (i, i + 1) in segs
    for lo, hi in segs:
        assert hi - lo == 1 or not checked & set(range(lo, hi))


def test_flat_activations_agree_only_with_the_same_names_and_shapes() -> None:
    a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert outputs_agree(flat({"x": a["x"] + 1e-7}, a), flat(a))
    assert not outputs_agree(flat({"x": a["x"].reshape(3, 2)}, a), flat(a))
    assert not outputs_agree(flat({"y": a["x"]}, a), flat(a))
    assert not outputs_agree(flat({"x": a["x"].astype(np.int64)}, a), flat(a))
    noisy = {"x": a["x"] + np.random.default_rng(0).normal(0, 0.1 * a["x"].std(), a["x"].shape).astype(np.float32)}
    assert not outputs_agree(flat(noisy, a), flat(a))


def test_fault_options_reject_bad_values() -> None:
    assert FaultOptions.with_spot_check(0.05).policy.fraction == 0.05
    assert FaultOptions.with_spot_check(0.0).policy.probation_hops == VerificationPolicy().probation_hops
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="--spot-check"):
            FaultOptions.with_spot_check(bad)
    with pytest.raises(ConfigError, match="deadline_slack"):
        FaultOptions(deadline_slack=0.5)
