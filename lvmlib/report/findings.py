"""What a report concludes, as functions of its results (each with a unit test), never an
f-string decided in a notebook cell.

A finding is one sentence with its number and 95 % CI. Conclusions come only from converged
runs (`converged_only`), and "A beats B" only where the intervals say so (`separated`,
`paired_gain`). `banner` states a report's scale; the report runner shows the banner and the
TL;DR (the first 3-5 findings) at the top of the page.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation import bootstrap_mean
from .tables import fmt_ci


def ci_text(mean, low=None, high=None) -> str:
    return fmt_ci(mean, low, high)


def separated(a: tuple, b: tuple) -> int:
    """+1 if interval a lies wholly above b, -1 wholly below, 0 if they overlap (or one is missing)."""
    (_, a_lo, a_hi), (_, b_lo, b_hi) = a, b
    if any(v is None or pd.isna(v) for v in (a_lo, a_hi, b_lo, b_hi)):
        return 0
    return 1 if a_lo > b_hi else (-1 if a_hi < b_lo else 0)


def paired_gain(model_cos: list, baseline_cos, seed: int = 0) -> tuple[float, float, float]:
    """Mean gain of a configuration over a baseline on the same rows, paired over rows and seeds:
    each row's cosine averaged over the seeds' runs minus the baseline's, with a bootstrap 95 % CI
    over rows. Returns (mean, low, high)."""
    per_row = np.mean(np.stack([np.asarray(c, dtype=float) for c in model_cos]), axis=0) - np.asarray(baseline_cos)
    b = bootstrap_mean(per_row, seed=seed)
    return b["mean"], b["ci_low"], b["ci_high"]


def converged_only(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(converged trained runs, the others). Baselines (no `converged` value) are neither."""
    if "converged" not in rows:
        return rows.iloc[0:0], rows.iloc[0:0]
    trained = rows[rows["converged"].notna()]
    ok = trained["converged"].astype(bool)
    return trained[ok], trained[~ok]


def convergence(rows: pd.DataFrame) -> str:
    """How many trained runs converged, and which did not (they are left out of every conclusion)."""
    ok, not_ok = converged_only(rows)
    n = len(ok) + len(not_ok)
    if n == 0:
        return "No trained runs."
    text = f"{len(ok)} of {n} trained runs converged (stopped by early stopping on VAL)"
    if len(not_ok):
        names = ", ".join(dict.fromkeys(not_ok["label"].astype(str)))
        return text + f"; {len(not_ok)} stopped at the epoch cap while still improving ({names}) and are left out of every conclusion."
    return text + "."


def banner(bank, rows: pd.DataFrame, seeds, **extra) -> dict:
    """The report's scale: bank (concepts, articles, windows), encoder and D, model sizes, optimizer
    steps and seeds (the runner adds profile, device, wall time and commit)."""
    m = bank.manifest
    out = {"bank": f"{m.get('name') or (bank.path.name if bank.path else 'in memory')}: {len(bank):,} concepts, "
                   f"{int(np.unique(bank.article).size):,} articles",
           "encoder": f"{(m.get('encoder') or {}).get('name', '?')} (D={bank.dim})"}
    trained = pd.concat(converged_only(rows))
    if len(trained):
        params = trained.groupby("model")["params"].first()
        out["models"] = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in params.items())
        out["optimizer steps"] = f"{int(trained.optimizer_steps.min()):,}–{int(trained.optimizer_steps.max()):,} per run"
        out["training windows"] = ", ".join(f"{int(v):,}" for v in sorted(trained.train_sequences.unique()))
    out["seeds"] = ", ".join(map(str, seeds))
    return {**out, **extra}


def best_vs_baselines(summary: pd.DataFrame, baselines: pd.DataFrame, metric: str = "val_cos",
                      label: str = "config") -> str:
    """The best converged configuration on `metric` beside the strongest computed baseline."""
    if summary.empty:
        return "No configuration converged, so none is compared with the baselines."
    best = summary.loc[summary[metric].idxmax()]
    strongest = baselines.loc[baselines[metric].idxmax()]   # rows of runs.baseline_rows
    side = {1: "above", -1: "below", 0: "not separable from"}[separated(
        (best[metric], best[f"{metric}_low"], best[f"{metric}_high"]),
        (strongest[metric], strongest[f"{metric}_low"], strongest[f"{metric}_high"]))]
    return (f"Best converged configuration: {best[label]}, VAL cosine {ci_text(best[metric], best[f'{metric}_low'], best[f'{metric}_high'])} "
            f"over {int(best['seeds'])} seed(s) — {side} the strongest baseline, {strongest['label']} "
            f"{ci_text(strongest[metric], strongest[f'{metric}_low'], strongest[f'{metric}_high'])}, on the same rows.")


def gain_over(name: str, gains: dict) -> str:
    """Which configurations beat the baseline `name` with a paired CI (rows × seeds) above zero.
    gains: {configuration: (mean, low, high)}."""
    if not gains:
        return f"No converged configuration to compare with {name}."
    above = {k: v for k, v in gains.items() if v[1] > 0}
    best = max(gains, key=lambda k: gains[k][0])
    text = (f"{len(above)} of {len(gains)} converged configurations beat {name} with a paired 95 % CI above zero"
            + (f" ({', '.join(above)})" if above else ""))
    return text + f"; the largest gain is {best}'s {ci_text(*gains[best])}."


def loss_effect(summary: pd.DataFrame, a: str = "MSE", b: str = "InfoNCE", metric: str = "val_cos") -> str:
    """Per architecture, whether loss a scores above loss b with separated intervals."""
    verdicts = {}
    for model, group in summary.groupby("model", sort=False):
        by_loss = group.set_index("loss")
        if a in by_loss.index and b in by_loss.index:
            ra, rb = by_loss.loc[a], by_loss.loc[b]
            verdicts[model] = separated((ra[metric], ra[f"{metric}_low"], ra[f"{metric}_high"]),
                                        (rb[metric], rb[f"{metric}_low"], rb[f"{metric}_high"]))
    if not verdicts:
        return f"No architecture has converged runs with both {a} and {b}."
    def names(v):
        return ", ".join(m for m, x in verdicts.items() if x == v) or "none"
    return (f"{a} scores above {b} with separated 95 % intervals for {sum(v == 1 for v in verdicts.values())} of "
            f"{len(verdicts)} architectures ({names(1)}), below for {sum(v == -1 for v in verdicts.values())} "
            f"({names(-1)}), not separable for {sum(v == 0 for v in verdicts.values())} ({names(0)}); "
            "theirs (seed 003): Transformer 0.5817 with MSE vs 0.3539 with InfoNCE.")


def copies(copy_rates: dict) -> str:
    """How often each predictor's nearest bank concept was one of its own context concepts."""
    return ("Decoded VAL examples — share whose nearest bank concept is a copy of a context concept: "
            + ", ".join(f"{name} {rate:.0%}" for name, rate in copy_rates.items()) + ".")


def loss_comparison(rows: pd.DataFrame, summary: pd.DataFrame, baselines: pd.DataFrame, gains: dict,
                    copy_rates: dict | None = None) -> list[str]:
    """Notebook 01's TL;DR."""
    out = [convergence(rows), best_vs_baselines(summary, baselines),
           gain_over("ridge on the position-weighted average's residual", gains), loss_effect(summary)]
    return out + ([copies(copy_rates)] if copy_rates else [])
