"""What a report concludes, as tested functions of its results (never an f-string decided in a notebook cell):
one sentence per finding with its number and 95 % CI, from converged runs only (`converged_only`), and "A beats
B" only where their PAIRED difference on the same rows says so (`paired`: a CI over articles and seeds, Holm-adjusted
over the comparisons the finding makes, which it counts). The runner shows `banner` and the TL;DR on top."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import seeds as seed_reports
from ..evaluation import INTERVAL, compare, holm, sign
from .tables import fmt_ci

SIDE = {1: "above", -1: "below", 0: "not separable from"}   # sign(a − b) in words: a is ... b


def _ci(row, metric: str = "val_cos") -> str:
    return fmt_ci(row[metric], row.get(f"{metric}_low"), row.get(f"{metric}_high"))


def paired(values: dict, a: list, b: list, metric: str = "val_cos", seed: int = 0) -> dict:
    """a − b on `metric`, paired on the same rows (a, b: run labels, a configuration's seeds or one baseline, in
    `values`: runs.Results.values), with its 95 % CI over articles and seeds and its p (evaluation.compare)."""
    return compare([values[label][metric] for label in a], [values[label][metric] for label in b], seed=seed)


def _d(diff: dict) -> str:
    return f"{diff['mean']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]"


def leader(summary: pd.DataFrame, values: dict, metric: str = "val_cos", label: str = "config") -> tuple:
    """(the configuration with the largest mean `metric`, the others it does not beat — their paired difference
    from it, Holm-adjusted over every such comparison, holds 0 — and the number of comparisons; None instead of
    the list when a run has no per-row values of `metric`)."""
    order = summary.sort_values(metric, ascending=False)
    best, rest = order.iloc[0], order.iloc[1:]
    if any(metric not in values.get(run, {}) for labels in order["labels"] for run in labels):
        return best, None, 0
    diffs = holm({r[label]: paired(values, best["labels"], r["labels"], metric) for _, r in rest.iterrows()})
    return best, [k for k, d in diffs.items() if sign(d) != 1], len(diffs)


def _leader_text(summary: pd.DataFrame, values: dict, metric: str, label: str) -> str:
    """"X 0.556 [0.550, 0.562]", and which configurations it is tied with (leader)."""
    best, tied, n = leader(summary, values, metric, label)
    text = f"{best[label]} {_ci(best, metric)}"
    if tied is None:
        return text + " (not tested against the others: no per-row values)"
    if not n:
        return text
    if tied:
        return text + f" (tied with {', '.join(tied)}: paired, {n} comparison(s), Holm-adjusted)"
    return text + f" (ahead of the {n} other(s): paired, Holm-adjusted)"


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
    out["selection"] = ("VAL (learning rate, early stopping, best checkpoint, every \"best\"); OOD, the last block of "
                        "articles, is read by no selection: see the TL;DR's held-out line")
    out["intervals"] = INTERVAL
    return {**out, **extra}


def best_vs_baselines(summary: pd.DataFrame, baselines: pd.DataFrame, values: dict, metric: str = "val_cos",
                      label: str = "config") -> str:
    """The best converged configuration on `metric` (and whom it is tied with), and its paired difference from the
    strongest baseline (runs.baseline_rows) on the same rows."""
    if summary.empty:
        return "No configuration converged, so none is compared with the baselines."
    best = summary.loc[summary[metric].idxmax()]
    strongest = baselines.loc[baselines[metric].idxmax()]
    diff = paired(values, best["labels"], [strongest["label"]], metric)
    return (f"Best converged configuration by VAL cosine: {_leader_text(summary, values, metric, label)} over "
            f"{int(best['seeds'])} seed(s); its paired difference from the strongest baseline, {strongest['label']} "
            f"{_ci(strongest, metric)}, is {_d(diff)}: {SIDE[sign(diff)]} it.")


def held_out(summary: pd.DataFrame, values: dict, baseline: str = "residual ridge", label: str = "config",
             metric: str = "val_cos") -> str:
    """The configuration VAL selects (largest mean `metric`) scored on OOD, which no selection has read: its OOD
    cosine and its paired OOD difference from `baseline` (the clean test of the headline)."""
    if summary.empty:
        return "No converged configuration to test on OOD."
    best = summary.loc[summary[metric].idxmax()]
    diff = paired(values, best["labels"], [baseline], "ood_cos")
    return (f"Held out (OOD, read by no selection — the LR, early stopping, checkpoints and this choice read VAL): "
            f"{best[label]} scores OOD cosine {_ci(best, 'ood_cos')}; its paired difference from {baseline} there is "
            f"{_d(diff)}: {SIDE[sign(diff)]} it.")


def gain_over(name: str, gains: dict) -> str:
    """Which configurations beat the baseline `name`; gains: {config: paired difference (paired)}, Holm-adjusted
    together."""
    if not gains:
        return f"No converged configuration to compare with {name}."
    gains = holm(gains)
    above = [k for k, v in gains.items() if sign(v) == 1]
    best = max(gains, key=lambda k: gains[k]["mean"])
    return (f"{len(above)} of {len(gains)} converged configurations beat {name} (paired on the same VAL rows, CI over "
            f"articles and seeds, Holm-adjusted over the {len(gains)} comparisons)"
            + (f": {', '.join(above)}" if above else "") + f"; the largest gain is {best}'s {_d(gains[best])}.")


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


def loss_effect(summary: pd.DataFrame, values: dict, a: str = "MSE", b: str = "InfoNCE",
                metric: str = "val_cos") -> str:
    """Per architecture, loss a − loss b paired on the same rows, Holm-adjusted over the architectures."""
    diffs = {}
    for model, group in summary.groupby("model", sort=False):
        by_loss = group.set_index("loss")
        if a in by_loss.index and b in by_loss.index:
            diffs[model] = paired(values, by_loss.loc[a, "labels"], by_loss.loc[b, "labels"], metric)
    if not diffs:
        return f"No architecture has converged runs with both {a} and {b}."
    diffs = holm(diffs)
    names = {side: ", ".join(f"{m} {_d(d)}" for m, d in diffs.items() if sign(d) == side) or "none"
             for side in (1, -1, 0)}
    n = {side: sum(sign(d) == side for d in diffs.values()) for side in (1, -1, 0)}
    return (f"{a} − {b}, paired on the same VAL rows (Holm-adjusted over {len(diffs)} architectures): above zero for "
            f"{n[1]} ({names[1]}), below for {n[-1]} ({names[-1]}), not separable for {n[0]} ({names[0]}); "
            "theirs (seed 003): Transformer 0.5817 with MSE vs 0.3539 with InfoNCE "
            f"(caution: {seed_reports.caution('seed003_losses')}).")


def copies(copy_rates: dict) -> str:
    """How often each predictor's nearest bank concept was one of its own context concepts."""
    return ("Decoded VAL examples — share whose nearest bank concept is a copy of a context concept: "
            + ", ".join(f"{name} {rate:.0%}" for name, rate in copy_rates.items()) + ".")


def loss_comparison(rows: pd.DataFrame, summary: pd.DataFrame, baselines: pd.DataFrame, gains: dict, values: dict,
                    copy_rates: dict | None = None, sweep: str | None = None,
                    plain: pd.DataFrame | None = None) -> list[str]:
    """Notebook 01's TL;DR; plain: the plain-head runs beside their start-at-average runs (plain_head_cost)."""
    out = [convergence(rows)] + ([sweep] if sweep else []) + [
        best_vs_baselines(summary, baselines, values), held_out(summary, values),
        gain_over("ridge on the position-weighted average's residual", gains),
        below_average(rows, baselines), loss_effect(summary, values)]
    out += [plain_head_cost(plain)] if plain is not None else []
    return out + ([copies(copy_rates)] if copy_rates else [])


def more_data(curve: pd.DataFrame, values: dict, x: str = "train_sequences", metric: str = "val_cos") -> str:
    """Per model (curve: seed_summary by model, x), whether the largest size still rises, levels off or falls: its
    paired difference from the size before on the same VAL rows, Holm-adjusted over the models."""
    diffs, sizes = {}, {}
    for model, group in curve.groupby("model", sort=False):
        if len(group) > 1:
            prev, last = (row for _, row in group.sort_values(x).iloc[-2:].iterrows())
            diffs[model], sizes[model] = paired(values, last["labels"], prev["labels"], metric), (prev, last)
    if not diffs:
        return "No model was trained at two or more sizes."
    diffs, words = holm(diffs), {1: "still rising", 0: "levelled off", -1: "falling"}
    parts = {side: [f"{m} ({int(sizes[m][0][x]):,} → {int(sizes[m][1][x]):,} windows: {sizes[m][0][metric]:.3f} → "
                    f"{sizes[m][1][metric]:.3f}, paired {_d(d)})" for m, d in diffs.items() if sign(d) == side]
             for side in (1, 0, -1)}
    return (f"At the largest training size ({len(diffs)} paired comparisons, Holm-adjusted), VAL cosine is "
            + "; ".join(f"{words[k]} for {', '.join(v)}" for k, v in parts.items() if v) + ".")


def equal_steps(converged: pd.DataFrame, fixed: pd.DataFrame, values: dict, x: str = "train_sequences",
                metric: str = "val_cos") -> str:
    """The data-size effect with and without the step confound: smallest → largest size, per model, trained to
    convergence vs for an equal number of optimizer steps (scored at that budget), over the sizes both arms
    trained, each a paired difference on the same VAL rows."""
    parts = []
    for model, group in fixed.groupby("model", sort=False):
        conv = converged[converged.model == model]
        common = set(group[x]) & set(conv[x])       # the sizes both arms trained
        if len(common) > 1:
            g, c = (df[df[x].isin(common)].sort_values(x) for df in (group, conv))
            dg, dc = (paired(values, df["labels"].iloc[-1], df["labels"].iloc[0], metric) for df in (g, c))
            parts.append(f"{model} {_d(dg)} at {int(g.optimizer_steps.iloc[0]):,} steps each vs {_d(dc)} when "
                         "trained to convergence")
    if not parts:
        return "No equal-steps comparison was run."
    return ("From the smallest to the largest training set, VAL cosine changes by " + "; ".join(parts)
            + " (paired on the same VAL rows; equal steps remove the confound that more data also meant more "
            "optimizer steps).")


def collapse(rows: pd.DataFrame, values: dict) -> str:
    """Whether any converged run is no better than the global mean (a constant vector): its paired difference from
    it on the same rows does not exclude 0, Holm-adjusted over the runs."""
    ok, _ = converged_only(rows)
    if ok.empty:
        return "No converged run to check for a collapse."
    diffs = holm({label: paired(values, [label], ["global mean"]) for label in ok.label})
    collapsed = [k for k, d in diffs.items() if sign(d) != 1]
    worst = min(diffs, key=lambda k: diffs[k]["mean"])
    return (f"{len(collapsed)} of {len(ok)} converged runs are not above the global mean (paired, Holm-adjusted)"
            + (f": {', '.join(collapsed)}" if collapsed else "")
            + f"; the closest to it is {worst}, paired difference {_d(diffs[worst])}.")


def scaling(rows, curve, fixed, gains, values) -> list[str]:
    """Notebook 02's TL;DR (held out: the best model at the largest size)."""
    largest = curve[curve.train_sequences == curve.train_sequences.max()] if len(curve) else curve
    return [convergence(rows), more_data(curve, values), equal_steps(curve, fixed, values),
            gain_over("ridge on the position-weighted average's residual (at the largest size)", gains),
            held_out(largest, values, label="model"), collapse(rows, values)]


def margins(summary: pd.DataFrame, values: dict, label: str = "variant", floor: float | None = None) -> str:
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
    return text + (f". Largest among those at or above the linear average: "
                   f"{_leader_text(learned, values, 'val_margin', label)}, at VAL cosine {_ci(best)}.")


def gates(table: pd.DataFrame, trained: list[str]) -> str:
    """How many trained configurations pass 5CAT A and B on a split (table: tables.five_cat_table)."""
    t = table[table.label.isin(trained)]
    both = ((t.A == "PASS") & (t.B == "PASS")).sum()
    text = f"Runs passing 5CAT A and B on a split: {both} of {len(t)} (run × split)"
    if t.empty:
        return text + "."
    best = t.loc[t["gates passed"].str.split("/").str[0].astype(int).idxmax()]
    return text + f"; most gates passed: {best.label}, {best['gates passed']} (A–D on VAL and OOD)."


def versus(summary: pd.DataFrame, values: dict, a: str, b: str, metric: str = "val_margin",
           label: str = "variant") -> str:
    """One configuration against another on a metric: their paired difference on the same rows."""
    by = summary.set_index(label)
    if a not in by.index or b not in by.index:
        return f"{a} or {b} has no converged runs to compare."
    diff = paired(values, by.loc[a, "labels"], by.loc[b, "labels"], metric)
    text = (f"{a}: {metric.replace('_', ' ')} {_ci(by.loc[a], metric)}, {SIDE[sign(diff)]} {b}'s "
            f"{_ci(by.loc[b], metric)} (paired difference {_d(diff)})")
    if metric != "val_cos" and "val_cos" in by:     # margins are read beside how well each predicts
        text += f" (VAL cosine {by.loc[a].val_cos:.3f} vs {by.loc[b].val_cos:.3f})"
    return text + "."


def directional(rows, summary, table, trained_labels, values: dict, floor: float | None = None) -> list[str]:
    """Notebook 03's TL;DR; floor: the linear average's VAL cosine (margins of runs below it are not wins). The two
    `versus` comparisons with P1 are one family: Holm over 2 is at most a factor 2 on p, stated with them."""
    return [convergence(rows), margins(summary, values, floor=floor), gates(table, trained_labels),
            versus(summary, values, "P3 guard", "P1 MSE"), versus(summary, values, "P2 residual", "P1 MSE"),
            held_out(summary, values, label="variant")]


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


def _margin_line(summary: pd.DataFrame, values: dict, reference: str, label: str, floor: float | None):
    """04's first finding: the largest VAL margin among configurations above `floor`, whom it is tied with, and its
    paired difference from `reference`; (that line, the row it names)."""
    best, top = best_forward(summary, floor), summary.loc[summary.val_margin.idxmax()]
    by = summary.set_index(label)
    if best is None:
        return (f"No configuration predicts better than the linear average (VAL cosine above {floor:.3f}); the "
                f"largest VAL margin is {top[label]}'s {_ci(top, 'val_margin')}."), top
    learned = summary if floor is None else summary[summary.val_cos > floor]
    among = "" if floor is None else f" among configurations above the linear average (VAL cosine > {floor:.3f})"
    text = (f"Largest VAL margin{among}: {_leader_text(learned, values, 'val_margin', label)} over "
            f"{int(best['seeds'])} seed(s), at VAL cosine {_ci(best)}")
    if reference in by.index and reference != best[label]:
        diff = paired(values, best["labels"], by.loc[reference, "labels"], "val_margin")
        text += f"; {SIDE[sign(diff)]} {reference}'s {_ci(by.loc[reference], 'val_margin')} (paired {_d(diff)})"
    if top[label] != best[label]:
        text += (f"; {top[label]} has a larger one, {_ci(top, 'val_margin')}, but at VAL cosine {_ci(top)}, below "
                 "the linear average's: it moved away from the context, not towards the next concept")
    return text + ".", best


def objectives(summary: pd.DataFrame, values: dict, ceiling: dict, oracle: dict, gate_table: pd.DataFrame,
               reference: str = "P1 MSE", label: str = "config", previous: dict | None = None,
               floor: float | None = None, copy_r1: float | None = None, rows: pd.DataFrame | None = None) -> list[str]:
    """Notebook 04's TL;DR: the best converged configuration (summary: tables.seed_summary of the converged runs
    by `label`) on margin (_margin_line), R@1 and CA, each with the configurations it is tied with; how many
    gate_table results pass 5CAT A or B (beside a `previous` report's count); the gap to the best-of-k
    `ceiling` ({k, train_concepts, margin, r1_excl}; copy_r1: copy-last's R@1 there) and to the `oracle`."""
    if summary.empty:
        return ["No configuration converged, so no objective is compared (every run stopped at the epoch cap)."]
    out = [convergence(rows)] if rows is not None else []
    first, ref = _margin_line(summary, values, reference, label, floor)
    on = {m: _leader_text(summary, values, m, label) for m in ("val_r1", "val_r1_excl", "ca", "ca_meta")}
    out += [first, f"Best in-article R@1 (5CAT B): {on['val_r1']}; with the 5 context concepts left out of the "
                   f"candidates: {on['val_r1_excl']}. Best CA: {on['ca']} (paper's definition), {on['ca_meta']} "
                   "(Meta's code: other documents' targets only)."]
    a_pass, b_pass = gate_table[gate_table.A == "PASS"], gate_table[gate_table.B == "PASS"]
    passing = ", ".join(sorted(set(a_pass.label) | set(b_pass.label)))
    gate_text = (f"5CAT: {len(a_pass)} of {len(gate_table)} converged run × split results pass A (margin and c₀) "
                 f"and {len(b_pass)} pass B (R@1, R@5, MRR)" + (f" ({passing})" if passing else ""))
    if previous:
        gate_text += (f"; the earlier report ({previous['source']}) had {previous['passing_A_and_B']} of "
                      f"{previous['runs']} runs passing A and B, its best trained margin "
                      f"{previous['best_margin']:+.3f}")
    out.append(gate_text + ".")
    text = (f"Against the predictability ceiling (the best of the true next concepts of the {ceiling['k']} nearest "
            f"training contexts, {int(ceiling['train_concepts']):,} training concepts, oracle-selected): margin "
            f"{ceiling['margin']:+.3f} vs {ref[label]}'s {ref.val_margin:+.3f} "
            f"({ceiling['margin'] - ref.val_margin:+.3f} to go), R@1 with the context left out "
            f"{ceiling['r1_excl']:.3f} vs the best model's {summary.val_r1_excl.max():.3f}")
    if copy_r1 is not None:
        text += f" (copy-last, the concept nearest the last context concept, scores {copy_r1:.3f} there)"
    return out + [text + f"; the gates ask +0.12 and 0.60, the perfect predictor ŷ = y scores margin "
                         f"{oracle['val_margin']:+.3f}."]


def pareto(points: pd.DataFrame, x: str = "val_cos", y: str = "val_margin") -> list[str]:
    """Labels of the points no other point dominates (as high on x and y, higher on one), in order of x."""
    p = points.dropna(subset=[x, y])
    xs, ys = p[x].to_numpy(float), p[y].to_numpy(float)
    dominated = [((xs >= a) & (ys >= b) & ((xs > a) | (ys > b))).any() for a, b in zip(xs, ys)]
    return list(p[~np.array(dominated, dtype=bool)].sort_values(x).label) if len(p) else []


def frontier(points: pd.DataFrame, theirs: pd.DataFrame | None = None, x: str = "val_cos",
             y: str = "val_margin", theirs_label: str = "model") -> str:
    """04's frontier: which predictors (points: label, kind, x, y; none that uses the answer) are on the (x, y)
    Pareto front, and whether theirs (same columns, quoted) would lie beyond ours. Point estimates: the front is
    where each predictor's estimate sits, and a CI can reach past a neighbour's."""
    front, by = pareto(points, x, y), points.set_index("label")
    text = (f"On the ({x.replace('_', ' ')}, {y.replace('_', ' ')}) front, of {len(points)} predictors that do not use "
            "the answer: " + "; ".join(f"{k} [{by.loc[k, 'kind']}] ({by.loc[k, x]:.3f}, {by.loc[k, y]:+.3f})"
                                       for k in front) + " (point estimates)")
    if theirs is not None and len(theirs.dropna(subset=[x, y])):
        quoted = theirs.dropna(subset=[x, y])
        inside = [((points[x] >= r[x]) & (points[y] >= r[y])).any() for _, r in quoted.iterrows()]
        text += (f"; theirs (seed 004, their split and encoder; caution: {seed_reports.caution('seed004_models')}): "
                 + ", ".join(f"{r[theirs_label]} ({r[x]:.3f}, {r[y]:+.3f}) {'inside' if i else 'beyond'} our front"
                             for (_, r), i in zip(quoted.iterrows(), inside)))
    return text + "."


def sampler_estimate(repeats: dict, threshold: float = 0.9, min_rows: int = 50) -> str:
    """Whether the data allow an estimate of what a sampler of the true next concept would score on 5CAT A and B
    (repeats: ceiling.near_repeats): only rows whose context nearly repeats a training context can give one."""
    n = repeats["counts"].get(f"{threshold:g}", 0)
    text = (f"A sampler of the true next-concept distribution: {n} of {repeats['rows']:,} VAL rows have a training "
            f"context with cosine >= {threshold:g} (closest {repeats['max']:.2f}, median {repeats['median']:.2f})")
    if n < min_rows:
        return (text + f"; under {min_rows} such rows this corpus cannot estimate what a sampler would score, so the "
                "oracle-selected line is read as an upper line of one method, not as a bound on the gates.")
    return text + ": enough near-repeats to estimate it on those rows (see the table)."
