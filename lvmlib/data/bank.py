"""The concept bank: unit vectors of every concept, stored article by article (positions 0..n-1, so a context
window is a slice that never crosses an article boundary), each article in one split (files: docs/architecture.md)."""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ..errors import InputError

SPLITS = ("train", "val", "ood")
CONTEXT = 5  # concepts of context; the target is the 6th
CHUNK_BYTES = 1 << 23  # validate and fingerprint stream the vectors in blocks of about 8 MiB


def row_blocks(array: np.ndarray):
    """Consecutive row slices of an array, about CHUNK_BYTES each (one empty slice for no rows)."""
    n = array.shape[0]
    step = max(1, CHUNK_BYTES // max(1, array[:1].nbytes))
    for start in range(0, max(n, 1), step):
        yield slice(start, min(start + step, n))


class BankError(InputError):
    """A bank (on disk or in memory) that is not what it claims to be."""


@dataclass
class Bank:
    vectors: np.ndarray          # (N, D) float32, unit rows
    article: np.ndarray          # (N,) int32 article index, non-decreasing
    position: np.ndarray         # (N,) int32 position in its article, 0..n-1
    text: list[str]              # (N,) concept text
    articles: list[dict]         # per article index: {"id", "title", "split"}
    train_order: np.ndarray      # train article indices, the order nested subsets grow in
    manifest: dict = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self):
        validate(self)
        self._article_split = np.array([a["split"] for a in self.articles])
        self.article_start = np.flatnonzero(self.position == 0)        # (int64) first concept of each article
        self.article_length = np.diff(np.append(self.article_start, len(self.position)))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def split(self) -> np.ndarray:
        """Per concept: "train", "val" or "ood" (the split of its article)."""
        return self._article_split[self.article]

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def articles_in(self, split: str) -> np.ndarray:
        check_split(split)
        return np.flatnonzero(self._article_split == split)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise BankError(f"unknown split {split!r}; expected one of {SPLITS}")


def validate(bank: Bank) -> None:
    """Refuse a bank whose arrays are inconsistent, non-finite, or not unit-norm."""
    v = bank.vectors
    where = f" ({bank.path})" if bank.path else ""
    if not isinstance(v, np.ndarray) or v.ndim != 2:
        raise BankError(f"vectors must be a 2-D array, got shape {getattr(v, 'shape', None)}{where}")
    if v.dtype != np.float32:
        raise BankError(f"vectors must be float32, got {v.dtype}{where}")
    n = v.shape[0]
    for name in ("article", "position"):
        a = getattr(bank, name)
        if a.shape != (n,):
            raise BankError(f"{name} has shape {a.shape}, expected ({n},) to match vectors{where}")
    if len(bank.text) != n:
        raise BankError(f"text has {len(bank.text)} entries, expected {n}{where}")
    # in blocks, so a memory-mapped bank is checked without a full-size temporary; a NaN/inf in a row makes its norm so
    norms = np.concatenate([np.linalg.norm(v[rows], axis=1) for rows in row_blocks(v)])
    bad, off = np.flatnonzero(~np.isfinite(norms)), np.flatnonzero(np.abs(norms - 1.0) > 1e-3)
    if len(bad):
        raise BankError(f"{len(bad)} vector rows contain NaN/inf (first row {bad[0]}){where}")
    if len(off):
        raise BankError(f"{len(off)} vector rows are not unit-norm (row {off[0]} has norm {norms[off[0]]:.4g}){where}")
    if n and (bank.position[0] != 0 or np.any(np.diff(bank.article) < 0)):
        raise BankError(f"concepts must be stored article by article, starting at position 0{where}")
    # positions run 0,1,2,... inside each article and restart at 0 exactly when the article changes
    if np.any(bank.position[1:] != np.where(np.diff(bank.article) != 0, 0, bank.position[:-1] + 1)):
        raise BankError(f"positions are not 0..n-1 within each article{where}")
    for a in bank.articles:
        if a.get("split") not in SPLITS:
            raise BankError(f"article {a.get('id')!r} has split {a.get('split')!r}{where}")
    present = np.unique(bank.article)
    if n and not np.array_equal(present, np.arange(len(bank.articles))):
        raise BankError(f"articles.jsonl lists {len(bank.articles)} articles but concepts use {len(present)} distinct "
                        f"article indices up to {present[-1]}; every article needs at least one concept{where}")
    train = [i for i, a in enumerate(bank.articles) if a["split"] == "train"]
    if sorted(np.asarray(bank.train_order).tolist()) != train:
        raise BankError(f"train_order must list each training article exactly once (and nothing else){where}")


def fingerprint(vectors: np.ndarray, article: np.ndarray, position: np.ndarray, splits: list[str]) -> str:
    """A content hash of what training and evaluation read: vectors, layout and split."""
    h = hashlib.sha256()
    for rows in row_blocks(vectors):     # streamed: the same digest as hashing all the bytes at once
        h.update(np.ascontiguousarray(vectors[rows], dtype=np.float32).data)
    h.update(np.ascontiguousarray(article, dtype=np.int32).tobytes())
    h.update(np.ascontiguousarray(position, dtype=np.int32).tobytes())
    h.update("\n".join(splits).encode())
    return h.hexdigest()[:16]


def assign_splits(n_articles: int, val_fraction: float, ood_fraction: float, seed: int) -> tuple[list[str], np.ndarray]:
    """Per-article split and the seeded order nested training subsets grow in. OOD: the last block of
    articles (a later "ingestion batch"); VAL: a seeded sample of the rest; fixed by (n_articles, fractions, seed)."""
    if not (0 <= val_fraction < 1 and 0 <= ood_fraction < 1 and val_fraction + ood_fraction < 1):
        raise BankError(f"bad split fractions val={val_fraction} ood={ood_fraction}")
    # at least one article per requested held-out split, so tiny corpora still evaluate
    n_ood = max(int(round(n_articles * ood_fraction)), int(ood_fraction > 0 and n_articles >= 3))
    n_val = max(int(round(n_articles * val_fraction)), int(val_fraction > 0 and n_articles >= 3))
    rng = np.random.default_rng(seed)
    split = np.full(n_articles, "train", dtype=object)
    split[n_articles - n_ood:] = "ood"
    split[rng.choice(n_articles - n_ood, size=n_val, replace=False)] = "val"
    train_order = rng.permutation(np.flatnonzero(split == "train")).astype(np.int64)
    return [str(s) for s in split], train_order


class Sequences:
    """ctx-5 windows inside one article each: contexts[i] = v[t-5:t], targets[i] = v[t], t = index[i]; `article`,
    `position` (of t) and `limit` (its article's concepts here; a training budget may cut one short) are (M,) arrays.
    Windows are gathered from the bank's `vectors` (no copy) when asked (contexts/targets: kept until release()),
    or Sequences(contexts, targets, article, position, index, limit) holds given arrays."""

    def __init__(self, contexts: np.ndarray | None = None, targets: np.ndarray | None = None,
                 article: np.ndarray | None = None, position: np.ndarray | None = None,
                 index: np.ndarray | None = None, limit: np.ndarray | None = None, *,
                 vectors: np.ndarray | None = None, context: int = CONTEXT):
        if article is None or position is None or index is None:
            raise TypeError("Sequences needs article, position and index")
        if vectors is None and (contexts is None or targets is None):
            raise TypeError("Sequences needs contexts and targets, or the vectors to gather them from")
        if vectors is not None and (contexts is not None or targets is not None):
            raise TypeError("Sequences takes either contexts and targets or vectors, not both")
        self.vectors = vectors
        self.context = int(np.shape(contexts)[1] if np.ndim(contexts) >= 2 else context)
        self.article, self.position, self.index, self.limit = article, position, index, limit
        self._contexts, self._targets = contexts, targets

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        source = (f"gathered from {self.vectors.shape[0]:,} x {self.vectors.shape[1]} vectors"
                  if self.vectors is not None else "given arrays")
        return f"Sequences({len(self):,} windows, context {self.context}, {source})"

    @property
    def dim(self) -> int:
        return int((self.vectors if self.vectors is not None else self._targets).shape[-1])

    def context_rows(self, rows=slice(None)) -> np.ndarray:
        """(B, context) bank rows of the contexts of windows `rows` (indices, a slice or a mask)."""
        return np.asarray(self.index[rows], dtype=np.int64)[:, None] + np.arange(-self.context, 0)

    def context_batch(self, rows) -> np.ndarray:
        if self._contexts is not None:
            return self._contexts[rows]
        return self.vectors[self.context_rows(rows)]

    def target_batch(self, rows) -> np.ndarray:
        if self._targets is not None:
            return self._targets[rows]
        return self.vectors[np.asarray(self.index[rows], dtype=np.int64)]

    @property
    def contexts(self) -> np.ndarray:
        """(M, context, D) every window's context: gathered on first use, then kept."""
        if self._contexts is None:
            self._contexts = self.context_batch(slice(None))
        return self._contexts

    @property
    def targets(self) -> np.ndarray:
        """(M, D) every window's target: gathered on first use, then kept."""
        if self._targets is None:
            self._targets = self.target_batch(slice(None))
        return self._targets

    def release(self) -> None:
        """Drop the contexts/targets gathered so far; Sequences given as arrays keep theirs."""
        if self.vectors is not None:
            self._contexts = self._targets = None

    def subset(self, rows) -> "Sequences":
        """Windows `rows` as Sequences of their own (what was gathered already is sliced, not gathered again)."""
        out = copy.copy(self)
        for name in ("article", "position", "index", "limit", "_contexts", "_targets"):
            setattr(out, name, None if getattr(self, name) is None else getattr(self, name)[rows])
        return out


def train_subset(bank: Bank, train_concepts: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Article starts and lengths of the first `train_concepts` training concepts, in bank.train_order (the
    last article cut short), so a smaller subset is always a prefix of a larger one."""
    order = bank.train_order
    starts, lengths = bank.article_start[order], bank.article_length[order]
    if train_concepts is None:
        return starts, lengths
    total = int(lengths.sum())
    if train_concepts > total or train_concepts <= 0:
        raise BankError(f"train_concepts={train_concepts}, but the bank has {total} training concepts")
    cum = np.cumsum(lengths)
    k = int(np.searchsorted(cum, train_concepts))          # article where the budget runs out
    lengths = lengths[: k + 1].copy()
    lengths[-1] -= int(cum[k] - train_concepts)
    return starts[: k + 1], lengths


def sequences(bank: Bank, split: str, train_concepts: int | None = None, context: int = CONTEXT) -> Sequences:
    """All ctx windows of one split. `train_concepts` (train only) picks a nested subset."""
    check_split(split)
    if split == "train":
        starts, lengths = train_subset(bank, train_concepts)
    else:
        if train_concepts is not None:
            raise BankError("train_concepts applies to the train split only")
        arts = bank.articles_in(split)
        starts, lengths = bank.article_start[arts], bank.article_length[arts]
    parts = [s + np.arange(context, n) for s, n in zip(starts, lengths) if n > context]   # targets t
    t = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return Sequences(article=bank.article[t].astype(np.int64), position=bank.position[t].astype(np.int64), index=t,
                     limit=np.repeat(lengths, np.clip(lengths - context, 0, None)).astype(np.int64),
                     vectors=bank.vectors, context=context)


def neighbours(bank: Bank, index: np.ndarray, offsets,
               limit: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (M, K, D), valid (M, K)): v[t+k] for each target row t and offset k inside t's article, capped
    at `limit` concepts (e.g. Sequences.limit, a training budget); invalid cells are 0."""
    rows, valid = neighbour_rows(bank, index, offsets, limit)
    out = bank.vectors[rows]
    out[~valid] = 0.0
    return out, valid


def neighbour_rows(bank: Bank, index: np.ndarray, offsets,
                   limit: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The bank rows neighbours() reads (invalid cells: row 0), for callers that gather per batch."""
    offsets = np.asarray(list(offsets), dtype=np.int64)
    index = np.asarray(index, dtype=np.int64)
    pos = bank.position[index][:, None] + offsets[None, :]
    length = bank.article_length[bank.article[index]][:, None]
    if limit is not None:
        length = np.minimum(length, np.asarray(limit, dtype=np.int64)[:, None])
    valid = (pos >= 0) & (pos < length)
    return np.where(valid, index[:, None] + offsets[None, :], 0), valid


def synthetic_bank(n_articles: int = 60, length: int = 20, dim: int = 32, noise: float = 0.0,
                   seed: int = 0, val_fraction: float = 0.15, ood_fraction: float = 0.15) -> tuple[Bank, np.ndarray]:
    """(bank, R) with a known answer: v[t+1] = normalize(R v[t] + noise), R a fixed random rotation, so the
    oracle normalize(ctx[-1] @ R.T) scores cosine 1 at noise 0 and copy-last about 0."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    rot = (q * np.sign(np.diag(r))).astype(np.float32)         # a random rotation
    rows = []
    for _ in range(n_articles):
        x = rng.standard_normal(dim).astype(np.float32)
        x /= np.linalg.norm(x)
        for _ in range(length):
            rows.append(x)
            x = rot @ x + noise * rng.standard_normal(dim).astype(np.float32)
            x /= np.linalg.norm(x)
    vectors = np.stack(rows).astype(np.float32)
    article = np.repeat(np.arange(n_articles), length).astype(np.int32)
    position = np.tile(np.arange(length), n_articles).astype(np.int32)
    split, order = assign_splits(n_articles, val_fraction, ood_fraction, seed)
    articles = [{"id": f"syn{i}", "title": f"synthetic {i}", "split": s} for i, s in enumerate(split)]
    text = [f"synthetic {a}:{p}" for a, p in zip(article, position)]
    manifest = {"kind": "synthetic", "noise": noise, "seed": seed, "dim": dim,
                "fingerprint": fingerprint(vectors, article, position, split)}
    return Bank(vectors, article, position, text, articles, order, manifest), rot
