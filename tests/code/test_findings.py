"""Report conclusions are functions of the results: each finding is checked on results whose
right answer is known."""
import numpy as np
import pandas as pd
import pytest

from lvmlib.data import synthetic_bank
from lvmlib.evaluation import copy_last, linear_average
from lvmlib.report import examples, findings, tables


def summary_frame(rows):
    return tables.seed_summary(pd.DataFrame(rows), by=["model", "loss"], metrics=["val_cos"])


def runs_frame():
    rows = []
    for seed, (a, b, c) in enumerate([(0.50, 0.40, 0.45), (0.51, 0.41, 0.44), (0.52, 0.42, 0.46)]):
        rows += [{"label": f"AMN · MSE · seed {seed}", "model": "AMN", "loss": "MSE", "val_cos": a, "converged": True},
                 {"label": f"AMN · InfoNCE · seed {seed}", "model": "AMN", "loss": "InfoNCE", "val_cos": b, "converged": True},
                 {"label": f"LSTM · MSE · seed {seed}", "model": "LSTM", "loss": "MSE", "val_cos": c, "converged": seed != 2},
                 {"label": f"LSTM · InfoNCE · seed {seed}", "model": "LSTM", "loss": "InfoNCE", "val_cos": c + 0.001,
                  "converged": True}]
    return pd.DataFrame(rows)


def test_t_interval_and_formatting():
    mean, lo, hi = tables.t_interval([0.5, 0.51, 0.52])
    assert mean == pytest.approx(0.51) and lo < 0.5 and hi > 0.52
    assert hi - lo == pytest.approx(2 * 4.302653 * 0.01 / np.sqrt(3), rel=1e-4)
    assert tables.fmt_ci(0.5431, 0.5364, 0.5502) == "0.543 [0.536, 0.550]"
    assert tables.fmt_ci(0.5, np.nan, np.nan) == "0.500" and tables.fmt_ci(None, None, None) == "—"
    assert np.isnan(tables.t_interval([0.4])[1])


def test_convergence_leaves_out_unconverged_runs():
    rows = runs_frame()
    kept, dropped = findings.converged_only(rows)
    assert len(kept) == 11 and list(dropped.label) == ["LSTM · MSE · seed 2"]
    text = findings.convergence(rows)
    assert text.startswith("11 of 12 trained runs converged") and "LSTM · MSE · seed 2" in text
    baselines_only = pd.DataFrame([{"label": "Linear Average", "val_cos": 0.5}])
    assert findings.convergence(baselines_only) == "No trained runs."


def test_loss_effect_needs_separated_intervals():
    summary = summary_frame(findings.converged_only(runs_frame())[0])
    text = findings.loss_effect(summary)
    # AMN: MSE 0.51 vs InfoNCE 0.41, tight intervals -> above; LSTM: 0.445 vs 0.451 -> not separable
    assert "for 1 of 2 architectures (AMN)" in text and "not separable for 1 (LSTM)" in text
    assert findings.separated((0.5, 0.49, 0.51), (0.4, 0.39, 0.41)) == 1
    assert findings.separated((0.4, 0.39, 0.41), (0.5, 0.49, 0.51)) == -1
    assert findings.separated((0.5, 0.4, 0.6), (0.45, 0.44, 0.46)) == 0
    assert findings.separated((0.5, np.nan, np.nan), (0.4, 0.39, 0.41)) == 0


def test_paired_gain_pairs_rows_and_averages_seeds():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, 500)
    seeds = [base + 0.02 + rng.normal(0, 0.01, 500) for _ in range(3)]
    mean, lo, hi = findings.paired_gain(seeds, base)
    assert mean == pytest.approx(0.02, abs=0.002) and 0 < lo < mean < hi
    mean, lo, hi = findings.paired_gain([base], base)
    assert mean == 0 and lo == hi == 0
    text = findings.gain_over("ridge", {"A": (0.02, 0.01, 0.03), "B": (0.0, -0.01, 0.01)})
    assert text.startswith("1 of 2 converged configurations beat ridge") and "(A)" in text


def test_best_vs_baselines_names_the_strongest_baseline():
    summary = summary_frame(runs_frame()).assign(config=lambda d: d.model + " · " + d.loss)
    baselines = pd.DataFrame([{"label": "Linear Average", "val_cos": 0.55, "val_cos_low": 0.54, "val_cos_high": 0.56},
                              {"label": "copy-last", "val_cos": 0.47, "val_cos_low": 0.46, "val_cos_high": 0.48}])
    text = findings.best_vs_baselines(summary, baselines)
    assert "AMN · MSE" in text and "below the strongest baseline, Linear Average 0.550 [0.540, 0.560]" in text


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
    rows = []
    for model, values in (("AMN", [(1000, 0.40, 0.01), (4000, 0.46, 0.01), (16000, 0.50, 0.01)]),
                          ("GRU", [(1000, 0.30, 0.01), (4000, 0.36, 0.02), (16000, 0.37, 0.02)])):
        for n, v, h in values:
            rows.append({"model": model, "train_sequences": n, "val_cos": v, "val_cos_low": v - h, "val_cos_high": v + h,
                         "optimizer_steps": 100})
    return pd.DataFrame(rows)


def test_more_data_says_rising_or_levelled():
    text = findings.more_data(curve_frame())
    assert "still rising for AMN (4,000 → 16,000 windows" in text and "levelled off for GRU" in text
    fixed = curve_frame().assign(val_cos=lambda d: d.val_cos - 0.1 * (d.train_sequences > 1000))
    text = findings.equal_steps(curve_frame(), fixed)
    assert "AMN +0.000 at 100 steps each vs +0.100 when trained to convergence" in text
    # an equal-steps arm that skipped the smallest size is compared over the sizes both arms have
    text = findings.equal_steps(curve_frame(), fixed[fixed.train_sequences > 1000])
    assert "AMN +0.040 at 100 steps each vs +0.040 when trained to convergence" in text


def test_collapse_margins_gates_and_versus():
    rows = pd.DataFrame([{"label": "a", "val_cos": 0.16, "val_cos_low": 0.15, "val_cos_high": 0.17, "converged": True},
                         {"label": "b", "val_cos": 0.45, "val_cos_low": 0.44, "val_cos_high": 0.46, "converged": True}])
    base = pd.DataFrame([{"label": "global mean", "val_cos": 0.155, "val_cos_low": 0.15, "val_cos_high": 0.16}])
    assert findings.collapse(rows, base).startswith("1 of 2 converged runs collapse")
    summary = pd.DataFrame([{"variant": "P1 MSE", "val_margin": -0.2, "val_margin_low": -0.21, "val_margin_high": -0.19,
                             "val_cos": 0.56},
                            {"variant": "P3 guard", "val_margin": -0.1, "val_margin_low": -0.11, "val_margin_high": -0.09,
                             "val_cos": 0.55}])
    text = findings.margins(summary)
    assert "P3 guard -0.100 [-0.110, -0.090] at 0.550" in text and "0 with the whole interval above zero" in text
    assert text.endswith("Largest among those at or above the linear average: P3 guard, -0.100 [-0.110, -0.090] "
                         "at VAL cosine 0.550.")
    assert "above P1 MSE's" in findings.versus(summary, "P3 guard", "P1 MSE")
    assert "(VAL cosine 0.550 vs 0.560)" in findings.versus(summary, "P3 guard", "P1 MSE")
    assert "no interval" in findings.versus(summary.assign(val_margin_low=np.nan), "P3 guard", "P1 MSE")
    table = pd.DataFrame([{"label": "x", "A": "PASS", "B": "PASS", "gates passed": "5/8"},
                          {"label": "x", "A": "fail", "B": "PASS", "gates passed": "5/8"},
                          {"label": "base", "A": "PASS", "B": "PASS", "gates passed": "8/8"}])
    assert findings.gates(table, ["x"]).startswith("Runs passing 5CAT A and B on a split: 1 of 2")


def test_a_margin_below_the_linear_average_is_never_the_win():
    # an under-trained variant (VAL cosine 0.37, below the linear average's 0.549) has the largest margin:
    # it is named as not compared, and the largest margin is read among the variants that learned the average
    summary = pd.DataFrame([{"variant": "P1 MSE", "val_margin": -0.17, "val_cos": 0.560},
                            {"variant": "P3 guard", "val_margin": -0.07, "val_cos": 0.372},
                            {"variant": "P4 rollout", "val_margin": -0.15, "val_cos": 0.555}])
    text = findings.margins(summary, floor=0.549)
    assert "so not compared on margin: P3 guard" in text
    assert "Largest among those at or above the linear average: P4 rollout" in text
    assert findings.best_forward(summary, 0.549).variant == "P4 rollout"
    none = findings.margins(summary.assign(val_cos=0.3), floor=0.549)
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
