"""`p2pinfer ledger [--json] [--data-dir DIR]` over a real ledger file."""

from __future__ import annotations

import json
import time

from p2pinfer.cli import main
from p2pinfer.core.reputation import EventKind
from p2pinfer.ledger import Ledger, ledger_path


def _fill(data_dir):
    now = time.time()
    with Ledger(ledger_path(data_dir)) as led:
        for _ in range(3):
            led.record_hop_ok("goodpeer", now=now, flops=10**9, measured_s=0.1, advertised_gflops=100.0)
        for _ in range(4):
            led.record_failure("flaky", EventKind.TIMEOUT, now=now)


def test_json_is_one_document_with_rows_and_totals(tmp_path, capsys):
    _fill(tmp_path)
    assert main(["ledger", "--json", "--data-dir", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["peer_id"]: r for r in doc["peers"]}
    assert doc["exists"] and set(rows) == {"goodpeer", "flaky"}
    assert rows["goodpeer"]["hops_ok"] == 3 and abs(rows["goodpeer"]["measured_gflops"] - 10.0) < 1e-9
    assert rows["flaky"]["excluded"] and rows["flaky"]["timeouts"] == 4
    assert doc["totals"]["peers"] == 2 and doc["totals"]["hops_ok"] == 3 and doc["totals"]["events"] == 8


def test_table_shows_each_peer_and_its_status(tmp_path, capsys):
    _fill(tmp_path)
    assert main(["ledger", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "goodpeer" in out and "flaky" in out and "excl" in out and "2 peers" in out


def test_missing_ledger_is_empty_not_an_error(tmp_path, capsys):
    assert main(["ledger", "--json", "--data-dir", str(tmp_path / "none")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["exists"] is False and doc["peers"] == []
    assert not (tmp_path / "none").exists()  # looking does not create anything


def test_corrupt_ledger_is_one_line_and_exit_2(tmp_path, capsys):
    ledger_path(tmp_path).write_bytes(b"garbage" * 1000)
    assert main(["ledger", "--json", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt" in err


def test_config_flag_reads_the_ledger_of_that_node(tmp_path, capsys):
    node_dir = tmp_path / "node-a"
    _fill(node_dir)
    config = tmp_path / "node-a.toml"
    config.write_text(f'[node]\nname = "node-a"\ndata_dir = "{node_dir}"\n')
    assert main(["ledger", "--json", "--config", str(config)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ledger"] == str(ledger_path(node_dir)) and {r["peer_id"] for r in doc["peers"]} == {"goodpeer", "flaky"}


def test_config_and_data_dir_are_exclusive(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["ledger", "--config", str(tmp_path / "a.toml"), "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "not allowed with" in capsys.readouterr().err
