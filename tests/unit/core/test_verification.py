"""Spot checks: selection, tolerance, settlement, and the detection guarantee in simulation."""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.core.reputation import EventKind, PeerState, ReputationParams, apply_event, is_excluded
from p2pinfer.core.verification import (
    Execution,
    Inconclusive,
    NeedAnother,
    Verdict,
    VerificationPolicy,
    mismatch,
    outputs_agree,
    settle,
    should_check,
)

SECRET = b"s" * 32
POLICY = VerificationPolicy()


def cid(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()[:16]


# ---- rule 1: selection ---------------------------------------------------------------------


def test_selection_is_deterministic_and_hits_the_configured_fraction():
    picks = [should_check(POLICY, secret=SECRET, circuit_id=cid(i), hop_index=i % 4, hops_since_admission=100)
             for i in range(10_000)]
    again = [should_check(POLICY, secret=SECRET, circuit_id=cid(i), hop_index=i % 4, hops_since_admission=100)
             for i in range(10_000)]
    assert picks == again
    assert abs(sum(picks) - 1000) < 4 * math.sqrt(10_000 * 0.1 * 0.9)


def test_selection_depends_on_the_requesters_secret():
    def picks(secret):
        return [should_check(POLICY, secret=secret, circuit_id=cid(i), hop_index=0, hops_since_admission=50)
                for i in range(500)]

    a, b = picks(SECRET), picks(b"t" * 32)
    assert a != b


def test_probation_checks_every_hop_of_a_new_peer_and_off_checks_nothing():
    assert all(should_check(POLICY, secret=SECRET, circuit_id=cid(i), hop_index=0, hops_since_admission=i % 20)
               for i in range(200))
    off = VerificationPolicy.off()
    assert not any(should_check(off, secret=SECRET, circuit_id=cid(i), hop_index=0, hops_since_admission=0)
                   for i in range(200))


@pytest.mark.parametrize("kwargs", [
    {"secret": b"short", "circuit_id": b"x", "hop_index": 0, "hops_since_admission": 0},
    {"secret": SECRET, "circuit_id": b"", "hop_index": 0, "hops_since_admission": 0},
    {"secret": SECRET, "circuit_id": b"x", "hop_index": -1, "hops_since_admission": 0},
    {"secret": SECRET, "circuit_id": "x", "hop_index": 0, "hops_since_admission": 0},
])
def test_bad_selection_inputs_are_rejected(kwargs):
    with pytest.raises(ValueError):
        should_check(POLICY, **kwargs)


@pytest.mark.parametrize("kwargs", [{"fraction": 1.5}, {"probation_hops": -1}, {"rtol": -1.0}, {"max_executions": 2}])
def test_bad_policies_are_rejected(kwargs):
    with pytest.raises(ValueError):
        VerificationPolicy(**kwargs)


# ---- rule 2: agreement ---------------------------------------------------------------------


def test_fp32_vs_fp64_of_a_deep_mlp_agrees_and_small_corruptions_do_not():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 256))
    ws = [rng.standard_normal((256, 256)) / 16 for _ in range(8)]

    def run(dtype):
        h = x.astype(dtype)
        for w in ws:
            h = np.tanh(h @ w.astype(dtype))
        return h

    ref, f32 = run(np.float64), run(np.float32)
    assert mismatch(f32, ref) < 0.05  # honest rounding is far inside the tolerance
    bad = f32.copy()
    bad.flat[17] += 0.01 * float(np.sqrt(np.mean(ref**2)))  # one element off by 1% of the scale
    assert not outputs_agree(bad, ref)
    assert not outputs_agree(-f32, ref) and not outputs_agree(f32 * 1.01, ref)
    assert not outputs_agree(np.zeros_like(f32), ref)


def test_shapes_and_non_finite_values_must_match():
    a = np.array([1.0, np.nan, np.inf])
    assert outputs_agree(a, a.copy())
    assert not outputs_agree(a, np.array([1.0, 0.0, np.inf]))
    assert not outputs_agree(a, np.array([1.0, np.nan, -np.inf]))
    assert not outputs_agree(np.ones(3), np.ones((3, 1)))
    assert outputs_agree(np.zeros(0), np.zeros(0))
    assert outputs_agree(np.zeros(4), np.full(4, 1e-7))  # atol covers all-zero outputs


# ---- rule 3: settlement --------------------------------------------------------------------

GOOD = np.linspace(-1, 1, 64)
BAD = GOOD + 0.5


def test_agreeing_check_accepts_the_primary_at_once():
    d = settle([Execution("p", GOOD), Execution("c", GOOD * (1 + 1e-6))])
    assert d == Verdict(accepted="p", agreed=("p", "c"), penalised=())


def test_disagreement_asks_for_a_third_execution_that_decides():
    d = settle([Execution("p", BAD), Execution("c", GOOD)])
    assert d == NeedAnother(exclude=frozenset({"p", "c"}))
    d = settle([Execution("p", BAD), Execution("c", GOOD), Execution("t", GOOD)])
    assert d == Verdict(accepted="c", agreed=("c", "t"), penalised=("p",))
    d = settle([Execution("p", GOOD), Execution("c", BAD), Execution("t", GOOD)])
    assert d == Verdict(accepted="p", agreed=("p", "t"), penalised=("c",))


def test_no_majority_is_inconclusive_and_penalises_no_one():
    outs = [Execution(f"e{i}", GOOD + i) for i in range(5)]
    for n in range(2, 5):
        assert isinstance(settle(outs[:n]), NeedAnother)
    assert settle(outs) == Inconclusive(executors=tuple(e.executor for e in outs))


def test_the_requesters_own_execution_is_trusted():
    d = settle([Execution("p", BAD), Execution("me", GOOD, trusted=True)])
    assert d == Verdict(accepted="me", agreed=("me",), penalised=("p",))


def test_settle_rejects_empty_and_duplicate_executors():
    with pytest.raises(ValueError):
        settle([])
    with pytest.raises(ValueError):
        settle([Execution("p", GOOD), Execution("p", GOOD)])


@settings(max_examples=150, deadline=None)
@given(
    n_honest=st.integers(2, 4),
    liars=st.lists(st.floats(-3, 3).filter(lambda v: abs(v) > 0.01), max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_with_an_honest_majority_no_honest_peer_is_ever_penalised(n_honest, liars, seed):
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal(32)
    honest = [truth * (1 + rng.uniform(-4e-4, 4e-4, 32)) for _ in range(n_honest)]
    lies = [truth + v for v in liars]
    pool = [(f"h{i}", o) for i, o in enumerate(honest)] + [(f"l{i}", o) for i, o in enumerate(lies)]
    random.Random(seed).shuffle(pool)
    execs, decision = [], None
    for name, out in pool:
        execs.append(Execution(name, out))
        decision = settle(execs)
        if not isinstance(decision, NeedAnother):
            break
    honest_in_check = sum(e.executor.startswith("h") for e in execs)
    if honest_in_check * 2 <= len(execs):
        return  # outside the assumption (honest majority among this check's executors)
    assert isinstance(decision, Verdict)
    assert not any(p.startswith("h") for p in decision.penalised)
    accepted = next(e.output for e in execs if e.executor == decision.accepted)
    assert any(outputs_agree(accepted, h) for h in honest)


# ---- the detection guarantee, in simulation --------------------------------------------------


def simulate(policy: VerificationPolicy, *, q: float, seed: int, honest_first: int = 0, max_hops: int = 400):
    """One corrupting peer serving hops for one requester; honest checkers settle each check.

    Returns (hop at which it was excluded or None, corrupted outputs delivered unchecked).
    """
    rng = random.Random(seed)
    secret = rng.randbytes(32)
    params, state, delivered = ReputationParams(), PeerState(), 0
    truth = np.linspace(-1, 1, 16)
    for n in range(1, max_hops + 1):
        now = float(n)
        corrupt = n > honest_first and rng.random() < q
        out = truth + 0.3 if corrupt else truth
        checked = should_check(policy, secret=secret, circuit_id=rng.randbytes(16), hop_index=1,
                               hops_since_admission=state.hops_since_admission)
        if not checked:
            delivered += corrupt
            state = apply_event(state, EventKind.HOP_OK, now, params).state
            continue
        execs = [Execution("peer", out), Execution("checker", truth.copy())]
        decision = settle(execs, policy)
        if isinstance(decision, NeedAnother):
            decision = settle(execs + [Execution("third", truth.copy())], policy)
        assert isinstance(decision, Verdict)
        assert np.array_equal(next(e.output for e in execs if e.executor == decision.accepted), truth)
        if "peer" in decision.penalised:
            state = apply_event(state, EventKind.VERIFICATION_FAILURE, now, params).state
            assert is_excluded(state, now)  # from here on the planner never uses it
            return n, delivered
        state = apply_event(state, EventKind.HOP_OK, now, params).state
    return None, delivered


def test_thirty_percent_corrupter_is_excluded_within_twenty_hops_with_probation():
    """P(not excluded within 20) = 0.7**20 = 8e-4; nothing corrupted is delivered meanwhile."""
    results = [simulate(POLICY, q=0.3, seed=s) for s in range(300)]
    within = sum(1 for n, _ in results if n is not None and n <= 20)
    assert within >= 297
    assert all(d == 0 for n, d in results if n is not None and n <= 20)


def test_uniform_ten_percent_checks_alone_would_not_meet_twenty_hops():
    """Without probation: P(excluded within 20) = 1 - (1 - 0.1 * 0.3)**20 = 0.456."""
    policy = VerificationPolicy(probation_hops=0)
    results = [simulate(policy, q=0.3, seed=s, max_hops=20) for s in range(300)]
    within = sum(1 for n, _ in results if n is not None)
    p = 1 - 0.97**20
    assert abs(within - 300 * p) < 4 * math.sqrt(300 * p * (1 - p))


def test_patient_cheater_gets_about_nine_corrupted_results_through_after_probation():
    """Honest for its 20 probation hops, then corrupting: deliveries ~ Geometric, mean (1-f)/f = 9."""
    results = [simulate(POLICY, q=0.3, seed=s, honest_first=20, max_hops=2000) for s in range(150)]
    assert all(n is not None for n, _ in results)
    mean = sum(d for _, d in results) / len(results)
    assert abs(mean - 9.0) < 4 * math.sqrt(90 / 150)  # 4 standard errors (variance (1-f)/f**2)
