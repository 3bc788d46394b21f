"""Fixtures for the models tests: one session-wide store with the whole zoo built once (vgg16
alone is ~550 MB of weights), and one shared executor so built layers are reused across tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.manifest import Manifest
from p2pinfer.models.store import ModelStore

SENTENCE = "Peer-to-peer inference splits a neural network across many small devices!"


@pytest.fixture(scope="session")
def zoo_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("zoo-store"))
    for name in zoo.names():
        zoo.get_manifest(name, store=store)
    return store


@pytest.fixture(scope="session")
def executor(zoo_store: ModelStore) -> SpanExecutor:
    return SpanExecutor(zoo_store)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def sample_input(manifest: Manifest, store: ModelStore) -> dict[str, torch.Tensor]:
    """A deterministic, realistic input for any zoo model."""
    if manifest.preprocess == "text":
        from p2pinfer.models.io import tokenize

        return tokenize(manifest, SENTENCE, store=store)
    spec = manifest.inputs[0]
    rng = np.random.Generator(np.random.PCG64(7))
    return {spec.name: torch.from_numpy(rng.standard_normal(spec.shape).astype(np.float32))}
