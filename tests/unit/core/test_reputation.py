"""Reputation rules: evidence, decay, exclusion with backoff, re-admission, honest guarantee."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.reputation import (
    EXCLUDED_REPUTATION,
    EventKind,
    PeerState,
    ReputationParams,
    advance,
    apply_event,
    backoff_s,
    is_excluded,
    planner_reputation,
    reputation,
)

P = ReputationParams()


def run(events, *, start=0.0, step=1.0, params=P, state=None):
    state = state or PeerState()
    now = start
    transitions = []
    for kind in events:
        t = apply_event(state, kind, now, params)
        transitions.append(t)
        state = t.state
        now += step
    return state, transitions


def test_new_peer_starts_at_prior_and_ok_hops_raise_it():
    assert reputation(PeerState(), 0.0, P) == pytest.approx(0.8)
    state, ts = run([EventKind.HOP_OK] * 10)
    rs = [t.reputation for t in ts]
    assert all(b > a for a, b in zip(rs, rs[1:]))
    assert rs[-1] > 0.9 and state.hops_ok == 10 and state.hops_since_admission == 10


@pytest.mark.parametrize("kind", [EventKind.FAILURE, EventKind.TIMEOUT, EventKind.REFUSED])
def test_each_bad_event_lowers_reputation_by_its_weight(kind):
    t = apply_event(PeerState(), kind, 0.0, P)
    w = {EventKind.FAILURE: P.w_failure, EventKind.TIMEOUT: P.w_timeout, EventKind.REFUSED: P.w_refused}[kind]
    assert t.reputation == pytest.approx(P.prior_good / (P.prior_good + P.prior_bad + w))
    assert getattr(t.state, {"failure": "failures", "timeout": "timeouts", "refused": "refusals"}[kind.value]) == 1


def test_decay_halves_evidence_per_half_life_and_tends_to_prior():
    state, _ = run([EventKind.TIMEOUT, EventKind.TIMEOUT], step=0.0)
    later, _ = advance(state, P.half_life_s, P)
    assert later.bad == pytest.approx(state.bad / 2)
    assert reputation(state, 50 * P.half_life_s, P) == pytest.approx(P.initial_reputation, abs=1e-9)


def test_clock_going_backwards_does_not_grow_evidence():
    state, _ = run([EventKind.HOP_OK], start=100.0)
    back, _ = advance(state, 50.0, P)
    assert back.good == state.good and back.updated_at == 100.0


def test_new_peer_is_excluded_on_the_fourth_consecutive_timeout():
    # r after k timeouts = 4 / (5 + 4k): 0.44, 0.31, 0.24, 0.19 < 0.2
    state, ts = run([EventKind.TIMEOUT] * 4)
    assert [t.excluded for t in ts] == [False, False, False, True]
    assert state.strikes == 1 and state.excluded_until == pytest.approx(3.0 + P.backoff_base_s)
    assert is_excluded(state, 3.0 + P.backoff_base_s - 0.001)
    assert not is_excluded(state, 3.0 + P.backoff_base_s)


def test_readmission_is_on_probation_and_backoff_doubles():
    state, _ = run([EventKind.TIMEOUT] * 4)
    t0 = state.excluded_until
    back, readmitted = advance(state, t0, P)
    assert readmitted and back.excluded_until is None and back.hops_since_admission == 0
    assert reputation(back, t0, P) == pytest.approx(P.readmit_reputation)
    t = apply_event(state, EventKind.FAILURE, t0 + 1, P)  # one more failure after re-admission
    assert t.readmitted and t.excluded and t.state.strikes == 2
    assert t.state.excluded_until == pytest.approx(t0 + 1 + 2 * P.backoff_base_s)


def test_backoff_is_exponential_and_capped():
    assert [backoff_s(k, P) for k in (1, 2, 3)] == [60.0, 120.0, 240.0]
    assert backoff_s(200, P) == P.backoff_max_s
    with pytest.raises(ValueError):
        backoff_s(0, P)


def test_strikes_are_forgiven_after_a_quiet_week():
    state, _ = run([EventKind.TIMEOUT] * 4)
    later = state.last_excluded_at + P.forgive_after_s + 1
    state2, _ = run([EventKind.TIMEOUT] * 2, start=later, state=state)
    assert state2.strikes == 1  # reset, then one new strike


def test_verification_failure_excludes_at_once_with_extra_strikes():
    state, _ = run([EventKind.HOP_OK] * 500)  # even a long good history does not protect a cheat
    t = apply_event(state, EventKind.VERIFICATION_FAILURE, 500.0, P)
    assert t.excluded and t.state.verification_failures == 1 and t.state.strikes == P.verification_strikes
    assert t.state.excluded_until == pytest.approx(500.0 + backoff_s(P.verification_strikes, P))
    assert planner_reputation(t.state, 501.0, P) == EXCLUDED_REPUTATION


def test_excluded_peer_is_below_the_planners_default_threshold():
    assert EXCLUDED_REPUTATION < PlannerOptions().exclusion_threshold
    assert P.exclusion_threshold <= PlannerOptions().exclusion_threshold


def test_events_while_excluded_do_not_extend_the_exclusion():
    state, _ = run([EventKind.TIMEOUT] * 4)
    t = apply_event(state, EventKind.TIMEOUT, 10.0, P)
    assert not t.excluded and t.state.excluded_until == state.excluded_until


@pytest.mark.parametrize("kwargs, match", [
    ({"exclusion_threshold": 0.9}, "exclusion_threshold"),
    ({"readmit_reputation": 0.1}, "exclusion_threshold"),
    ({"w_slow": 10.0}, "w_ok"),
    ({"half_life_s": 0}, "half_life_s"),
    ({"w_failure": -1}, "w_failure"),
    ({"backoff_max_s": 1}, "backoff_max_s"),
    ({"verification_strikes": 0}, "verification_strikes"),
])
def test_params_that_would_break_the_rules_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReputationParams(**kwargs)


def test_bad_now_and_unknown_event_are_rejected():
    with pytest.raises(ValueError, match="now"):
        apply_event(PeerState(), EventKind.HOP_OK, math.nan, P)
    with pytest.raises(ValueError):
        apply_event(PeerState(), "bogus", 0.0, P)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 10 * 24 * 3600)), min_size=1, max_size=300))
def test_honest_peer_is_never_excluded_whatever_its_timing(hops):
    """Rule 6: only hop-ok events (over-claim flag or not, any gaps) never exclude."""
    state, now = PeerState(), 0.0
    for overclaimed, gap in hops:
        now += gap
        t = apply_event(state, EventKind.HOP_OK, now, P, overclaimed=overclaimed)
        assert not t.excluded
        assert t.reputation >= P.honest_floor - 1e-12
        state = t.state
    assert reputation(state, now + 1e7, P) >= P.honest_floor - 1e-12


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(list(EventKind)), max_size=100), st.floats(0, 3600))
def test_reputation_always_in_unit_interval_and_counters_add_up(kinds, step):
    state, ts = run(kinds, step=step)
    for t in ts:
        assert 0 < t.reputation <= 1
    assert state.hops_ok + state.failures + state.timeouts + state.refusals + state.verification_failures == len(kinds)


def test_the_rule_modules_import_no_io_frameworks():
    import subprocess
    import sys

    code = ("import sys; import p2pinfer.core.reputation, p2pinfer.core.speed, p2pinfer.core.verification, "
            "p2pinfer.core.receipts, p2pinfer.core.admission; "
            "print(sorted(m for m in ('trio', 'torch', 'sqlite3', 'libp2p') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
