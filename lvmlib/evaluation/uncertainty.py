"""The one uncertainty model behind every interval, table and finding. Windows of one article overlap and share a
topic, so rows are not independent: the bootstrap resamples ARTICLES (clusters) and, where several seeds were
trained, seeds too (nested: each replicate draws seeds, then articles). One seed and many seeds get the same kind
of interval. A comparison is PAIRED: a difference on the same rows with its own interval and p-value (never two
intervals' overlap); several comparisons are Holm-adjusted together."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError

INTERVAL = "95 % bootstrap CI over articles (seeds resampled too, nested, where there are several)"


class EvalError(InputError):
    """Evaluation input that cannot give a meaningful number (wrong shapes, empty splits, wrong bank)."""


def _rng(seed: int, purpose: str) -> np.random.Generator:
    # one reproducible stream per purpose, so adding or reordering a test never shifts another's draws
    return np.random.default_rng([int(seed), zlib.crc32(purpose.encode())])


def _per_seed(values, n_rows: int | None = None) -> np.ndarray:
    """(seeds, rows, K) float64 from one run's (rows,) or (rows, K) values, or a list of them (one per seed)."""
    seeds = isinstance(values, (list, tuple)) and len(values) > 0 and np.ndim(values[0]) >= 1
    runs = values if seeds else [values]
    try:
        v = np.stack([np.asarray(r, dtype=np.float64).reshape(len(r), -1) for r in runs])
    except (TypeError, ValueError):
        raise EvalError("every seed's values must be (rows,) or (rows, K) on the same rows") from None
    if v.size == 0 or (n_rows is not None and v.shape[1] != n_rows):
        raise EvalError(f"values must be non-empty and on the same rows, got shape {v.shape[:2]} (seeds, rows)")
    if not np.isfinite(v).all():
        raise EvalError("values contain NaN/inf")
    return v


def _replicate_means(sums: np.ndarray, wa: np.ndarray, counts: np.ndarray, rng) -> np.ndarray:
    """(B, K) means of B replicates: seeds resampled (when there are several), articles drawn `wa` (B, G) times."""
    s = sums.shape[0]
    ws = rng.multinomial(s, np.full(s, 1 / s), size=len(wa)) if s > 1 else np.ones((len(wa), 1))
    return np.einsum("bs,sgk,bg->bk", ws, sums, wa) / s / (wa @ counts)[:, None]


def interval(values, groups=None, *, minus=None, statistic=None, n_boot: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict:
    """A level and its bootstrap CI over articles (`groups`: each row's article; None: every row its own cluster).
    values: one run's per-row values, (rows,) or (rows, K), or a list of them, one per seed (resampled too).
    statistic: maps the K column means (B, K) to one number per replicate (B,), e.g. a margin; default column 0.
    minus: another predictor's values on the same rows (its seeds resampled independently): the paired
    difference. {"mean", "ci_low", "ci_high", "p" (two-sided, of a difference of 0), "n", "articles", "seeds"}."""
    stat = statistic or (lambda means: means[:, 0])
    v = _per_seed(values)
    m = None if minus is None else _per_seed(minus, v.shape[1])
    if n_boot < 1 or not 0 < level < 1:
        raise EvalError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot}, {level}")
    if groups is not None and len(groups) != v.shape[1]:
        raise EvalError(f"groups has {len(groups)} entries for {v.shape[1]} rows")
    g = np.arange(v.shape[1]) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    n_groups, rng = int(g.max()) + 1, _rng(seed, "bootstrap")
    counts = np.bincount(g, minlength=n_groups).astype(np.float64)
    # per seed and article, the sum of each column: a replicate only reweights these
    sums = [np.stack([np.stack([np.bincount(g, weights=col, minlength=n_groups) for col in run.T], axis=1)
                      for run in x]) for x in (v, m) if x is not None]
    stats, step = np.empty(n_boot), max(1, 2_000_000 // n_groups)   # ~2M article draws per round
    for s in range(0, n_boot, step):
        wa = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=min(step, n_boot - s))
        stats[s:s + len(wa)] = stat(_replicate_means(sums[0], wa, counts, rng)) - (
            stat(_replicate_means(sums[1], wa, counts, rng)) if m is not None else 0)
    point = float(stat(v.mean(axis=(0, 1))[None])[0] - (stat(m.mean(axis=(0, 1))[None])[0] if m is not None else 0))
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    tail = min((stats <= 0).sum(), (stats >= 0).sum())
    return {"mean": point, "ci_low": float(lo), "ci_high": float(hi), "n": int(v.shape[1]), "articles": n_groups,
            "seeds": int(v.shape[0]), "p": float(min(1.0, 2 * (tail + 1) / (n_boot + 1)))}


@dataclass(frozen=True)
class PerRow:
    """One run's per-row values of one metric (rows,) or (rows, K), each row's article, and the statistic that
    turns the K column means into the metric (None: the mean itself), as `interval` takes them."""
    values: np.ndarray
    articles: np.ndarray
    statistic: Callable | None = None


def compare(runs: list[PerRow], minus: list[PerRow] | None = None, seed: int = 0) -> dict:
    """`interval` of a configuration's runs (its seeds), or its paired difference from `minus`'s runs."""
    return interval([r.values for r in runs], runs[0].articles, statistic=runs[0].statistic,
                    minus=None if minus is None else [r.values for r in minus], seed=seed)


def sign(diff: dict) -> int:
    """+1 if a difference's interval lies above 0, -1 below, 0 if it holds 0 (Holm-adjusted `p_adj` if present)."""
    if diff.get("p_adj", 0) > 0.05:
        return 0
    return 1 if diff["ci_low"] > 0 else (-1 if diff["ci_high"] < 0 else 0)


def holm(diffs: dict) -> dict:
    """The same differences, each with "p_adj": Holm's step-down adjustment over all of them (the family the
    finding states), so a finding that makes k comparisons holds its error rate at 5 % for all k together."""
    order, out, running = sorted(diffs, key=lambda k: diffs[k]["p"]), {}, 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * diffs[key]["p"]))
        out[key] = {**diffs[key], "p_adj": running}
    return {k: out[k] for k in diffs}
