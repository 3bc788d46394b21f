"""Timeline plot of a plan (and the best baseline) for `p2pinfer plan --plot FILE.png`.

One request flows left to right: each peer's row shows the transfer of its input (hatched),
its amortised weight fetch and its compute; the requester's row shows the result coming back.
matplotlib is imported here only, never in core/.
"""

from __future__ import annotations

from pathlib import Path

from p2pinfer.core.plan import Plan

_COLORS = {"transfer": "#9ecae1", "fetch": "#fdae6b", "compute": "#31a354"}


def _segments(plan: Plan) -> tuple[list[str], list[tuple[int, float, float, str]]]:
    """Rows (requester first) and (row, start, width, kind) bars for one request."""
    rows = ["requester"] + [f"{h.peer_id}\n[{h.start},{h.stop})" for h in plan.hops]
    bars, t = [], 0.0
    for i, h in enumerate(plan.hops, 1):
        bars.append((i, t, h.transfer_in_s, "transfer"))
        t += h.transfer_in_s
        if h.weight_fetch_s > 0:
            bars.append((i, t, h.weight_fetch_s, "fetch"))
            t += h.weight_fetch_s
        bars.append((i, t, h.compute_s + h.frame_s, "compute"))  # frame handling runs on the same CPU
        t += h.compute_s + h.frame_s
    bars.append((0, t, plan.transfer_out_s, "transfer"))
    return rows, bars


def _draw(ax, label: str, plan: Plan) -> None:
    rows, bars = _segments(plan)
    for row, start, width, kind in bars:
        ax.broken_barh([(start * 1e3, width * 1e3)], (row - 0.35, 0.7), facecolors=_COLORS[kind],
                       edgecolor="black", linewidth=0.4, hatch="//" if kind == "transfer" else None)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{label}: latency {plan.predicted_latency_s * 1e3:.1f} ms, bottleneck "
                 f"{plan.bottleneck_s * 1e3:.1f} ms ({plan.throughput_rps:.1f} req/s), {len(plan.hops)} hop(s)",
                 fontsize=10, loc="left")


def plot_report(plan: Plan, baseline: tuple[str, Plan] | None, path: Path, *, title: str = "") -> Path:
    """Write a PNG with the plan's timeline above the best baseline's (shared time axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = [("planner", plan)] + ([baseline] if baseline is not None else [])
    heights = [len(p.hops) + 1 for _, p in panels]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(10, 1.2 + 0.45 * sum(heights) + 0.6 * len(panels)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (label, p) in zip(axes[:, 0], panels):
        _draw(ax, label, p)
    axes[-1, 0].set_xlabel("time within one request (ms)")
    fig.legend(handles=[Patch(facecolor=c, edgecolor="black", hatch="//" if k == "transfer" else None, label=k)
                        for k, c in _COLORS.items()], loc="upper right", ncol=3, fontsize=8)
    fig.suptitle(f"{title} — objective: {plan.objective}".strip(" —"), x=0.01, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
