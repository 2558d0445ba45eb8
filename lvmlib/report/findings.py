"""What a report concludes, as tested functions of its results (never an f-string decided in a notebook cell):
one sentence per finding with its number and 95 % CI, from converged runs only (`converged_only`), and "A beats
B" only where the intervals say so (`separated`, `paired_gain`). The runner shows `banner` and the TL;DR on top."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import seeds as seed_reports
from ..evaluation import bootstrap_mean
from .tables import fmt_ci

SIDE = {1: "above", -1: "below", 0: "not separable from"}   # separated(a, b) in words: a is ... b


def _interval(row, metric: str = "val_cos") -> tuple:
    return row[metric], row.get(f"{metric}_low"), row.get(f"{metric}_high")


def _ci(row, metric: str = "val_cos") -> str:
    return fmt_ci(*_interval(row, metric))


def separated(a: tuple, b: tuple) -> int:
    """+1 if interval a lies wholly above b, -1 wholly below, 0 if they overlap (or one is missing)."""
    (_, a_lo, a_hi), (_, b_lo, b_hi) = a, b
    if any(pd.isna(v) for v in (a_lo, a_hi, b_lo, b_hi)):
        return 0
    return 1 if a_lo > b_hi else (-1 if a_hi < b_lo else 0)


def paired_gain(model_cos: list, baseline_cos, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of each row's cosine, averaged over seeds, minus the baseline's; bootstrap CI over rows."""
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
    if len(ok) + len(not_ok) == 0:
        return "No trained runs."
    text = (f"{len(ok)} of {len(ok) + len(not_ok)} trained runs converged (flat: no VAL-cosine gain of min_delta "
            "over a patience counted in optimizer steps, after the LR was lowered)")
    if not len(not_ok):
        return text + "."
    return (f"{text}; {len(not_ok)} stopped at the epoch or step cap while still improving "
            f"({', '.join(dict.fromkeys(not_ok['label'].astype(str)))}) and are left out of every conclusion.")


def spec_scale(specs) -> str:
    """How far each trained architecture's options are from SPEC's (the cores' defaults), e.g. "GRU hidden 384 of
    512, blocks 2 of 4"; plus the start (average or the seeds' plain head)."""
    import inspect

    from ..models import CORES
    from ..runs import DISPLAY
    parts = {}
    for spec in specs:
        core = CORES[spec.model.name]
        defaults = {k: p.default for k, p in inspect.signature(core).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        changed = [f"{k} {v} of {defaults[k]}" for k, v in spec.model.options.items()
                   if k in defaults and k != "baseline_start" and v != defaults[k]]
        parts.setdefault(DISPLAY.get(spec.model.name, spec.model.name), ", ".join(changed) or "SPEC widths")
    return "; ".join(f"{m}: {v}" for m, v in parts.items())


def below_average(rows: pd.DataFrame, baselines: pd.DataFrame, by=("model", "loss"),
                  refs=("Linear Average", "position-weighted avg")) -> str:
    """Converged start-at-average configurations whose VAL cosine (mean over seeds) ends below a baseline they
    can represent (they start there): a finding about their training, not about the architecture."""
    ok, _ = converged_only(rows)
    if "start" in ok:
        ok = ok[ok.start == "average"]
    if ok.empty:
        return "No converged start-at-average run to check against the averages it starts from."
    levels = baselines.set_index("label").val_cos
    means = ok.groupby(list(by), sort=False).val_cos.mean()
    below = {r: [" · ".join(map(str, k)) if isinstance(k, tuple) else str(k) for k, v in means.items()
                 if v < levels[r]] for r in refs if r in levels}
    text = "; ".join(f"{len(v)} of {len(means)} below the {r.lower()} ({levels[r]:.3f})" + (f": {', '.join(v)}"
                     if v else "") for r, v in below.items())
    worse = any(below.values())
    text = ("Converged start-at-average configurations (mean VAL cosine over seeds): " + text
            + ("; each can represent both averages (it starts at the linear one, and its 5 position weights reach "
               "the other) and ends under one — their training (LR, steps, the correction's noise) costs more "
               "than it adds, so these rows say nothing yet about the architecture." if worse
               else "; none ends below an average it can represent."))
    return text + " " + kept_start(ok, by)


def kept_start(rows: pd.DataFrame, by=("model", "loss")) -> str:
    """Which configurations never beat their start on VAL: every seed's best checkpoint is step 0 (the
    position-weighted average at its initial weights, i.e. the linear average), so they learned nothing beyond it."""
    if "best_step" not in rows or rows.empty:
        return ""
    at_start = rows.assign(_start=rows.best_step.fillna(-1) == 0).groupby(list(by), sort=False)._start.all()
    names = [" · ".join(map(str, k)) if isinstance(k, tuple) else str(k) for k, v in at_start.items() if v]
    if not names:
        return "Every configuration improved on its start on VAL."
    return (f"{len(names)} of {len(at_start)} never improved on their start on VAL (every seed's best checkpoint is "
            f"step 0, the linear average): {', '.join(names)} — at this data size their training moved them away "
            "from the average (the correction overfits faster than the position weights learn).")


def plain_head_cost(rows: pd.DataFrame) -> str:
    """The seeds' plain head against start-at-average, per architecture (rows: one seed each, `start` column)."""
    if rows.empty or "start" not in rows:
        return "No plain-head run to compare with the start-at-average runs."
    parts = []
    for model, g in rows.groupby("model", sort=False):
        by = g.set_index("start")
        if {"plain", "average"} <= set(by.index):
            p, a = by.loc["plain"], by.loc["average"]
            mark = "" if bool(p.converged) else ", not converged"
            parts.append(f"{model} {p.val_cos:.3f} at {int(p.optimizer_steps):,} steps{mark} vs {a.val_cos:.3f} at "
                         f"{int(a.optimizer_steps):,}")
    if not parts:
        return "No architecture has both a plain-head and a start-at-average run."
    return ("The seeds' plain head vs start at the average (MSE, seed 0, VAL cosine): " + "; ".join(parts) + ".")


def banner(bank, rows: pd.DataFrame, seeds, **extra) -> dict:
    """The report's scale: bank, encoder, models, steps, windows, device, seeds (the runner adds commit, time)."""
    m, enc = bank.manifest, bank.manifest.get("encoder") or {}
    out = {"bank": f"{m.get('name') or (bank.path.name if bank.path else 'in memory')}: {len(bank):,} concepts, "
                   f"{int(np.unique(bank.article).size):,} articles",
           "encoder": f"{enc.get('name', '?')} {enc.get('variant', '')} (D={bank.dim})".replace("  ", " ")}
    trained = pd.concat(converged_only(rows))
    if len(trained):
        steps = trained.optimizer_steps
        out["models"] = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in trained.groupby("model")["params"].first().items())
        out["optimizer steps"] = f"{int(steps.min()):,}–{int(steps.max()):,} per run"
        out["training windows"] = ", ".join(f"{int(v):,}" for v in sorted(trained.train_sequences.unique()))
        out["device"] = ", ".join(sorted(trained.device.astype(str).unique())) if "device" in trained else "?"
        if "precision" in trained:
            out["precision"] = ", ".join(sorted(trained.precision.dropna().astype(str).unique()))
    out["seeds"] = ", ".join(map(str, seeds))
    return {**out, **extra}


def best_vs_baselines(summary: pd.DataFrame, baselines: pd.DataFrame, metric: str = "val_cos",
                      label: str = "config") -> str:
    """The best converged configuration on `metric` beside the strongest baseline (runs.baseline_rows)."""
    if summary.empty:
        return "No configuration converged, so none is compared with the baselines."
    best = summary.loc[summary[metric].idxmax()]
    strongest = baselines.loc[baselines[metric].idxmax()]
    side = SIDE[separated(_interval(best, metric), _interval(strongest, metric))]
    return (f"Best converged configuration: {best[label]}, VAL cosine {_ci(best, metric)} over {int(best['seeds'])} "
            f"seed(s) — {side} the strongest baseline, {strongest['label']} {_ci(strongest, metric)}, on the same "
            "rows.")


def gain_over(name: str, gains: dict) -> str:
    """Which configurations beat the baseline `name` with a paired CI above zero; gains: {config: (mean, low, high)}."""
    if not gains:
        return f"No converged configuration to compare with {name}."
    above = [k for k, v in gains.items() if v[1] > 0]
    best = max(gains, key=lambda k: gains[k][0])
    return (f"{len(above)} of {len(gains)} converged configurations beat {name} with a paired 95 % CI above zero"
            + (f" ({', '.join(above)})" if above else "") + f"; the largest gain is {best}'s {fmt_ci(*gains[best])}.")


def chosen_lr(sweep: pd.DataFrame) -> dict:
    """Per model with a converged sweep run, the learning rate of the best on VAL (ties: the smaller)."""
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
            verdicts[model] = separated(_interval(by_loss.loc[a], metric), _interval(by_loss.loc[b], metric))
    if not verdicts:
        return f"No architecture has converged runs with both {a} and {b}."
    n, names = {}, {}
    for side in (1, -1, 0):
        models = [m for m, v in verdicts.items() if v == side]
        n[side], names[side] = len(models), ", ".join(models) or "none"
    return (f"{a} scores above {b} with separated 95 % intervals for {n[1]} of {len(verdicts)} architectures "
            f"({names[1]}), below for {n[-1]} ({names[-1]}), not separable for {n[0]} ({names[0]}); "
            "theirs (seed 003): Transformer 0.5817 with MSE vs 0.3539 with InfoNCE "
            f"(caution: {seed_reports.caution('seed003_losses')}).")


def copies(copy_rates: dict) -> str:
    """How often each predictor's nearest bank concept was one of its own context concepts."""
    return ("Decoded VAL examples — share whose nearest bank concept is a copy of a context concept: "
            + ", ".join(f"{name} {rate:.0%}" for name, rate in copy_rates.items()) + ".")


def loss_comparison(rows: pd.DataFrame, summary: pd.DataFrame, baselines: pd.DataFrame, gains: dict,
                    copy_rates: dict | None = None, sweep: str | None = None,
                    plain: pd.DataFrame | None = None) -> list[str]:
    """Notebook 01's TL;DR; plain: the plain-head runs beside their start-at-average runs (plain_head_cost)."""
    out = [convergence(rows)] + ([sweep] if sweep else []) + [
        best_vs_baselines(summary, baselines), gain_over("ridge on the position-weighted average's residual", gains),
        below_average(rows, baselines), loss_effect(summary)]
    out += [plain_head_cost(plain)] if plain is not None else []
    return out + ([copies(copy_rates)] if copy_rates else [])


def more_data(curve: pd.DataFrame, x: str = "train_sequences", metric: str = "val_cos") -> str:
    """Per model (curve: seed_summary by model, x), whether the largest size still rises, levels off or falls."""
    verdicts = {1: [], 0: [], -1: []}
    for model, group in curve.groupby("model", sort=False):
        if len(group) > 1:
            prev, last = (row for _, row in group.sort_values(x).iloc[-2:].iterrows())
            verdicts[separated(_interval(last, metric), _interval(prev, metric))].append(
                f"{model} ({int(prev[x]):,} → {int(last[x]):,} windows: {prev[metric]:.3f} → {_ci(last, metric)})")
    if not any(verdicts.values()):
        return "No model was trained at two or more sizes."
    words = {1: "still rising", 0: "levelled off", -1: "falling"}
    return "At the largest training size, VAL cosine is " + "; ".join(
        f"{words[k]} for {', '.join(v)}" for k, v in verdicts.items() if v) + "."


def equal_steps(converged: pd.DataFrame, fixed: pd.DataFrame, x: str = "train_sequences",
                metric: str = "val_cos") -> str:
    """The data-size effect with and without the step confound: smallest → largest size, per model,
    trained to convergence vs for an equal number of optimizer steps, over the sizes both arms trained."""
    parts = []
    for model, group in fixed.groupby("model", sort=False):
        conv = converged[converged.model == model]
        common = set(group[x]) & set(conv[x])       # the sizes both arms trained
        if len(common) > 1:
            g, c = (df[df[x].isin(common)].sort_values(x) for df in (group, conv))
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
            f"({floor.val_cos:.3f}); the lowest is {worst.label} at {_ci(worst)}.")


def scaling(rows, curve, fixed, baselines, gains) -> list[str]:
    """Notebook 02's TL;DR."""
    return [convergence(rows), more_data(curve), equal_steps(curve, fixed),
            gain_over("ridge on the position-weighted average's residual (at the largest size)", gains),
            collapse(rows, baselines)]


def margins(summary: pd.DataFrame, label: str = "variant", floor: float | None = None) -> str:
    """The 5CAT A margin per configuration beside its VAL cosine; the largest among those that learned the
    average (VAL cosine >= `floor`, the linear average's): a model nearer the global mean is farther from ctx[-1],
    so under-training alone raises the margin and is never read as a win."""
    if summary.empty:
        return "No converged configuration to read a margin from."
    learned = summary if floor is None else summary[summary.val_cos >= floor]
    positive = (summary.val_margin_low > 0).sum() if "val_margin_low" in summary else 0
    text = ("VAL margin (c₀ − max other offset; > 0 means nearer the true next concept than any neighbour) at VAL "
            "cosine: " + ", ".join(f"{r[label]} {_ci(r, 'val_margin')} at {r.val_cos:.3f}" for _, r in summary.iterrows())
            + f"; {positive} with the whole interval above zero")
    if floor is not None and len(learned) < len(summary):
        text += (f". Below the linear average's VAL cosine ({floor:.3f}), so not compared on margin: "
                 + ", ".join(summary[summary.val_cos < floor][label].astype(str)))
    if learned.empty:
        return text + "; no configuration learned the average, so no margin is read as a win."
    best = learned.loc[learned.val_margin.idxmax()]
    return text + (f". Largest among those at or above the linear average: {best[label]}, "
                   f"{_ci(best, 'val_margin')} at VAL cosine {_ci(best)}.")


def gates(table: pd.DataFrame, trained: list[str]) -> str:
    """How many trained configurations pass 5CAT A and B on a split (table: tables.five_cat_table)."""
    t = table[table.label.isin(trained)]
    both = ((t.A == "PASS") & (t.B == "PASS")).sum()
    text = f"Runs passing 5CAT A and B on a split: {both} of {len(t)} (run × split)"
    if t.empty:
        return text + "."
    best = t.loc[t["gates passed"].str.split("/").str[0].astype(int).idxmax()]
    return text + f"; most gates passed: {best.label}, {best['gates passed']} (A–D on VAL and OOD)."


def versus(summary: pd.DataFrame, a: str, b: str, metric: str = "val_margin", label: str = "variant") -> str:
    """One configuration against another on a metric, and whether their intervals separate."""
    by = summary.set_index(label)
    if a not in by.index or b not in by.index:
        return f"{a} or {b} has no converged runs to compare."
    ia, ib = _interval(by.loc[a], metric), _interval(by.loc[b], metric)
    side = "(no interval with one seed) vs" if any(pd.isna(v) for v in (*ia[1:], *ib[1:])) else SIDE[separated(ia, ib)]
    text = f"{a}: {metric.replace('_', ' ')} {fmt_ci(*ia)}, {side} {b}'s {fmt_ci(*ib)}"
    if metric != "val_cos" and "val_cos" in by:     # margins are read beside how well each predicts
        text += f" (VAL cosine {by.loc[a].val_cos:.3f} vs {by.loc[b].val_cos:.3f})"
    return text + "."


def directional(rows, summary, table, trained_labels, floor: float | None = None) -> list[str]:
    """Notebook 03's TL;DR; floor: the linear average's VAL cosine (margins of runs below it are not wins)."""
    return [convergence(rows), margins(summary, floor=floor), gates(table, trained_labels),
            versus(summary, "P3 guard", "P1 MSE"), versus(summary, "P2 residual", "P1 MSE")]


def dataset(card: dict) -> list[str]:
    """Notebook 00's TL;DR, from lvmlib.data.dataset_card."""
    split, words = card["per_split"], card["words_per_concept"]
    adj, rnd = card["cosine_adjacent"]["mean"], card["cosine_random"]["mean"]
    out = [f"The bank holds {card['concepts']:,} concepts of {card['articles']:,} articles, encoded with "
           f"{card['encoder']} (D={card['dim']}); train / VAL / OOD: " + " / ".join(
               f"{split[s]['articles']:,} articles, {split[s]['sequences']:,} windows" for s in ("train", "val", "ood"))
           + ".",
           f"Consecutive concepts of one article have mean cosine {adj:.3f}, random pairs of different articles "
           f"{rnd:.3f}: a gap of {adj - rnd:.3f} that any next-concept model can exploit.",
           f"Concepts average {words['mean']:.1f} words (median {words['median']:.0f}); articles average "
           f"{card['concepts_per_article']['mean']:.1f} concepts."]
    if card.get("corpus_truncated"):
        out.append(f"The corpus was truncated ({card['corpus_truncated']}): the bank uses the articles read before "
                   "the fault.")
    return out


# Notebook 04 (beyond copy-last): objectives on one backbone against a predictability ceiling.

def best_forward(summary: pd.DataFrame, floor: float | None = None, metric: str = "val_margin"):
    """The largest `metric` among configurations whose VAL cosine is above `floor` (the linear average's), else
    None: a margin won by pointing away from every concept, or by not having learned the average, is no forward
    prediction."""
    ok = summary if floor is None or "val_cos" not in summary else summary[summary.val_cos > floor]
    return None if ok.empty else ok.loc[ok[metric].idxmax()]


def objectives(summary: pd.DataFrame, ceiling: dict, oracle: dict, gate_table: pd.DataFrame,
               reference: str = "P1 MSE", label: str = "config", previous: dict | None = None,
               floor: float | None = None, copy_r1: float | None = None, rows: pd.DataFrame | None = None) -> list[str]:
    """Notebook 04's TL;DR: the best converged configuration (summary: tables.seed_summary of the converged runs
    by `label`) on margin (ranked by best_forward above `floor`, beside `reference`), R@1 and CA; how many
    gate_table results pass 5CAT A or B (beside a `previous` report's count); the gap to the best-of-k
    `ceiling` ({k, train_concepts, margin, r1_excl}; copy_r1: copy-last's R@1 there) and to the `oracle`."""
    if summary.empty:
        return ["No configuration converged, so no objective is compared (every run stopped at the epoch cap)."]
    out = [convergence(rows)] if rows is not None else []
    best, top = best_forward(summary, floor), summary.loc[summary.val_margin.idxmax()]
    by = summary.set_index(label)
    if best is None:
        first = (f"No configuration predicts better than the linear average (VAL cosine above {floor:.3f}); the "
                 f"largest VAL margin is {top[label]}'s {_ci(top, 'val_margin')}")
    else:
        among = "" if floor is None else f" among configurations above the linear average (VAL cosine > {floor:.3f})"
        first = (f"Largest VAL margin{among}: {best[label]}, {_ci(best, 'val_margin')} over {int(best['seeds'])} "
                 "seed(s)")
        if "val_cos" in summary:
            first += f" at VAL cosine {_ci(best)}"
        if reference in by.index and reference != best[label]:
            ref = _interval(by.loc[reference], "val_margin")
            first += f", {SIDE[separated(_interval(best, 'val_margin'), ref)]} {reference}'s {fmt_ci(*ref)}"
        if top[label] != best[label]:
            first += (f"; {top[label]} has a larger one, {_ci(top, 'val_margin')}, but at VAL cosine {_ci(top)}, below "
                      "the linear average's: it moved away from the context, not towards the next concept")
    out.append(first + ".")
    tops = {m: summary.loc[summary[m].idxmax()] for m in ("val_r1", "val_r1_excl", "ca", "ca_meta")}
    on = {m: f"{r[label]} {_ci(r, m)}" for m, r in tops.items()}
    out.append(f"Best in-article R@1 (5CAT B): {on['val_r1']}; with the 5 context concepts left out of the "
               f"candidates: {on['val_r1_excl']}. Best CA: {on['ca']} (paper's definition), {on['ca_meta']} (Meta's "
               "code: other documents' targets only).")
    a_pass, b_pass = gate_table[gate_table.A == "PASS"], gate_table[gate_table.B == "PASS"]
    passing = ", ".join(sorted(set(a_pass.label) | set(b_pass.label)))
    gate_text = (f"5CAT: {len(a_pass)} of {len(gate_table)} converged run × split results pass A (margin and c₀) "
                 f"and {len(b_pass)} pass B (R@1, R@5, MRR)" + (f" ({passing})" if passing else ""))
    if previous:
        gate_text += (f"; the earlier report ({previous['source']}) had {previous['passing_A_and_B']} of "
                      f"{previous['runs']} runs passing A and B, its best trained margin "
                      f"{previous['best_margin']:+.3f}")
    out.append(gate_text + ".")
    ref = best if best is not None else top
    text = (f"Against the predictability ceiling (the best of the true next concepts of the {ceiling['k']} nearest "
            f"training contexts, {int(ceiling['train_concepts']):,} training concepts, oracle-selected): margin "
            f"{ceiling['margin']:+.3f} vs {ref[label]}'s {ref.val_margin:+.3f} "
            f"({ceiling['margin'] - ref.val_margin:+.3f} to go), R@1 with the context left out "
            f"{ceiling['r1_excl']:.3f} vs the best model's {tops['val_r1_excl'].val_r1_excl:.3f}")
    if copy_r1 is not None:
        text += f" (copy-last, the concept nearest the last context concept, scores {copy_r1:.3f} there)"
    return out + [text + f"; the gates ask +0.12 and 0.60, the perfect predictor ŷ = y scores margin "
                         f"{oracle['val_margin']:+.3f}."]
