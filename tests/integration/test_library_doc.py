"""docs/library.md stays true: every ```python block in it runs, in order, in one namespace.

The examples use the default model store, so the test points the user data dir (platformdirs
reads XDG_DATA_HOME) at a temporary directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "library.md"


def test_library_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict[str, object] = {"__name__": "library_doc"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert "(1, 384)" in out and "3 embeddings" in out
    assert (tmp_path / "p2pinfer" / "blobs").is_dir()  # the examples used the redirected store
