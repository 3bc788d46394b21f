"""Brute-force reference for the planner tests, written straight from docs/cost-model.md.

It shares no code with p2pinfer.core.costs on purpose: it recomputes every formula from the
profile and snapshot and enumerates every chain of distinct peers, so agreement means both the
pricing and the search are right.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.profile import COMPUTE_CLASSES, LayerProfile, ModelProfile
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot


def layer_seconds(peer: PeerSpec, layer: LayerProfile) -> float:
    classified = sum(layer.flops_by_class.values())
    t = sum(f / (peer.gflops_by_class.get(c, peer.gflops) * 1e9) for c, f in layer.flops_by_class.items())
    t += max(0, layer.flops - classified) / (peer.gflops * 1e9)
    return t / ((1 - peer.load) * peer.reputation)


def fetch_seconds(peer: PeerSpec, req: RequesterSpec, profile: ModelProfile, layer: LayerProfile,
                  amortize: int | None) -> float:
    if amortize is None or profile.model_id in peer.holds or profile.name in peer.holds:
        return 0.0
    if layer.weights_hash and layer.weights_hash in peer.holds:
        return 0.0
    return 8 * layer.param_bytes / (min(req.up_mbps, peer.down_mbps) * 1e6) / amortize


def transfer(lat_x: float, up_x: float, lat_y: float, down_y: float, nbytes: int) -> tuple[float, float]:
    """(full seconds, bandwidth part) of sending nbytes from X to Y."""
    bw = 8 * nbytes / (min(up_x, down_y) * 1e6)
    return (lat_x + lat_y) / 1000 + bw, bw


def quota_saving(peer: PeerSpec, work: float) -> float:
    """How much sooner a lone request's `work` ends on a fresh quota period (docs/cost-model.md)."""
    if not peer.cpu_period_ms:
        return 0.0
    period = peer.cpu_period_ms / 1000
    return min(work, period) * (1 - peer.cpu_quota_ms / peer.cpu_period_ms)


@dataclass
class BruteResult:
    best_latency: float
    best_bottleneck: float
    latency_at_best_bottleneck: float
    count: int


def brute_force(profile: ModelProfile, snap: SwarmSnapshot, options: PlannerOptions) -> BruteResult | None:
    """Enumerate every chain of distinct usable peers; None when none is feasible."""
    req, L = snap.requester, profile.num_layers
    peers = [p for p in snap.peers if p.reputation >= options.exclusion_threshold]
    cpu = [[layer_seconds(p, lay) for lay in profile.layers] for p in peers]
    stage = [[c + fetch_seconds(p, req, profile, lay, options.amortize_requests) for c, lay in zip(row, profile.layers)]
             for p, row in zip(peers, cpu)]
    plans: list[tuple[float, float]] = []

    def extend(a: int, prev: PeerSpec | None, used: frozenset[int], lat: float, bott: float) -> None:
        if a == L:
            t, bw = transfer(prev.latency_ms, prev.up_mbps, req.latency_ms, req.down_mbps, profile.layers[-1].out_bytes)
            plans.append((lat + t, max(bott, bw)))
            return
        nbytes = profile.input_bytes if a == 0 else profile.layers[a - 1].out_bytes
        for j, y in enumerate(peers):
            if j in used:
                continue
            src = (req.latency_ms, req.up_mbps) if prev is None else (prev.latency_ms, prev.up_mbps)
            t, bw = transfer(src[0], src[1], y.latency_ms, y.down_mbps, nbytes)
            params, st, work = 0, 0.0, 0.0
            for b in range(a + 1, L + 1):
                params += profile.layers[b - 1].param_bytes
                if params > y.mem_bytes:
                    break
                st += stage[j][b - 1]
                work += cpu[j][b - 1]
                extend(b, y, used | {j}, lat + t + st - quota_saving(y, work), max(bott, bw, st))

    extend(0, None, frozenset(), 0.0, 0.0)
    if not plans:
        return None
    best_b = min(b for _, b in plans)
    return BruteResult(min(lat for lat, _ in plans), best_b,
                       min(lat for lat, b in plans if b <= best_b * (1 + 1e-9)), len(plans))


def random_instance(rng: random.Random, max_layers: int = 8, max_peers: int = 4) -> tuple[ModelProfile, SwarmSnapshot]:
    """A small random instance: mixed compute classes, memory limits (often tight enough to force
    several hops), reputations, load and held weights."""
    L = rng.randint(1, max_layers)
    hashes = [f"w{i}" for i in range(L)]
    layers = []
    for i in range(L):
        flops = rng.choice([0, rng.randint(1, 5 * 10**9)])
        split = {c: rng.randint(0, flops // 2) for c in rng.sample(COMPUTE_CLASSES, rng.randint(0, 2))}
        layers.append(LayerProfile(i, "x", flops, rng.randint(0, 10**7), rng.randint(1, 4 * 10**6), split,
                                   hashes[i] if rng.random() < 0.8 else ""))
    profile = ModelProfile("toy", "toy-id", rng.randint(1, 10**6), tuple(layers))
    total = max(1, profile.total_param_bytes)
    peers, num_peers, tight = [], rng.randint(1, max_peers), rng.random() < 0.5
    for j in range(num_peers):
        if tight:
            mem = rng.randint(int(total / num_peers * 0.6), int(total / num_peers * 1.8) + 1)
        else:
            mem = total if rng.random() < 0.3 else rng.randint(int(total * 0.15), total)
        speeds = {c: rng.uniform(1, 300) for c in rng.sample(COMPUTE_CLASSES, rng.randint(0, 2))}
        holds = frozenset(rng.sample(hashes, rng.randint(0, L))) | ({"toy-id"} if rng.random() < 0.2 else set())
        peers.append(PeerSpec(f"p{j}", rng.uniform(1, 300), mem, rng.uniform(1, 1000), rng.uniform(1, 1000),
                              rng.uniform(0, 50), speeds, reputation=rng.choice([1.0, rng.uniform(0.05, 1.0)]),
                              load=rng.choice([0.0, rng.uniform(0, 0.9)]), holds=holds))
    req = RequesterSpec(rng.uniform(1, 1000), rng.uniform(1, 1000), rng.uniform(0, 50))
    return profile, SwarmSnapshot(req, tuple(peers))
