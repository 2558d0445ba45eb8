"""Meta's Large Concept Model peer metrics: ℓ2, contrastive accuracy (CA) and the context ratio PAR."""
from __future__ import annotations

import numpy as np

from ..data.bank import Bank, Sequences
from .core import EvalError, _check_rows, _rng, _split_of, _unit


def lcm_metrics(pred: np.ndarray, seqs: Sequences, bank: Bank, *, ca_pool: str = "split", batch_size: int = 256,
                seed: int = 0, par_min_denominator: float = 1e-3, chunk: int = 1024) -> dict:
    """ℓ2, CA and PAR of predictions `pred` on the rows `seqs`.

    ℓ2  = mean ‖ŷ − y‖ (both unit).
    CA  = per row, the share of candidate concepts x with cos(ŷ, x) < cos(ŷ, y) (for unit vectors:
          farther from ŷ than y is), excluding y and its two same-article neighbours; averaged.
          ca_pool "split": candidates are all concepts of the rows' split; "batch": the targets of
          seeded random batches of `batch_size` rows (Meta's in-batch version).
    PAR = max_m cos(ŷ, x_m) / max_m cos(y, x_m) over the 5 context vectors (> 1: the prediction is
          closer to the context than the truth is). Rows with max_m cos(y, x_m) <= par_min_denominator
          are left out (the ratio is meaningless there) and counted.
    """
    _check_rows(bank, seqs)
    pred = _unit(pred, "predictions")
    if pred.shape != seqs.targets.shape:
        raise EvalError(f"pred has shape {pred.shape}, targets {seqs.targets.shape}")
    y = seqs.targets
    l2 = np.linalg.norm(pred.astype(np.float64) - y, axis=1)
    if ca_pool not in ("split", "batch"):
        raise EvalError(f"ca_pool must be 'split' or 'batch', got {ca_pool!r}")
    ca, n_cand = _ca_split(pred, seqs, bank, chunk) if ca_pool == "split" else _ca_batch(pred, seqs, batch_size, seed)
    num = np.einsum("md,mkd->mk", pred, seqs.contexts).max(axis=1).astype(np.float64)
    den = np.einsum("md,mkd->mk", y, seqs.contexts).max(axis=1).astype(np.float64)
    ok = den > par_min_denominator
    par = num[ok] / den[ok]
    return {"rows": len(seqs), "l2": float(l2.mean()), "ca": float(ca.mean()) if len(ca) else None,
            "ca_pool": ca_pool, "ca_rows": int(len(ca)), "ca_mean_candidates": float(np.mean(n_cand)) if len(ca) else None,
            "par_mean": float(par.mean()) if ok.any() else None, "par_median": float(np.median(par)) if ok.any() else None,
            "par_rows": int(ok.sum()), "par_undefined_rows": int((~ok).sum()),
            "par_min_denominator": par_min_denominator}


def _ca_split(pred, seqs, bank, chunk):
    pool = np.flatnonzero(np.isin(bank.article, bank.articles_in(_split_of(bank, seqs))))  # whole articles, in order
    pool_vecs = bank.vectors[pool]
    col = np.searchsorted(pool, seqs.index)  # pool column of each target
    # t-1 is always in the article (t >= 5); t+1 only when the article goes on. Both sit next to t in
    # the pool, because the pool holds whole articles in bank order.
    has_next = seqs.position + 1 < bank.article_length[seqs.article]
    ca = np.empty(len(seqs))
    for start in range(0, len(seqs), chunk):
        s = slice(start, start + chunk)
        scores = pred[s] @ pool_vecs.T
        r, c = np.arange(scores.shape[0]), col[s]
        s_y = scores[r, c]  # from the same matmul: y never counts as farther than itself
        farther = (scores < s_y[:, None]).sum(axis=1)
        farther -= scores[r, c - 1] < s_y
        farther -= has_next[s] & (scores[r, np.minimum(c + 1, len(pool) - 1)] < s_y)
        ca[s] = farther / (len(pool) - 2 - has_next[s])
    return ca, len(pool) - 2 - has_next


def _ca_batch(pred, seqs, batch_size, seed):
    if batch_size < 2:
        raise EvalError(f"in-batch CA needs batch_size >= 2, got {batch_size}")
    order = _rng(seed, "ca-batch").permutation(len(seqs))
    cas, n_cand = [], []
    for start in range(0, len(order), batch_size):
        b = order[start:start + batch_size]
        scores = pred[b] @ seqs.targets[b].T
        art, pos = seqs.article[b], seqs.position[b]
        # y itself and its same-article neighbours t±1 are not candidates
        near = (art[:, None] == art[None, :]) & (np.abs(pos[:, None] - pos[None, :]) <= 1)
        cand = (~near).sum(axis=1)
        farther = ((scores < np.diag(scores)[:, None]) & ~near).sum(axis=1)
        cas.append(farther[cand > 0] / cand[cand > 0])
        n_cand.append(cand[cand > 0])
    return np.concatenate(cas), np.concatenate(n_cand)


def ca_other_documents(pred: np.ndarray, seqs: Sequences, bank: Bank, *, batch_size: int | None = None,
                       seed: int = 0, chunk: int = 1024) -> dict:
    """Contrastive accuracy as Meta's released evaluation code counts it: the negatives of a row are
    only the targets of rows from OTHER documents (articles), never a concept of its own one.

    CA = per row, the share of those other-document targets x with cos(ŷ, x) < cos(ŷ, y); averaged.
    The pool is every scored row (batch_size None), or seeded random batches of batch_size rows (an
    in-batch version). Beside lcm_metrics' "ca" (the paper's definition: every other concept of the
    split except y and its two neighbours, same article included) it shows how much of CA comes from
    telling the article's own concepts apart: a prediction that copies the context scores well here
    (other articles are far) and worse there (its own article is near).
    """
    _check_rows(bank, seqs)
    pred = _unit(pred, "predictions")
    if pred.shape != seqs.targets.shape:
        raise EvalError(f"pred has shape {pred.shape}, targets {seqs.targets.shape}")
    if batch_size is not None and batch_size < 2:
        raise EvalError(f"in-batch CA needs batch_size >= 2, got {batch_size}")
    y, art = seqs.targets, seqs.article
    order = (np.arange(len(seqs)) if batch_size is None
             else _rng(seed, "ca-other-documents").permutation(len(seqs)))
    groups = [order] if batch_size is None else [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    cas, n_cand = [], []
    for group in groups:
        for start in range(0, len(group), chunk):
            rows = group[start:start + chunk]
            scores = pred[rows] @ y[group].T                                  # (r, |group|)
            s_y = np.einsum("md,md->m", pred[rows], y[rows])[:, None]
            other = art[rows][:, None] != art[group][None, :]
            cand = other.sum(axis=1)
            farther = ((scores < s_y) & other).sum(axis=1)
            ok = cand > 0
            cas.append(farther[ok] / cand[ok])
            n_cand.append(cand[ok])
    ca = np.concatenate(cas) if cas else np.zeros(0)
    return {"ca": float(ca.mean()) if len(ca) else None, "rows": int(len(ca)),
            "mean_candidates": float(np.concatenate(n_cand).mean()) if len(ca) else None,
            "pool": "all scored rows" if batch_size is None else f"seeded batches of {batch_size}",
            "negatives": "targets of other documents only"}
