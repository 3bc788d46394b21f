"""Manifests: canonical, deterministic ids; every malformed or hostile encoding is refused."""

from __future__ import annotations

from typing import Any, Callable

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from p2pinfer.errors import ModelError
from p2pinfer.models import zoo
from p2pinfer.models.manifest import MAX_MANIFEST_BYTES, LayerSpec, Manifest, TensorSpec
from p2pinfer.models.store import ModelStore

# Golden model ids: the same on every machine. If a zoo definition or the weight recipe changes
# on purpose, bump zoo.ZOO_VERSION and update these (and say so: peers with old ids won't match).
GOLDEN_IDS = {
    "minilm": "ba77cb29f86e0ad5a4749e01d9c61e4cc02f0a8d719287faec3881fd59f307e6",
    "resnet50": "94aecff3db2bbcb970dff59a92c895055fe831170949ad48dff858615df7c340",
    "vgg16": "917a69eab935c6a9d61b7dc4f57b043b20534a7cba3339f12109d6e5a40ea65c",
    "mobilenetv2": "b1c6abcb7c4e23478a7cfe672ad2a2df143351e5e5c08ea4dae30517563b1550",
    "mlp": "8b9c20aca5634477ca2e4437c5254617edea33fb548b2a6ea765e16be7b3e5f2",
}


def test_zoo_names() -> None:
    assert zoo.names() == ["minilm", "resnet50", "vgg16", "mobilenetv2", "mlp"]


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_ids_are_golden(name: str, zoo_store: ModelStore) -> None:
    assert zoo.get_manifest(name, store=zoo_store).model_id == GOLDEN_IDS[name]


def test_rebuilding_in_a_fresh_store_gives_the_same_bytes(store: ModelStore, zoo_store: ModelStore) -> None:
    for name in ("mlp", "mobilenetv2"):
        fresh = zoo.build_zoo_model(name, store)
        assert fresh.to_cbor() == zoo.get_manifest(name, store=zoo_store).to_cbor()


def test_layers_are_fine_grained(zoo_store: ModelStore) -> None:
    kinds = {name: [layer.kind for layer in zoo.get_manifest(name, store=zoo_store).layers] for name in zoo.names()}
    assert kinds["resnet50"].count("bottleneck") == 16 and len(kinds["resnet50"]) == 20
    assert kinds["vgg16"].count("conv_bn_act") == 13 and kinds["vgg16"].count("max_pool") == 5
    assert kinds["mobilenetv2"].count("inverted_residual") == 17
    assert kinds["minilm"] == ["bert_embeddings"] + ["bert_layer"] * 6 + ["pool"]


def test_roundtrip_and_lookup_by_id(zoo_store: ModelStore) -> None:
    manifest = zoo.get_manifest("resnet50", store=zoo_store)
    again = Manifest.from_cbor(manifest.to_cbor())
    assert again == manifest and again.to_cbor() == manifest.to_cbor()
    assert zoo.get_manifest(manifest.model_id, store=zoo_store) == manifest


def _mlp_obj(zoo_store: ModelStore) -> dict[str, Any]:
    return zoo.get_manifest("mlp", store=zoo_store).to_obj()


def _set(path: tuple, value: Any) -> Callable[[dict], dict]:
    def edit(obj: dict) -> dict:
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return obj
    return edit


def _drop(key: str) -> Callable[[dict], dict]:
    return lambda obj: {k: v for k, v in obj.items() if k != key}


MALFORMED: list[tuple[str, Callable[[dict], Any], str]] = [
    ("unknown kind", _set(("layers", 0, "kind"), "exec_python"), "unknown layer kind 'exec_python'"),
    ("extra top key", lambda o: {**o, "code": "rm -rf /"}, "must have keys"),
    ("missing key", _drop("outputs"), "must have keys"),
    ("future format", _set(("format",), 2), "unsupported format"),
    ("bool as int", _set(("layers", 0, "config", "in_features"), True), "must be int, got bool"),
    ("out of bounds", _set(("layers", 0, "config", "out_features"), 10**7), "outside"),
    ("unknown activation", _set(("layers", 0, "config", "act"), "swish"), "must be one of"),
    ("extra config key", _set(("layers", 0, "config", "bias"), True), "config keys must be"),
    ("missing weights", _set(("layers", 0, "weights"), None), "needs a weights hash"),
    ("bad hash", _set(("layers", 0, "weights"), "ZZ" * 32), "not 64 lowercase hex"),
    ("bad name", _set(("name",), "../../etc/passwd"), "model name"),
    ("bad dtype", _set(("inputs", 0, "dtype"), "float16"), "dtype 'float16'"),
    ("zero dim", _set(("inputs", 0, "shape"), [1, 0]), "shape"),
    ("huge dim", _set(("inputs", 0, "shape"), [1, 2**40]), "shape"),
    ("chain break", _set(("inputs", 0, "name"), "input_ids"), "takes ['x']"),
    ("layers not a list", _set(("layers",), {"0": 1}), "must be an array"),
    ("not a map", lambda o: [o], "manifest must be a map"),
    ("text without tokenizer", _set(("preprocess", "kind"), "text"), "tokenizer hash"),
]


@pytest.mark.parametrize("case, edit, message", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_manifests_are_rejected(case: str, edit: Callable, message: str, zoo_store: ModelStore) -> None:
    data = cbor2.dumps(edit(_mlp_obj(zoo_store)), canonical=True)
    with pytest.raises(ModelError, match=__import__("re").escape(message)):
        Manifest.from_cbor(data)


def test_hostile_bytes_are_rejected(zoo_store: ModelStore) -> None:
    good = zoo.get_manifest("mlp", store=zoo_store).to_cbor()
    with pytest.raises(ModelError, match="not valid CBOR"):
        Manifest.from_cbor(good[:-3])
    with pytest.raises(ModelError, match="not valid CBOR"):
        Manifest.from_cbor(b"\xff\x00garbage")
    with pytest.raises(ModelError, match="byte limit"):
        Manifest.from_cbor(b"\x00" * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(ModelError):
        Manifest.from_cbor(b"\x81" * 100_000 + b"\x00")  # deeply nested arrays
    non_canonical = cbor2.dumps(_mlp_obj(zoo_store), canonical=False)
    assert non_canonical != good
    with pytest.raises(ModelError, match="canonical"):
        Manifest.from_cbor(non_canonical)


def test_oversized_layer_and_bad_constructor_values() -> None:
    with pytest.raises(ModelError, match="weight bytes exceed"):
        LayerSpec("linear", {"in_features": 65536, "out_features": 65536, "act": "none"}, "a" * 64)
    with pytest.raises(ModelError, match="groups=3 must divide"):
        LayerSpec("conv_bn_act", dict(in_ch=8, out_ch=8, kernel=3, stride=1, padding=1, groups=3, bn=True, act="relu"), "a" * 64)
    with pytest.raises(ModelError, match="no weights hash"):
        LayerSpec("max_pool", dict(kernel=2, stride=2, padding=0), "a" * 64)
    with pytest.raises(ModelError, match="exactly one output"):
        Manifest("m", (LayerSpec("max_pool", dict(kernel=2, stride=2, padding=0), None),),
                 (TensorSpec("x", "float32", (1, 3, 8, 8)),), ())


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_bytes_never_crash_the_decoder(data: st.DataObject, zoo_store: ModelStore) -> None:
    good = zoo.get_manifest("mlp", store=zoo_store).to_cbor()
    pos = data.draw(st.integers(0, len(good) - 1))
    mutated = data.draw(st.sampled_from([
        good[:pos],
        good[:pos] + bytes([data.draw(st.integers(0, 255))]) + good[pos + 1:],
        good[:pos] + data.draw(st.binary(min_size=1, max_size=8)) + good[pos:],
    ]))
    try:
        decoded = Manifest.from_cbor(mutated)
    except ModelError:
        return
    assert decoded.to_cbor() == mutated  # anything accepted is a valid, canonical manifest


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "mobilenetv2", "mlp"])
def test_recorded_hashes_match_real_builds(name: str, zoo_store: ModelStore) -> None:
    """zoo_hashes.py (used for weight-free manifests) must equal what building the weights gives."""
    assert zoo.seeded_manifest(name) == zoo.get_manifest(name, store=zoo_store)


def test_manifest_without_weights_is_enough_to_plan(store: ModelStore) -> None:
    from p2pinfer.models import profiling

    manifest = zoo.get_manifest("vgg16", store=store, weights=False)
    assert manifest.model_id == GOLDEN_IDS["vgg16"] and not any(store.has_blob(h) for h in manifest.weight_hashes())
    assert profiling.profile(manifest, store).total_flops > 30e9
    small = zoo.get_manifest("mlp", store=store, weights=False)
    assert zoo.get_manifest("mlp", store=store) == small and all(store.has_blob(h) for h in small.weight_hashes())


def test_missing_seeded_blobs_can_be_regenerated_locally(store: ModelStore) -> None:
    manifest = zoo.get_manifest("mobilenetv2", store=store, weights=False)
    wanted = [h for h in manifest.weight_hashes()][3:6]
    assert zoo.regenerate_blobs(manifest, store, wanted) == wanted
    assert all(store.has_blob(h) for h in wanted) and not store.has_blob(manifest.weight_hashes()[0])
    minilm = zoo.get_manifest("minilm", store=store)
    assert zoo.regenerate_blobs(minilm, store) == []
