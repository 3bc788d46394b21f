"""The project's cost model (docs/cost-model.md), compiled into arrays once per planning call.

Everything the planner, the baselines and the plot need to price a plan lives here, so that every
plan is priced by one formula. Units: seconds, bytes, bits; `REQUESTER` (-1) stands for the
requester's access link where a peer index is expected.

Star / access-link model: transfer of B bytes X -> Y costs
    (latency_ms_X + latency_ms_Y) / 1000 + 8 B / (min(up_mbps_X, down_mbps_Y) * 1e6)
and a layer's compute on peer Y costs
    (sum_c flops_c / gflops_c(Y) + unclassified_flops / gflops(Y)) / 1e9 / ((1 - load_Y) * r_Y)
(gflops_c falls back to the scalar gflops; load and reputation r make the *expected* cost),
except that a layer whose kind the peer lists in `gflops_by_kind` costs flops / gflops_kind(Y)
instead of the class sum (the per-layer-kind speed table of the reference cost model).
A peer that does not hold a layer's weights pays 8 * param_bytes / (min(up_R, down_Y) * 1e6)
once, amortised over `amortize_requests` requests. A hop on peer Y serving [a, b) also handles
its frames, on the same CPU as its compute:
    (frame_ms_Y + frame_ms_per_mib_Y * (bytes_a + bytes_b) / 2**20) / 1000 / ((1 - load_Y) * r_Y)
with bytes_a its input and bytes_b its output. A peer whose compute runs under a CPU quota of
less than a core (cpu_quota_ms q per cpu_period_ms P, share s = q / P) runs a lone request's
work W = compute + frames faster than that sustained rate: after idling (waiting for its input)
it starts on a fresh period's quota at full core speed, so its expected wall time is W s when
W <= P and W - (P - q) beyond (averaged over where in a period the work starts). Latency prices
a hop's stage minus that saving, min(W, P) (1 - s); the pipeline bottleneck does not (a busy
peer has no idle periods to draw on). The searches (core/bottleneck.py, core/chain_dp.py) run on
`search_model()` arrays (no frames, no quota), whose per-span costs are prefix-sum differences;
every plan is priced here with both terms, and the planners widen their bounds by what the
search did not see (frames only add; a quota saves at most P - q per peer), so they stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Sequence

import numpy as np

from .plan import Hop, Plan, PlannerOptions
from .profile import COMPUTE_CLASSES, LayerProfile, ModelProfile
from .snapshot import PeerSpec, SwarmSnapshot

REQUESTER = -1
Span = tuple[int, int, int]  # (peer index, start, stop)


def usable_peers(snapshot: SwarmSnapshot, options: PlannerOptions) -> tuple[PeerSpec, ...]:
    """Peers at or above the reputation threshold, sorted by id so plans do not depend on order."""
    kept = [p for p in snapshot.peers if p.reputation >= options.exclusion_threshold]
    return tuple(sorted(kept, key=lambda p: p.peer_id))


def _layer_held(peer: PeerSpec, profile: ModelProfile, weights_hash: str) -> bool:
    if profile.model_id in peer.holds or profile.name in peer.holds:
        return True
    return bool(weights_hash) and weights_hash in peer.holds


def _missing_bytes(peer: PeerSpec, profile: ModelProfile) -> list[int]:
    """Per layer, the param bytes `peer` would have to fetch (0 where it holds them)."""
    sizes = [lay.param_bytes for lay in profile.layers]
    if not peer.holds:
        return sizes
    if profile.model_id in peer.holds or profile.name in peer.holds:
        return [0] * len(sizes)
    return [0 if _layer_held(peer, profile, lay.weights_hash) else lay.param_bytes for lay in profile.layers]


def _derate(peers: Sequence[PeerSpec]) -> np.ndarray:
    """(P,) the share of each peer's advertised speed we expect: (1 - load) * reputation."""
    return np.array([(1.0 - p.load) * p.reputation for p in peers], dtype=float)


def _compute_seconds(profile: ModelProfile, peers: Sequence[PeerSpec]) -> np.ndarray:
    """(P, L) expected seconds of each layer on each peer (kind or class speeds, load, reputation)."""
    return advertised_seconds(profile.layers, peers) / _derate(peers)[:, None]


def advertised_seconds(layers: Sequence[LayerProfile], peers: Sequence[PeerSpec]) -> np.ndarray:
    """(P, L) seconds of each layer on each peer at its advertised speeds (no load or
    reputation): the layer's kind speed where the peer lists one, else its class speeds."""
    # one row per layer: FLOPs per class, then the unclassified rest (one array call, not L*5 item writes)
    flops = np.array([[*map(layer.flops_by_class.get, COMPUTE_CLASSES, (0,) * len(COMPUTE_CLASSES)),
                       max(0, layer.flops - sum(layer.flops_by_class.values()))] for layer in layers],
                     dtype=float).reshape(len(layers), len(COMPUTE_CLASSES) + 1)
    speed = np.array([[p.gflops_by_class.get(c, p.gflops) for c in COMPUTE_CLASSES] + [p.gflops] for p in peers])
    seconds = (1.0 / (speed * 1e9)) @ flops.T
    if not any(p.gflops_by_kind for p in peers):
        return seconds
    kinds = sorted({layer.kind for layer in layers})
    kind_speed = np.array([[p.gflops_by_kind.get(k, np.nan) for k in kinds] for p in peers])  # (P, K), NaN: not listed
    per_layer = kind_speed[:, [kinds.index(layer.kind) for layer in layers]]  # (P, L)
    total = np.array([float(layer.flops) for layer in layers])
    with np.errstate(invalid="ignore"):
        by_kind = total[None, :] / (per_layer * 1e9)
    return np.where(np.isnan(per_layer), seconds, by_kind)


def span_seconds(layers: Sequence[LayerProfile], peer: PeerSpec) -> float:
    """Seconds `layers` take on `peer` at its advertised speeds: what a hop's measured compute
    time is compared with (core/speed.py), by the planner's own formula."""
    return float(advertised_seconds(layers, [peer]).sum()) if layers else 0.0


@dataclass(frozen=True, eq=False)
class CostModel:
    """Arrays for one (profile, snapshot, options); cumulative per-layer arrays have L+1 entries."""

    profile: ModelProfile
    peers: tuple[PeerSpec, ...]
    excluded: tuple[str, ...]
    compute: np.ndarray  # (P, L+1) cumulative expected compute seconds
    fetch: np.ndarray  # (P, L+1) cumulative amortised weight-fetch seconds
    params: np.ndarray  # (L+1,) cumulative param bytes
    mem: np.ndarray  # (P,) bytes
    lat: np.ndarray  # (P,) one-way access latency, seconds
    inv_up: np.ndarray  # (P,) seconds per bit on the uplink
    inv_down: np.ndarray  # (P,) seconds per bit on the downlink
    bits: np.ndarray  # (L+1,) bits crossing boundary a (input at 0, out_bytes[a-1] after)
    req_lat: float
    req_inv_up: float
    req_inv_down: float
    # who sends the first hop its input: the requester, except in suffix models (see `suffix`)
    src_lat: float = float("nan")
    src_inv_up: float = float("nan")
    frame_s: np.ndarray | None = None  # (P,) expected seconds of frame handling per input (None: 0)
    frame_s_per_bit: np.ndarray | None = None  # (P,) and per bit read or sent
    quota_period_s: np.ndarray | None = None  # (P,) CPU quota period, seconds (0: no quota)
    quota_share: np.ndarray | None = None  # (P,) quota / period (1: no quota)

    def __post_init__(self) -> None:
        if self.src_lat != self.src_lat:  # NaN: default to the requester
            object.__setattr__(self, "src_lat", self.req_lat)
            object.__setattr__(self, "src_inv_up", self.req_inv_up)
        for name in ("frame_s", "frame_s_per_bit", "quota_period_s"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.zeros(len(self.peers)))
        if self.quota_share is None:
            object.__setattr__(self, "quota_share", np.ones(len(self.peers)))

    @cached_property
    def has_frame_costs(self) -> bool:
        return bool(self.frame_s.any() or self.frame_s_per_bit.any())  # type: ignore[union-attr]

    @cached_property
    def has_quotas(self) -> bool:
        return bool(self.quota_period_s.any())  # type: ignore[union-attr]

    @property
    def searched_exactly(self) -> bool:
        """The searches see every term (no frames, no quotas): their bounds are the model's."""
        return not (self.has_frame_costs or self.has_quotas)

    @cached_property
    def max_lone_saving_s(self) -> float:
        """The most the quota term can take off one request's latency: P - q for every peer
        (a plan uses each peer once); what a latency bound from the search must give up."""
        return float((self.quota_period_s * (1.0 - self.quota_share)).sum())  # type: ignore[operator]

    def search_model(self) -> "CostModel":
        """The same model without the frame and quota terms: what the searches run on (see module doc)."""
        if self.searched_exactly:
            return self
        return replace(self, frame_s=None, frame_s_per_bit=None, quota_period_s=None, quota_share=None)

    def lone_saving(self, y: np.ndarray, work: np.ndarray) -> np.ndarray:
        """Seconds a lone request's `work` (compute + frames, at the sustained rate) on peers `y`
        finishes sooner on a fresh quota period: min(work, P) (1 - s); 0 without a quota."""
        if not self.has_quotas:
            return np.zeros(np.shape(y))
        return np.minimum(work, self.quota_period_s[y]) * (1.0 - self.quota_share[y])  # type: ignore[index]

    def frame_cost(self, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Frame handling seconds of hops (y, a, b), elementwise (numpy index arrays or ints)."""
        if not self.has_frame_costs:  # the searches' case: skip the gathers
            return np.zeros(np.shape(y))
        return self.frame_s[y] + self.frame_s_per_bit[y] * (self.bits[a] + self.bits[b])  # type: ignore[index]

    @property
    def num_layers(self) -> int:
        return len(self.params) - 1

    @property
    def num_peers(self) -> int:
        return len(self.peers)

    @cached_property
    def stage(self) -> np.ndarray:
        """(P, L+1) cumulative per-request busy time: compute + amortised fetch (computed once)."""
        return self.compute + self.fetch

    @cached_property
    def mem_starts(self) -> np.ndarray:
        """(L+1, P): the smallest start a such that span [a, b) fits peer Y's memory (computed once)."""
        need = self.params[None, :] - self.mem[:, None]  # params[a] must be >= params[b] - mem
        lo = np.stack([np.searchsorted(self.params, need[y], side="left") for y in range(self.num_peers)])
        return np.ascontiguousarray(np.minimum(lo, np.arange(self.num_layers + 1)[None, :]).T)

    @cached_property
    def layer_flops(self) -> np.ndarray:
        """(L,) FLOPs of each layer, as floats."""
        return np.array([lay.flops for lay in self.profile.layers], dtype=float)

    @cached_property
    def capacity_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """((L+2, 3) cumulative layers, FLOPs, parameter bytes with a last row of inf (index L+1:
        "no span"), (3,) their totals): the weights of the capacity-counting proof, computed once."""
        w = np.stack([np.ones(self.num_layers), self.layer_flops, np.diff(self.params).astype(float)], axis=1)
        cum = np.concatenate([np.zeros((1, 3)), np.cumsum(w, axis=0), np.full((1, 3), np.inf)])
        return cum, w.sum(axis=0)

    @cached_property
    def _params_list(self) -> list[int]:
        return self.params.tolist()

    @cached_property
    def _mem_list(self) -> list[int]:
        return self.mem.tolist()

    def fits(self, y: int, a: int, b: int) -> bool:
        """Span [a, b) fits peer y's memory (plain ints: called in loops by the baselines)."""
        params = self._params_list
        return params[b] - params[a] <= self._mem_list[y]

    def bandwidth_s(self, src: int, dst: int, a: int) -> float:
        """Bandwidth part of the transfer across boundary a from src to dst (REQUESTER allowed)."""
        u = self.req_inv_up if src == REQUESTER else self.inv_up[src]
        d = self.req_inv_down if dst == REQUESTER else self.inv_down[dst]
        return float(self.bits[a] * max(u, d))

    def transfer_s(self, src: int, dst: int, a: int) -> float:
        lat_src = self.req_lat if src == REQUESTER else self.lat[src]
        lat_dst = self.req_lat if dst == REQUESTER else self.lat[dst]
        return float(lat_src + lat_dst) + self.bandwidth_s(src, dst, a)

    def evaluate(self, spans: Sequence[Span], objective: str, *, method: str = "planner",
                 lower_bound: float = 0.0, optimal: bool = False) -> Plan:
        """Price a chain of spans with the cost model; the one place plans get their numbers."""
        self._check_spans(spans)
        terms = self._hop_terms(spans)
        y, compute, frames, fetch, saving, transfer_in, _ = terms
        hops = tuple(Hop(self.peers[yy].peer_id, int(aa), int(bb), *priced) for (yy, aa, bb), *priced
                     in zip(spans, compute.tolist(), transfer_in.tolist(), fetch.tolist(), frames.tolist(),
                            saving.tolist()))
        latency, bottleneck = self._price(terms)
        return Plan(objective, hops, self.transfer_s(int(y[-1]), REQUESTER, self.num_layers), latency, bottleneck,
                    lower_bound, optimal, method)

    def latency_s(self, spans: Sequence[Span]) -> float:
        """`evaluate(spans, ...).predicted_latency_s` for a valid chain, without building a Plan
        (the planner compares a few candidates by it)."""
        return self._price(self._hop_terms(spans))[0]

    def bottleneck_s(self, spans: Sequence[Span]) -> float:
        """`evaluate(spans, ...).bottleneck_s` for a valid chain, without building a Plan."""
        return self._price(self._hop_terms(spans))[1]

    def _hop_terms(self, spans: Sequence[Span]) -> tuple[np.ndarray, ...]:
        """Per hop of a chain: (peer index, compute, frames, fetch, lone saving, full transfer in,
        its bandwidth part), as arrays: what `evaluate` and `_price` work from."""
        y, a, b = (np.array(v, dtype=np.int64) for v in zip(*spans))
        compute = self.compute[y, b] - self.compute[y, a]
        frames = self.frame_cost(y, a, b)
        fetch = self.fetch[y, b] - self.fetch[y, a]
        saving = self.lone_saving(y, compute + frames)
        src_lat = np.concatenate([[self.req_lat], self.lat[y[:-1]]])
        src_up = np.concatenate([[self.req_inv_up], self.inv_up[y[:-1]]])
        bw_in = self.bits[a] * np.maximum(src_up, self.inv_down[y])
        return y, compute, frames, fetch, saving, (src_lat + self.lat[y]) + bw_in, bw_in

    def _price(self, terms: tuple[np.ndarray, ...]) -> tuple[float, float]:
        """(latency, bottleneck) of a chain from its `_hop_terms`: stages as Hop.stage_s adds them,
        less the lone-request saving for latency."""
        y, compute, frames, fetch, saving, transfer_in, bw_in = terms
        stage = compute + frames + fetch
        last = int(y[-1])
        latency = float((transfer_in + stage - saving).sum()) + self.transfer_s(last, REQUESTER, self.num_layers)
        bottleneck = max(float(stage.max()), float(bw_in.max()), self.bandwidth_s(last, REQUESTER, self.num_layers))
        return latency, bottleneck

    def _check_spans(self, spans: Sequence[Span]) -> None:
        if not spans or spans[0][1] != 0 or spans[-1][2] != self.num_layers:
            raise ValueError("spans must cover [0, L)")
        if len({y for y, _, _ in spans}) != len(spans):
            raise ValueError("a peer may serve only one span")
        for (y, a, b), nxt in zip(spans, [*spans[1:], None]):
            if not a < b or (nxt is not None and nxt[1] != b):
                raise ValueError("spans must be non-empty and contiguous")
            if not self.fits(y, a, b):
                raise ValueError(f"span [{a}, {b}) does not fit peer {self.peers[y].peer_id}")


def restrict(cm: CostModel, keep: Sequence[int]) -> CostModel:
    """The same cost model over a subset of peers (indices into cm.peers, in order)."""
    k = np.array(keep, dtype=np.int64)
    return replace(cm, peers=tuple(cm.peers[i] for i in keep), compute=cm.compute[k], fetch=cm.fetch[k],
                   mem=cm.mem[k], lat=cm.lat[k], inv_up=cm.inv_up[k], inv_down=cm.inv_down[k],
                   frame_s=cm.frame_s[k], frame_s_per_bit=cm.frame_s_per_bit[k],  # type: ignore[index]
                   quota_period_s=cm.quota_period_s[k], quota_share=cm.quota_share[k])  # type: ignore[index]


def suffix(cm: CostModel, a: int, prev: int, keep: Sequence[int]) -> CostModel:
    """Layers [a, L) over the peers `keep`, with peer `prev` sending the first hop its input."""
    sub = restrict(cm, keep)
    return replace(sub, compute=sub.compute[:, a:] - sub.compute[:, [a]], fetch=sub.fetch[:, a:] - sub.fetch[:, [a]],
                   params=cm.params[a:] - cm.params[a], bits=cm.bits[a:],
                   src_lat=float(cm.lat[prev]), src_inv_up=float(cm.inv_up[prev]))


def reversed_model(cm: CostModel) -> CostModel:
    """The chain read backwards (layer L-1 first, uplinks and downlinks swapped).

    A forward DP over it computes cost-to-go of the original: a span [a, b) here is [L-b, L-a)
    there, and a transfer X -> Y here prices as Y -> X there.
    """
    L = cm.num_layers
    return replace(cm, compute=cm.compute[:, [L]] - cm.compute[:, ::-1], fetch=cm.fetch[:, [L]] - cm.fetch[:, ::-1],
                   params=cm.params[L] - cm.params[::-1], bits=cm.bits[::-1].copy(), inv_up=cm.inv_down,
                   inv_down=cm.inv_up, req_inv_up=cm.req_inv_down, req_inv_down=cm.req_inv_up,
                   src_lat=cm.req_lat, src_inv_up=cm.req_inv_down)


def build_costs(profile: ModelProfile, snapshot: SwarmSnapshot, options: PlannerOptions) -> CostModel:
    """Compile profile + snapshot + options into a CostModel (reputation exclusion applied)."""
    peers = usable_peers(snapshot, options)
    used = {p.peer_id for p in peers}
    excluded = tuple(sorted(p.peer_id for p in snapshot.peers if p.peer_id not in used))
    L, P, req = profile.num_layers, len(peers), snapshot.requester
    zeros = np.zeros((P, L + 1))
    compute, fetch = zeros.copy(), zeros.copy()
    if P:
        compute[:, 1:] = np.cumsum(_compute_seconds(profile, peers), axis=1)
        if options.amortize_requests is not None:
            missing = np.array([_missing_bytes(p, profile) for p in peers], dtype=float)
            link = np.array([min(req.up_mbps, p.down_mbps) * 1e6 for p in peers])
            fetch[:, 1:] = np.cumsum(8.0 * missing / link[:, None], axis=1) / options.amortize_requests
    params = np.concatenate([[0], np.cumsum([lay.param_bytes for lay in profile.layers])]).astype(np.int64)
    bits = 8.0 * np.array([profile.input_bytes] + [lay.out_bytes for lay in profile.layers], dtype=float)
    derate = _derate(peers)
    return CostModel(
        profile=profile, peers=peers, excluded=excluded, compute=compute, fetch=fetch, params=params,
        mem=np.array([p.mem_bytes for p in peers], dtype=np.int64),
        lat=np.array([p.latency_ms / 1000.0 for p in peers]),
        inv_up=np.array([1.0 / (p.up_mbps * 1e6) for p in peers]),
        inv_down=np.array([1.0 / (p.down_mbps * 1e6) for p in peers]),
        bits=bits, req_lat=req.latency_ms / 1000.0,
        req_inv_up=1.0 / (req.up_mbps * 1e6), req_inv_down=1.0 / (req.down_mbps * 1e6),
        frame_s=np.array([p.frame_ms / 1000.0 for p in peers], dtype=float) / derate,
        frame_s_per_bit=np.array([p.frame_ms_per_mib / 1000.0 / (8 * 2**20) for p in peers], dtype=float) / derate,
        quota_period_s=np.array([p.cpu_period_ms / 1000.0 for p in peers], dtype=float),
        quota_share=np.array([p.cpu_quota_ms / p.cpu_period_ms if p.cpu_period_ms else 1.0 for p in peers], dtype=float),
    )
