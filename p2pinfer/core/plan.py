"""The planner's output (Plan, Hop) and its knobs (PlannerOptions).

A Plan is what the requester turns into a circuit: an ordered list of hops, each a peer and the
contiguous layer span [start, stop) it computes, with the cost model's predictions attached so a
user (or a benchmark) can see why this plan was chosen. See docs/cost-model.md for every formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Objective = Literal["latency", "throughput"]
OBJECTIVES: tuple[str, ...] = ("latency", "throughput")


@dataclass(frozen=True)
class PlannerOptions:
    """How reputation, weight fetches and the search budget enter planning.

    - exclusion_threshold: peers with reputation strictly below it are never used.
    - amortize_requests: a peer missing a span's weights pays the one-time fetch divided by this
      many requests; None means "assume every peer already holds the weights" (the bare
      reference model).
    - search_budget: cap on DP work (array elements touched, summed over all passes) for the
      exact search; beyond it the planner returns its best plan found with a proven lower bound.
    - max_critical: cap on how many peers the exact search tracks individually (2**k states).
    """

    exclusion_threshold: float = 0.2
    amortize_requests: int | None = 100
    search_budget: int = 40_000_000
    max_critical: int = 12

    def __post_init__(self) -> None:
        if not 0 <= self.exclusion_threshold <= 1:
            raise ValueError("exclusion_threshold must be in [0, 1]")
        if self.amortize_requests is not None and self.amortize_requests < 1:
            raise ValueError("amortize_requests must be >= 1 or None")
        if self.search_budget < 1 or self.max_critical < 0:
            raise ValueError("search_budget must be >= 1 and max_critical >= 0")


@dataclass(frozen=True)
class Hop:
    """One peer computing layers [start, stop).

    compute_s is the *expected* compute time (load and reputation applied); transfer_in_s is the
    full transfer of this hop's input (latency + bandwidth); weight_fetch_s is the one-time
    weight transfer already divided by amortize_requests (0 when the peer holds the weights);
    frame_s is the peer's advertised cost of handling one input's frames (its input in, its
    output and commitment out), which competes with compute for the same CPU; lone_saving_s is
    how much sooner a lone request's compute and frames finish on a fresh CPU-quota period
    (core/costs.py): latency counts stage_s minus it, the pipeline bottleneck stage_s.
    """

    peer_id: str
    start: int
    stop: int
    compute_s: float
    transfer_in_s: float
    weight_fetch_s: float = 0.0
    frame_s: float = 0.0
    lone_saving_s: float = 0.0

    @property
    def stage_s(self) -> float:
        """Per-request busy time of this hop in a pipeline: compute, frame handling, amortised fetch."""
        return self.compute_s + self.frame_s + self.weight_fetch_s


@dataclass(frozen=True)
class Plan:
    """An assignment of the model's layer chain to peers, with its predicted costs.

    lower_bound is a proven lower bound on the objective's value (latency seconds or bottleneck
    seconds) over all feasible plans; optimal says the planner proved this plan optimal.
    method names who produced it ("planner" or a baseline's name).
    """

    objective: str
    hops: tuple[Hop, ...]
    transfer_out_s: float
    predicted_latency_s: float
    bottleneck_s: float
    lower_bound: float = 0.0
    optimal: bool = False
    method: str = "planner"

    @property
    def throughput_rps(self) -> float:
        return 1.0 / self.bottleneck_s if self.bottleneck_s > 0 else float("inf")

    @property
    def value(self) -> float:
        """The objective's value: latency seconds, or bottleneck seconds for throughput."""
        return self.predicted_latency_s if self.objective == "latency" else self.bottleneck_s

    @property
    def gap(self) -> float:
        """Relative distance to the proven lower bound (0.0 when proven optimal)."""
        if self.optimal or self.lower_bound <= 0:
            return 0.0
        return max(0.0, self.value / self.lower_bound - 1.0)

    def to_json_dict(self) -> dict[str, Any]:
        """The `p2pinfer plan --json` contract (extra keys after the contracted ones)."""
        return {
            "objective": self.objective,
            "hops": [
                {
                    "peer": h.peer_id,
                    "layers": [h.start, h.stop],
                    "compute_s": h.compute_s,
                    "transfer_in_s": h.transfer_in_s,
                    "weight_fetch_s": h.weight_fetch_s,
                    "frame_s": h.frame_s,
                    "lone_saving_s": h.lone_saving_s,
                }
                for h in self.hops
            ],
            "predicted_latency_s": self.predicted_latency_s,
            "bottleneck_s": self.bottleneck_s,
            "throughput_rps": self.throughput_rps,
            "transfer_out_s": self.transfer_out_s,
            "lower_bound": self.lower_bound,
            "optimal": self.optimal,
            "method": self.method,
        }


MAX_PIPELINE_WINDOW = 64


def pipeline_window(plan: Plan, *, cap: int = MAX_PIPELINE_WINDOW) -> int:
    """How many inputs a stream must keep in flight for `plan` to run at its predicted throughput.

    Every stage of the chain (each hop's compute, each transfer) is busy at once only if enough
    inputs are in the pipeline: by Little's law, throughput x latency = latency / bottleneck of
    them, plus one against jitter (at least 2, at most `cap`). Why: a fixed window of 4 held a
    4-hop VGG-16 split on the testbed at 0.87 inputs/s against 1.48 predicted: each input spent
    ~4.5 s in the chain, so 4 in flight could not cover 6.6 bottleneck periods, and the first hop
    sat idle waiting for the requester's next input (docs/testbed.md).
    """
    if not (plan.bottleneck_s > 0 and math.isfinite(plan.predicted_latency_s)):
        return 2
    return max(2, min(cap, math.ceil(plan.predicted_latency_s / plan.bottleneck_s) + 1))
