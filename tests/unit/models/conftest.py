"""Fixtures for the models tests: one session-wide store with the whole zoo built once (vgg16
alone is ~550 MB of weights), and one shared executor so built layers are reused across tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.io import sample_input
from p2pinfer.models.store import ModelStore


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


__all__ = ["sample_input"]
