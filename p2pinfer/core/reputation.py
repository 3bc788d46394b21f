"""Reputation rules: how each hop outcome changes what this node thinks of a peer.

Pure and sans-IO: state in, state out; the clock is passed in as `now` (seconds, any epoch, but
the same one for one ledger). The durable ledger (p2pinfer/ledger.py) persists `PeerState`.

Rules (docs/reputation.md states them with their proofs):

1. Evidence. A peer has good evidence `g` and bad evidence `b` (floats >= 0). A completed hop
   adds `w_ok` to g; a failure adds `w_failure`, a timeout `w_timeout`, a refusal `w_refused`,
   a proven verification failure `w_verification` to b; a completed hop whose measured speed
   shows the peer over-claims (core/speed.py) also adds `w_slow` to b.
2. Decay. Both g and b are multiplied by 2**(-dt / half_life_s) before each update, so old
   behaviour fades and the score drifts back to the prior. A clock that goes backwards counts
   as dt = 0.
3. Reputation. r = (g + prior_good) / (g + b + prior_good + prior_bad), always in (0, 1]; a
   new peer starts at r0 = prior_good / (prior_good + prior_bad). The planner scales expected
   cost with r (PeerSpec.reputation).
4. Exclusion. After an event, if the peer is not excluded and r < exclusion_threshold, it is
   excluded; a proven verification failure excludes it whatever r is. Each exclusion adds
   strikes (1, or `verification_strikes` for a verification failure) and lasts
   min(backoff_base_s * 2**(strikes - 1), backoff_max_s): exponential backoff. Strikes are
   forgotten when `forgive_after_s` passed since the last exclusion.
5. Re-admission. When `excluded_until` has passed the peer is re-admitted on probation: its
   evidence is reset to g = 0 and the b that gives r = readmit_reputation (just above the
   threshold: with the defaults one more failure or timeout re-excludes it, with a doubled
   backoff), and its
   `hops_since_admission` restarts at 0 (core/verification.py spot-checks it more).
6. Honest-peer guarantee (no false exclusions). A peer that never fails, times out, refuses or
   fails verification is never excluded, however slow or jittery its timing: with only hop-ok
   events (over-claim-flagged or not) r >= min(r0, w_ok / (w_ok + w_slow)) > threshold, which
   `ReputationParams` enforces. Honest float noise never causes a verification failure
   (core/verification.py tolerance) and honest jitter never causes a timeout when deadlines
   come from `core.speed.hop_deadline_s`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

# What the planner gets for an excluded peer: far below any sane PlannerOptions threshold.
EXCLUDED_REPUTATION = 1e-6


class EventKind(str, enum.Enum):
    """What happened on one hop (or one verification) with a peer."""

    HOP_OK = "hop_ok"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    VERIFICATION_FAILURE = "verification_failure"


@dataclass(frozen=True)
class ReputationParams:
    """Every constant of the rules; validated so that the honest-peer guarantee holds."""

    half_life_s: float = 24 * 3600.0
    prior_good: float = 4.0
    prior_bad: float = 1.0
    w_ok: float = 1.0
    w_failure: float = 4.0
    w_timeout: float = 4.0
    w_refused: float = 0.5
    w_verification: float = 20.0
    w_slow: float = 0.5
    exclusion_threshold: float = 0.2
    readmit_reputation: float = 0.24
    backoff_base_s: float = 60.0
    backoff_max_s: float = 24 * 3600.0
    verification_strikes: int = 4
    forgive_after_s: float = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        positive = ("half_life_s", "prior_good", "prior_bad", "w_ok", "backoff_base_s", "forgive_after_s")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"ReputationParams.{name} must be > 0")
        for name in ("w_failure", "w_timeout", "w_refused", "w_verification", "w_slow"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"ReputationParams.{name} must be >= 0")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("ReputationParams.backoff_max_s must be >= backoff_base_s")
        if self.verification_strikes < 1:
            raise ValueError("ReputationParams.verification_strikes must be >= 1")
        if not 0 < self.exclusion_threshold < self.readmit_reputation <= self.initial_reputation:
            raise ValueError("ReputationParams: need 0 < exclusion_threshold < readmit_reputation <= r0")
        if not self.honest_floor > self.exclusion_threshold:
            raise ValueError("ReputationParams: w_ok / (w_ok + w_slow) must exceed exclusion_threshold")

    @property
    def initial_reputation(self) -> float:
        """r0, the reputation of a peer never seen before."""
        return self.prior_good / (self.prior_good + self.prior_bad)

    @property
    def honest_floor(self) -> float:
        """Lowest r a peer with only hop-ok events can ever have (rule 6)."""
        return min(self.initial_reputation, self.w_ok / (self.w_ok + self.w_slow))

    @property
    def readmit_bad(self) -> float:
        """Bad evidence that puts a fresh (g = 0) peer at r = readmit_reputation."""
        return self.prior_good / self.readmit_reputation - self.prior_good - self.prior_bad


@dataclass(frozen=True)
class PeerState:
    """Everything the rules remember about one peer (one ledger row)."""

    good: float = 0.0
    bad: float = 0.0
    updated_at: float | None = None
    hops_ok: int = 0
    failures: int = 0
    timeouts: int = 0
    refusals: int = 0
    verification_failures: int = 0
    slow_hops: int = 0
    hops_since_admission: int = 0
    excluded_until: float | None = None
    strikes: int = 0
    last_excluded_at: float | None = None


@dataclass(frozen=True)
class Transition:
    """Result of one event: the new state and what changed in words the ledger logs."""

    state: PeerState
    reputation: float
    excluded: bool  # newly excluded by this event
    readmitted: bool  # re-admitted (backoff over) just before this event was applied


def _check_now(now: float) -> None:
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite number of seconds, got {now!r}")


def advance(state: PeerState, now: float, params: ReputationParams) -> tuple[PeerState, bool]:
    """`state` as of `now`: evidence decayed (rule 2) and re-admission applied (rule 5).

    Returns the new state and whether a re-admission happened.
    """
    _check_now(now)
    readmitted = False
    if state.excluded_until is not None and now >= state.excluded_until:
        state = replace(state, good=0.0, bad=params.readmit_bad, excluded_until=None,
                        hops_since_admission=0, updated_at=state.excluded_until)
        readmitted = True
    if state.updated_at is None:
        return replace(state, updated_at=now), readmitted
    dt = max(0.0, now - state.updated_at)
    factor = 2.0 ** (-dt / params.half_life_s)
    return replace(state, good=state.good * factor, bad=state.bad * factor,
                   updated_at=max(now, state.updated_at)), readmitted


def reputation(state: PeerState, now: float, params: ReputationParams) -> float:
    """r in (0, 1] as of `now` (rule 3); exclusion is reported separately (`is_excluded`)."""
    s, _ = advance(state, now, params)
    return _r(s, params)


def _r(s: PeerState, params: ReputationParams) -> float:
    num = s.good + params.prior_good
    return num / (num + s.bad + params.prior_bad)


def is_excluded(state: PeerState, now: float) -> bool:
    """True while the peer serves an exclusion (rule 4)."""
    return state.excluded_until is not None and now < state.excluded_until


def planner_reputation(state: PeerState, now: float, params: ReputationParams) -> float:
    """What PeerSpec.reputation should be: r, or EXCLUDED_REPUTATION while excluded."""
    if is_excluded(state, now):
        return EXCLUDED_REPUTATION
    return reputation(state, now, params)


def backoff_s(strikes: int, params: ReputationParams) -> float:
    """Length of an exclusion after `strikes` strikes (rule 4)."""
    if strikes < 1:
        raise ValueError("strikes must be >= 1")
    return min(params.backoff_base_s * 2.0 ** min(strikes - 1, 60), params.backoff_max_s)


def _exclude(s: PeerState, now: float, add_strikes: int, params: ReputationParams) -> PeerState:
    strikes = s.strikes
    if s.last_excluded_at is not None and now - s.last_excluded_at >= params.forgive_after_s:
        strikes = 0
    strikes += add_strikes
    until = now + backoff_s(strikes, params)
    if s.excluded_until is not None:
        until = max(until, s.excluded_until)
    return replace(s, strikes=strikes, excluded_until=until, last_excluded_at=now)


_COUNTER = {
    EventKind.HOP_OK: "hops_ok",
    EventKind.FAILURE: "failures",
    EventKind.TIMEOUT: "timeouts",
    EventKind.REFUSED: "refusals",
    EventKind.VERIFICATION_FAILURE: "verification_failures",
}


def _bad_weight(kind: EventKind, params: ReputationParams) -> float:
    return {
        EventKind.FAILURE: params.w_failure,
        EventKind.TIMEOUT: params.w_timeout,
        EventKind.REFUSED: params.w_refused,
        EventKind.VERIFICATION_FAILURE: params.w_verification,
    }[kind]


def apply_event(
    state: PeerState,
    kind: EventKind,
    now: float,
    params: ReputationParams,
    *,
    overclaimed: bool = False,
) -> Transition:
    """Apply one event (rules 1-5) and return the transition.

    `overclaimed` (only meaningful with HOP_OK) says the speed estimator found the peer much
    slower than it advertises (core.speed.is_overclaimed).
    """
    kind = EventKind(kind)
    s, readmitted = advance(state, now, params)
    counter = _COUNTER[kind]
    s = replace(s, **{counter: getattr(s, counter) + 1})
    if kind is EventKind.HOP_OK:
        s = replace(s, good=s.good + params.w_ok, hops_since_admission=s.hops_since_admission + 1)
        if overclaimed:
            s = replace(s, bad=s.bad + params.w_slow, slow_hops=s.slow_hops + 1)
    else:
        s = replace(s, bad=s.bad + _bad_weight(kind, params))
    excluded = False
    if kind is EventKind.VERIFICATION_FAILURE:
        s = _exclude(s, now, params.verification_strikes, params)
        excluded = True
    elif not is_excluded(s, now) and _r(s, params) < params.exclusion_threshold:
        s = _exclude(s, now, 1, params)
        excluded = True
    return Transition(state=s, reputation=_r(s, params), excluded=excluded, readmitted=readmitted)
