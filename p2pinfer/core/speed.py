"""Measured vs advertised speed: plan a peer with the speed it shows, not the speed it claims.

Pure. Each completed hop gives one sample of the peer's *efficiency*
    e = predicted_s / measured_s,   predicted_s = sum over classes c of flops_c / (adv_c * 1e9)
(adv_c: the GFLOP/s the peer advertised for compute class c when the hop ran, falling back to
its scalar), or the caller's `predicted_s` when it has the planner's own prediction (which also
uses the peer's per-layer-kind speeds, core/costs.span_seconds). e = 1: the peer ran exactly as
fast as it advertises; e = 0.1: ten times slower.

Rules:
1. Samples are kept as measured speeds, log(adv * e) in GFLOP/s, in a window of the last
   `window` hops: once as "all" (adv = the scalar advertisement, i.e. the scalar speed that
   would have predicted the measured time) and once per compute class whose share of the hop's
   predicted time is >= min_share (adv = that class's advertisement). Storing speeds, not
   ratios, keeps the estimate right when the peer later changes its advertisement.
2. The measured speed of a class is the median of its window (robust: one stall or GC pause
   among three samples does not move it), used once the window holds >= min_samples samples.
3. Effective speed (what the planner uses) = min(measured, max_efficiency * advertised now);
   a class without its own samples, and every layer-kind speed, is scaled by the scalar's
   effective/advertised ratio; with no samples at all the advertisement is used. With
   max_efficiency = 1 a peer is never planned faster than it claims (the claim is a ceiling the
   peer commits to).
4. Over-claim: flagged when the measured scalar speed (>= min_samples samples) is below
   advertised / overclaim_factor. The flag only lowers reputation mildly (core/reputation.py
   rule 1, bounded by its rule 6) and never excludes: the defence against over-claiming is that
   the planner uses the effective speed, so lying gains nothing.
5. Deadlines: `hop_deadline_s` gives a hop slack * predicted + grace seconds, where predicted
   uses the effective speed; an honest peer whose time stays within `slack` times that
   prediction (its timing jitter) therefore never times out.

A peer over-claiming by a constant factor k measures adv / k (times its jitter) on every hop, so
after min_samples hops its median is within its jitter of adv / k: it is planned at its true
speed, for every class it was measured on.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from p2pinfer.core.profile import COMPUTE_CLASSES

ALL = "all"


@dataclass(frozen=True)
class SpeedParams:
    window: int = 5
    min_samples: int = 3
    min_share: float = 0.2
    max_efficiency: float = 1.0
    overclaim_factor: float = 4.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_samples <= self.window:
            raise ValueError("SpeedParams: need 1 <= min_samples <= window")
        if not 0 < self.min_share <= 1:
            raise ValueError("SpeedParams.min_share must be in (0, 1]")
        if not self.max_efficiency > 0 or not self.overclaim_factor >= 1:
            raise ValueError("SpeedParams: max_efficiency > 0 and overclaim_factor >= 1 required")


@dataclass(frozen=True)
class SpeedState:
    """Recent log-efficiency samples per class ("all" plus compute classes), newest last."""

    samples: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean = {}
        for cls, values in dict(self.samples).items():
            if cls != ALL and cls not in COMPUTE_CLASSES:
                raise ValueError(f"speed state: unknown compute class {cls!r}")
            values = tuple(float(v) for v in values)
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"speed state: non-finite sample for {cls!r}")
            clean[cls] = values
        object.__setattr__(self, "samples", MappingProxyType(clean))

    def to_json(self) -> dict[str, list[float]]:
        return {cls: list(v) for cls, v in self.samples.items()}

    @classmethod
    def from_json(cls, data: object) -> SpeedState:
        if not isinstance(data, dict):
            raise ValueError("speed state must be a JSON object")
        return cls({str(k): tuple(v) for k, v in data.items()})


def _class_times(flops: int, flops_by_class: Mapping[str, int], adv: float,
                 adv_by_class: Mapping[str, float]) -> dict[str, float]:
    """Predicted seconds per compute class; unattributed flops count as "other"."""
    times: dict[str, float] = {}
    attributed = 0
    for cls, f in flops_by_class.items():
        if cls not in COMPUTE_CLASSES or f < 0:
            raise ValueError(f"bad compute class entry {cls!r}: {f!r}")
        attributed += f
        times[cls] = times.get(cls, 0.0) + f / (adv_by_class.get(cls, adv) * 1e9)
    rest = max(0, flops - attributed)
    if rest:
        times["other"] = times.get("other", 0.0) + rest / (adv_by_class.get("other", adv) * 1e9)
    return times


def observe(
    state: SpeedState,
    *,
    flops: int,
    measured_s: float,
    advertised_gflops: float,
    flops_by_class: Mapping[str, int] | None = None,
    advertised_by_class: Mapping[str, float] | None = None,
    predicted_s: float | None = None,
    params: SpeedParams = SpeedParams(),
) -> SpeedState:
    """Add one completed hop's timing (rule 1). Zero-flop hops carry no speed information.
    `predicted_s` (the planner's prediction at advertised speeds) replaces the class sum as the
    prediction; the class split still decides which classes get a sample."""
    if not (isinstance(flops, int) and flops >= 0):
        raise ValueError(f"flops must be a non-negative int, got {flops!r}")
    if not (math.isfinite(measured_s) and measured_s > 0):
        raise ValueError(f"measured_s must be a positive number of seconds, got {measured_s!r}")
    if not (math.isfinite(advertised_gflops) and advertised_gflops > 0):
        raise ValueError(f"advertised_gflops must be > 0, got {advertised_gflops!r}")
    adv_by_class = dict(advertised_by_class or {})
    if any(not (math.isfinite(v) and v > 0) for v in adv_by_class.values()):
        raise ValueError("advertised_by_class values must be > 0")
    if predicted_s is not None and not (math.isfinite(predicted_s) and predicted_s >= 0):
        raise ValueError(f"predicted_s must be >= 0 seconds, got {predicted_s!r}")
    times = _class_times(flops, dict(flops_by_class or {}), advertised_gflops, adv_by_class)
    predicted = sum(times.values())
    if predicted <= 0 or predicted_s == 0:
        return state
    log_e = math.log((predicted if predicted_s is None else predicted_s) / measured_s)
    new = dict(state.samples)
    speeds = {ALL: math.log(advertised_gflops) + log_e}
    for cls, t in times.items():
        if flops_by_class and t / predicted >= params.min_share:  # no breakdown: "all" only
            speeds[cls] = math.log(adv_by_class.get(cls, advertised_gflops)) + log_e
    for cls, log_speed in speeds.items():
        new[cls] = (tuple(new.get(cls, ())) + (log_speed,))[-params.window :]
    return SpeedState(new)


def measured_gflops(state: SpeedState, cls: str = ALL, params: SpeedParams = SpeedParams()) -> float | None:
    """Median measured GFLOP/s of `cls` (rule 2), or None with fewer than min_samples samples."""
    values = state.samples.get(cls, ())
    if len(values) < params.min_samples:
        return None
    return math.exp(statistics.median(values))


def effective_gflops(
    state: SpeedState,
    advertised_gflops: float,
    advertised_by_class: Mapping[str, float] | None = None,
    params: SpeedParams = SpeedParams(),
) -> tuple[float, dict[str, float]]:
    """(scalar, per-class) GFLOP/s the planner should use for this peer (rule 3)."""
    adv_by_class = dict(advertised_by_class or {})
    measured = measured_gflops(state, ALL, params)
    scalar = advertised_gflops if measured is None else min(measured, params.max_efficiency * advertised_gflops)
    ratio = scalar / advertised_gflops
    by_class: dict[str, float] = {}
    for cls in COMPUTE_CLASSES:
        m = measured_gflops(state, cls, params)
        adv = adv_by_class.get(cls)
        if m is not None:
            by_class[cls] = min(m, params.max_efficiency * (adv if adv is not None else advertised_gflops))
        elif adv is not None:
            by_class[cls] = adv * ratio
    return scalar, by_class


def effective_by_kind(advertised_gflops: float, effective_scalar: float,
                      advertised_by_kind: Mapping[str, float]) -> dict[str, float]:
    """Per-layer-kind GFLOP/s the planner should use (rule 3): the advertised kind speeds scaled
    by the scalar's effective / advertised ratio (`effective_scalar` from `effective_gflops`)."""
    ratio = effective_scalar / advertised_gflops
    return {kind: speed * ratio for kind, speed in advertised_by_kind.items()}


def is_overclaimed(state: SpeedState, advertised_gflops: float, params: SpeedParams = SpeedParams()) -> bool:
    """Rule 4: enough samples and measured scalar speed below advertised / overclaim_factor."""
    m = measured_gflops(state, ALL, params)
    return m is not None and m < advertised_gflops / params.overclaim_factor


def hop_deadline_s(predicted_s: float, *, slack: float = 4.0, grace_s: float = 2.0) -> float:
    """Deadline for a hop predicted (with effective speed) to take `predicted_s` (rule 5)."""
    if not (math.isfinite(predicted_s) and predicted_s >= 0):
        raise ValueError(f"predicted_s must be >= 0, got {predicted_s!r}")
    if not (slack >= 1 and grace_s >= 0):
        raise ValueError("hop_deadline_s: need slack >= 1 and grace_s >= 0")
    return slack * predicted_s + grace_s
