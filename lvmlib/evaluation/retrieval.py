"""Nearest concepts of a vector: FAISS search over the bank, and "vector -> text" decoding.

The original decoded predictions with vec2text, which needs a model hub. Here a prediction is
read back as the texts of its nearest concepts in the bank (with their article titles), which
is exact, offline, and says what the model's vector is closest to.

Bank vectors are unit-norm, so inner product = cosine and `IndexFlatIP` is an exact cosine
search. Queries are used as given: for unit queries the scores are cosines, for any query the
ranking is the cosine ranking (scaling a query does not reorder its neighbours).
"""
from __future__ import annotations

import numpy as np

from ..data.bank import Bank, check_split, sequences


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


def _flat_ip_index(vectors: np.ndarray):
    import faiss  # imported here so the rest of lvmlib works without it
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def brute_force_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with NumPy (the reference FAISS is checked and timed against).

    Returns (scores (Q, k) float32, ids (Q, k) int64), best first.
    """
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
        self.index = _flat_ip_index(bank.vectors[rows])

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


class NearestContextPredictor:
    """Predict the next vector by analogy: find the k training windows whose 5-concept context is
    most like this one (cosine of the concatenated, normalised contexts; FAISS) and average
    their true next vectors, weighted by similarity.

    A model-free upper-bound probe: if similar contexts had similar continuations across
    articles, this would score well; how well it does says how much of the next concept is
    predictable from the training data at all. Call it like any predict function.
    """

    def __init__(self, bank: Bank, train_concepts: int | None = None, k: int = 8):
        train = sequences(bank, "train", train_concepts)
        keys = train.contexts.reshape(len(train), -1)
        self.keys_norm = np.linalg.norm(keys, axis=1, keepdims=True)
        self.index = _flat_ip_index(keys / self.keys_norm)
        self.next = train.targets
        self.k = _check_k(k, len(train))

    def __call__(self, contexts: np.ndarray) -> np.ndarray:
        q = np.asarray(contexts, dtype=np.float32).reshape(len(contexts), -1)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        scores, ids = self.index.search(np.ascontiguousarray(q), self.k)
        pred = (self.next[ids] * np.clip(scores, 1e-6, None)[..., None]).sum(axis=1)
        return pred / np.linalg.norm(pred, axis=1, keepdims=True)
