"""User inputs in, JSON out: text (tokenizer), images (PNG/JPEG, ImageNet preprocessing), .npy.

Images are preprocessed as the torchvision ImageNet recipe, with PIL + numpy only: RGB, resize
the shorter side to 256/224 of the target (bilinear, antialiased), centre-crop to the input's
H x W, scale to [0, 1], normalise with the ImageNet mean/std, CHW, batch 1. Text is tokenised
with the model's own tokenizer (stored as a blob) truncated and padded to the input's length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tokenizers import Tokenizer

from p2pinfer.errors import InputError, ModelError

from .executor import check_inputs
from .layers import Activations
from .manifest import Manifest, TensorSpec
from .store import ModelStore

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
MAX_INPUT_FILE_BYTES = 256 << 20


def load_input(manifest: Manifest, value: str, *, store: ModelStore) -> Activations:
    """Turn a `--input` value into the model's input tensors (checked against its input spec)."""
    if manifest.preprocess == "text":
        acts = tokenize(manifest, value, store=store)
    else:
        path = _readable_file(value)
        if path.suffix.lower() == ".npy":
            if len(manifest.inputs) != 1:
                raise InputError(f"{manifest.name} takes several input tensors; a single .npy file cannot hold them")
            acts = {manifest.inputs[0].name: load_npy(path, manifest.inputs[0])}
        elif manifest.preprocess == "image":
            acts = {manifest.inputs[0].name: load_image(path, manifest.inputs[0])}
        else:
            raise InputError(f"{manifest.name} takes a .npy array as input, got {path.name!r}")
    return check_inputs(tuple(sorted(manifest.inputs, key=lambda s: s.name)), acts, f"input of {manifest.name}")


def _readable_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise InputError(f"input {value!r} is not a readable file")
    if path.stat().st_size > MAX_INPUT_FILE_BYTES:
        raise InputError(f"input file {value!r} is larger than {MAX_INPUT_FILE_BYTES >> 20} MiB")
    return path


def tokenize(manifest: Manifest, text: str, *, store: ModelStore) -> Activations:
    """Token ids and attention mask, truncated/padded to the model's fixed sequence length."""
    if manifest.tokenizer_hash is None:
        raise ModelError(f"{manifest.name} has no tokenizer")
    blob = store.get_blob(manifest.tokenizer_hash)  # hash-verified
    try:
        tok = Tokenizer.from_str(blob.decode())
    except Exception as exc:  # tokenizers raises bare Exception on malformed JSON
        raise ModelError(f"{manifest.name}: stored tokenizer cannot be loaded ({exc})") from None
    seq = manifest.inputs[0].shape[1]
    pad_id = tok.token_to_id("[PAD]") or 0
    tok.enable_truncation(max_length=seq)
    tok.enable_padding(length=seq, pad_id=pad_id, pad_token=tok.id_to_token(pad_id) or "[PAD]")
    enc = tok.encode(text)
    return {"input_ids": torch.tensor([enc.ids], dtype=torch.int64),
            "attention_mask": torch.tensor([enc.attention_mask], dtype=torch.int64)}


def load_npy(path: Path, spec: TensorSpec) -> torch.Tensor:
    """A .npy array (no pickles) of exactly the spec's dtype and shape, with or without the batch dim."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {path.name!r} as .npy: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(spec.dtype):
        raise InputError(f"{path.name!r} has dtype {getattr(arr, 'dtype', '?')}, expected {spec.dtype}")
    if tuple(arr.shape) == spec.shape[1:]:
        arr = arr[None]
    if tuple(arr.shape[1:]) != spec.shape[1:]:
        dims = ", ".join(map(str, spec.shape[1:]))
        raise InputError(f"{path.name!r} has shape {list(arr.shape)}, expected [{dims}] or [B, {dims}]")
    return torch.from_numpy(np.ascontiguousarray(arr))


def load_image(path: Path, spec: TensorSpec) -> torch.Tensor:
    """ImageNet preprocessing of a PNG/JPEG to (1, 3, H, W) float32."""
    height, width = spec.shape[2], spec.shape[3]
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = round(min(height, width) * 256 / 224) / min(img.size)
            img = img.resize((max(width, round(img.size[0] * scale)), max(height, round(img.size[1] * scale))), Image.BILINEAR)
            left, top = (img.size[0] - width) // 2, (img.size[1] - height) // 2
            arr = np.asarray(img.crop((left, top, left + width, top + height)), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read {path.name!r} as an image: {exc}") from None
    arr = (arr - IMAGENET_MEAN) / IMAGENET_STD  # (H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)[None]))


SAMPLE_TEXT = "Peer-to-peer inference splits a neural network across many small devices!"


def sample_input(manifest: Manifest, store: ModelStore, *, text: str = SAMPLE_TEXT) -> Activations:
    """A deterministic, realistic default input for any model (tests, benchmarks, calibration)."""
    if manifest.preprocess == "text":
        return tokenize(manifest, text, store=store)
    rng = np.random.Generator(np.random.PCG64(7))
    return {s.name: torch.from_numpy(rng.standard_normal(s.shape).astype(np.float32)) if s.dtype == "float32"
            else torch.zeros(s.shape, dtype=torch.int64) for s in manifest.inputs}


def output_to_json(out: Activations | torch.Tensor) -> dict[str, Any]:
    """{"shape", "dtype", "data"}: data is the row-major flattened values as a JSON list."""
    if isinstance(out, dict):
        if len(out) != 1:
            raise ModelError(f"expected a single output tensor, got {sorted(out)}")
        out = next(iter(out.values()))
    t = out.detach().to("cpu").contiguous()
    return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "data": t.reshape(-1).tolist()}
