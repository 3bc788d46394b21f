"""How close can any cost model get on this host? The drift of its compute speed over minutes.

A node prices its spans from a calibration it ran at start (models/calibrate: one box of about
0.375 s of CPU per layer kind, inside its CPU quota); the testbed measures each plan's stream
(5-15 s) between half a minute and ten minutes later. If the host delivers a different speed from
one minute to the next, a cost model that knew every layer's cost exactly would still miss by as
much. This measures that floor. A sampler process runs one calibration box of a layer kind after
another for SECONDS: once on a full core, and once inside a fresh cgroup v1 CPU quota for each of
QUOTAS (the testbed's device classes, with their cfs periods), one after the other so they do not
disturb each other. Every box is paired, as the calibration, with every WINDOW-second mean of the
boxes that starts DELAY seconds later, as the stream. window mean / box - 1 is the throughput
error a prediction made from that box would have (predicted rate / measured rate - 1).

    python -m benchmarks.bench_host_noise [--seconds 200] [--quotas 0.1 0.2 0.4] [--kind bert_layer]

The quota runs need root and the cgroup v1 cpu controller (as the testbed does); without them
only the full core is measured, and the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from benchmarks._report import machine_line, write_section

REPO = Path(__file__).resolve().parent.parent  # the sampler runs as `python -m benchmarks.bench_host_noise`
WINDOW_S = 10.0  # a testbed stream: 12 inputs at 1-3 inputs/s, or 40 at 8-10
DELAYS_S = ((30.0, 120.0), (120.0, 600.0))  # from node start (calibration) to a plan's stream
TOLERANCE = 0.15  # issue 7's bound on the cost model's error
PLANS_PER_RUN = 30  # distinct plans in a full testbed run (docs/benchmarks.md)
CLUSTER = REPO / "benchmarks" / "testbed" / "profiles" / "iot8.toml"  # whose cfs periods the quotas use


@dataclass(frozen=True)
class Box:
    """One calibration box: when it ended (seconds since the sampler began) and its CPU ms per call."""

    t: float
    ms: float


@dataclass(frozen=True)
class Floor:
    """What a perfect cost model would show against one series, for one band of delays."""

    delay_s: tuple[float, float]
    pairs: int
    median_abs_error: float
    within: float  # fraction of (calibration, stream) pairs within TOLERANCE


def window_means(boxes: Sequence[Box], window_s: float) -> list[Box]:
    """For each box that starts a full window: (its time, the mean ms of the boxes in the window)."""
    out = []
    end = boxes[-1].t if boxes else 0.0
    for i, first in enumerate(boxes):
        if end - first.t < window_s:
            break
        inside = [b.ms for b in boxes[i:] if b.t - first.t < window_s]
        out.append(Box(first.t, statistics.fmean(inside)))
    return out


def perfect_model_floor(boxes: Sequence[Box], *, window_s: float = WINDOW_S, delay_s: tuple[float, float],
                        calibration_s: float | None = None, tolerance: float = TOLERANCE) -> Floor | None:
    """Pair every calibration with every window that starts delay_s[0] <= d < delay_s[1] seconds
    after it (a stream): the errors window / calibration - 1. A calibration is one box, as nodes
    calibrate, or with `calibration_s` the mean over that many seconds (a longer calibration
    averages the boxes' own scatter away; what is left is the host's drift). None: too short."""
    windows = window_means(boxes, window_s)
    calibrations = boxes if calibration_s is None else window_means(boxes, calibration_s)
    errors = [w.ms / c.ms - 1.0 for c in calibrations for w in windows if delay_s[0] <= w.t - c.t < delay_s[1]]
    if not errors:
        return None
    size = [abs(e) for e in errors]
    return Floor(delay_s, len(errors), statistics.median(size), sum(e <= tolerance for e in size) / len(size))


def parse_series(text: str) -> list[Box]:
    """The sampler's JSON lines (anything else, e.g. a warning, is skipped)."""
    boxes = []
    for line in text.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            boxes.append(Box(float(row["t"]), float(row["ms"])))
    return boxes


# --- measuring -------------------------------------------------------------------------------

def sample(kind: str, seconds: float) -> None:
    """Sampler body: calibration boxes of `kind` back to back on a worker thread (nodes calibrate
    and compute on one), one JSON line per box on stdout."""
    import torch

    from benchmarks.testbed_bench.efficiency import in_worker_thread
    from p2pinfer.models.calibrate import kind_box_s, one_box
    from p2pinfer.models.kind_workloads import kind_workload

    def work() -> None:
        torch.set_num_threads(1)
        with torch.inference_mode():
            run, _flops = kind_workload(kind)
            run()
            began = time.monotonic()
            while time.monotonic() - began < seconds:
                ms = one_box(run, kind_box_s()) * 1e3
                print(json.dumps({"t": round(time.monotonic() - began, 3), "ms": round(ms, 4)}), flush=True)

    in_worker_thread(work)


def cpu_root() -> Path | None:
    """The cgroup v1 cpu hierarchy, if we may make groups in it."""
    from benchmarks.testbed.preflight import find_cpu_root

    root = find_cpu_root(Path("/proc/mounts").read_text())
    return root if root is not None and os.geteuid() == 0 and os.access(root, os.W_OK) else None


def run_series(kind: str, seconds: float, cores: float | None, root: Path | None) -> list[Box]:
    """One sampler process for `seconds`: free (cores None) or in its own group capped at `cores`."""
    argv = [sys.executable, "-m", "benchmarks.bench_host_noise", "--sample", kind, "--seconds", str(seconds)]
    group = None
    if cores is not None:
        assert root is not None
        from benchmarks.testbed.cgroups import create_group
        from benchmarks.testbed.profile import DeviceClass, load_cluster

        cluster, device = load_cluster(CLUSTER), DeviceClass(f"{cores:g}-core", cores, None, None)
        group = create_group(root, f"noise-{os.getpid()}", device.name, period_us=cluster.period_us(device),
                             quota_us=cluster.quota_us(device))
    procs = group / "cgroup.procs" if group is not None else None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds * 3 + 120, check=True, cwd=REPO,
                              preexec_fn=(lambda: procs.write_text(str(os.getpid()))) if procs else None)
    finally:
        if group is not None:  # the sampler has exited: its group and the parent are empty
            group.rmdir()
            group.parent.rmdir()
    return parse_series(done.stdout)


# --- report ----------------------------------------------------------------------------------

def label(cores: float | None) -> str:
    return "full core" if cores is None else f"{cores:g} core (quota)"


def report(kind: str, seconds: float, series: dict[float | None, list[Box]], command: str, note: str) -> str:
    lines = [
        "## Host noise floor: how close any cost model can get here",
        "",
        f"`{command}`",
        "",
        machine_line(),
        "",
        f"One process ran calibration boxes of the `{kind}` layer kind back to back for {seconds:g} s in each",
        "setting below, one setting after another. A box is what a node's calibration measures for that",
        f"kind at start. A testbed stream lasts about {WINDOW_S:g} s and starts half a minute to ten minutes",
        f"after the nodes calibrated, so every box is paired with every {WINDOW_S:g}-s window of boxes that",
        "starts that much later. The error window / box - 1 is what a cost model that knew every layer's",
        "cost exactly would show; issue 7's bound is 15%.",
        "",
        "The last column calibrates over a whole window of boxes instead of one (many times the CPU a node",
        "spends per kind): the boxes' own scatter averages out and what is left is the host's drift, which no",
        "longer calibration removes. The misses column counts the misses expected in a run of",
        f"{PLANS_PER_RUN} plans if every plan ran on nodes like that setting.",
        "",
        f"| setting | boxes | ms per call: p10 / median / p90 | {WINDOW_S:g}-s windows: min - max | delay | perfect model: median error, within 15% | misses in {PLANS_PER_RUN} plans | calibrating for {WINDOW_S:g} s: within 15% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cores, boxes in series.items():
        ms = sorted(b.ms for b in boxes)
        windows = [w.ms for w in window_means(boxes, WINDOW_S)]
        spread = f"{min(windows):.2f} - {max(windows):.2f}" if windows else "-"
        head = f"| {label(cores)} | {len(boxes)} | {ms[len(ms) // 10]:.2f} / {statistics.median(ms):.2f} / {ms[9 * len(ms) // 10]:.2f} | {spread} |"
        for band in DELAYS_S:
            floor = perfect_model_floor(boxes, delay_s=band)
            long = perfect_model_floor(boxes, delay_s=band, calibration_s=WINDOW_S)
            cells = ("-", "-") if floor is None else (
                f"{100 * floor.median_abs_error:.0f}%, {100 * floor.within:.0f}% of {floor.pairs} pairs",
                f"{PLANS_PER_RUN * (1 - floor.within):.1f}")
            drift = "-" if long is None else f"{100 * long.within:.0f}%"
            lines.append(f"{head} {band[0]:g}-{band[1]:g} s | {cells[0]} | {cells[1]} | {drift} |")
            head = "| | | | |"
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def measure(args: argparse.Namespace) -> tuple[dict[float | None, list[Box]], str]:
    root = cpu_root() if args.quotas else None
    note = "" if root is not None or not args.quotas else (
        "The quota series were skipped: they need root and the cgroup v1 cpu controller.")
    series: dict[float | None, list[Box]] = {}
    for cores in [None, *(args.quotas if root is not None else [])]:
        print(f"[host-noise] {label(cores)}: {args.seconds:g} s", file=sys.stderr, flush=True)
        series[cores] = run_series(args.kind, args.seconds, cores, root)
    return series, note


def load_series(path: Path, args: argparse.Namespace) -> tuple[dict[float | None, list[Box]], str]:
    """A saved run (--out); its kind, length and quotas replace the command line's."""
    data = json.loads(path.read_text())
    args.kind, args.seconds = data["kind"], float(data["seconds"])
    series = {None if key is None else float(key): [Box(float(t), float(ms)) for t, ms in rows]
              for key, rows in ((None if c == "full" else c, rows) for c, rows in data["series"].items())}
    args.quotas = [c for c in series if c is not None]
    return series, data.get("note", "")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=200.0, help="length of each series (default 200)")
    ap.add_argument("--quotas", type=float, nargs="*", default=[0.1, 0.2, 0.4], help="cores of each quota series")
    ap.add_argument("--kind", default="bert_layer", help="the layer kind timed (models/kind_workloads.py)")
    ap.add_argument("--out", type=Path, help="also write the raw series as JSON here")
    ap.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument("--from-json", type=Path, help="report the series saved by an earlier --out instead of measuring")
    ap.add_argument("--sample", metavar="KIND", help=argparse.SUPPRESS)  # the sampler process
    args = ap.parse_args(argv)
    if args.sample:
        sample(args.sample, args.seconds)
        return 0
    if args.seconds < 2 * WINDOW_S or any(not 0 < q <= 1 for q in args.quotas):
        ap.error(f"--seconds must be >= {2 * WINDOW_S:g} and every quota in (0, 1]")
    from p2pinfer.models.kind_workloads import KIND_INSTANCES

    if args.kind not in KIND_INSTANCES:
        ap.error(f"--kind {args.kind!r} is not a calibrated layer kind; one of {', '.join(sorted(KIND_INSTANCES))}")
    if args.from_json:
        series, note = load_series(args.from_json, args)
    else:
        series, note = measure(args)
    command = "python -m benchmarks.bench_host_noise " + " ".join(
        [f"--seconds {args.seconds:g}", "--quotas", *(f"{q:g}" for q in args.quotas), f"--kind {args.kind}"])
    text = report(args.kind, args.seconds, series, command, note)
    print(text)
    if args.out:
        args.out.write_text(json.dumps({"kind": args.kind, "seconds": args.seconds, "note": note, "series": {
            "full" if c is None else str(c): [[b.t, b.ms] for b in boxes] for c, boxes in series.items()}}))
    if not args.no_docs:
        write_section("host-noise", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
