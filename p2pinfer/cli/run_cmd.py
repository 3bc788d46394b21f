"""`p2pinfer run`: run a model. Parsing and rendering only; the work is in the library.

Modes: `--local` (this process, no network: p2pinfer.models.local_run), `--bootstrap MA` (a live
swarm), `--swarm DIR` or nothing (the embedded local swarm). Only `--local` is wired so far;
the networked modes are parsed and refused with a clear error until they land.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from p2pinfer.errors import P2PInferError
from p2pinfer.models.io import output_to_json
from p2pinfer.models.local_run import LocalResult, run_local
from p2pinfer.models.store import store_for


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a model (local, embedded swarm, or a live swarm)")
    parser.add_argument("model", metavar="MODEL", help="zoo name, imported name, or model id")
    parser.add_argument("--input", required=True, metavar="X", help="text (text models), a PNG/JPEG path, or a .npy path")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="run the whole model in this process, no network")
    mode.add_argument("--bootstrap", action="append", metavar="MA", help="multiaddr of a swarm peer (repeatable)")
    mode.add_argument("--swarm", metavar="DIR", help="node configs of an embedded swarm (default: node_configs/local/)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--data-dir", metavar="DIR", help="model store root (default: the user data dir)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads for local compute")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    if not args.local:
        raise P2PInferError("only 'p2pinfer run MODEL --input X --local' is available so far; swarm runs are not wired yet")
    result = run_local(args.model, args.input, store=store_for(args.data_dir), threads=args.threads)
    _render(result, as_json=args.json)
    return 0


def local_document(result: LocalResult) -> dict:
    return {"model": result.model, "output": output_to_json(result.output), "latency_ms": round(result.latency_ms, 3)}


def _render(result: LocalResult, *, as_json: bool) -> None:
    doc = local_document(result)
    if as_json:
        print(json.dumps(doc))
        return
    out = doc["output"]
    table = Table(title=f"{result.model} (local)")
    table.add_column("field")
    table.add_column("value")
    table.add_row("model id", result.model_id)
    table.add_row("latency", f"{doc['latency_ms']:.1f} ms")
    table.add_row("output", f"{out['dtype']} {out['shape']}")
    head = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in out["data"][:8])
    table.add_row("first values", head + (" ..." if len(out["data"]) > 8 else ""))
    Console().print(table)
