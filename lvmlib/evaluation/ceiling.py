"""A predictability ceiling: how much of the next concept can be predicted from 5 context concepts
on this data at all, measured without any trained model.

For each scored row, take the k training windows whose 5-concept contexts are most like its own
(exact cosine of the concatenated, normalised contexts, FAISS, as NearestContextPredictor does)
and, among their k TRUE next concepts, the one nearest the row's true next concept. That choice
uses the answer, so it is an oracle-selected upper line, not a predictor: "if a model could pick
the right continuation among the k most similar contexts it has seen, it would score this".
Its cosine, 5CAT A margin and in-article R@1 grow with k and with the training set; `curve`
measures both (nested training subsets, as every model trains on).

Also here: in-article rank of the true next concept with and without the row's own context
concepts among the candidates (`rank_table`), and the "copy problem" in one number
(`copy_problem`): how often the concept nearest ctx[-1] is the true next one.
"""
from __future__ import annotations

import numpy as np

from ..data.bank import CONTEXT, Bank, Sequences, train_subset
from .core import EvalError, bootstrap_mean, copy_last, row_cosine, split_rows
from .fivecat import in_article_rank, offset_sweep
from .lcm import ca_other_documents, lcm_metrics

KS = (1, 2, 4, 8, 16, 32, 64)
CHUNK = 8192   # training windows added to the index at a time (bounds the memory of the keys)


def train_windows(bank: Bank, train_concepts: int | None = None) -> np.ndarray:
    """Bank rows of the targets of every training window of the nested subset (as sequences() gives)."""
    starts, lengths = train_subset(bank, train_concepts)
    parts = [s + np.arange(CONTEXT, n) for s, n in zip(starts, lengths) if n > CONTEXT]
    if not parts:
        raise EvalError("the training subset has no ctx-5 windows")
    return np.concatenate(parts).astype(np.int64)


def _keys(bank: Bank, targets: np.ndarray) -> np.ndarray:
    """Normalised concatenated contexts (n, 5·D) of the windows whose targets are `targets`."""
    ctx = bank.vectors[targets[:, None] + np.arange(-CONTEXT, 0)].reshape(len(targets), -1)
    return np.ascontiguousarray(ctx / np.linalg.norm(ctx, axis=1, keepdims=True), dtype=np.float32)


class ContextIndex:
    """The training windows of a nested subset, searchable by context (exact cosine, FAISS)."""

    def __init__(self, bank: Bank, train_concepts: int | None = None):
        import faiss
        self.bank, self.train_concepts = bank, train_concepts
        self.targets = train_windows(bank, train_concepts)
        self.index = faiss.IndexFlatIP(CONTEXT * bank.dim)
        for s in range(0, len(self.targets), CHUNK):
            self.index.add(_keys(bank, self.targets[s:s + CHUNK]))

    def __len__(self) -> int:
        return len(self.targets)

    def search(self, contexts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(context cosines (M, k), bank rows of the neighbours' TRUE next concepts (M, k)), nearest first."""
        if not 1 <= k <= len(self):
            raise EvalError(f"k must be in 1..{len(self)} (training windows), got {k}")
        q = np.asarray(contexts, dtype=np.float32).reshape(len(contexts), -1)
        q = np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True))
        scores, ids = self.index.search(q, k)
        return scores, self.targets[ids]


def best_of_k(bank: Bank, rows: Sequences, index: ContextIndex, ks=KS) -> dict[int, np.ndarray]:
    """{k: (M, D) predictions}: per row, among the TRUE next concepts of its k nearest training
    contexts, the one with the highest cosine to the row's true next concept (oracle-selected)."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise EvalError(f"ks must be positive ints, got {ks}")
    _, nxt = index.search(rows.contexts, min(ks[-1], len(index)))
    cos = np.einsum("mkd,md->mk", bank.vectors[nxt], rows.targets)          # (M, K)
    out = {}
    for k in ks:
        kk = min(k, nxt.shape[1])
        pick = nxt[np.arange(len(rows)), np.argmax(cos[:, :kk], axis=1)]
        out[k] = bank.vectors[pick].astype(np.float32)
    return out


def scores(bank: Bank, rows: Sequences, pred: np.ndarray, seed: int = 0) -> dict:
    """The numbers the ceiling (or any set of predictions) is read with: cosine (bootstrap CI), 5CAT A
    (c0, margin, peak), in-article R@1/R@5/MRR as 5CAT B counts them and with the context left out,
    LCM's CA (the paper's definition and Meta's code's) and PAR."""
    cos = bootstrap_mean(row_cosine(pred, rows.targets), seed=seed)
    a = offset_sweep(None, bank, rows, pred=pred)
    b = in_article_rank(None, bank, rows, pred=pred)
    bx = in_article_rank(None, bank, rows, pred=pred, exclude_context=True)
    lcm = lcm_metrics(pred, rows, bank, seed=seed)
    return {"cos": cos["mean"], "cos_low": cos["ci_low"], "cos_high": cos["ci_high"], "c0": a["c0"],
            "margin": a["margin"], "peak": a["peak_offset"], "r1": b["r1"], "r5": b["r5"], "mrr": b["mrr"],
            "r1_excl": bx["r1"], "r5_excl": bx["r5"], "mrr_excl": bx["mrr"], "chance_r1": b["chance"]["r1"],
            "chance_r1_excl": bx["chance"]["r1"], "ca": lcm["ca"], "ca_meta": ca_other_documents(pred, rows, bank)["ca"],
            "par": lcm["par_median"]}


def knn_ceiling(bank: Bank, rows: Sequences, train_concepts: int | None = None, ks=KS,
                index: ContextIndex | None = None, seed: int = 0) -> tuple[list[dict], dict[int, np.ndarray]]:
    """The best-of-k ceiling on `rows` for every k: (one row of `scores` per k, {k: predictions})."""
    index = index or ContextIndex(bank, train_concepts)
    preds = best_of_k(bank, rows, index, ks)
    table = [{"k": k, "train_concepts": int(train_subset(bank, train_concepts)[1].sum()),
              "train_windows": len(index), "rows": len(rows), **scores(bank, rows, p, seed)} for k, p in preds.items()]
    return table, preds


def subset_sizes(bank: Bank, sizes) -> list[int | None]:
    """The nested training sizes that fit this bank, smallest first; None (all) stands for the whole
    train split and is kept; sizes at or above it are dropped (they would all be the same set)."""
    total = int(train_subset(bank, None)[1].sum())
    out = sorted({int(s) for s in sizes if s is not None and 0 < int(s) < total})
    return out + ([None] if (None in list(sizes) or any(s is not None and int(s) >= total for s in sizes)) else [])


def curve(bank: Bank, split: str = "val", sizes=(2_000, 5_000, 10_000, 20_000, None), ks=KS,
          max_rows: int | None = None, seed: int = 0) -> list[dict]:
    """The ceiling as the training set grows: one row per (nested training size, k), long form."""
    rows = split_rows(bank, split, max_rows, seed)
    out = []
    for size in subset_sizes(bank, sizes):
        table, _ = knn_ceiling(bank, rows, size, ks, seed=seed)
        out += [{"split": split, **r} for r in table]
    return out


def rank_table(bank: Bank, rows: Sequences, predictions: dict) -> list[dict]:
    """In-article rank of the true next concept under each scorer {name: (M, D) predictions}: R@1,
    R@5, MRR with the context among the candidates (5CAT B) and left out; best R@1 (left out) first."""
    out = []
    for name, pred in predictions.items():
        b = in_article_rank(None, bank, rows, pred=pred)
        bx = in_article_rank(None, bank, rows, pred=pred, exclude_context=True)
        out.append({"scorer": name, "r1": b["r1"], "r5": b["r5"], "mrr": b["mrr"], "median_rank": b["median_rank"],
                    "r1_excl": bx["r1"], "r5_excl": bx["r5"], "mrr_excl": bx["mrr"],
                    "median_rank_excl": bx["median_rank"], "candidates": b["mean_candidates"],
                    "chance_r1": b["chance"]["r1"], "chance_r1_excl": bx["chance"]["r1"]})
    return sorted(out, key=lambda r: -r["r1_excl"])


def copy_problem(bank: Bank, rows: Sequences) -> dict:
    """The copy problem in one number: in-article R@1 of copy-last (ŷ = ctx[-1]) with the context
    among the candidates (always 0: ctx[-1] is its own nearest concept) and left out (how often the
    concept nearest the last context concept is the true next one), beside chance."""
    pred = copy_last(rows.contexts)
    b = in_article_rank(None, bank, rows, pred=pred)
    bx = in_article_rank(None, bank, rows, pred=pred, exclude_context=True)
    return {"r1_with_context": b["r1"], "r1_without_context": bx["r1"], "chance_with_context": b["chance"]["r1"],
            "chance_without_context": bx["chance"]["r1"], "mean_candidates": b["mean_candidates"],
            "rows": b["rows"], "articles": b["articles"]}
