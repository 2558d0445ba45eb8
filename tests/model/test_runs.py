"""The run helper every notebook uses: train -> verified reload -> evaluate -> a measured row."""
import numpy as np
import pytest
import torch

from lvmlib import runs
from lvmlib.config import EvalSpec, expand, run_spec
from lvmlib.data import load_bank, save_bank, synthetic_bank
from lvmlib.evaluation import NearestContextPredictor, compare
from lvmlib.report import tables
from lvmlib.training import load_checkpoint, train

SMALL = {"hidden": 16}
TRAIN = {"epochs": 2, "batch_size": 32}
EV = EvalSpec(rows=50)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    b, _ = synthetic_bank(n_articles=30, length=14, dim=12, noise=0.05, seed=4)
    folder = tmp_path_factory.mktemp("bank")
    save_bank(b, folder, {"kind": "synthetic"})
    return load_bank(folder)


def spec_for(bank, **over):
    return run_spec({"label": "lstm a", "data": {"bank": str(bank.path)}, "model": {"name": "lstm", "options": SMALL},
                     "train": TRAIN, "seed": 3, "eval": {"rows": 50}, **over})


def test_row_is_measured_and_checkpoint_verified(bank, tmp_path):
    res = runs.run_specs(bank, [spec_for(bank)], out_root=tmp_path, log=None)
    row, doc, fit = res.rows[0], res.evals["lstm a"], res.fits["lstm a"]
    assert row["val_cos"] == pytest.approx(doc["mean_cosine"]["mean"])
    values = res.values["lstm a"]      # per-row values on the very rows the evaluation scored
    assert row["val_cos"] == pytest.approx(float(values["val_cos"].values.mean()), abs=1e-6)
    assert row["val_margin"] == pytest.approx(doc["five_cat"]["splits"]["val"]["A"]["margin"])
    for metric in ("val_margin", "val_r1", "val_mrr", "ca", "ood_cos", "ood_margin", "ood_r1"):
        assert compare([values[metric]])["mean"] == pytest.approx(row[metric], abs=1e-6), metric
    assert row["checkpoint_reload_max_diff"] < 1e-5 and (tmp_path / "lstm_a" / "best.pt").exists()
    assert row["optimizer_steps"] == 2 * int(np.ceil(row["train_sequences"] / 32)) == fit.optimizer_steps
    assert row["params"] == sum(p.numel() for p in fit.model.parameters())
    assert row["stop_reason"] == "max_epochs" and row["converged"] is False
    assert row["checkpoint"] == runs.portable_path(tmp_path / "lstm_a" / "best.pt")


def test_without_out_root_the_temporary_checkpoints_are_removed(bank):
    res = runs.run_specs(bank, [spec_for(bank, model={"name": "amn", "options": {"hidden": 16, "mid": 8, "attn_dim": 8}},
                                         train={"epochs": 1})], log=None)
    assert res.rows[0]["checkpoint"] is None and not res.fits["lstm a"].checkpoint.exists()


def test_lvm_train_repeats_a_notebook_run_exactly(bank, tmp_path):
    spec = spec_for(bank, label="gru", model={"name": "gru", "options": {"hidden": 16, "blocks": 1}}, seed=5,
                    loss={"mse": 1.0, "cosine": 0.5})
    runs.run_specs(bank, [spec], out_root=tmp_path / "notebook", log=None)
    train(runs.reproducing_spec(bank, spec, tmp_path / "cli"), progress=False)
    a, _ = load_checkpoint(tmp_path / "notebook" / "gru" / "best.pt")
    b, _ = load_checkpoint(tmp_path / "cli" / "best.pt")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_the_cache_reuses_a_finished_run(bank, tmp_path):
    first = runs.run_specs(bank, [spec_for(bank)], cache=tmp_path, log=None)
    again = runs.run_specs(bank, [spec_for(bank, label="renamed", tags={"x": 1})], cache=tmp_path, log=None)
    assert not first.rows[0]["cached"] and again.rows[0]["cached"]
    for key in ("val_cos", "optimizer_steps", "best_epoch", "stop_reason", "val_margin"):
        assert again.rows[0][key] == first.rows[0][key], key
    other = runs.run_specs(bank, [spec_for(bank, seed=4)], cache=tmp_path, log=None)
    assert not other.rows[0]["cached"]
    assert len(list(tmp_path.iterdir())) == 2
    # the same bank reached by another path (a moved clone) keeps the key; another bank does not
    moved = runs.cache_key(bank, spec_for(bank, data={"bank": "/elsewhere/bank-default"}))
    assert moved == runs.cache_key(bank, spec_for(bank))


def test_baselines_oracle_and_predictors_on_the_same_rows(bank):
    base = runs.baseline_rows(bank, ev=EV)
    labels = [r["label"] for r in base.rows]
    assert labels == ["Linear Average", "copy-last", "global mean", "position-weighted avg", "residual ridge"]
    assert len({r["rows"] for r in base.rows}) == 1 and len(base.values["residual ridge"]["val_cos"].values) == base.rows[0]["rows"]
    table = tables.five_cat_table(base.evals)
    copy = table[(table.label == "copy-last") & (table.split == "VAL")].iloc[0]
    assert copy["A peak k"] == -1 and copy["A"] == "fail"
    assert sorted(tables.offset_sweep_frame(base.evals).k.unique()) == [-3, -2, -1, 0, 1, 2, 3]
    row = runs.oracle_row(bank, EvalSpec(rows=60))
    assert row["val_cos"] == pytest.approx(1.0) and row["val_r1"] == 1.0 and row["ood_mrr"] == 1.0
    assert row["par"] == pytest.approx(1.0) and row["ca"] == pytest.approx(1.0) and 0 < row["val_margin"] <= 2
    row, doc = runs.predictor_row(bank, "nearest", NearestContextPredictor(bank, k=2), ev=EvalSpec(rows=40))
    assert row["val_cos"] == pytest.approx(doc["mean_cosine"]["mean"]) and "ood_ca" in row


def test_seed_summary_over_expanded_specs(bank):
    specs = expand({"data": {"bank": str(bank.path)}, "model": {"name": "lstm", "options": SMALL},
                    "train": {"epochs": 1}, "eval": {"rows": 30}}, {"loss": {"MSE": {}}}, seeds=[0, 1, 2])
    res = runs.run_specs(bank, specs, log=None)
    summary = tables.seed_summary(res.rows, by="loss", metrics=["val_cos"], values=res.values)
    assert summary.loc[0, "seeds"] == 3 and summary.loc[0, "val_cos_low"] < summary.loc[0, "val_cos"]
    assert summary.loc[0, "val_cos"] == pytest.approx(np.mean([r["val_cos"] for r in res.rows]), abs=1e-6)
    assert [r["seed"] for r in res.rows] == [0, 1, 2] and res.rows[0]["loss"] == "MSE"


def test_a_parameter_free_model_runs_like_any_other(bank, tmp_path):
    res = runs.run_specs(bank, [spec_for(bank, label="avg", model={"name": "linear_average"})], out_root=tmp_path,
                         log=None)
    row = res.rows[0]
    assert row["params"] == 0 and row["train_rows_seen"] == 0 and row["optimizer_steps"] == 0
    assert row["stop_reason"] == "no_parameters" and row["converged"] is True
    assert row["val_cos"] == pytest.approx(res.evals["avg"]["mean_cosine"]["mean"])
