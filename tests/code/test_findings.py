"""Report conclusions are functions of the results: each finding is checked on results whose
right answer is known."""
import numpy as np
import pandas as pd
import pytest

from lvmlib.data import synthetic_bank
from lvmlib.evaluation import copy_last, linear_average
from lvmlib.report import examples, findings, tables
from tests.values import per_row_values


def summary_frame(rows, values):
    return tables.seed_summary(pd.DataFrame(rows), by=["model", "loss"], metrics=["val_cos"], values=values)


def runs_frame():
    rows = []
    for seed, (a, b, c) in enumerate([(0.50, 0.40, 0.45), (0.51, 0.41, 0.44), (0.52, 0.42, 0.46)]):
        rows += [{"label": f"AMN · MSE · seed {seed}", "model": "AMN", "loss": "MSE", "val_cos": a, "converged": True},
                 {"label": f"AMN · InfoNCE · seed {seed}", "model": "AMN", "loss": "InfoNCE", "val_cos": b, "converged": True},
                 {"label": f"LSTM · MSE · seed {seed}", "model": "LSTM", "loss": "MSE", "val_cos": c, "converged": seed != 2},
                 {"label": f"LSTM · InfoNCE · seed {seed}", "model": "LSTM", "loss": "InfoNCE", "val_cos": c + 0.001,
                  "converged": True}]
    return pd.DataFrame(rows)


def runs_values(rows=None):
    rows = runs_frame() if rows is None else rows
    return per_row_values({r.label: {"val_cos": r.val_cos} for r in rows.itertuples()})


def test_seed_summary_intervals_and_formatting():
    """One seed and three seeds get the same kind of interval (over articles, seeds nested); a metric without
    per-row values gets its mean and no interval, never a t-interval of another kind."""
    rows = runs_frame()
    summary = summary_frame(rows, runs_values())
    amn = summary.set_index(["model", "loss"]).loc[("AMN", "MSE")]
    assert amn.seeds == 3 and amn.val_cos == pytest.approx(0.51) and amn.val_cos_low < 0.51 < amn.val_cos_high
    assert amn.labels == [f"AMN · MSE · seed {s}" for s in range(3)]
    one = summary_frame(rows[rows.seed == 0] if "seed" in rows else rows.iloc[[0]], runs_values()).iloc[0]
    assert one.seeds == 1 and one.val_cos_low < one.val_cos < one.val_cos_high
    bare = summary_frame(rows, None).iloc[0]
    assert bare.val_cos == pytest.approx(0.51) and np.isnan(bare.val_cos_low)
    assert tables.fmt_ci(0.5431, 0.5364, 0.5502) == "0.543 [0.536, 0.550]"
    assert tables.fmt_ci(0.5, np.nan, np.nan) == "0.500" and tables.fmt_ci(None, None, None) == "—"
    assert "over articles" in tables.caption(summary[["model", "val_cos"]]).to_html()


def test_convergence_leaves_out_unconverged_runs():
    rows = runs_frame()
    kept, dropped = findings.converged_only(rows)
    assert len(kept) == 11 and list(dropped.label) == ["LSTM · MSE · seed 2"]
    text = findings.convergence(rows)
    assert text.startswith("11 of 12 trained runs converged") and "LSTM · MSE · seed 2" in text
    baselines_only = pd.DataFrame([{"label": "Linear Average", "val_cos": 0.5}])
    assert findings.convergence(baselines_only) == "No trained runs."


def test_loss_effect_is_a_paired_test_over_architectures():
    rows = findings.converged_only(runs_frame())[0]
    values = runs_values()
    text = findings.loss_effect(summary_frame(rows, values), values)
    # AMN: MSE 0.51 vs InfoNCE 0.41 on the same rows -> above; LSTM: 0.445 vs 0.451, within the noise -> not separable
    assert "Holm-adjusted over 2 architectures): above zero for 1 (AMN +0.100 [" in text
    assert "not separable for 1 (LSTM" in text


def test_gain_over_counts_its_comparisons_and_adjusts_them():
    values = per_row_values({"A": {"val_cos": 0.52}, "B": {"val_cos": 0.501}, "ridge": {"val_cos": 0.5}}, noise=0.05)
    gains = {c: findings.paired(values, [c], ["ridge"]) for c in ("A", "B")}
    assert gains["A"]["mean"] == pytest.approx(0.02) and gains["A"]["ci_low"] > 0
    text = findings.gain_over("ridge", gains)
    assert text.startswith("1 of 2 converged configurations beat ridge") and "over the 2 comparisons): A;" in text


def test_best_vs_baselines_names_the_strongest_baseline_and_the_ties():
    rows = runs_frame()
    values = {**runs_values(), **per_row_values({"Linear Average": {"val_cos": 0.55}, "copy-last": {"val_cos": 0.47}},
                                                seed=0)}
    summary = summary_frame(rows, values).assign(config=lambda d: d.model + " · " + d.loss)
    baselines = pd.DataFrame([{"label": "Linear Average", "val_cos": 0.55}, {"label": "copy-last", "val_cos": 0.47}])
    text = findings.best_vs_baselines(summary, baselines, values)
    assert text.startswith("Best converged configuration by VAL cosine: AMN · MSE 0.510 [")
    assert "(ahead of the 3 other(s): paired, Holm-adjusted) over 3 seed(s)" in text
    assert "the strongest baseline, Linear Average 0.550, is -0.040 [" in text and text.endswith("below it.")
    close = per_row_values({"x · seed 0": {"val_cos": 0.50}, "y · seed 0": {"val_cos": 0.5005}}, noise=0.02)
    pair = tables.seed_summary(pd.DataFrame([{"label": "x · seed 0", "config": "x", "val_cos": 0},
                                             {"label": "y · seed 0", "config": "y", "val_cos": 0}]), values=close)
    assert "y 0.500" in findings._leader_text(pair, close, "val_cos", "config") and "tied with x" in \
        findings._leader_text(pair, close, "val_cos", "config")


def test_decoded_examples_mark_copies():
    bank, _ = synthetic_bank(n_articles=30, length=12, dim=16, noise=0.0)
    windows = examples.pick_windows(bank, 4, seed=1)
    assert len(windows) == 4
    decoded = examples.decode(bank, {"copy-last": copy_last, "Linear Average": linear_average}, windows, k=2)
    assert all(ex["hits"]["copy-last"][0][2] for ex in decoded)     # copy-last's nearest concept IS ctx[-1]
    assert examples.copy_rate(decoded)["copy-last"] == 1.0
    html = examples.to_html(bank, decoded)
    assert html.count("copy of context") >= 4 and "True next concept" in html


def curve_frame():
    rows, means = [], {}
    for model, points in (("AMN", [(1000, 0.40), (4000, 0.46), (16000, 0.50)]),
                          ("GRU", [(1000, 0.30), (4000, 0.36), (16000, 0.3605)])):
        for n, v in points:
            label = f"{model} {n}"
            rows.append({"label": label, "model": model, "train_sequences": n, "val_cos": v, "optimizer_steps": 100})
            means[label] = {"val_cos": v}
    return pd.DataFrame(rows), per_row_values(means, noise=0.02)


def test_more_data_says_rising_or_levelled():
    rows, values = curve_frame()
    curve = tables.seed_summary(rows, by=["model", "train_sequences"], values=values)
    text = findings.more_data(curve, values)
    assert "(2 paired comparisons, Holm-adjusted)" in text
    assert "still rising for AMN (4,000 → 16,000 windows: 0.460 → 0.500, paired +0.040 [" in text
    assert "levelled off for GRU" in text
    fixed_rows = rows.assign(val_cos=lambda d: d.val_cos - 0.1 * (d.train_sequences > 1000), label=rows.label + " fixed")
    values.update(per_row_values({r.label: {"val_cos": r.val_cos} for r in fixed_rows.itertuples()}, seed=1))
    fixed = tables.seed_summary(fixed_rows, by=["model", "train_sequences"], values=values)
    text = findings.equal_steps(curve, fixed, values)
    assert "AMN +0.000 [" in text and "at 100 steps each vs +0.100 [" in text
    # an equal-steps arm that skipped the smallest size is compared over the sizes both arms have
    text = findings.equal_steps(curve, fixed[fixed.train_sequences > 1000], values)
    assert "AMN +0.040 [" in text and "at 100 steps each vs +0.040 [" in text


def test_collapse_margins_gates_and_versus():
    values = per_row_values({"a": {"val_cos": 0.1555}, "b": {"val_cos": 0.45}, "global mean": {"val_cos": 0.155},
                             "P1 · 0": {"val_margin": -0.2}, "P3 · 0": {"val_margin": -0.1}}, noise=0.02)
    rows = pd.DataFrame([{"label": "a", "val_cos": 0.1555, "converged": True},
                         {"label": "b", "val_cos": 0.45, "converged": True}])
    text = findings.collapse(rows, values)
    assert text.startswith("1 of 2 converged runs are not above the global mean (paired, Holm-adjusted): a;")
    runs = pd.DataFrame([{"label": "P1 · 0", "variant": "P1 MSE", "val_margin": 0, "val_cos": 0.56},
                         {"label": "P3 · 0", "variant": "P3 guard", "val_margin": 0, "val_cos": 0.55}])
    summary = tables.seed_summary(runs, by="variant", metrics=["val_margin"], values=values).assign(
        val_cos=[0.56, 0.55])
    text = findings.margins(summary, values)
    assert "P3 guard -0.100 [" in text and "at 0.550" in text and "0 with the whole interval above zero" in text
    assert "Largest among those at or above the linear average: P3 guard -0.100 [" in text
    assert "(ahead of the 1 other(s): paired, Holm-adjusted), at VAL cosine" in text
    vs = findings.versus(summary, values, "P3 guard", "P1 MSE")
    assert "above P1 MSE's -0.200 [" in vs and "(paired difference +0.100 [" in vs and "(VAL cosine 0.550 vs 0.560)" in vs
    table = pd.DataFrame([{"label": "x", "A": "PASS", "B": "PASS", "gates passed": "5/8"},
                          {"label": "x", "A": "fail", "B": "PASS", "gates passed": "5/8"},
                          {"label": "base", "A": "PASS", "B": "PASS", "gates passed": "8/8"}])
    assert findings.gates(table, ["x"]).startswith("Runs passing 5CAT A and B on a split: 1 of 2")


def test_a_margin_below_the_linear_average_is_never_the_win():
    # an under-trained variant (VAL cosine 0.37, below the linear average's 0.549) has the largest margin:
    # it is named as not compared, and the largest margin is read among the variants that learned the average
    means = {"P1 MSE": (-0.17, 0.560), "P3 guard": (-0.07, 0.372), "P4 rollout": (-0.15, 0.555)}
    values = per_row_values({k: {"val_margin": m} for k, (m, _) in means.items()})
    runs = pd.DataFrame([{"label": k, "variant": k, "val_margin": m} for k, (m, _) in means.items()])
    summary = tables.seed_summary(runs, by="variant", metrics=["val_margin"], values=values).assign(
        val_cos=[c for _, c in means.values()])
    text = findings.margins(summary, values, floor=0.549)
    assert "so not compared on margin: P3 guard" in text
    assert "Largest among those at or above the linear average: P4 rollout" in text
    assert findings.best_forward(summary, 0.549).variant == "P4 rollout"
    none = findings.margins(summary.assign(val_cos=0.3), values, floor=0.549)
    assert none.endswith("no configuration learned the average, so no margin is read as a win.")


def test_below_average_names_start_at_average_runs_under_the_averages():
    base = pd.DataFrame([{"label": "Linear Average", "val_cos": 0.549}, {"label": "position-weighted avg", "val_cos": 0.560}])
    rows = pd.DataFrame([
        {"label": f"{m} · MSE · seed {s}", "model": m, "loss": "MSE", "val_cos": v + 0.001 * s, "converged": True,
         "start": start} for m, v, start in (("AMN", 0.566, "average"), ("GRU", 0.555, "average"),
                                             ("LSTM", 0.50, "plain")) for s in range(3)])
    text = findings.below_average(rows, base)
    assert "0 of 2 below the linear average (0.549)" in text            # the plain LSTM is not counted
    assert "1 of 2 below the position-weighted avg (0.560): GRU · MSE" in text
    assert "their training" in text
    ok = findings.below_average(rows[rows.model == "AMN"], base)
    assert "none ends below an average it can represent." in ok
    assert "No converged" in findings.below_average(rows.assign(converged=False), base)


def test_kept_start_names_configurations_whose_best_checkpoint_is_step_0():
    rows = pd.DataFrame([{"model": "AMN", "loss": "MSE", "best_step": 0}, {"model": "AMN", "loss": "MSE", "best_step": 0},
                         {"model": "GRU", "loss": "MSE", "best_step": 0}, {"model": "GRU", "loss": "MSE", "best_step": 215}])
    text = findings.kept_start(rows)
    assert text.startswith("1 of 2 never improved on their start on VAL") and ": AMN · MSE —" in text
    assert findings.kept_start(rows.assign(best_step=43)) == "Every configuration improved on its start on VAL."


def test_plain_head_cost_pairs_each_architecture():
    rows = pd.DataFrame([{"model": "GRU", "start": "plain", "val_cos": 0.25, "optimizer_steps": 645, "converged": False},
                         {"model": "GRU", "start": "average", "val_cos": 0.554, "optimizer_steps": 301, "converged": True},
                         {"model": "AMN", "start": "average", "val_cos": 0.56, "optimizer_steps": 200, "converged": True}])
    text = findings.plain_head_cost(rows)
    assert text == ("The seeds' plain head vs start at the average (MSE, seed 0, VAL cosine): GRU 0.250 at 645 steps, "
                    "not converged vs 0.554 at 301.")
    assert "No architecture" in findings.plain_head_cost(rows[rows.model == "AMN"])


def test_spec_scale_says_how_far_from_spec():
    from lvmlib.config import run_spec
    specs = [run_spec({"model": {"name": "gru", "options": {"hidden": 384, "blocks": 1, "baseline_start": True}}}),
             run_spec({"model": {"name": "amn"}})]
    assert findings.spec_scale(specs) == "GRU: hidden 384 of 512, blocks 1 of 4; AMN: SPEC widths"


def test_lr_choice_ignores_unconverged_runs():
    sweep = pd.DataFrame([{"model": "AMN", "lr": 1e-3, "val_cos": 0.50, "converged": True, "label": "a"},
                          {"model": "AMN", "lr": 3e-3, "val_cos": 0.55, "converged": False, "label": "b"},
                          {"model": "GRU", "lr": 1e-3, "val_cos": 0.40, "converged": True, "label": "c"},
                          {"model": "GRU", "lr": 3e-3, "val_cos": 0.40, "converged": True, "label": "d"}])
    assert findings.chosen_lr(sweep) == {"AMN": 1e-3, "GRU": 1e-3}
    assert "AMN 0.001, GRU 0.001" in findings.lr_sweep(sweep, findings.chosen_lr(sweep))


def test_dataset_findings_read_the_card():
    from lvmlib.data import dataset_card
    bank, _ = synthetic_bank(n_articles=30, length=12, dim=16, noise=0.1)
    card = dataset_card(bank, n_pairs=500)
    text = findings.dataset(card)
    assert text[0].startswith(f"The bank holds {len(bank):,} concepts of 30 articles")
    assert f"{card['cosine_adjacent']['mean']:.3f}" in text[1]
    assert len(findings.dataset({**card, "corpus_truncated": "7 articles read"})) == 4


def test_held_out_scores_the_val_choice_on_ood():
    """The configuration VAL picks is re-read on OOD, paired with the baseline there: the clean test."""
    values = per_row_values({"A · 0": {"val_cos": 0.52, "ood_cos": 0.47}, "B · 0": {"val_cos": 0.51, "ood_cos": 0.60},
                             "residual ridge": {"val_cos": 0.5, "ood_cos": 0.49}}, noise=0.01)
    runs = pd.DataFrame([{"label": "A · 0", "config": "A", "val_cos": 0, "ood_cos": 0},
                         {"label": "B · 0", "config": "B", "val_cos": 0, "ood_cos": 0}])
    summary = tables.seed_summary(runs, by="config", metrics=["val_cos", "ood_cos"], values=values)
    text = findings.held_out(summary, values)
    assert "A scores OOD cosine 0.470 [" in text and "from residual ridge there is -0.020 [" in text
    assert text.endswith("below it.") and "B" not in text.split("read VAL")[1]


def test_pareto_front_and_frontier_text():
    """A point is on the front unless another is at least as good on both axes and better on one."""
    points = pd.DataFrame([{"label": "ridge", "kind": "baseline", "val_cos": 0.569, "val_margin": -0.251},
                           {"label": "InfoNCE", "kind": "objective", "val_cos": 0.288, "val_margin": -0.088},
                           {"label": "under-trained", "kind": "objective", "val_cos": 0.280, "val_margin": -0.100},
                           {"label": "energy", "kind": "objective", "val_cos": 0.491, "val_margin": -0.220},
                           {"label": "copy-last", "kind": "baseline", "val_cos": 0.45, "val_margin": -0.30}])
    assert findings.pareto(points) == ["InfoNCE", "energy", "ridge"]
    theirs = pd.DataFrame([{"model": "P5 Stage A", "val_cos": 0.463, "val_margin": -0.041},
                           {"model": "P1 Baseline", "val_cos": 0.55, "val_margin": -0.30}])
    text = findings.frontier(points, theirs)
    assert text.startswith("On the (val cos, val margin) front, of 5 predictors that do not use the answer: "
                           "InfoNCE [objective] (0.288, -0.088); energy [objective] (0.491, -0.220); ridge")
    assert "P5 Stage A (0.463, -0.041) beyond our front" in text and "P1 Baseline (0.550, -0.300) inside" in text


def test_sampler_estimate_needs_near_repeats():
    few = {"rows": 2000, "max": 0.8, "median": 0.37, "counts": {"0.9": 0, "0.8": 1}}
    text = findings.sampler_estimate(few)
    assert text.startswith("A sampler of the true next-concept distribution: 0 of 2,000 VAL rows")
    assert "cannot estimate" in text and "closest 0.80" in text
    assert "enough near-repeats" in findings.sampler_estimate({**few, "counts": {"0.9": 80}})
