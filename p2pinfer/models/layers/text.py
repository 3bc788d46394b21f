"""BERT-family layer kinds: embeddings, one encoder layer, pooling.

Tensor names along the chain (B = batch, T = tokens, C = hidden size):
  bert_embeddings: {"input_ids" (B,T) int64, "attention_mask" (B,T) int64}
                   -> {"hidden" (B,T,C) float32, "attention_mask"}
  bert_layer:      {"hidden", "attention_mask"} -> {"hidden", "attention_mask"}
  pool:            {"hidden", "attention_mask"} -> {"embedding" (B,C) float32}
The attention mask travels with the hidden states because every encoder layer needs it.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .base import BOOL, Activations, Choice, Float, Int, RegistryLayer, activation

HIDDEN = Int(1, 4096)
EPS = Float(1e-15, 1e-2)


class BertEmbeddings(RegistryLayer):
    """word + position + token-type(0) embeddings, then LayerNorm. Single-segment inputs only."""

    kind = "bert_embeddings"

    def __init__(self, *, vocab_size: int, hidden: int, max_positions: int, type_vocab_size: int, eps: float) -> None:
        super().__init__(vocab_size=vocab_size, hidden=hidden, max_positions=max_positions, type_vocab_size=type_vocab_size, eps=eps)
        self.word = nn.Embedding(vocab_size, hidden)
        self.position = nn.Embedding(max_positions, hidden)
        self.token_type = nn.Embedding(type_vocab_size, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, acts: Activations) -> Activations:
        ids = acts["input_ids"]  # (B, T)
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = self.word(ids) + self.position(positions)[None] + self.token_type.weight[0]  # (B, T, C)
        return {"hidden": self.norm(h), "attention_mask": acts["attention_mask"]}


class AttentionCore(nn.Module):
    """softmax(Q K^T / sqrt(d) + mask) V. Its own module so profiles can attribute its FLOPs to 'attention'."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)


class BertLayer(RegistryLayer):
    """One post-LN BERT encoder layer: self-attention + residual + LN, FFN + residual + LN."""

    kind = "bert_layer"

    def __init__(self, *, hidden: int, heads: int, intermediate: int, eps: float, act: str) -> None:
        super().__init__(hidden=hidden, heads=heads, intermediate=intermediate, eps=eps, act=act)
        self.q, self.k, self.v = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.attn_core = AttentionCore()
        self.attn_out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=eps)
        self.act = activation(act)

    @classmethod
    def cross_check(cls, config: Mapping[str, object]) -> str | None:
        if config["hidden"] % config["heads"]:  # type: ignore[operator]
            return f"heads={config['heads']} must divide hidden={config['hidden']}"
        return None

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.config["heads"], -1).transpose(1, 2)  # (B, H, T, D)

    def forward(self, acts: Activations) -> Activations:
        h, mask = acts["hidden"], acts["attention_mask"]  # (B, T, C), (B, T)
        keep = (mask != 0)[:, None, None, :]  # (B, 1, 1, T)
        ctx = self.attn_core(self._split(self.q(h)), self._split(self.k(h)), self._split(self.v(h)), keep)
        ctx = ctx.transpose(1, 2).reshape(h.shape)  # (B, T, C)
        h = self.ln1(h + self.attn_out(ctx))
        h = self.ln2(h + self.ffn_out(self.act(self.ffn_in(h))))
        return {"hidden": h, "attention_mask": mask}


class Pool(RegistryLayer):
    """Sentence embedding: masked mean of token states (or the [CLS] state), optionally L2-normalised."""

    kind = "pool"

    def __init__(self, *, mode: str, normalize: bool) -> None:
        super().__init__(mode=mode, normalize=normalize)

    def forward(self, acts: Activations) -> Activations:
        h, mask = acts["hidden"], acts["attention_mask"]
        if self.config["mode"] == "cls":
            out = h[:, 0]
        else:
            m = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            out = (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)  # (B, C)
        if self.config["normalize"]:
            out = nn.functional.normalize(out, p=2.0, dim=1)
        return {"embedding": out}


TEXT_FIELDS = {
    BertEmbeddings: {"vocab_size": Int(1, 262144), "hidden": HIDDEN, "max_positions": Int(1, 8192),
                     "type_vocab_size": Int(1, 16), "eps": EPS},
    BertLayer: {"hidden": HIDDEN, "heads": Int(1, 128), "intermediate": Int(1, 16384), "eps": EPS,
                "act": Choice("gelu", "relu")},
    Pool: {"mode": Choice("mean", "cls"), "normalize": BOOL},
}
TEXT_IO = {
    BertEmbeddings: (("input_ids", "attention_mask"), ("hidden", "attention_mask")),
    BertLayer: (("hidden", "attention_mask"), ("hidden", "attention_mask")),
    Pool: (("hidden", "attention_mask"), ("embedding",)),
}
