"""Replicated throughput plans: several disjoint chains (data-parallel pipelines) served at once.

A swarm maximising streamed throughput uses all its peers: the requester dispatches inputs over
several disjoint chains, each a single-chain `Plan` of the throughput planner. Cost model (an
extension of docs/cost-model.md; for one chain it is the reference model exactly):

- chain i alone runs at `c_i = 1 / bottleneck_i` (its own stages and transfers; peers are disjoint,
  so chains share no peer and no peer's access link);
- every chain's input leaves through the requester's uplink and every result arrives on its
  downlink, which all chains share: `sum_i r_i * 8 * input_bytes / (up_R * 1e6) <= 1` and
  `sum_i r_i * 8 * out_bytes[L-1] / (down_R * 1e6) <= 1`; optionally the requester's own CPU per
  input `s_R`: `sum_i r_i * s_R <= 1`;
- total = `min(sum_i c_i, cap)` with `cap` the smallest of those three limits; chain i is
  predicted at `r_i = c_i * min(1, cap / sum_i c_i)` (the shared links slow every chain alike).

Search (`plan_replicated`): up to `exact_peers` usable peers, exactly: the best single chain of
every subset of peers (the throughput planner, proven optimal on such sizes) and a DP over set
partitions. Beyond that, a local search from two starts (every peer that holds the whole model
alone + chains peeled from the rest; chains peeled greedily from all peers, up to 32 peers),
improved by exact re-optimisation of the peers of two chains (or a chain and an unused peer) at
a time, within `max_plans` planner calls; the search stops once the requester's cap is reached. `replica_bound.py` gives the proven bound (an LP relaxation).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import InfeasiblePlanError, PlanError
from .costs import build_costs
from .plan import Plan, PlannerOptions
from .planner import check_feasible, plan as plan_chain
from .profile import ModelProfile
from .replica_bound import requester_caps, upper_bound
from .snapshot import PeerSpec, SwarmSnapshot

_EPS = 1e-9
_TWO_STARTS = 32  # up to this many usable peers the local search also starts from greedy peeling


@dataclass(frozen=True)
class ReplicaOptions:
    """max_chains: at most this many chains (None: as many as pay off; 1 = the single-chain plan);
    exact_peers: exact search up to this many usable peers; max_plans: planner calls of the local
    search beyond that; requester_s_per_input: requester CPU seconds per input (0: not modelled)."""

    max_chains: int | None = None
    exact_peers: int = 6
    max_plans: int = 400
    requester_s_per_input: float = 0.0

    def __post_init__(self) -> None:
        if self.max_chains is not None and self.max_chains < 1:
            raise ValueError("max_chains must be >= 1 or None")
        if self.exact_peers < 1 or self.max_plans < 1 or not self.requester_s_per_input >= 0:
            raise ValueError("exact_peers and max_plans must be >= 1, requester_s_per_input >= 0")


@dataclass(frozen=True)
class ReplicatedPlan:
    """Disjoint chains served concurrently. `rates_rps[i]`: chain i's predicted share of the
    stream; `throughput_rps`: their sum; `upper_bound_rps`: proven over every set of disjoint
    chains; `limit`: what binds the total ("chains", "requester uplink", "requester downlink",
    "requester cpu"); `optimal`: proven optimal."""

    chains: tuple[Plan, ...]
    rates_rps: tuple[float, ...]
    throughput_rps: float
    upper_bound_rps: float
    optimal: bool
    limit: str
    excluded: tuple[str, ...] = ()
    method: str = "replicated"

    @property
    def gap(self) -> float:
        """Relative distance to the proven upper bound (0.0 when proven optimal)."""
        if self.optimal or self.throughput_rps <= 0:
            return 0.0
        return max(0.0, self.upper_bound_rps / self.throughput_rps - 1.0)

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(h.peer_id for c in self.chains for h in c.hops)

    def to_json_dict(self) -> dict[str, Any]:
        return {"chains": [{**c.to_json_dict(), "rate_rps": r} for c, r in zip(self.chains, self.rates_rps)],
                "throughput_rps": self.throughput_rps, "upper_bound_rps": self.upper_bound_rps,
                "optimal": self.optimal, "limit": self.limit, "gap": self.gap, "method": self.method,
                "excluded": list(self.excluded)}


class _Oracle:
    """The single-chain throughput planner over subsets of the usable peers, memoised."""

    def __init__(self, profile: ModelProfile, snapshot: SwarmSnapshot, peers: tuple[PeerSpec, ...],
                 options: PlannerOptions) -> None:
        self.profile, self.requester, self.peers, self.options = profile, snapshot.requester, peers, options
        self.cache: dict[frozenset[int], Plan | None] = {}
        self.index = {p.peer_id: i for i, p in enumerate(peers)}
        self.all_optimal = True

    def chain(self, ids: frozenset[int]) -> Plan | None:
        if ids not in self.cache:
            sub = SwarmSnapshot(self.requester, tuple(self.peers[i] for i in sorted(ids)))
            try:
                found: Plan | None = plan_chain(self.profile, sub, objective="throughput", options=self.options)
            except (InfeasiblePlanError, PlanError):
                found = None
            if found is not None and not found.optimal:
                self.all_optimal = False
            self.cache[ids] = found
        return self.cache[ids]

    def rate(self, ids: frozenset[int]) -> float:
        p = self.chain(ids)
        return p.throughput_rps if p is not None else 0.0

    def used(self, ids: frozenset[int]) -> frozenset[int]:
        """The peers the chain of `ids` really uses (the planner may leave some out)."""
        p = self.chain(ids)
        return frozenset(self.index[h.peer_id] for h in p.hops) if p is not None else frozenset()


Partition = tuple[frozenset[int], ...]


def best_partition(oracle: _Oracle, group: frozenset[int], max_chains: int) -> tuple[float, Partition]:
    """Exact: the disjoint chains over `group` (at most max_chains) with the largest summed rate.
    DP over subsets, each chain the planner's best over its subset; 2^|group| planner calls."""
    members = sorted(group)
    memo: dict[tuple[frozenset[int], int], tuple[float, Partition]] = {}

    def solve(rest: frozenset[int], k: int) -> tuple[float, Partition]:
        if not rest or k == 0:
            return 0.0, ()
        key = (rest, k)
        if key not in memo:
            low = min(rest)
            best = solve(rest - {low}, k)  # `low` unused
            others = sorted(rest - {low})
            for mask in range(1 << len(others)):
                block = frozenset([low, *(others[i] for i in range(len(others)) if mask >> i & 1)])
                rate = oracle.rate(block)
                if rate <= 0 or oracle.used(block) != block:
                    continue  # a chain on fewer peers is counted with those peers
                value, parts = solve(rest - block, k - 1)
                if rate + value > best[0] * (1 + _EPS):
                    best = (rate + value, (block, *parts))
            memo[key] = best
        return memo[key]

    return solve(frozenset(members), max_chains)


def _peel(oracle: _Oracle, pool: frozenset[int], chains: list[frozenset[int]], max_chains: int,
          cap: float, budget: int) -> list[frozenset[int]]:
    """Greedy: the best chain of `pool`, then the best of what is left, ... (until none, the
    requester's cap is reached or the planner-call budget is spent)."""
    while pool and len(chains) < max_chains and _total(oracle, chains) < cap * (1 - _EPS):
        if chains and len(oracle.cache) >= budget:
            break
        used = oracle.used(pool)
        if not used:
            break
        chains.append(used)
        pool = pool - used
    return chains


def _starts(oracle: _Oracle, n: int, max_chains: int, cap: float, budget: int) -> list[list[frozenset[int]]]:
    """Two starting points: holders alone + chains peeled from the rest; chains peeled from all."""
    everyone = frozenset(range(n))
    singles = sorted((frozenset([y]) for y in range(n) if oracle.used(frozenset([y]))),
                     key=lambda s: (-oracle.rate(s), min(s)))[:max_chains]
    first = _peel(oracle, everyone - frozenset().union(*singles), list(singles), max_chains, cap, budget)
    if n > _TWO_STARTS:  # each peel over a pool of ~100 peers is a full planner run (~1 s here)
        return [first]
    return [first, _peel(oracle, everyone, [], max_chains, cap, budget)]


def _total(oracle: _Oracle, chains: Iterable[frozenset[int]]) -> float:
    return sum(oracle.rate(c) for c in chains)


def _improve(oracle: _Oracle, chains: list[frozenset[int]], n: int, opts: ReplicaOptions, max_chains: int,
             cap: float) -> list[frozenset[int]]:
    """Local search: re-optimise the peers of two chains (or a chain and an unused peer) exactly
    while the total improves, stays below the requester's cap and the planner-call budget lasts."""
    while len(oracle.cache) < opts.max_plans and _total(oracle, chains) < cap * (1 - _EPS):
        pool = sorted(frozenset(range(n)) - frozenset().union(*chains))
        order = sorted(range(len(chains)), key=lambda i: (oracle.rate(chains[i]), min(chains[i])))
        pairs = itertools.chain(((i, j) for a, i in enumerate(order) for j in order[a + 1:]),
                                ((i, -1 - y) for i in order for y in pool))  # lazily: rounds end early
        for i, j in pairs:
            if len(oracle.cache) >= opts.max_plans:
                break
            other = chains[j] if j >= 0 else frozenset([-1 - j])
            group = chains[i] | other
            if len(group) > opts.exact_peers:
                continue
            before = oracle.rate(chains[i]) + (oracle.rate(chains[j]) if j >= 0 else 0.0)
            room = max_chains - len(chains) + (2 if j >= 0 else 1)
            value, parts = best_partition(oracle, group, room)
            if value > before * (1 + 1e-6) + _EPS:
                chains = [c for k, c in enumerate(chains) if k not in (i, j)] + list(parts)
                break
        else:
            break
    return chains


def _search(oracle: _Oracle, n: int, opts: ReplicaOptions, cap: float) -> tuple[list[frozenset[int]], bool]:
    """(chains as peer-index sets, proven optimal by exhaustive search)."""
    max_chains = opts.max_chains or n
    if max_chains == 1:  # the planner's chain over every peer is the best single chain
        used = oracle.used(frozenset(range(n)))
        return ([used] if used else []), True
    if n <= opts.exact_peers:
        return list(best_partition(oracle, frozenset(range(n)), max_chains)[1]), True
    found = []
    for start in _starts(oracle, n, max_chains, cap, opts.max_plans):
        found.append(_improve(oracle, start, n, opts, max_chains, cap))
        if _total(oracle, found[-1]) >= cap * (1 - _EPS):
            break  # the requester's link is full: nothing can do better
    return max(found, key=lambda cs: _total(oracle, cs)), False


def _trim(oracle: _Oracle, chains: list[frozenset[int]], cap: float) -> list[frozenset[int]]:
    """Fastest first; chains beyond what the requester's cap can feed are dropped (fewer peers,
    same predicted total)."""
    chains = sorted(chains, key=lambda c: (-oracle.rate(c), min(c)))
    while len(chains) > 1 and _total(oracle, chains[:-1]) >= cap * (1 - _EPS):
        chains.pop()
    return chains


def plan_replicated(profile: ModelProfile, snapshot: SwarmSnapshot, *, options: PlannerOptions = PlannerOptions(),
                    replicas: ReplicaOptions = ReplicaOptions()) -> ReplicatedPlan:
    """Disjoint chains maximising the total predicted throughput (module docstring). Pure and
    deterministic; InfeasiblePlanError as the single-chain planner when no chain exists."""
    cm = build_costs(profile, snapshot, options)
    check_feasible(cm, snapshot, options)
    oracle = _Oracle(profile, snapshot, cm.peers, options)
    caps = requester_caps(cm, replicas.requester_s_per_input)
    cap = min(caps.values())
    chains, exhaustive = _search(oracle, cm.num_peers, replicas, cap)
    if not chains:
        raise InfeasiblePlanError(
            f"model needs more peers than available given memory: no chain of distinct peers among the "
            f"{cm.num_peers} usable ones covers all {cm.num_layers} layers (each peer serves one contiguous span)")
    chains = _trim(oracle, chains, cap)
    plans = tuple(oracle.chain(c) for c in chains)
    raw = [p.throughput_rps for p in plans if p is not None]
    total = min(sum(raw), cap)
    scale = total / sum(raw)
    best = None
    if replicas.max_chains is not None:  # each chain is at most the best single chain
        single = oracle.chain(frozenset(range(cm.num_peers)))
        best = 1.0 / single.lower_bound if single is not None and single.lower_bound > 0 else None
    at_cap = cap if total >= cap * (1 - _EPS) else math.inf  # the cap is a bound: met, nothing to prove
    bound = min(upper_bound(cm, replicas.max_chains, best, reached=at_cap), cap)
    limit = "chains" if sum(raw) < cap * (1 - 1e-9) else min(caps, key=lambda k: caps[k])
    optimal = (exhaustive and oracle.all_optimal) or total >= bound * (1 - 1e-6)
    return ReplicatedPlan(tuple(p for p in plans if p is not None), tuple(r * scale for r in raw), total,
                          max(bound, total), optimal, limit, cm.excluded)


def plan_replicated_or_single(profile: ModelProfile, snapshot: SwarmSnapshot, *, options: PlannerOptions = PlannerOptions(),
                              replicas: ReplicaOptions = ReplicaOptions()) -> ReplicatedPlan:
    """`plan_replicated`, but with max_chains == 1 exactly the single-chain planner's plan."""
    if replicas.max_chains == 1:
        cm = build_costs(profile, snapshot, options)
        single = plan_chain(profile, snapshot, objective="throughput", options=options)
        caps = requester_caps(cm, replicas.requester_s_per_input)
        total = min(single.throughput_rps, min(caps.values()))
        limit = "chains" if single.throughput_rps < min(caps.values()) * (1 - 1e-9) else min(caps, key=lambda k: caps[k])
        bound = 1.0 / single.lower_bound if single.lower_bound > 0 else math.inf
        return ReplicatedPlan((single,), (total,), total, max(min(bound, min(caps.values())), total), single.optimal,
                              limit, cm.excluded, method="single-chain")
    return plan_replicated(profile, snapshot, options=options, replicas=replicas)
