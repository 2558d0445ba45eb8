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
           "encoder": f"{(m.get('encoder') or {}).get('name', '?')} {(m.get('encoder') or {}).get('variant', '')} "
                      f"(D={bank.dim})".replace("  ", " ")}
    trained = pd.concat(converged_only(rows))
    if len(trained):
        params = trained.groupby("model")["params"].first()
        out["models"] = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in params.items())
        out["optimizer steps"] = f"{int(trained.optimizer_steps.min()):,}–{int(trained.optimizer_steps.max()):,} per run"
        out["training windows"] = ", ".join(f"{int(v):,}" for v in sorted(trained.train_sequences.unique()))
        out["device"] = ", ".join(sorted(trained.device.astype(str).unique())) if "device" in trained else "?"
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


def chosen_lr(sweep: pd.DataFrame) -> dict:
    """Per model, the learning rate whose converged run scored best on VAL (ties: the smaller);
    a model with no converged sweep run keeps no choice."""
    ok, _ = converged_only(sweep)
    return {m: float(g.sort_values(["val_cos", "lr"], ascending=[False, True]).lr.iloc[0])
            for m, g in ok.groupby("model", sort=False)}


def lr_sweep(sweep: pd.DataFrame, chosen: dict) -> str:
    tried = sorted(sweep.lr.unique())
    return ("Learning rates, chosen per architecture by VAL cosine of converged MSE runs among "
            + ", ".join(f"{v:g}" for v in tried) + ": " + ", ".join(f"{m} {v:g}" for m, v in chosen.items())
            + " (selection on VAL: the untouched OOD split is the clean estimate).")


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
                    copy_rates: dict | None = None, sweep: str | None = None) -> list[str]:
    """Notebook 01's TL;DR."""
    out = [convergence(rows)] + ([sweep] if sweep else []) + [
        best_vs_baselines(summary, baselines), gain_over("ridge on the position-weighted average's residual", gains),
        loss_effect(summary)]
    return out + ([copies(copy_rates)] if copy_rates else [])


def _interval(row, metric: str = "val_cos") -> tuple:
    return row[metric], row.get(f"{metric}_low"), row.get(f"{metric}_high")


def more_data(curve: pd.DataFrame, x: str = "train_sequences", metric: str = "val_cos") -> str:
    """Per model, whether the largest training size still scores above the next largest (separated
    intervals), has levelled off, or falls. curve: seed_summary rows by (model, x)."""
    verdicts = {"still rising": [], "levelled off": [], "falling": []}
    for model, group in curve.groupby("model", sort=False):
        group = group.sort_values(x)
        if len(group) < 2:
            continue
        prev, last = group.iloc[-2], group.iloc[-1]
        side = separated(_interval(last, metric), _interval(prev, metric))
        key = {1: "still rising", 0: "levelled off", -1: "falling"}[side]
        verdicts[key].append(f"{model} ({int(prev[x]):,} → {int(last[x]):,} windows: "
                             f"{prev[metric]:.3f} → {ci_text(*_interval(last, metric))})")
    if not any(verdicts.values()):
        return "No model was trained at two or more sizes."
    return "At the largest training size, VAL cosine is " + "; ".join(
        f"{k} for {', '.join(v)}" for k, v in verdicts.items() if v) + "."


def equal_steps(converged: pd.DataFrame, fixed: pd.DataFrame, x: str = "train_sequences",
                metric: str = "val_cos") -> str:
    """The data-size effect with and without the step confound: smallest → largest size, per model,
    trained to convergence vs for an equal number of optimizer steps, over the sizes both arms trained."""
    parts = []
    for model, group in fixed.groupby("model", sort=False):
        conv = converged[converged.model == model]
        if len(group) < 2 or len(conv) < 2:
            continue
        common = set(group[x]) & set(conv[x])       # the same two sizes in both arms
        g, c = (df[df[x].isin(common)].sort_values(x) for df in (group, conv))
        if len(common) < 2:
            continue
        parts.append(f"{model} {g[metric].iloc[-1] - g[metric].iloc[0]:+.3f} at {int(g.optimizer_steps.iloc[0]):,} "
                     f"steps each vs {c[metric].iloc[-1] - c[metric].iloc[0]:+.3f} when trained to convergence")
    if not parts:
        return "No equal-steps comparison was run."
    return ("From the smallest to the largest training set, VAL cosine changes by " + "; ".join(parts)
            + " (equal steps remove the confound that more data also meant more optimizer steps).")


def collapse(rows: pd.DataFrame, baselines: pd.DataFrame) -> str:
    """Whether any converged run ends no better than the global mean (a constant vector)."""
    ok, _ = converged_only(rows)
    floor = baselines.set_index("label").loc["global mean"]
    if ok.empty:
        return "No converged run to check for a collapse."
    worst = ok.loc[ok.val_cos.idxmin()]
    collapsed = ok[ok.val_cos_low <= floor.val_cos_high] if "val_cos_low" in ok else ok.iloc[0:0]
    return (f"{len(collapsed)} of {len(ok)} converged runs collapse to the global mean's level "
            f"({floor.val_cos:.3f}); the lowest is {worst.label} at {ci_text(*_interval(worst))}.")


def scaling(rows, curve, fixed, baselines, gains) -> list[str]:
    """Notebook 02's TL;DR."""
    return [convergence(rows), more_data(curve), equal_steps(curve, fixed),
            gain_over("ridge on the position-weighted average's residual (at the largest size)", gains),
            collapse(rows, baselines)]


def margins(summary: pd.DataFrame, label: str = "variant") -> str:
    """The 5CAT A margin per configuration; the largest, and whether any is above zero."""
    if summary.empty:
        return "No converged configuration to read a margin from."
    best = summary.loc[summary.val_margin.idxmax()]
    positive = summary[summary.val_margin_low > 0] if "val_margin_low" in summary else summary.iloc[0:0]
    return ("VAL margin (c₀ − max other offset; > 0 means nearer the true next concept than any neighbour): "
            + ", ".join(f"{r[label]} {ci_text(*_interval(r, 'val_margin'))}" for _, r in summary.iterrows())
            + f". Largest: {best[label]}; {len(positive)} with the whole interval above zero.")


def gates(table: pd.DataFrame, trained: list[str]) -> str:
    """How many trained configurations pass 5CAT A and B on a split (table: tables.five_cat_table)."""
    t = table[table.label.isin(trained)]
    both = t[(t.A == "PASS") & (t.B == "PASS")]
    best = t.loc[t["gates passed"].str.split("/").str[0].astype(int).idxmax()] if len(t) else None
    text = f"Runs passing 5CAT A and B on a split: {len(both)} of {len(t)} (run × split)"
    return text + (f"; most gates passed: {best.label}, {best['gates passed']} (A–D on VAL and OOD)." if best is not None
                   else ".")


def versus(summary: pd.DataFrame, a: str, b: str, metric: str = "val_margin", label: str = "variant") -> str:
    """One configuration against another on a metric, and whether their intervals separate."""
    by = summary.set_index(label)
    if a not in by.index or b not in by.index:
        return f"{a} or {b} has no converged runs to compare."
    ia, ib = _interval(by.loc[a], metric), _interval(by.loc[b], metric)
    has_ci = not any(v is None or pd.isna(v) for v in (*ia[1:], *ib[1:]))
    side = {1: "above", -1: "below", 0: "not separable from"}[separated(ia, ib)] if has_ci else \
        "(no interval with one seed) vs"
    return (f"{a}: {metric.replace('_', ' ')} {ci_text(*_interval(by.loc[a], metric))}, {side} "
            f"{b}'s {ci_text(*_interval(by.loc[b], metric))}.")


def directional(rows, summary, table, trained_labels) -> list[str]:
    """Notebook 03's TL;DR."""
    return [convergence(rows), margins(summary), gates(table, trained_labels), versus(summary, "P3 guard", "P1 MSE"),
            versus(summary, "P2 residual", "P1 MSE")]


def dataset(card: dict) -> list[str]:
    """Notebook 00's TL;DR, from lvmlib.data.dataset_card."""
    split = card["per_split"]
    adj, rnd = card["cosine_adjacent"]["mean"], card["cosine_random"]["mean"]
    out = [f"The bank holds {card['concepts']:,} concepts of {card['articles']:,} articles, encoded with "
           f"{card['encoder']} (D={card['dim']}); train / VAL / OOD: "
           + " / ".join(f"{split[s]['articles']:,} articles, {split[s]['sequences']:,} windows" for s in ("train", "val", "ood"))
           + ".",
           f"Consecutive concepts of one article have mean cosine {adj:.3f}, random pairs of different articles "
           f"{rnd:.3f}: a gap of {adj - rnd:.3f} that any next-concept model can exploit.",
           f"Concepts average {card['words_per_concept']['mean']:.1f} words (median "
           f"{card['words_per_concept']['median']:.0f}); articles average {card['concepts_per_article']['mean']:.1f} "
           "concepts."]
    if card.get("corpus_truncated"):
        out.append(f"The corpus was truncated ({card['corpus_truncated']}): the bank uses the articles read before the fault.")
    return out


# ---------------------------------------------------------------------------------------------
# Notebook 04 (beyond copy-last): objectives on one backbone against a predictability ceiling.

def _ci3(row, metric: str) -> tuple:
    return row[metric], row.get(f"{metric}_low"), row.get(f"{metric}_high")


def _best_on(summary: pd.DataFrame, metric: str, label: str) -> str:
    best = summary.loc[summary[metric].idxmax()]
    return f"{best[label]} {ci_text(*_ci3(best, metric))}"


def best_forward(summary: pd.DataFrame, floor: float | None = None, metric: str = "val_margin"):
    """The configuration with the largest `metric` among those whose VAL cosine is above `floor` (a
    constant predictor's, e.g. the global mean's): a margin won by pointing away from every concept
    is no forward prediction. None if there is none."""
    ok = summary if floor is None or "val_cos" not in summary else summary[summary.val_cos > floor]
    return None if ok.empty else ok.loc[ok[metric].idxmax()]


def objectives(summary: pd.DataFrame, ceiling: dict, oracle: dict, gate_table: pd.DataFrame,
               reference: str = "P1 MSE", label: str = "config", previous: dict | None = None,
               floor: float | None = None, copy_r1: float | None = None, rows: pd.DataFrame | None = None) -> list[str]:
    """Notebook 04's TL;DR: the best converged configuration on margin, in-article R@1 and CA (95 %
    intervals over seeds), whether any run passes 5CAT A or B, and how far the best stands from the
    predictability ceiling and from the oracle.

    summary: tables.seed_summary of the CONVERGED runs by `label`, with val_cos, val_margin, val_r1
      (5CAT B), val_r1_excl (context left out), ca (paper) and ca_meta (Meta's code), each with _low/_high.
    ceiling: the best-of-k ceiling on the same VAL rows: {"k", "train_concepts", "margin", "r1", "r1_excl"}.
    oracle: runs.oracle_row (val_margin).
    gate_table: tables.five_cat_table rows of the converged runs (label, split, A, B).
    reference: the configuration the best margin is compared with (P1).
    previous: optionally {"source", "passing_A_and_B", "runs", "best_margin"} of an earlier report.
    floor: the VAL cosine of a constant predictor (the global mean): the margin is ranked only among
      configurations above it (best_forward); a larger margin below it is named as such.
    copy_r1: copy-last's in-article R@1 with the context left out (ceiling.copy_problem), if given.
    rows: the per-run rows; if given, the first sentence says how many runs converged."""
    if summary.empty:
        return ["No configuration converged, so no objective is compared (every run stopped at the epoch cap)."]
    out = [convergence(rows)] if rows is not None else []
    best = best_forward(summary, floor)
    top = summary.loc[summary.val_margin.idxmax()]
    by = summary.set_index(label)
    if best is None:
        first = (f"No configuration predicts better than a constant (VAL cosine above {floor:.3f}); the largest VAL "
                 f"margin is {top[label]}'s {ci_text(*_ci3(top, 'val_margin'))}")
    else:
        first = (f"Largest VAL margin{f' among configurations above a constant predictor (VAL cosine > {floor:.3f})' if floor is not None else ''}: "
                 f"{best[label]}, {ci_text(*_ci3(best, 'val_margin'))} over {int(best['seeds'])} seed(s)")
        if "val_cos" in summary:
            first += f" at VAL cosine {ci_text(*_ci3(best, 'val_cos'))}"
        if reference in by.index and reference != best[label]:
            side = {1: "above", -1: "below", 0: "not separable from"}[
                separated(_ci3(best, "val_margin"), _ci3(by.loc[reference], "val_margin"))]
            first += f", {side} {reference}'s {ci_text(*_ci3(by.loc[reference], 'val_margin'))}"
        if top[label] != best[label]:
            first += (f"; {top[label]} has a larger one, {ci_text(*_ci3(top, 'val_margin'))}, but at VAL cosine "
                      f"{ci_text(*_ci3(top, 'val_cos'))}, no better than a constant's: it moved away from the context, "
                      "not towards the next concept")
    out.append(first + ".")
    out.append(f"Best in-article R@1 (5CAT B): {_best_on(summary, 'val_r1', label)}; with the 5 context concepts "
               f"left out of the candidates: {_best_on(summary, 'val_r1_excl', label)}. Best CA: "
               f"{_best_on(summary, 'ca', label)} (paper's definition), {_best_on(summary, 'ca_meta', label)} "
               "(Meta's code: other documents' targets only).")
    out.append(_gate_counts(gate_table, previous))
    ref = best if best is not None else top
    best_r1x = summary.loc[summary.val_r1_excl.idxmax()]
    text = (f"Against the predictability ceiling (the best of the true next concepts of the {ceiling['k']} nearest "
            f"training contexts, {int(ceiling['train_concepts']):,} training concepts, oracle-selected): margin "
            f"{ceiling['margin']:+.3f} vs {ref[label]}'s {ref.val_margin:+.3f} ({ceiling['margin'] - ref.val_margin:+.3f} "
            f"to go), R@1 with the context left out {ceiling['r1_excl']:.3f} vs the best model's "
            f"{best_r1x.val_r1_excl:.3f}")
    if copy_r1 is not None:
        text += f" (copy-last, the concept nearest the last context concept, scores {copy_r1:.3f} there)"
    out.append(text + f"; the gates ask +0.12 and 0.60, the perfect predictor ŷ = y scores margin "
                      f"{oracle['val_margin']:+.3f}.")
    return out


def _gate_counts(t: pd.DataFrame, previous: dict | None = None) -> str:
    """How many converged run × split results pass 5CAT A and B, beside an earlier report's count."""
    a_pass, b_pass = t[t.A == "PASS"], t[t.B == "PASS"]
    text = (f"5CAT: {len(a_pass)} of {len(t)} converged run × split results pass A (margin and c₀) and "
            f"{len(b_pass)} pass B (R@1, R@5, MRR)")
    passing = sorted(set(a_pass.label) | set(b_pass.label))
    text += f" ({', '.join(passing)})" if passing else ""
    if previous:
        text += (f"; the earlier report ({previous['source']}) had {previous['passing_A_and_B']} of "
                 f"{previous['runs']} runs passing A and B, its best trained margin {previous['best_margin']:+.3f}")
    return text + "."
