"""Scoring a next-concept predictor (any callable: contexts (M, 5, D) -> (M, D)): row cosine, its CI over
articles (uncertainty.interval), and the baselines a learner must beat, fitted on TRAIN only and scored on the
model's rows."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..data.bank import CONTEXT, Bank, Sequences, sequences
from .uncertainty import EvalError, _rng, interval

Predict = Callable[[np.ndarray], np.ndarray]
BATCH = 4096
RIDGE_LAMBDAS = (1.0, 10.0, 100.0, 1e3, 1e4)
RIDGE_HOLDOUT = 0.15  # share of the TRAIN articles that chooses the ridge λ


def _unit(x, what: str = "vectors") -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise EvalError(f"{what} contain NaN/inf")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise EvalError(f"{what} contain a zero vector, which has no direction to score")
    return x / norms


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a[i], b[i]) for each row, as float64 (M,)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise EvalError(f"row_cosine needs two (M, D) arrays of one shape, got {a.shape} and {b.shape}")
    return np.einsum("md,md->m", _unit(a), _unit(b)).astype(np.float64)


def _split_of(bank: Bank, seqs: Sequences) -> str:
    """The one split the rows come from (5CAT compares splits, so mixed rows are refused)."""
    if len(seqs) == 0:
        raise EvalError("no rows to evaluate")
    splits = np.unique(np.array([bank.articles[a]["split"] for a in np.unique(seqs.article)]))
    if len(splits) != 1:
        raise EvalError(f"rows come from several splits {list(splits)}; evaluate one split at a time")
    return str(splits[0])


def _check_rows(bank: Bank, seqs: Sequences) -> None:
    if len(seqs) == 0:
        raise EvalError("no rows to evaluate")
    if seqs.contexts.ndim != 3 or seqs.contexts.shape[1:] != (CONTEXT, bank.dim):
        raise EvalError(f"contexts have shape {seqs.contexts.shape}, expected (M, {CONTEXT}, {bank.dim})")
    if np.any(seqs.index >= len(bank)) or np.any(bank.article[seqs.index] != seqs.article):
        raise EvalError("sequences do not belong to this bank (target rows/articles disagree)")


def _predictions(predict: Predict, bank: Bank, seqs: Sequences, pred, batch_size: int) -> np.ndarray:
    """Check the rows; the predictions on them (`pred` when already computed)."""
    _check_rows(bank, seqs)
    return predict_all(predict, seqs.contexts, batch_size) if pred is None else pred


def predict_all(predict: Predict, contexts: np.ndarray, batch_size: int = BATCH, transform=None) -> np.ndarray:
    """Unit (M, D) float32 predictions on (M, 5, D) contexts, in batches; with `transform`, predicts on
    transform(contexts[chunk], chunk), so ablated copies stay batch-sized."""
    contexts = np.asarray(contexts, dtype=np.float32)
    if contexts.ndim != 3 or contexts.shape[1] != CONTEXT:
        raise EvalError(f"contexts must have shape (M, {CONTEXT}, D), got {contexts.shape}")
    if batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}")
    m, _, d = contexts.shape
    out = np.empty((m, d), dtype=np.float32)
    for start in range(0, m, batch_size):
        chunk = slice(start, min(start + batch_size, m))
        x = contexts[chunk] if transform is None else transform(contexts[chunk], chunk)
        y = np.asarray(predict(np.ascontiguousarray(x, dtype=np.float32)))
        if y.shape != (x.shape[0], d):
            raise EvalError(f"predict returned shape {y.shape} for contexts {x.shape}; expected {(x.shape[0], d)}")
        out[chunk] = _unit(y, "predictions")
    return out


def predictor(model, device: str = "cpu", batch_size: int = BATCH) -> Predict:
    """A torch model as a NumPy predict callable (eval mode, no_grad; its train/eval mode is restored)."""
    import torch
    model.to(device)

    @torch.no_grad()
    def predict(contexts: np.ndarray) -> np.ndarray:
        x = np.asarray(contexts, dtype=np.float32)
        was_training = model.training
        model.eval()
        try:
            outs = [model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(device)).float().cpu().numpy()
                    for i in range(0, len(x), batch_size)]
        finally:
            model.train(was_training)
        return np.concatenate(outs) if outs else np.zeros((0, x.shape[-1]), np.float32)
    return predict


def linear_average(contexts: np.ndarray) -> np.ndarray:
    """Baseline: normalize(mean of the 5 context vectors)."""
    return _unit(np.asarray(contexts, dtype=np.float32).mean(axis=1), "context means")


def copy_last(contexts: np.ndarray) -> np.ndarray:
    """Baseline: the last context vector."""
    return _unit(np.asarray(contexts)[:, -1], "last context vectors")


def global_mean(mean: np.ndarray) -> Predict:
    """Baseline: always the same vector (the normalised mean of the training targets)."""
    vec = _unit(np.asarray(mean, dtype=np.float32).reshape(1, -1), "global mean")[0]
    return lambda contexts: np.broadcast_to(vec, (len(contexts), len(vec))).copy()


def _train_windows(bank: Bank, train_concepts: int | None, what: str) -> Sequences:
    train = sequences(bank, "train", train_concepts)  # the same nested subset the models train on
    if len(train) == 0:
        raise EvalError(f"the training subset has no ctx-5 windows, so there is no {what}")
    return train


def train_target_mean(bank: Bank, train_concepts: int | None = None) -> np.ndarray:
    """Normalised mean of the training targets (the same nested subset the model was trained on)."""
    targets = _train_windows(bank, train_concepts, "global mean").targets
    return _unit(targets.mean(axis=0, dtype=np.float64).reshape(1, -1), "train mean")[0]


class LinearBaseline:
    """normalize(Σ_i w_i ctx_i + ctx_flat @ W), fitted on TRAIN: the position-weighted average (no W), or
    with W a ridge fit of its residual (so the ridge shrinks towards that average, not towards zero)."""

    def __init__(self, weights, matrix: np.ndarray | None = None, lam: float | None = None, selection=None):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.matrix, self.lam, self.selection = matrix, lam, selection or {}

    def raw(self, contexts) -> np.ndarray:
        """The least-squares prediction before normalising, float64 (M, D)."""
        x = np.asarray(contexts, dtype=np.float64)
        out = np.einsum("i,mid->md", self.weights, x)
        return out if self.matrix is None else out + x.reshape(len(x), -1) @ self.matrix

    def __call__(self, contexts) -> np.ndarray:
        return _unit(self.raw(contexts), "baseline predictions")

    def info(self) -> dict:
        out = {"weights": self.weights.tolist()}
        return out if self.matrix is None else {**out, "lam": self.lam, **self.selection}


def _slot_weights(contexts: np.ndarray, targets: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """w minimising Σ‖Σ_i w_i ctx_i − y‖², from the float64 Gram matrix of the 5 slots and the target."""
    gram = np.zeros((CONTEXT + 1, CONTEXT + 1))
    for s in range(0, len(targets), chunk):
        z = np.concatenate([contexts[s:s + chunk], targets[s:s + chunk, None]], axis=1).astype(np.float64)
        gram += np.tensordot(z, z, axes=([0, 2], [0, 2]))
    return np.linalg.lstsq(gram[:CONTEXT, :CONTEXT], gram[:CONTEXT, CONTEXT], rcond=None)[0]


def fit_position_weighted(bank: Bank, train_concepts: int | None = None) -> LinearBaseline:
    """The position-weighted average, its 5 weights fitted by least squares on the TRAIN windows."""
    train = _train_windows(bank, train_concepts, "position-weighted fit")
    return LinearBaseline(_slot_weights(train.contexts, train.targets))


def _normal_equations(contexts: np.ndarray, targets: np.ndarray, chunk: int = 2048):
    """X^T X and X^T y for the flattened contexts X (N, 5·D), in float64, over row chunks to bound memory."""
    flat = contexts.reshape(len(contexts), -1)
    xtx = xty = 0.0
    for s in range(0, len(flat), chunk):
        xs = flat[s:s + chunk].astype(np.float64)
        xtx = xtx + xs.T @ xs
        xty = xty + xs.T @ np.asarray(targets[s:s + chunk], dtype=np.float64)
    return xtx, xty


def _ridge(xtx: np.ndarray, xty: np.ndarray, weights: np.ndarray, lam: float) -> np.ndarray:
    """W minimising ‖X(P + W) − y‖² + λ‖W‖², P the position-weighted map: (X^T X + λI) W = X^T y − X^T X P."""
    d = xty.shape[1]
    xtxp = sum(w * xtx[:, i * d:(i + 1) * d] for i, w in enumerate(weights))
    return np.linalg.solve(xtx + lam * np.eye(len(xtx)), xty - xtxp)


def fit_residual_ridge(bank: Bank, train_concepts: int | None = None, *, lambdas=RIDGE_LAMBDAS,
                       holdout: float = RIDGE_HOLDOUT, seed: int = 0) -> LinearBaseline:
    """Ridge on the residual over the position-weighted average, fitted on the TRAIN windows; λ is the
    best by mean cosine on a seeded `holdout` share of the TRAIN articles, then refitted on all of them."""
    train = _train_windows(bank, train_concepts, "residual ridge fit")
    x, y = train.contexts, train.targets
    arts = np.unique(train.article)
    if len(arts) < 2:
        raise EvalError("choosing the ridge λ needs at least 2 training articles")
    n_out = min(len(arts) - 1, max(1, round(holdout * len(arts))))
    out = np.isin(train.article, _rng(seed, "ridge-holdout").choice(arts, n_out, replace=False))
    (a_in, b_in), (a_out, b_out) = _normal_equations(x[~out], y[~out]), _normal_equations(x[out], y[out])
    w_in, scores = _slot_weights(x[~out], y[~out]), {}
    for lam in lambdas:
        fit = LinearBaseline(w_in, _ridge(a_in, b_in, w_in, lam), lam)
        scores[f"{lam:g}"] = float(row_cosine(fit(x[out]), y[out]).mean())
    lam = float(lambdas[int(np.argmax(list(scores.values())))])
    w = _slot_weights(x, y)
    return LinearBaseline(w, _ridge(a_in + a_out, b_in + b_out, w, lam), lam,
                          {"holdout_cos": scores, "holdout_articles": int(n_out), "train_windows": len(train)})


def fit_baselines(bank: Bank, train_concepts: int | None = None, train_mean: np.ndarray | None = None) -> dict:
    """Every baseline as a predict function, fitted on TRAIN (reuse it to score several models)."""
    mean = train_target_mean(bank, train_concepts) if train_mean is None else train_mean
    return {"linear_average": linear_average, "copy_last": copy_last, "global_mean": global_mean(mean),
            "position_weighted": fit_position_weighted(bank, train_concepts),
            "residual_ridge": fit_residual_ridge(bank, train_concepts)}


def mean_cosine(pred: np.ndarray, targets: np.ndarray, articles=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean cos(pred, target) over rows with a 95 % CI over `articles` (each row's; None: over rows)."""
    return interval(row_cosine(pred, targets), articles, n_boot=n_boot, seed=seed)


def compare_to_baselines(predict: Predict, bank: Bank, seqs: Sequences, train_mean: np.ndarray | None = None,
                         *, train_concepts: int | None = None, baselines: dict | None = None, n_boot: int = 1000,
                         seed: int = 0, pred: np.ndarray | None = None, batch_size: int = BATCH) -> dict:
    """Model and every baseline on the very same rows, each with a CI over articles; "model_minus": the paired
    difference model − baseline with its CI and p; "fitted": the fitted baselines' weights and λ."""
    pred = _predictions(predict, bank, seqs, pred, batch_size)
    baselines = fit_baselines(bank, train_concepts, train_mean) if baselines is None else baselines
    cos = {"model": row_cosine(pred, seqs.targets)}
    cos.update({name: row_cosine(b(seqs.contexts), seqs.targets) for name, b in baselines.items()})
    out = {name: interval(c, seqs.article, n_boot=n_boot, seed=seed) for name, c in cos.items()}
    out["model_minus"] = {name: interval(cos["model"], seqs.article, minus=c, n_boot=n_boot, seed=seed)
                          for name, c in cos.items() if name != "model"}
    out["fitted"] = {name: b.info() for name, b in baselines.items() if hasattr(b, "info")}
    return out


def split_rows(bank: Bank, split: str, max_rows: int | None = None, seed: int = 0) -> Sequences:
    """A split's ctx-5 windows, optionally a seeded random subset of max_rows (kept in bank order)."""
    seqs = sequences(bank, split)
    if len(seqs) == 0:
        raise EvalError(f"split {split!r} has no ctx-5 windows in this bank")
    if max_rows is not None and max_rows < 1:
        raise EvalError(f"max_rows must be >= 1, got {max_rows}")
    if max_rows is not None and len(seqs) > max_rows:
        seqs = seqs.subset(np.sort(_rng(seed, f"rows/{split}").choice(len(seqs), size=max_rows, replace=False)))
    return seqs
