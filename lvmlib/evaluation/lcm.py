"""Meta's Large Concept Model peer metrics: ℓ2, contrastive accuracy (CA) and the context ratio PAR
(definitions: docs/architecture.md)."""
from __future__ import annotations

import numpy as np

from ..data.bank import Bank, Sequences
from .core import EvalError, _check_rows, _rng, _split_of, _unit


def _unit_predictions(pred: np.ndarray, seqs: Sequences, bank: Bank) -> np.ndarray:
    _check_rows(bank, seqs)
    pred = _unit(pred, "predictions")
    if pred.shape != seqs.targets.shape:
        raise EvalError(f"pred has shape {pred.shape}, targets {seqs.targets.shape}")
    return pred


def lcm_metrics(pred: np.ndarray, seqs: Sequences, bank: Bank, *, ca_pool: str = "split", batch_size: int = 256,
                seed: int = 0, par_min_denominator: float = 1e-3, chunk: int = 1024) -> dict:
    """ℓ2, CA and PAR of predictions `pred` on the rows `seqs`. CA's candidates: every concept of the rows'
    split ("split") or the targets of seeded batches of `batch_size` rows ("batch", Meta's in-batch version).
    PAR = max_m cos(ŷ, x_m) / max_m cos(y, x_m) over EVERY earlier concept x_m of the article (Meta's definition);
    par_ctx5_* is the same ratio over the 5 context concepts only (a diagnostic). Both leave out (and count) rows
    whose denominator is <= par_min_denominator."""
    pred = _unit_predictions(pred, seqs, bank)
    y = seqs.targets
    l2 = np.linalg.norm(pred.astype(np.float64) - y, axis=1)
    if ca_pool not in ("split", "batch"):
        raise EvalError(f"ca_pool must be 'split' or 'batch', got {ca_pool!r}")
    ca, n_cand = _ca_split(pred, seqs, bank, chunk) if ca_pool == "split" else _ca_batch(pred, seqs, batch_size, seed)
    ctx5 = [np.einsum("md,mkd->mk", v, seqs.contexts).max(axis=1).astype(np.float64) for v in (pred, y)]
    par = {"": _ratio(_max_earlier(pred, seqs, bank), _max_earlier(y, seqs, bank), par_min_denominator),
           "_ctx5": _ratio(*ctx5, par_min_denominator)}
    return {"rows": len(seqs), "l2": float(l2.mean()), "ca": float(ca.mean()) if len(ca) else None,
            "ca_pool": ca_pool, "ca_rows": int(len(ca)),
            "ca_mean_candidates": float(np.mean(n_cand)) if len(ca) else None,
            **{f"par{name}_{k}": v for name, r in par.items() for k, v in r.items()},
            "par_min_denominator": par_min_denominator}


def _max_earlier(v: np.ndarray, seqs: Sequences, bank: Bank) -> np.ndarray:
    """Per row, max over the article's concepts before the target of cos(v_i, x_m) (bank vectors are unit)."""
    first = seqs.index - seqs.position      # an article's concepts are contiguous in the bank
    return np.array([float((bank.vectors[a:t] @ v[i]).max()) for i, (a, t) in enumerate(zip(first, seqs.index))])


def _ratio(num: np.ndarray, den: np.ndarray, min_den: float) -> dict:
    ok = den > min_den
    par = num[ok] / den[ok]
    return {"mean": float(par.mean()) if ok.any() else None, "median": float(np.median(par)) if ok.any() else None,
            "rows": int(ok.sum()), "undefined_rows": int((~ok).sum())}


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


def _share_farther(scores: np.ndarray, s_y: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row with candidates: the share of them scored below y (score s_y), and how many there are."""
    cand = candidates.sum(axis=1)
    farther = ((scores < s_y) & candidates).sum(axis=1)
    return farther[cand > 0] / cand[cand > 0], cand[cand > 0]


def _ca_batch(pred, seqs, batch_size, seed):
    if batch_size < 2:
        raise EvalError(f"in-batch CA needs batch_size >= 2, got {batch_size}")
    order = _rng(seed, "ca-batch").permutation(len(seqs))
    parts = []
    for start in range(0, len(order), batch_size):
        b = order[start:start + batch_size]
        scores = pred[b] @ seqs.targets[b].T
        art, pos = seqs.article[b], seqs.position[b]
        # y itself and its same-article neighbours t±1 are not candidates
        near = (art[:, None] == art[None, :]) & (np.abs(pos[:, None] - pos[None, :]) <= 1)
        parts.append(_share_farther(scores, np.diag(scores)[:, None], ~near))
    return tuple(np.concatenate(p) for p in zip(*parts))


def ca_other_documents(pred: np.ndarray, seqs: Sequences, bank: Bank, *, batch_size: int | None = None,
                       seed: int = 0, chunk: int = 1024) -> dict:
    """CA as Meta's released code counts it: a row's negatives are only the targets of rows from OTHER
    articles (all scored rows, or seeded batches of batch_size), so it ignores the article's own concepts."""
    pred = _unit_predictions(pred, seqs, bank)
    if batch_size is not None and batch_size < 2:
        raise EvalError(f"in-batch CA needs batch_size >= 2, got {batch_size}")
    y, art, size = seqs.targets, seqs.article, batch_size or len(seqs)
    order = np.arange(len(seqs)) if batch_size is None else _rng(seed, "ca-other-documents").permutation(len(seqs))
    parts = []
    for group in (order[s:s + size] for s in range(0, len(order), size)):
        for start in range(0, len(group), chunk):
            rows = group[start:start + chunk]
            s_y = np.einsum("md,md->m", pred[rows], y[rows])[:, None]
            parts.append(_share_farther(pred[rows] @ y[group].T, s_y, art[rows][:, None] != art[group][None, :]))
    ca, n_cand = (np.concatenate(p) for p in zip(*parts))
    return {"ca": float(ca.mean()) if len(ca) else None, "rows": int(len(ca)),
            "mean_candidates": float(n_cand.mean()) if len(ca) else None,
            "pool": "all scored rows" if batch_size is None else f"seeded batches of {batch_size}",
            "negatives": "targets of other documents only"}
