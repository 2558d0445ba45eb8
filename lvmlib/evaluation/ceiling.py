"""A predictability ceiling, without any trained model: per scored row, among the TRUE next concepts of its k
most similar training contexts, the one nearest its own next concept. The choice uses the answer, so it is
an upper line, not a predictor. Also the in-article rank with and without the context, and the copy problem."""
from __future__ import annotations

import numpy as np

from ..data.bank import Bank, Sequences, train_subset
from .core import EvalError, copy_last, mean_cosine, split_rows
from .fivecat import in_article_rank, offset_sweep
from .lcm import ca_other_documents, lcm_metrics
from .retrieval import ContextIndex

KS = (1, 2, 4, 8, 16, 32, 64)


def best_of_k(bank: Bank, rows: Sequences, index: ContextIndex, ks=KS, by: np.ndarray | None = None) -> dict:
    """{k: (M, D) predictions}: per row, among the TRUE next concepts of its k nearest training contexts, the one
    nearest the row's true next concept (oracle-selected: it uses the answer), or, with `by` (M, D), the one
    nearest that prediction (a predictor: retrieval picked by a model, as in kNN-LM)."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise EvalError(f"ks must be positive ints, got {ks}")
    _, nxt = index.search(rows.contexts, min(ks[-1], len(index)))
    cos = np.einsum("mkd,md->mk", bank.vectors[nxt], rows.targets if by is None else by)   # (M, K); [:, :k] caps k
    return {k: bank.vectors[nxt[np.arange(len(rows)), np.argmax(cos[:, :k], axis=1)]].astype(np.float32) for k in ks}


def _ranks(bank: Bank, rows: Sequences, pred: np.ndarray, keys=("r1", "r5", "mrr")) -> tuple[dict, dict, dict]:
    """In-article rank as 5CAT B counts it, with the row's context left out of the candidates, and the `keys` of
    both as one flat dict (r1, ..., r1_excl, ...)."""
    b, bx = (in_article_rank(None, bank, rows, pred=pred, exclude_context=x) for x in (False, True))
    return b, bx, {**{k: b[k] for k in keys}, **{f"{k}_excl": bx[k] for k in keys}}


def scores(bank: Bank, rows: Sequences, pred: np.ndarray, seed: int = 0) -> dict:
    """The numbers the ceiling (or any predictions) is read with: cosine (CI over articles), 5CAT A, in-article
    rank with and without the context, LCM's CA (the paper's and Meta's code's) and PAR."""
    cos = mean_cosine(pred, rows.targets, rows.article, seed=seed)
    a = offset_sweep(None, bank, rows, pred=pred)
    b, bx, ranks = _ranks(bank, rows, pred)
    lcm = lcm_metrics(pred, rows, bank, seed=seed)
    return {"cos": cos["mean"], "cos_low": cos["ci_low"], "cos_high": cos["ci_high"], "c0": a["c0"],
            "margin": a["margin"], "peak": a["peak_offset"], **ranks, "chance_r1": b["chance"]["r1"],
            "chance_r1_excl": bx["chance"]["r1"], "ca": lcm["ca"],
            "ca_meta": ca_other_documents(pred, rows, bank)["ca"], "par": lcm["par_median"]}


def knn_ceiling(bank: Bank, rows: Sequences, train_concepts: int | None = None, ks=KS,
                index: ContextIndex | None = None, seed: int = 0) -> tuple[list[dict], dict[int, np.ndarray]]:
    """The best-of-k ceiling on `rows` for every k: (one row of `scores` per k, {k: predictions})."""
    index = index or ContextIndex(bank, train_concepts)
    preds = best_of_k(bank, rows, index, ks)
    table = [{"k": k, "train_concepts": int(train_subset(bank, train_concepts)[1].sum()),
              "train_windows": len(index), "rows": len(rows), **scores(bank, rows, p, seed)} for k, p in preds.items()]
    return table, preds


def subset_sizes(bank: Bank, sizes) -> list[int | None]:
    """The nested training sizes that fit this bank, smallest first; None (the whole train split) is kept,
    and stands for the sizes at or above it."""
    total = int(train_subset(bank, None)[1].sum())
    out = sorted({int(s) for s in sizes if s is not None and 0 < int(s) < total})
    return out + ([None] if (None in list(sizes) or any(s is not None and int(s) >= total for s in sizes)) else [])


def curve(bank: Bank, split: str = "val", sizes=(2_000, 5_000, 10_000, 20_000, None), ks=KS,
          max_rows: int | None = None, seed: int = 0) -> list[dict]:
    """The ceiling as the training set grows: one row per (nested training size, k), long form."""
    rows = split_rows(bank, split, max_rows, seed)
    return [{"split": split, **r} for size in subset_sizes(bank, sizes)
            for r in knn_ceiling(bank, rows, size, ks, seed=seed)[0]]


def rank_table(bank: Bank, rows: Sequences, predictions: dict) -> list[dict]:
    """In-article R@1, R@5, MRR of each scorer {name: (M, D) predictions}, with the context among the
    candidates (5CAT B) and left out; best R@1 (left out) first."""
    out = []
    for name, pred in predictions.items():
        b, bx, ranks = _ranks(bank, rows, pred, ("r1", "r5", "mrr", "median_rank"))
        out.append({"scorer": name, **ranks, "candidates": b["mean_candidates"], "chance_r1": b["chance"]["r1"],
                    "chance_r1_excl": bx["chance"]["r1"]})
    return sorted(out, key=lambda r: -r["r1_excl"])


def copy_problem(bank: Bank, rows: Sequences) -> dict:
    """In-article R@1 of copy-last with the context among the candidates (always 0: ctx[-1] is its own
    nearest concept) and left out (how often the concept nearest ctx[-1] is the true next one), beside chance."""
    b, bx, _ = _ranks(bank, rows, copy_last(rows.contexts))
    return {"r1_with_context": b["r1"], "r1_without_context": bx["r1"], "chance_with_context": b["chance"]["r1"],
            "chance_without_context": bx["chance"]["r1"], "mean_candidates": b["mean_candidates"],
            "rows": b["rows"], "articles": b["articles"]}


def near_repeats(rows: Sequences, index: ContextIndex, thresholds=(0.95, 0.9, 0.8, 0.7)) -> dict:
    """How often a row's context nearly repeats a training context (cosine of the concatenated unit contexts):
    where it does, that window's true next concept is a draw from (nearly) the same conditional, so those rows
    would estimate what a sampler of the true next-concept distribution scores. {rows, max, median, counts:
    {"t": n}}."""
    best = index.search(rows.contexts, 1)[0][:, 0]
    return {"rows": len(rows), "max": float(best.max()), "median": float(np.median(best)),
            "counts": {f"{t:g}": int((best >= t).sum()) for t in thresholds}}   # JSON keys
