"""Exact cosine search with FAISS (inner product over unit bank vectors): nearest concepts of a vector,
read back as their texts ("vector -> text", offline), and nearest training contexts of a context."""
from __future__ import annotations

import numpy as np

from ..data.bank import CONTEXT, Bank, check_split, train_subset
from .core import EvalError

CHUNK = 8192   # training windows added to a context index at a time (bounds the memory of the keys)


def _as_queries(queries, dim: int) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (Q, {dim}), got {np.shape(queries)}")
    if not np.isfinite(q).all():
        raise ValueError("queries contain NaN/inf")
    return np.ascontiguousarray(q)


def _check_k(k: int, size: int) -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > size:
        raise ValueError(f"k={k} but the index holds only {size} concepts")
    return int(k)


def _flat_ip_index(dim: int, parts):
    import faiss  # imported here so the rest of lvmlib works without it
    index = faiss.IndexFlatIP(dim)
    for vectors in parts:
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def brute_force_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with NumPy, the reference FAISS is checked and timed against:
    (scores (Q, k) float32, ids (Q, k) int64), best first."""
    vectors = np.asarray(vectors, dtype=np.float32)
    q = _as_queries(queries, vectors.shape[1])
    k = _check_k(k, len(vectors))
    scores = q @ vectors.T
    # argpartition finds the k best in O(N), then only those k are sorted
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top, order, axis=1).astype(np.int64)


class ConceptIndex:
    """Exact cosine search over the bank (all concepts, or one split's), returning global bank rows."""

    def __init__(self, bank: Bank, split: str | None = None):
        if split is None:
            rows = np.arange(len(bank), dtype=np.int64)
        else:
            check_split(split)
            rows = np.flatnonzero(np.isin(bank.article, bank.articles_in(split))).astype(np.int64)
        if len(rows) == 0:
            raise ValueError(f"no concepts to index (split={split!r})")
        self.bank, self.split = bank, split
        self.rows = rows  # index position -> global bank row
        self.index = _flat_ip_index(bank.dim, [bank.vectors[rows]])

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine: (scores (Q, k) float32, ids (Q, k) int64 global bank rows), best first."""
        q = _as_queries(queries, self.bank.dim)
        k = _check_k(k, len(self))
        scores, local = self.index.search(q, k)
        return scores, self.rows[local]

    def decode(self, queries, k: int = 1) -> list[list[dict]]:
        """Vector -> text: per query, its k nearest concepts with score, text, article title and position."""
        scores, ids = self.search(queries, k)
        bank = self.bank
        return [[{"id": int(row), "score": float(score), "text": bank.text[row], "article": int(bank.article[row]),
                  "title": bank.articles[int(bank.article[row])].get("title"), "position": int(bank.position[row])}
                 for score, row in zip(q_scores, q_ids)] for q_scores, q_ids in zip(scores, ids)]


def train_windows(bank: Bank, train_concepts: int | None = None) -> np.ndarray:
    """Bank rows of the targets of every training window of the nested subset (as sequences() gives)."""
    starts, lengths = train_subset(bank, train_concepts)
    parts = [s + np.arange(CONTEXT, n) for s, n in zip(starts, lengths) if n > CONTEXT]
    if not parts:
        raise EvalError("the training subset has no ctx-5 windows")
    return np.concatenate(parts).astype(np.int64)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row of (n, 5, D) contexts flattened and normalised: (n, 5·D) float32, the key of a context."""
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    return np.ascontiguousarray(flat / np.linalg.norm(flat, axis=1, keepdims=True))


class ContextIndex:
    """The training windows of a nested subset, searchable by context (cosine of the concatenated contexts)."""

    def __init__(self, bank: Bank, train_concepts: int | None = None):
        self.bank, self.train_concepts = bank, train_concepts
        self.targets = train_windows(bank, train_concepts)
        self.index = _flat_ip_index(CONTEXT * bank.dim, (
            _unit_rows(bank.vectors[self.targets[s:s + CHUNK, None] + np.arange(-CONTEXT, 0)])
            for s in range(0, len(self.targets), CHUNK)))

    def __len__(self) -> int:
        return len(self.targets)

    def search(self, contexts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(context cosines (M, k), bank rows of the neighbours' TRUE next concepts (M, k)), nearest first."""
        if not 1 <= k <= len(self):
            raise EvalError(f"k must be in 1..{len(self)} (training windows), got {k}")
        scores, ids = self.index.search(_unit_rows(contexts), k)
        return scores, self.targets[ids]


class NearestContextPredictor(ContextIndex):
    """A model-free probe: the similarity-weighted mean of the true next vectors of the k training windows
    whose contexts are most like this one; how well it scores says how predictable the next concept is."""

    def __init__(self, bank: Bank, train_concepts: int | None = None, k: int = 8):
        super().__init__(bank, train_concepts)
        self.k = _check_k(k, len(self))

    def __call__(self, contexts: np.ndarray) -> np.ndarray:
        scores, nxt = self.search(contexts, self.k)
        pred = (self.bank.vectors[nxt] * np.clip(scores, 1e-6, None)[..., None]).sum(axis=1)
        return pred / np.linalg.norm(pred, axis=1, keepdims=True)
