"""Importing the user's own models: a HF BERT-family checkpoint dir, and a Sequential of registry layers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from torch import nn

from p2pinfer.errors import ModelError
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.importers import import_bert_dir, manifest_from_sequential
from p2pinfer.models.io import tokenize
from p2pinfer.models.layers.common import Linear
from p2pinfer.models.layers.vision import ConvBNAct, MaxPool
from p2pinfer.models.manifest import TensorSpec
from p2pinfer.models.store import ModelStore
from p2pinfer.models import zoo

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "peer", "to", "net", "##s", ",", "!"]
CFG = dict(model_type="bert", architectures=["BertModel"], hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
           intermediate_size=64, vocab_size=len(VOCAB), max_position_embeddings=16, type_vocab_size=2,
           layer_norm_eps=1e-12, hidden_act="gelu")


def write_tiny_bert(directory: Path, *, prefix: str = "bert.") -> dict[str, torch.Tensor]:
    """A BERT-shaped checkpoint with random weights, laid out exactly as HF saves it."""
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    H, I = CFG["hidden_size"], CFG["intermediate_size"]
    t: dict[str, torch.Tensor] = {
        "embeddings.word_embeddings.weight": torch.randn(len(VOCAB), H, generator=g),
        "embeddings.position_embeddings.weight": torch.randn(16, H, generator=g),
        "embeddings.token_type_embeddings.weight": torch.randn(2, H, generator=g),
        "embeddings.LayerNorm.weight": 1 + 0.1 * torch.randn(H, generator=g),
        "embeddings.LayerNorm.bias": 0.1 * torch.randn(H, generator=g),
        "embeddings.position_ids": torch.arange(16)[None],
        "pooler.dense.weight": torch.randn(H, H, generator=g), "pooler.dense.bias": torch.zeros(H),
    }
    for i in range(CFG["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query": (H, H), "attention.self.key": (H, H), "attention.self.value": (H, H),
                             "attention.output.dense": (H, H), "intermediate.dense": (I, H), "output.dense": (H, I)}.items():
            t[p + name + ".weight"] = torch.randn(o, n, generator=g) / math.sqrt(n)
            t[p + name + ".bias"] = 0.1 * torch.randn(o, generator=g)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + name + ".weight"] = 1 + 0.1 * torch.randn(H, generator=g)
            t[p + name + ".bias"] = 0.1 * torch.randn(H, generator=g)
    save_file({prefix + k: v.contiguous() for k, v in t.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(CFG))
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(directory / "tokenizer.json"))
    return t


def reference_bert(t: dict[str, torch.Tensor], ids: list[int]) -> torch.Tensor:
    """Independent textbook BERT + mean pooling + L2 norm, straight from the HF tensor names."""
    H, heads = CFG["hidden_size"], CFG["num_attention_heads"]
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][: len(ids)]
    x = x + t["embeddings.token_type_embeddings.weight"][0]
    ln = lambda v, p: torch.nn.functional.layer_norm(v, (H,), t[p + ".weight"], t[p + ".bias"], 1e-12)
    lin = lambda v, p: v @ t[p + ".weight"].T + t[p + ".bias"]
    x = ln(x, "embeddings.LayerNorm")
    for i in range(CFG["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + f"attention.self.{n}").view(len(ids), heads, -1).transpose(0, 1) for n in ("query", "key", "value"))
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(H // heads), dim=-1)
        ctx = (att @ v).transpose(0, 1).reshape(len(ids), H)
        x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        ff = lin(torch.nn.functional.gelu(lin(x, p + "intermediate.dense")), p + "output.dense")
        x = ln(x + ff, p + "output.LayerNorm")
    return torch.nn.functional.normalize(x.mean(0), dim=0)


@pytest.mark.parametrize("prefix", ["bert.", ""])
def test_tiny_bert_checkpoint_imports_and_matches_a_reference(prefix: str, tmp_path: Path, store: ModelStore) -> None:
    tensors = write_tiny_bert(tmp_path / "tiny-bert", prefix=prefix)
    manifest = import_bert_dir(tmp_path / "tiny-bert", store=store, seq_len=12)
    assert manifest.name == "tiny-bert" and [l.kind for l in manifest.layers] == ["bert_embeddings", "bert_layer", "bert_layer", "pool"]
    assert zoo.get_manifest("tiny-bert", store=store) == manifest  # findable by name
    acts = tokenize(manifest, "Hello, peer to peer nets!", store=store)
    ids = acts["input_ids"][0][acts["attention_mask"][0] == 1].tolist()
    assert ids == [2, 5, 11, 7, 8, 7, 9, 10, 12, 3]
    ours = SpanExecutor(store).run(manifest, 0, manifest.num_layers, acts)["embedding"][0]
    assert (ours - reference_bert(tensors, ids)).abs().max().item() <= 1e-5


def test_minilm_dir_imports_to_the_zoo_model(store: ModelStore, zoo_store: ModelStore) -> None:
    imported = import_bert_dir(zoo.minilm_dir(), store=store, name="minilm", zoo_build=True)
    assert imported.model_id == zoo.get_manifest("minilm", store=zoo_store).model_id
    with pytest.raises(ModelError, match="reserved for the zoo"):
        import_bert_dir(zoo.minilm_dir(), store=store, name="resnet50")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda d: (d / "config.json").write_text("{nope"), "cannot read"),
        (lambda d: (d / "config.json").write_text(json.dumps({**CFG, "hidden_act": "swish"})), "hidden_act 'swish'"),
        (lambda d: (d / "config.json").write_text(json.dumps({**CFG, "model_type": "gpt2", "architectures": []})), "not BERT-family"),
        (lambda d: (d / "config.json").write_text(json.dumps({**CFG, "num_attention_heads": 5})), "heads=5 must divide"),
        (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "cannot read"),
        (lambda d: (d / "config.json").write_text(json.dumps({**CFG, "num_hidden_layers": 3})), "'encoder.layer.2.attention.self.query.weight' is missing"),
    ],
)
def test_bad_checkpoint_dirs_are_refused(edit, message: str, tmp_path: Path, store: ModelStore) -> None:
    write_tiny_bert(tmp_path / "ckpt")
    edit(tmp_path / "ckpt")
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(".", r"\.")):
        import_bert_dir(tmp_path / "ckpt", store=store)


def test_sequential_of_registry_layers_becomes_a_manifest(store: ModelStore) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        ConvBNAct(in_ch=3, out_ch=8, kernel=3, stride=1, padding=1, groups=1, bn=True, act="relu"),
        MaxPool(kernel=2, stride=2, padding=0),
        ConvBNAct(in_ch=8, out_ch=8, kernel=3, stride=2, padding=1, groups=8, bn=False, act="relu6"),
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    manifest = manifest_from_sequential(model, name="my-convnet", inputs=[TensorSpec("x", "float32", (1, 3, 16, 16))], store=store)
    assert manifest.outputs == (TensorSpec("x", "float32", (1, 8, 4, 4)),)
    assert manifest.layers[1].weights_hash is None
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        expected = model({"x": x})["x"]
    assert torch.equal(SpanExecutor(store).run(zoo.get_manifest("my-convnet", store=store), 0, 3, x)["x"], expected)


def test_sequential_with_foreign_modules_is_refused(store: ModelStore) -> None:
    model = nn.Sequential(Linear(in_features=4, out_features=4, act="relu"), nn.ReLU())
    with pytest.raises(ModelError, match="layer 1 \\(ReLU\\) is not a registry layer"):
        manifest_from_sequential(model, name="bad", inputs=[TensorSpec("x", "float32", (1, 4))], store=store)
