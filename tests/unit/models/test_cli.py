"""`p2pinfer models`, `models show`, `models import`, `run --local`: JSON documents and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from p2pinfer.cli import main
from p2pinfer.models import zoo
from p2pinfer.models.store import ModelStore

from .test_minilm_reference import REFERENCE


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_models_list_json(capsys: pytest.CaptureFixture[str], zoo_store: ModelStore) -> None:
    doc = run_json(capsys, "models", "--json", "--data-dir", str(zoo_store.root))
    rows = {r["name"]: r for r in doc["models"]}
    assert list(rows)[:5] == zoo.names()
    resnet = rows["resnet50"]
    assert resnet["id"] == zoo.get_manifest("resnet50", store=zoo_store).model_id
    assert resnet["layers"] == 20 and 8.0 < resnet["gflops"] < 8.4 and resnet["params"] > 25_000_000


def test_models_show_json(capsys: pytest.CaptureFixture[str], zoo_store: ModelStore) -> None:
    doc = run_json(capsys, "models", "show", "minilm", "--json", "--data-dir", str(zoo_store.root))
    assert set(doc) == {"name", "id", "input_bytes", "layers"}
    assert doc["name"] == "minilm" and doc["input_bytes"] == 2048 and len(doc["layers"]) == 8
    assert all(set(l) == {"index", "kind", "flops", "param_bytes", "out_bytes"} for l in doc["layers"])
    assert [l["index"] for l in doc["layers"]] == list(range(8)) and doc["layers"][1]["flops"] > 0


def test_tables_without_json(capsys: pytest.CaptureFixture[str], zoo_store: ModelStore) -> None:
    assert main(["models", "show", "mlp", "--data-dir", str(zoo_store.root)]) == 0
    out = capsys.readouterr().out
    assert "mlp" in out and "linear" in out and "out bytes" in out


def test_run_local_json_for_an_npy_input(capsys: pytest.CaptureFixture[str], tmp_path: Path, zoo_store: ModelStore) -> None:
    np.save(tmp_path / "x.npy", np.ones((1, 64), np.float32))
    doc = run_json(capsys, "run", "mlp", "--input", str(tmp_path / "x.npy"), "--local", "--json", "--data-dir", str(zoo_store.root))
    assert set(doc) == {"model", "output", "latency_ms"} and doc["model"] == "mlp" and doc["latency_ms"] > 0
    assert doc["output"]["shape"] == [1, 10] and doc["output"]["dtype"] == "float32" and len(doc["output"]["data"]) == 10


def test_import_then_run_the_imported_minilm(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    summary = run_json(capsys, "models", "import", str(zoo.minilm_dir()), "--name", "my-minilm", "--json", "--data-dir", data_dir)
    assert summary["name"] == "my-minilm" and summary["layers"] == 8
    ref = json.loads(REFERENCE.read_text())
    doc = run_json(capsys, "run", "my-minilm", "--input", ref["sentences"][0], "--local", "--json", "--data-dir", data_dir)
    ours, expected = torch.tensor(doc["output"]["data"]), torch.tensor(ref["embeddings"][0])
    assert doc["output"]["shape"] == [1, 384] and (ours - expected).abs().max().item() <= 1e-5
    listed = run_json(capsys, "models", "--json", "--data-dir", data_dir)
    assert {"name": "my-minilm", "source": "imported"}.items() <= next(r for r in listed["models"] if r["name"] == "my-minilm").items()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "nope", "--input", "x", "--local"], "unknown model 'nope'"),
        (["run", "mlp", "--input", "/no/such.npy", "--local"], "is not a readable file"),
        (["run", "mlp", "--input", "{bad}", "--local"], "has dtype float64"),
        (["run", "mlp", "--input", "hello"], "input 'hello' is not a readable file"),  # swarm mode: checked before any network
        (["models", "show", "nope"], "unknown model 'nope'"),
        (["models", "import", "/no/such/dir"], "is not a BERT checkpoint directory"),
    ],
)
def test_errors_are_one_line_with_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, zoo_store: ModelStore) -> None:
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones(64, np.float64))
    argv = [str(bad) if a == "{bad}" else a for a in argv] + ["--data-dir", str(zoo_store.root)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_real_process_exit_code(tmp_path: Path, zoo_store: ModelStore) -> None:
    argv = [sys.executable, "-m", "p2pinfer", "run", "mlp", "--local", "--json", "--data-dir", str(zoo_store.root),
            "--input", str(tmp_path / "missing.npy")]
    bad = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.strip().endswith("is not a readable file")
