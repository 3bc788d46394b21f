"""Our MiniLM matches sentence-transformers' own embeddings (stored in tests/data by the script there)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.io import tokenize
from p2pinfer.models.store import ModelStore

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "minilm_reference.json"


def test_embeddings_match_sentence_transformers(zoo_store: ModelStore, executor: SpanExecutor) -> None:
    ref = json.loads(REFERENCE.read_text())
    manifest = zoo.get_manifest("minilm", store=zoo_store)
    assert len(ref["sentences"]) >= 5
    for sentence, expected in zip(ref["sentences"], ref["embeddings"]):
        ours = executor.run(manifest, 0, manifest.num_layers, tokenize(manifest, sentence, store=zoo_store))["embedding"][0]
        expected_t = torch.tensor(expected, dtype=torch.float32)
        cosine = torch.nn.functional.cosine_similarity(ours, expected_t, dim=0).item()
        assert cosine >= 0.99999, sentence
        assert (ours - expected_t).abs().max().item() <= 1e-5, sentence
        assert abs(ours.norm().item() - 1.0) < 1e-5
    assert "sentence_transformers" not in sys.modules  # the library is only used to make the vectors


def test_distinct_sentences_give_distinct_embeddings(zoo_store: ModelStore, executor: SpanExecutor) -> None:
    manifest = zoo.get_manifest("minilm", store=zoo_store)
    a, b = (executor.run(manifest, 0, manifest.num_layers, tokenize(manifest, s, store=zoo_store))["embedding"][0]
            for s in ("A man is playing a guitar.", "The stock market fell sharply today."))
    assert torch.dot(a, b).item() < 0.5
