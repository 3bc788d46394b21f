"""`p2pinfer models`: list the zoo (and imported models), show a model's layer profile, import a checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from p2pinfer.models import zoo
from p2pinfer.models.importers import import_bert_dir
from p2pinfer.models.manifest import Manifest
from p2pinfer.models.profiling import profile
from p2pinfer.models.store import ModelStore, store_for


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="print one JSON document on stdout")
    parser.add_argument("--data-dir", metavar="DIR", default=default, help="model store root (default: the user data dir)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list and inspect models in the zoo")
    _common(parser, suppress=False)
    parser.set_defaults(handler=_list)
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    show = sub.add_parser("show", help="per-layer cost profile of a model")
    show.add_argument("model", metavar="MODEL", help="zoo name, imported name, or model id")
    _common(show, suppress=True)
    show.set_defaults(handler=_show)
    imp = sub.add_parser("import", help="import a local Hugging Face BERT-family checkpoint directory")
    imp.add_argument("directory", metavar="DIR", help="directory with config.json, model.safetensors, tokenizer.json")
    imp.add_argument("--name", help="name to register the model under (default: the directory name)")
    imp.add_argument("--seq-len", type=int, help="fixed token sequence length (default: from tokenizer.json, else 128)")
    _common(imp, suppress=True)
    imp.set_defaults(handler=_import)


def _summary(manifest: Manifest, store: ModelStore, source: str) -> dict[str, Any]:
    p = profile(manifest, store)
    return {"name": manifest.name, "id": manifest.model_id, "source": source, "layers": manifest.num_layers,
            "params": p.total_param_bytes // 4, "param_bytes": p.total_param_bytes, "gflops": round(p.total_flops / 1e9, 4)}


def _list(args: argparse.Namespace) -> int:
    store = store_for(args.data_dir)
    rows = [_summary(zoo.get_manifest(name, store=store, weights=False), store, "zoo") for name in zoo.names()]
    for name, model_id in store.names().items():
        if name not in zoo.names() and not name.startswith("zoo-v"):
            rows.append(_summary(store.get_manifest(model_id), store, "imported"))
    if args.json:
        print(json.dumps({"models": rows}))
        return 0
    table = Table(title="Models")
    for col in ("name", "id", "source", "layers", "params", "GFLOPs"):
        table.add_column(col, justify="right" if col in ("layers", "params", "GFLOPs") else "left")
    for r in rows:
        table.add_row(r["name"], r["id"][:16], r["source"], str(r["layers"]), f"{r['params']:,}", f"{r['gflops']:.3f}")
    Console().print(table)
    return 0


def show_document(manifest: Manifest, store: ModelStore) -> dict[str, Any]:
    """The `models show --json` document."""
    p = profile(manifest, store)
    layers = [{"index": l.index, "kind": l.kind, "flops": l.flops, "param_bytes": l.param_bytes, "out_bytes": l.out_bytes} for l in p.layers]
    return {"name": manifest.name, "id": manifest.model_id, "input_bytes": p.input_bytes, "layers": layers}


def _show(args: argparse.Namespace) -> int:
    store = store_for(args.data_dir)
    manifest = zoo.get_manifest(args.model, store=store, weights=False)  # a profile needs no weights
    doc = show_document(manifest, store)
    if args.json:
        print(json.dumps(doc))
        return 0
    p = profile(manifest, store)
    table = Table(title=f"{doc['name']}  {doc['id'][:16]}  input {doc['input_bytes']:,} B  "
                        f"{p.total_flops / 1e9:.3f} GFLOPs  {p.total_param_bytes / 1e6:.1f} MB")
    for col in ("index", "kind", "MFLOPs", "linear", "conv", "attention", "param bytes", "out bytes"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for l in p.layers:
        share = [f"{l.flops_by_class.get(c, 0) / 1e6:.1f}" for c in ("linear", "conv", "attention")]
        table.add_row(str(l.index), l.kind, f"{l.flops / 1e6:.1f}", *share, f"{l.param_bytes:,}", f"{l.out_bytes:,}")
    Console().print(table)
    return 0


def _import(args: argparse.Namespace) -> int:
    store = store_for(args.data_dir)
    manifest = import_bert_dir(args.directory, store=store, name=args.name, seq_len=args.seq_len)
    summary = _summary(manifest, store, "imported")
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"imported {manifest.name} ({manifest.num_layers} layers) as {manifest.model_id}", file=sys.stdout)
    return 0
