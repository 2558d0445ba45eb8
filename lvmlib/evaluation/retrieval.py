"""Exact cosine search with FAISS (inner product over unit bank vectors): nearest concepts of a vector,
read back as their texts ("vector -> text", offline), and nearest training contexts of a context."""
from __future__ import annotations

import numpy as np

from ..data.bank import CONTEXT, Bank
from .core import EvalError, _train_windows

CHUNK = 8192   # training windows added to a context index at a time (bounds the memory of the keys)


def _as_queries(queries, dim: int) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise EvalError(f"queries must have shape (Q, {dim}), got {np.shape(queries)}")
    if not np.isfinite(q).all():
        raise EvalError("queries contain NaN/inf")
    return np.ascontiguousarray(q)


def _check_k(k: int, size: int, what: str = "concepts") -> int:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= size:
        raise EvalError(f"k must be an integer in 1..{size} (the index holds only {size} {what}), got {k!r}")
    return int(k)


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


class _FlatIndex:
    """Exact inner-product search over keys added in parts; ids[i] is the bank row that key i stands for."""

    def __init__(self, bank: Bank, ids: np.ndarray, dim: int, what: str, parts):
        import faiss  # imported here so the rest of lvmlib works without it
        self.bank, self.ids, self.what, self.index = bank, ids, what, faiss.IndexFlatIP(dim)
        for keys in parts:
            self.index.add(np.ascontiguousarray(keys, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def _search(self, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, local = self.index.search(keys, _check_k(k, len(self), self.what))
        return scores, self.ids[local]


class ConceptIndex(_FlatIndex):
    """Exact cosine search over the bank (all concepts, or one split's), returning global bank rows."""

    def __init__(self, bank: Bank, split: str | None = None):
        rows = np.arange(len(bank)) if split is None else np.flatnonzero(np.isin(bank.article, bank.articles_in(split)))
        if len(rows) == 0:
            raise EvalError(f"no concepts to index (split={split!r})")
        self.split, self.rows = split, rows.astype(np.int64)  # index position -> global bank row
        super().__init__(bank, self.rows, bank.dim, "concepts", [bank.vectors[rows]])

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine: (scores (Q, k) float32, ids (Q, k) int64 global bank rows), best first."""
        return self._search(_as_queries(queries, self.bank.dim), k)

    def decode(self, queries, k: int = 1) -> list[list[dict]]:
        """Vector -> text: per query, its k nearest concepts with score, text, article title and position."""
        scores, ids = self.search(queries, k)
        bank = self.bank
        return [[{"id": int(row), "score": float(score), "text": bank.text[row], "article": int(bank.article[row]),
                  "title": bank.articles[int(bank.article[row])].get("title"), "position": int(bank.position[row])}
                 for score, row in zip(q_scores, q_ids)] for q_scores, q_ids in zip(scores, ids)]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row of (n, 5, D) contexts flattened and normalised: (n, 5·D) float32, the key of a context."""
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    return np.ascontiguousarray(flat / np.linalg.norm(flat, axis=1, keepdims=True))


class ContextIndex(_FlatIndex):
    """The training windows of a nested subset (`targets`: their next concepts' rows), searchable by context."""

    def __init__(self, bank: Bank, train_concepts: int | None = None):
        train = _train_windows(bank, train_concepts, "context index")
        self.train_concepts, self.targets = train_concepts, train.index
        super().__init__(bank, self.targets, CONTEXT * bank.dim, "training windows",
                         (_unit_rows(train.context_batch(slice(s, s + CHUNK))) for s in range(0, len(train), CHUNK)))

    def search(self, contexts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(context cosines (M, k), bank rows of the neighbours' TRUE next concepts (M, k)), nearest first."""
        return self._search(_unit_rows(contexts), k)


class NearestContextPredictor(ContextIndex):
    """A model-free probe: the similarity-weighted mean of the true next vectors of the k training windows
    whose contexts are most like this one; how well it scores says how predictable the next concept is."""

    def __init__(self, bank: Bank, train_concepts: int | None = None, k: int = 8):
        super().__init__(bank, train_concepts)
        self.k = _check_k(k, len(self), self.what)

    def __call__(self, contexts: np.ndarray) -> np.ndarray:
        scores, nxt = self.search(contexts, self.k)
        pred = (self.bank.vectors[nxt] * np.clip(scores, 1e-6, None)[..., None]).sum(axis=1)
        return pred / np.linalg.norm(pred, axis=1, keepdims=True)
