"""`p2pinfer run`: run a model locally, on the embedded local swarm, or on a live swarm.

Parsing and rendering only; the work is in p2pinfer.client (the requester), p2pinfer.swarm (the
embedded swarm) and p2pinfer.models.local_run (--local). Modes:
- `--local`: the whole model in this process, no network;
- `--bootstrap MA ...`: a live swarm (nodes started with `p2pinfer node start`);
- `--swarm DIR` or nothing: an embedded swarm started in this process from DIR's node configs
  (default node_configs/local/), announced on stderr.
`--input-file FILE` streams many inputs (text: one per line; image models: an .npy batch)
through one pipelined circuit with a progress bar on stderr. `--json` prints one JSON document
on stdout; everything else a human reads goes to stdout, logs and notices to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np
import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from p2pinfer.client import InferenceResult, Input, Requester, RequesterConfig, StreamResult, connect, embedded_config
from p2pinfer.config import local_swarm_config_paths
from p2pinfer.core.plan import OBJECTIVES, Plan
from p2pinfer.core.replicas import ReplicaOptions
from p2pinfer.errgroups import unwrapped
from p2pinfer.errors import ConfigError, InputError
from p2pinfer.fault import DEFAULT_SPOT_CHECK, FaultOptions, LedgerHooks
from p2pinfer.models import zoo
from p2pinfer.models.io import MAX_INPUT_FILE_BYTES, load_input, output_to_json
from p2pinfer.models.local_run import LocalResult, run_local
from p2pinfer.models.store import default_root, store_for

MAX_STREAM_INPUTS = 10_000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a model (embedded local swarm, a live swarm, or --local)")
    parser.add_argument("model", metavar="MODEL", help="zoo name, imported name, or model id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="X", help="text (text models), a PNG/JPEG path, or a .npy path")
    source.add_argument("--input-file", metavar="FILE",
                        help="stream many inputs: one text per line, or an .npy batch [B, ...] for array/image models")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="run the whole model in this process, no network")
    mode.add_argument("--bootstrap", action="append", metavar="MULTIADDR", help="a swarm peer's address (repeatable)")
    mode.add_argument("--swarm", metavar="DIR", help="start an embedded swarm from DIR's node configs (*.toml)")
    parser.add_argument("--objective", choices=OBJECTIVES, default=None,
                        help="what the plan minimises (default: latency; throughput for --input-file)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--data-dir", metavar="DIR", help="model store root (default: the user data dir)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads for --local compute")
    parser.add_argument("--spot-check", type=float, default=DEFAULT_SPOT_CHECK, metavar="FRACTION",
                        help=f"fraction of hops re-run locally to verify them (default {DEFAULT_SPOT_CHECK}; "
                             "every hop of a peer on probation is checked; docs/reputation.md)")
    parser.add_argument("--max-attempts", type=int, default=3, metavar="N",
                        help="circuits to try before giving up (failover re-plans without failed peers; default 3)")
    chains = parser.add_mutually_exclusive_group()
    chains.add_argument("--chains", type=int, metavar="N",
                        help="--input-file with objective throughput: at most N disjoint chains served at once "
                             "(default: as many as pay off; docs/cost-model.md, replicated plans)")
    chains.add_argument("--single-chain", action="store_true",
                        help="stream through one chain only (as --chains 1)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    with unwrapped():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.local:
        if args.input_file:
            raise ConfigError("--input-file streams through a swarm; use --input X with --local")
        _render_local(run_local(args.model, args.input, store=store_for(args.data_dir), threads=args.threads), args.json)
        return 0
    _fault_settings(args)  # bad flags: fail before any network
    _replica_settings(args)
    manifest = zoo.get_manifest(args.model, store=store_for(args.data_dir))  # bad model/input: fail before any network
    if args.input_file:
        inputs = read_input_file(Path(args.input_file), text=manifest.preprocess == "text")
    else:
        load_input(manifest, args.input, store=store_for(args.data_dir))
    if not args.bootstrap:
        _announce_swarm(args.swarm)
    if args.input_file:
        result = trio.run(_stream, args, inputs)
        _render_stream(result, args.json)
    else:
        result = trio.run(_single, args)
        _render_single(result, args.json)
    return 0


def _announce_swarm(directory: str | None) -> None:
    paths = local_swarm_config_paths(Path(directory) if directory else None)
    where = directory or "node_configs/local/"
    print(f"p2pinfer run: no --bootstrap given: starting the embedded local swarm ({len(paths)} in-process nodes "
          f"on loopback from {where}: {', '.join(p.stem for p in paths)})", file=sys.stderr, flush=True)


def _fault_settings(args: argparse.Namespace) -> tuple[FaultOptions, RequesterConfig]:
    """--spot-check and --max-attempts, checked before any network."""
    options = FaultOptions.with_spot_check(args.spot_check)
    base = RequesterConfig() if args.bootstrap else embedded_config()
    if args.max_attempts < 1:
        raise ConfigError(f"--max-attempts must be >= 1, got {args.max_attempts}")
    return options, replace(base, max_attempts=args.max_attempts)


def _replica_settings(args: argparse.Namespace) -> ReplicaOptions:
    """--chains / --single-chain, checked before any network."""
    if args.chains is not None and args.chains < 1:
        raise ConfigError(f"--chains must be >= 1, got {args.chains}")
    return ReplicaOptions(max_chains=1 if args.single_chain else args.chains)


@asynccontextmanager
async def _session(args: argparse.Namespace) -> AsyncIterator[Requester]:
    """A requester whose reputation ledger lives in --data-dir (or the user data dir)."""
    options, config = _fault_settings(args)
    config = replace(config, replicas=_replica_settings(args))
    hooks = LedgerHooks.open(args.data_dir or default_root(), options=options)
    try:
        async with connect(bootstrap=args.bootstrap or (), swarm_dir=args.swarm, store=store_for(args.data_dir),
                           config=config, hooks=hooks) as requester:
            yield requester
    finally:
        hooks.close()


async def _single(args: argparse.Namespace) -> InferenceResult:
    async with _session(args) as requester:
        return await requester.infer(args.model, args.input, objective=args.objective or "latency")


async def _stream(args: argparse.Namespace, inputs: list[Input]) -> StreamResult:
    async with _session(args) as requester:
        with _progress(len(inputs)) as advance:
            return await requester.infer_stream(args.model, inputs, objective=args.objective or "throughput",
                                                on_result=advance)


class _progress:
    """A rich progress bar on stderr; the context value is `advance(done_count)`."""

    def __init__(self, total: int) -> None:
        self.bar = Progress(TextColumn("inferring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=False)
        self.task = self.bar.add_task("stream", total=total)

    def __enter__(self) -> Callable[[int], None]:
        self.bar.start()
        return lambda done: self.bar.update(self.task, completed=done)

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()


def read_input_file(path: Path, *, text: bool) -> list[Input]:
    """Inputs to stream: the non-empty lines of a text file (text models), or the rows of an
    .npy batch [B, ...] (array and image models; each row becomes one input of batch 1)."""
    if not path.is_file():
        raise InputError(f"input file {str(path)!r} is not a readable file")
    if path.stat().st_size > MAX_INPUT_FILE_BYTES:
        raise InputError(f"input file {str(path)!r} is larger than {MAX_INPUT_FILE_BYTES >> 20} MiB")
    items = _text_lines(path) if text else _npy_rows(path)
    if not items:
        raise InputError(f"input file {str(path)!r} holds no inputs")
    if len(items) > MAX_STREAM_INPUTS:
        raise InputError(f"input file {str(path)!r} holds {len(items)} inputs; at most {MAX_STREAM_INPUTS} per run")
    return items


def _text_lines(path: Path) -> list[Input]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {str(path)!r} as UTF-8 text: {exc}") from None
    return [line.strip() for line in lines if line.strip()]


def _npy_rows(path: Path) -> list[Input]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {path.name!r} as .npy: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.ndim < 2:
        raise InputError(f"{path.name!r} has shape {list(getattr(arr, 'shape', []))}; an input batch is [B, ...]")
    return [np.ascontiguousarray(arr[i : i + 1]) for i in range(arr.shape[0])]


# ---- rendering --------------------------------------------------------------------------------


def local_document(result: LocalResult) -> dict:
    return {"model": result.model, "output": output_to_json(result.output), "latency_ms": round(result.latency_ms, 3)}


def _render_local(result: LocalResult, as_json: bool) -> None:
    doc = local_document(result)
    if as_json:
        print(json.dumps(doc))
        return
    table = Table(title=f"{result.model} (local)")
    table.add_column("field")
    table.add_column("value")
    table.add_row("model id", result.model_id)
    table.add_row("latency", f"{doc['latency_ms']:.1f} ms")
    _output_rows(table, doc["output"])
    Console().print(table)


def _output_rows(table: Table, out: dict) -> None:
    table.add_row("output", f"{out['dtype']} {out['shape']}")
    head = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in out["data"][:8])
    table.add_row("first values", head + (" ..." if len(out["data"]) > 8 else ""))


def _plan_table(plan: Plan, model: str) -> Table:
    table = Table(title=f"plan for {model}: {len(plan.hops)} hop(s), objective {plan.objective}, "
                        f"predicted latency {plan.predicted_latency_s * 1e3:.1f} ms, "
                        f"{plan.throughput_rps:.2f} req/s")
    for col in ("hop", "peer", "layers", "predicted transfer in ms", "predicted compute ms"):
        table.add_column(col, justify="left" if col in ("peer", "layers") else "right", overflow="fold")
    for i, h in enumerate(plan.hops, 1):
        table.add_row(str(i), h.peer_id, f"[{h.start}, {h.stop})", f"{h.transfer_in_s * 1e3:.2f}", f"{h.compute_s * 1e3:.2f}")
    return table


def _hops_table(result: InferenceResult | StreamResult) -> Table:
    table = Table(title="per hop: predicted vs measured compute")
    for col in ("peer", "layers", "predicted ms", "measured ms"):
        table.add_column(col, justify="left" if col in ("peer", "layers") else "right", overflow="fold")
    for h in result.hops:
        table.add_row(h.peer_id, f"[{h.start}, {h.stop})", f"{h.predicted_ms:.2f}", f"{h.measured_ms:.2f}")
    return table


def _render_single(result: InferenceResult, as_json: bool) -> None:
    doc = result.to_json_dict()
    if as_json:
        print(json.dumps(doc))
        return
    console = Console()
    console.print(_plan_table(result.plan, result.model))
    console.print(_hops_table(result))
    table = Table(title=f"{result.model} result")
    table.add_column("field")
    table.add_column("value")
    table.add_row("latency", f"{result.latency_ms:.1f} ms (circuit setup {result.setup_ms:.1f} ms)")
    _output_rows(table, doc["output"])
    console.print(table)


def _render_stream(result: StreamResult, as_json: bool) -> None:
    summary = (f"{len(result.outputs)} inputs in {result.wall_s:.2f} s: {result.throughput_rps:.2f} inputs/s "
               f"(setup {result.setup_ms:.0f} ms; median latency {sorted(result.latency_ms)[len(result.latency_ms) // 2]:.1f} ms)")
    replicated = getattr(result, "replicated", None)
    if replicated is not None:
        summary += f"; {len(replicated.chains)} chains at once, predicted {replicated.throughput_rps:.2f} inputs/s"
    if as_json:
        print(summary, file=sys.stderr)
        print(json.dumps(result.to_json_dict()))
        return
    console = Console()
    if replicated is not None:
        console.print(_chains_table(result, replicated))
    else:
        console.print(_plan_table(result.plan, result.model))
        console.print(_hops_table(result))
    console.print(summary)


def _chains_table(result: StreamResult, replicated: Any) -> Table:
    """A replicated stream: one row per chain (its hops, predicted share, inputs it computed)."""
    table = Table(title=f"replicated plan for {result.model}: {len(replicated.chains)} disjoint chains at once, predicted "
                        f"{replicated.throughput_rps:.2f} inputs/s (proven bound {replicated.upper_bound_rps:.2f}; "
                        f"limited by {replicated.limit})")
    for col in ("chain", "hops: peer [layers) predicted / measured compute ms", "predicted inputs/s", "inputs", "status"):
        table.add_column(col, justify="left" if col.startswith(("hops", "status")) else "right", overflow="fold")
    for i, (rate, stats) in enumerate(zip(replicated.rates_rps, result.chains)):
        hops = "\n".join(f"{h.peer_id} [{h.start}, {h.stop}) {h.predicted_compute_ms:.1f} / {h.measured_compute_ms:.1f}"
                         for h in stats.hops)
        table.add_row(str(i + 1), hops, f"{rate:.2f}", str(stats.inputs),
                      "ok" if stats.error is None else f"failed, {stats.redispatched} re-dispatched: {stats.error}")
    return table
