"""Local latency of every zoo model on this machine (whole model, one process, batch 1).

    python -m benchmarks.bench_models [--runs 7] [--threads N] [--data-dir DIR] [--quick]

For each model: build (or reuse) it in the store, load all layers, one warm-up forward, then
`runs` timed forwards of the preprocessed default input; reports p50 and min latency and the
implied GFLOP/s (profile FLOPs / p50). Writes the "models" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from benchmarks._report import machine_line, write_section
from p2pinfer.models import profiling, zoo
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.io import sample_input
from p2pinfer.models.store import store_for


def measure(name: str, executor: SpanExecutor, runs: int) -> dict[str, float]:
    store = executor.store
    manifest = zoo.get_manifest(name, store=store)
    prof = profiling.profile(manifest, store)
    x = sample_input(manifest, store)
    executor.run(manifest, 0, manifest.num_layers, x)  # load weights + warm up kernels
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        executor.run(manifest, 0, manifest.num_layers, x)
        times.append((time.perf_counter() - start) * 1000.0)
    p50 = statistics.median(times)
    return {"layers": manifest.num_layers, "gflops": prof.total_flops / 1e9, "mb": prof.total_param_bytes / 1e6,
            "p50": p50, "min": min(times), "rate": prof.total_flops / 1e9 / (p50 / 1000.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data-dir", default=None, help="model store root (default: the user data dir)")
    parser.add_argument("--quick", action="store_true", help="3 runs per model")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    executor = SpanExecutor(store_for(args.data_dir), threads=args.threads)
    rows = []
    for name in zoo.names():
        r = measure(name, executor, runs)
        print(f"{name}: p50 {r['p50']:.1f} ms", file=sys.stderr)
        rows.append(f"| {name} | {r['layers']} | {r['gflops']:.3f} | {r['mb']:.1f} | {r['p50']:.1f} | {r['min']:.1f} | {r['rate']:.1f} |")
    command = "python -m benchmarks.bench_models" + (" --quick" if args.quick else f" --runs {runs}") + \
        (f" --threads {args.threads}" if args.threads else "")
    text = "\n".join([
        "## Models: local latency (whole model, batch 1, one process)",
        "",
        f"Command: `{command}`  ",
        f"{machine_line()} torch {torch.__version__}, {torch.get_num_threads()} threads, p50 of {runs} runs after one warm-up.",
        "",
        "| model | layers | GFLOPs | params MB | p50 ms | min ms | GFLOP/s at p50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])
    write_section("models", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
