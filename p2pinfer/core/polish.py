"""Local search on a chain's bottleneck, for throughput plans the exact search could not prove.

Each round looks only at the current bottleneck term (a hop's stage or a transfer's bandwidth
part) and tries the moves that can lower it: move a cut by one layer, hand the hop to the best
unused peer, trade peers with another hop, split the hop with an unused peer, or merge it with
a neighbour (on either's peer: with frame costs, one hop fewer can be cheaper). A move is taken
when the chain's terms, sorted from largest, get lexicographically smaller, so ties at the top
are worked off one at a time.
Deterministic, and every chain it returns is valid under the cost model. Stages include the
hops' frame handling (costs.CostModel.frame_cost), so the planner also polishes the chain its
frame-free search found under the full cost model.
"""

from __future__ import annotations

import numpy as np

from .costs import REQUESTER, CostModel, Span

Chain = list[Span]


def terms(cm: CostModel, chain: Chain, stage: np.ndarray | None = None) -> list[tuple[float, str, int]]:
    """(value, kind, hop index) for every stage ("stage") and transfer into a hop or home ("link").

    `stage` is cm.stage, passed in by loops (the property builds a new array on every access)."""
    st = cm.stage if stage is None else stage
    out, prev = [], REQUESTER
    for i, (y, a, b) in enumerate(chain):
        out.append((float(st[y, b] - st[y, a] + cm.frame_cost(y, a, b)), "stage", i))
        out.append((cm.bandwidth_s(prev, y, a), "link", i))
        prev = y
    out.append((cm.bandwidth_s(prev, REQUESTER, cm.num_layers), "link", len(chain)))
    return out


def _key(cm: CostModel, chain: Chain, stage: np.ndarray) -> tuple[float, ...]:
    """Every term of the chain, largest first (the same values as `terms`, computed with numpy)."""
    y, a, b = np.array(chain, dtype=np.int64).T
    up = np.concatenate([[cm.req_inv_up], cm.inv_up[y]])
    down = np.concatenate([cm.inv_down[y], [cm.req_inv_down]])
    links = cm.bits[np.concatenate([a, [cm.num_layers]])] * np.maximum(up, down)
    vals = np.concatenate([stage[y, b] - stage[y, a] + cm.frame_cost(y, a, b), links])
    return tuple(np.sort(vals)[::-1].tolist())


def _valid(cm: CostModel, chain: Chain) -> bool:
    return all(a < b and cm.fits(y, a, b) for y, a, b in chain) and len({y for y, _, _ in chain}) == len(chain)


def _best_peer(cm: CostModel, chain: Chain, i: int, a: int, b: int, stage: np.ndarray) -> int | None:
    """The unused peer with the smallest worst term if it served [a, b) as hop i (None: none fits)."""
    used = np.zeros(cm.num_peers, dtype=bool)
    used[[y for j, (y, _, _) in enumerate(chain) if j != i]] = True
    prev_up = cm.src_inv_up if i == 0 else cm.inv_up[chain[i - 1][0]]
    next_down = cm.req_inv_down if i + 1 >= len(chain) else cm.inv_down[chain[i + 1][0]]
    everyone = np.arange(cm.num_peers)
    worst = np.maximum.reduce([stage[:, b] - stage[:, a] + cm.frame_cost(everyone, a, b),
                               cm.bits[a] * np.maximum(prev_up, cm.inv_down),
                               cm.bits[b] * np.maximum(cm.inv_up, next_down)])
    worst[used | (cm.params[b] - cm.params[a] > cm.mem)] = np.inf
    y = int(worst.argmin())
    return y if np.isfinite(worst[y]) else None


def _moves(cm: CostModel, chain: Chain, kind: str, hop: int, stage: np.ndarray) -> list[Chain]:
    """Candidate chains that change the hops next to the bottleneck term or the cuts around them."""
    cands: list[Chain] = []
    k = len(chain)
    near = (hop, hop + 1) if kind == "stage" else (hop - 1, hop)
    for i in sorted({j for j in near if 0 <= j < k}):
        y, a, b = chain[i]
        if (best := _best_peer(cm, chain, i, a, b, stage)) is not None:
            cands.append(chain[:i] + [(best, a, b)] + chain[i + 1:])
        if i > 0:  # move the cut at a by one layer either way
            py, pa, _ = chain[i - 1]
            cands += [chain[:i - 1] + [(py, pa, a + d), (y, a + d, b)] + chain[i + 1:] for d in (-1, 1)]
        for j in range(k):  # trade peers with another hop
            if j != i:
                swapped = list(chain)
                swapped[i], swapped[j] = (chain[j][0], a, b), (y, chain[j][1], chain[j][2])
                cands.append(swapped)
        for j in (i - 1, i):  # merge hops j and j + 1, on either's peer
            if 0 <= j and j + 1 < k:
                (y1, a1, _), (y2, _, b2) = chain[j], chain[j + 1]
                cands += [chain[:j] + [(z, a1, b2)] + chain[j + 2:] for z in (y1, y2)]
        for m in range(a + 1, b):  # split with an unused peer taking [m, b)
            trial = chain[:i] + [(y, a, m), (y, m, b)] + chain[i + 1:]
            if (other := _best_peer(cm, trial, i + 1, m, b, stage)) is not None:
                cands.append(chain[:i] + [(y, a, m), (other, m, b)] + chain[i + 1:])
    return [c for c in cands if _valid(cm, c)]


def polish(cm: CostModel, spans: tuple[Span, ...], max_rounds: int = 300) -> tuple[Span, ...]:
    """A chain whose bottleneck is no worse than `spans`' (usually better when it was not optimal)."""
    stage = cm.stage
    chain, key = list(spans), _key(cm, list(spans), stage)
    for _ in range(max_rounds):
        top = max(terms(cm, chain, stage), key=lambda t: t[0])
        scored = [(_key(cm, c, stage), c) for c in _moves(cm, chain, top[1], top[2], stage)]
        if not scored:
            break
        best_key, best = min(scored, key=lambda kc: kc[0])
        if best_key >= key:
            break
        chain, key = best, best_key
    return tuple(chain)
