"""The content-addressed store and integrity checks on every read."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest
import torch

from p2pinfer.errors import ModelError, UnknownModelError, WeightIntegrityError
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.manifest import content_hash
from p2pinfer.models.store import ModelStore, default_root, store_for


def test_blobs_roundtrip_and_put_verifies_the_hash(store: ModelStore) -> None:
    data = b"weights" * 100
    h = content_hash(data)
    assert not store.has_blob(h)
    store.put_blob(h, data)
    assert store.has_blob(h) and store.get_blob(h) == data
    with pytest.raises(WeightIntegrityError, match="hashes to"):
        store.put_blob(content_hash(b"other"), data)
    assert not store.has_blob(content_hash(b"other"))
    with pytest.raises(ModelError, match="not a content hash"):
        store.has_blob("../../etc/passwd")


def test_tampered_blob_on_disk_is_rejected_by_store_and_executor(store: ModelStore) -> None:
    manifest = zoo.build_zoo_model("mlp", store)
    target = manifest.layers[1].weights_hash
    assert target is not None
    path = next(store.root.glob(f"blobs/*/{target}"))
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # flip one bit of one weight
    path.write_bytes(bytes(raw))
    with pytest.raises(WeightIntegrityError, match="corrupted"):
        store.get_blob(target)
    executor = SpanExecutor(store)
    executor.run(manifest, 0, 1, torch.ones(1, 64))  # untouched layer still runs
    with pytest.raises(WeightIntegrityError):
        executor.run(manifest, 1, 2, torch.ones(1, 256))


def test_blob_with_the_right_hash_but_wrong_tensors_is_rejected(store: ModelStore) -> None:
    from p2pinfer.models.manifest import LayerSpec, Manifest, TensorSpec
    from p2pinfer.models.weights import encode

    wrong = encode({"fc.weight": torch.zeros(4, 8)})  # linear 8->4 needs fc.bias too
    layer = LayerSpec("linear", dict(in_features=8, out_features=4, act="none"), store.add_blob(wrong))
    manifest = Manifest("bad", (layer,), (TensorSpec("x", "float32", (1, 8)),), (TensorSpec("x", "float32", (1, 4)),))
    with pytest.raises(WeightIntegrityError, match="expected"):
        SpanExecutor(store).run(manifest, 0, 1, torch.ones(1, 8))


def test_manifests_and_names(store: ModelStore) -> None:
    manifest = zoo.build_zoo_model("mlp", store)
    assert store.get_manifest(manifest.model_id) == manifest
    assert manifest.model_id in store.manifest_ids()
    assert store.lookup_name("mlp") == manifest.model_id
    with pytest.raises(UnknownModelError):
        store.get_manifest("0" * 64)
    other = ModelStore(store.root.parent / "peer-copy")
    other.put_manifest(manifest)  # as a manifest fetched from a peer: by id only, no name
    assert other.lookup_name("mlp") is None and other.get_manifest(manifest.model_id) == manifest
    path = store.root / "manifests" / manifest.model_id
    path.write_bytes(path.read_bytes().replace(b"relu", b"gelu"))
    with pytest.raises(WeightIntegrityError, match="does not hash"):
        store.get_manifest(manifest.model_id)


def test_missing_blobs_are_reported_and_cause_a_rebuild(store: ModelStore) -> None:
    manifest = zoo.get_manifest("mlp", store=store)
    missing = manifest.layers[2].weights_hash
    next(store.root.glob(f"blobs/*/{missing}")).unlink()
    assert SpanExecutor(store).missing_blobs(manifest, 0, 4) == [missing]
    assert zoo.get_manifest("mlp", store=store) == manifest  # rebuilt deterministically
    assert store.has_blob(missing)


def test_unknown_model_names_the_known_ones(store: ModelStore) -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'nope'.*minilm"):
        zoo.get_manifest("nope", store=store)


def test_default_store_is_under_the_platform_user_data_dir(tmp_path: Path) -> None:
    assert default_root() == Path(platformdirs.user_data_dir("p2pinfer", appauthor=False))
    assert store_for(tmp_path).root == tmp_path
    assert store_for(None).root == default_root()
