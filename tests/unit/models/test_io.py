"""User inputs (text, PNG/JPEG, .npy) and the JSON output form."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from p2pinfer.errors import InputError
from p2pinfer.models import zoo
from p2pinfer.models.io import IMAGENET_MEAN, IMAGENET_STD, load_input, output_to_json
from p2pinfer.models.store import ModelStore


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_images_get_imagenet_preprocessing(suffix: str, tmp_path: Path, zoo_store: ModelStore) -> None:
    manifest = zoo.get_manifest("mobilenetv2", store=zoo_store)
    arr = np.zeros((300, 400, 3), np.uint8)
    arr[:, :, 0] = 255  # pure red, so the crop/resize cannot change pixel values
    path = tmp_path / f"red{suffix}"
    Image.fromarray(arr).save(path)
    x = load_input(manifest, str(path), store=zoo_store)["x"]
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    expected = (np.array([1.0, 0.0, 0.0], np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    centre = x[0, :, 112, 112].numpy()
    assert np.allclose(centre, expected, atol=0.05 if suffix == ".jpg" else 1e-6)


def test_npy_inputs_with_and_without_batch(tmp_path: Path, zoo_store: ModelStore) -> None:
    manifest = zoo.get_manifest("mlp", store=zoo_store)
    for shape in ((64,), (1, 64), (2, 64)):
        np.save(tmp_path / "x.npy", np.ones(shape, np.float32))
        assert load_input(manifest, str(tmp_path / "x.npy"), store=zoo_store)["x"].shape == ((1, 64) if len(shape) == 1 else shape)


@pytest.mark.parametrize(
    "model, write, message",
    [
        ("mlp", lambda p: np.save(p / "x.npy", np.ones(64, np.float64)), "has dtype float64, expected float32"),
        ("mlp", lambda p: np.save(p / "x.npy", np.ones((1, 65), np.float32)), "has shape [1, 65]"),
        ("mlp", lambda p: np.save(p / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True), "cannot read"),
        ("mlp", lambda p: (p / "x.npy").write_bytes(pickle.dumps([1, 2, 3])), "cannot read"),
        ("mlp", lambda p: (p / "x.png").write_bytes(b"not an image"), "takes a .npy array"),
        ("resnet50", lambda p: (p / "x.png").write_bytes(b"not an image"), "cannot read 'x.png' as an image"),
        ("resnet50", lambda p: np.save(p / "x.npy", np.ones((3, 224, 225), np.float32)), "has shape [3, 224, 225]"),
    ],
)
def test_bad_inputs_give_one_line_errors(model: str, write, message: str, tmp_path: Path, zoo_store: ModelStore) -> None:
    write(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(InputError) as info:
        load_input(zoo.get_manifest(model, store=zoo_store), str(path), store=zoo_store)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_text(zoo_store: ModelStore) -> None:
    with pytest.raises(InputError, match="is not a readable file"):
        load_input(zoo.get_manifest("resnet50", store=zoo_store), "/no/such/file.png", store=zoo_store)
    minilm = zoo.get_manifest("minilm", store=zoo_store)
    acts = load_input(minilm, "hello world " * 200, store=zoo_store)  # truncated to the fixed length
    assert acts["input_ids"].shape == (1, 128) and int(acts["attention_mask"].sum()) == 128
    short = load_input(minilm, "hello world", store=zoo_store)
    assert short["attention_mask"].sum().item() == 4 and short["input_ids"][0, :4].tolist() == [101, 7592, 2088, 102]


def test_output_json() -> None:
    doc = output_to_json({"x": torch.tensor([[0.5, -1.0], [2.0, 3.0]])})
    assert doc == {"shape": [2, 2], "dtype": "float32", "data": [0.5, -1.0, 2.0, 3.0]}
