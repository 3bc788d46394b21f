"""Pure parts of the requester's fault handling: how activations are compared, and the options'
validation. (Audits: tests/unit/core/test_audit.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from p2pinfer.core.verification import VerificationPolicy, outputs_agree
from p2pinfer.errors import ConfigError
from p2pinfer.failover import flat
from p2pinfer.fault import FaultOptions


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
    for knob in ("commit_timeout_s", "audit_timeout_s"):
        with pytest.raises(ConfigError, match=knob):
            FaultOptions(**{knob: 0.0})
