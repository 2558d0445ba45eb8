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
