"""Vectors as plain functions (sans-IO): normalizing, packing, nearest by cosine.

Vectors are kept L2-normalized, so cosine similarity is a dot product. They
are stored as little-endian float32 (4 bytes a dimension: 1,536 for
text-embedding-3-small is 6 kB, far under FDB's 100 kB value limit).
"""

from __future__ import annotations

import array
import hashlib
import math
import sys
from collections.abc import Iterable, Sequence

try:  # optional: the embeddings extra brings it
    import numpy as _np
except ImportError:  # pragma: no cover - the pure-Python path serves
    _np = None

__all__ = ["digest", "dot", "nearest", "normalize", "pack_vector", "unpack_vector"]

Vector = tuple[float, ...]


def normalize(values: Iterable[float]) -> Vector:
    vector = tuple(float(v) for v in values)
    norm = math.sqrt(sum(v * v for v in vector))
    return tuple(v / norm for v in vector) if norm else vector


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def pack_vector(vector: Sequence[float]) -> bytes:
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def unpack_vector(raw: bytes) -> Vector:
    packed = array.array("f")
    packed.frombytes(raw)
    if sys.byteorder != "little":
        packed.byteswap()
    return tuple(packed)


def digest(text: str) -> str:
    """Names the text a stored vector was made from: a changed text is embedded again."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def nearest(query: Sequence[float], candidates: Iterable[tuple[str, Sequence[float]]], k: int
            ) -> list[tuple[str, float]]:  # fmt: skip
    """The `k` keys most similar to `query` (cosine), best first; ties by key.

    Exact search: one agent's memory is thousands of vectors, which a matrix
    product (numpy, when installed) scans in milliseconds; an approximate index
    would pay off only far beyond that.
    """
    pairs = [(key, vector) for key, vector in candidates if len(vector) == len(query)]
    if _np is not None and len(pairs) > 64:
        matrix = _np.asarray([vector for _, vector in pairs], dtype=_np.float64)
        similarities = (matrix @ _np.asarray(query, dtype=_np.float64)).tolist()
        scored = [(key, float(s)) for (key, _), s in zip(pairs, similarities, strict=True)]
    else:
        scored = [(key, dot(query, vector)) for key, vector in pairs]
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored[:k]
