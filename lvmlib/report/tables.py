"""Tables the notebooks show, from run rows and evaluation documents; intervals as `0.543 [0.536, 0.550]`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation import INTERVAL, compare


def fmt_ci(mean, low, high, digits: int = 3) -> str:
    """`0.543 [0.536, 0.550]`; just the mean when there is no interval."""
    if pd.isna(mean):
        return "—"
    if pd.isna(low) or pd.isna(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def seed_summary(rows, by: str | list[str] = "config", metrics=("val_cos",), values: dict | None = None,
                 seed: int = 0) -> pd.DataFrame:
    """One row per configuration: seeds, its run `labels`, and each metric's mean with evaluation.INTERVAL (m, m_low,
    m_high: one seed and several get the same kind) where every run has per-row `values` ({label: {metric:
    PerRow}}: runs.Results.values), else the mean over seeds and no interval; compute columns averaged, `converged`
    only if every seed converged."""
    by, out, values = [by] if isinstance(by, str) else list(by), [], values or {}
    for key, group in pd.DataFrame(rows).groupby(by, sort=False):
        labels = list(group.label) if "label" in group else []
        entry = {**dict(zip(by, key)), "seeds": len(group), "labels": labels}
        for m in metrics:
            runs = [values.get(label, {}).get(m) for label in labels]
            ci = compare(runs, seed=seed) if runs and None not in runs else None
            entry[m] = ci["mean"] if ci else pd.to_numeric(group[m], errors="coerce").mean()
            entry[f"{m}_low"], entry[f"{m}_high"] = (ci["ci_low"], ci["ci_high"]) if ci else (np.nan, np.nan)
        for col in ("params", "optimizer_steps", "train_seconds", "best_epoch", "epochs"):
            if col in group:
                entry[col] = group[col].mean()
        if "converged" in group:
            entry["converged"] = bool(group["converged"].all())
        out.append(entry)
    return pd.DataFrame(out)


def add_interval(frame: pd.DataFrame, column: str, intervals: dict, key: str) -> pd.DataFrame:
    """frame with `column`, `column`_low and _high from {frame[key] value: an interval dict (evaluation.compare)}."""
    parts = {"": "mean", "_low": "ci_low", "_high": "ci_high"}
    return frame.assign(**{column + end: [intervals[k][part] if k in intervals else np.nan for k in frame[key]]
                           for end, part in parts.items()})


def caption(frame: pd.DataFrame, text: str = INTERVAL, digits: int = 3):
    """A table as the notebooks show it, captioned with the interval it shows."""
    return frame.style.set_caption(f"[a, b]: {text}").format(precision=digits, na_rep="—")


def with_cis(summary: pd.DataFrame, metrics, names: dict | None = None) -> pd.DataFrame:
    """The summary's metrics as `mean [low, high]` strings (for display), other columns but the run labels kept."""
    out = summary.drop(columns=["labels", *[c for m in metrics for c in (f"{m}_low", f"{m}_high")]],
                       errors="ignore").copy()
    for m in metrics:
        out[m] = [fmt_ci(r[m], r.get(f"{m}_low"), r.get(f"{m}_high")) for _, r in summary.iterrows()]
    return out.rename(columns=names or {})


def step_frame(fits: dict, **columns) -> pd.DataFrame:
    """VAL cosine per optimizer step of several runs, long form (label, step, val_cosine, then `columns`: {name:
    {label: value}}), from step 0 (before training) where the run measured it."""
    out = []
    for label, result in fits.items():
        tags = {name: values[label] for name, values in columns.items()}
        if getattr(result, "initial_val_cosine", None) is not None:
            out.append({"label": label, "step": 0, "val_cosine": result.initial_val_cosine, **tags})
        out += [{"label": label, "step": h["step"], "val_cosine": h["val_cosine"], **tags}
                for h in result.history if "step" in h]
    return pd.DataFrame(out, columns=["label", "step", "val_cosine", *columns])


def history_frame(fits: dict) -> pd.DataFrame:
    """Per-epoch training history of several runs, long form (label, epoch, split, loss, val_cosine)."""
    return pd.DataFrame([{"label": label, "epoch": h.get("epoch"), "split": split, "loss": h[f"{split}_loss"],
                          "val_cosine": h.get("val_cosine")} for label, result in fits.items() for h in result.history
                         for split in ("train", "val") if h.get(f"{split}_loss") is not None])


def _pf(test: dict) -> str:
    return "PASS" if test["pass"] else "fail"


def five_cat_table(evals: dict) -> pd.DataFrame:
    """One row per (configuration, split): each 5CAT value, its gate's PASS/fail, and the gates passed overall."""
    rows = []
    for label, ev in evals.items():
        fc = ev["five_cat"]
        for split, res in fc["splits"].items():
            a, b, c, d = res["A"], res["B"], res["C"], res["D"]
            rows.append({
                "label": label, "split": split.upper(), "rows": res["rows"],
                "A c0": a["c0"], "A margin": a["margin"], "A peak k": a["peak_offset"], "A": _pf(a),
                "B R@1": b["r1"], "B R@5": b["r5"], "B MRR": b["mrr"], "B": _pf(b),
                "C shuffle": c["shuffle"]["delta"], "C reverse": c["reverse"]["delta"],
                "C leave-last-out": c["leave_one_out"]["4"]["delta"], "C repeat-pad": c["repeat_pad"]["delta"],
                "C foreign": c["foreign"]["4"]["delta"], "C": _pf(c), "D rollout": d["mean"], "D": _pf(d),
                "E (sanity, not a gate)": "—" if fc["E"].get("pass") is None else _pf(fc["E"]),
                "gates passed": f"{fc['summary']['passed']}/{fc['summary']['total']}",
            })
    return pd.DataFrame(rows)


def offset_sweep_frame(evals: dict) -> pd.DataFrame:
    """Long form (label, split, k, c_k) of 5CAT A for plotting c_k against the offset k."""
    return pd.DataFrame([{"label": label, "split": split.upper(), "k": int(k), "c_k": c}
                         for label, ev in evals.items() for split, res in ev["five_cat"]["splits"].items()
                         for k, c in res["A"]["c"].items()])
