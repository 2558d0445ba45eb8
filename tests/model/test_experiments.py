import numpy as np
import pytest
import torch

from lvmlib import experiments
from lvmlib.data import load_bank, save_bank, synthetic_bank
from lvmlib.train import load_checkpoint, train

SMALL = {"hidden": 16}
TRAIN = {"epochs": 2, "batch_size": 32}


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    b, _ = synthetic_bank(n_articles=30, length=14, dim=12, noise=0.05, seed=4)
    folder = tmp_path_factory.mktemp("bank")
    save_bank(b, folder, {"kind": "synthetic"})
    return load_bank(folder)


def test_run_config_row_is_measured_and_checkpoint_verified(bank, tmp_path):
    cfg = {"label": "lstm a", "model": "lstm", "options": SMALL, "train": TRAIN, "seed": 3}
    row, ev, result = experiments.run_config(bank, cfg, out_root=tmp_path, eval_rows=50)
    assert row["val_cos"] == pytest.approx(ev["mean_cosine"]["mean"])
    assert row["val_margin"] == pytest.approx(ev["five_cat"]["splits"]["val"]["A"]["margin"])
    assert row["checkpoint_reload_max_diff"] < 1e-5 and (tmp_path / "lstm_a" / "best.pt").exists()
    assert row["optimizer_steps"] == 2 * int(np.ceil(row["train_sequences"] / 32))
    assert row["params"] == sum(p.numel() for p in result.model.parameters())


def test_without_out_root_the_temporary_checkpoints_are_removed(bank):
    row, _, result = experiments.run_config(bank, {"model": "amn", "options": {"hidden": 16, "mid": 8, "attn_dim": 8},
                                                   "train": {"epochs": 1}}, eval_rows=30)
    assert row["checkpoint"] is None and result.out_dir is None


def test_lvm_train_params_repeat_the_run_exactly(bank, tmp_path):
    cfg = {"label": "gru", "model": "gru", "options": {"hidden": 16, "blocks": 1}, "train": TRAIN, "seed": 5,
           "loss": {"mse": 1.0, "cosine": 0.5}}
    experiments.run_config(bank, cfg, out_root=tmp_path / "notebook", eval_rows=30)
    params = experiments.train_params(bank, cfg, tmp_path / "cli")
    train(params, progress=False)
    a, _ = load_checkpoint(tmp_path / "notebook" / "gru" / "best.pt")
    b, _ = load_checkpoint(tmp_path / "cli" / "best.pt")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_unknown_config_key_is_refused(bank):
    with pytest.raises(experiments.ConfigError, match="epochs"):
        experiments.run_config(bank, {"model": "lstm", "epochs": 3})


def test_variant_config_fills_in_the_warmup():
    cfg = experiments.variant_config("P3", {"loss": {"mse": 1.0, "guard": {"weight": 0.1, "start_epoch": "warmup"}}},
                                     model="transformer", options={"d_model": 8}, train=TRAIN, warmup=4)
    assert cfg["loss"]["guard"]["start_epoch"] == 4 and cfg["options"] == {"d_model": 8}
    with pytest.raises(experiments.ConfigError, match="optoins"):
        experiments.variant_config("x", {"optoins": {}}, model="lstm", options={}, train=TRAIN, warmup=1)


def test_seed_summary_is_a_t_interval():
    rows = [{"config": "a", "val_cos": v} for v in (0.50, 0.52, 0.54)] + [{"config": "b", "val_cos": 0.4}]
    s = experiments.seed_summary(rows, metrics=("val_cos",)).set_index("config")
    assert s.loc["a", "val_cos"] == pytest.approx(0.52)
    assert s.loc["a", "val_cos_ci"] == pytest.approx(4.302653 * 0.02 / np.sqrt(3), rel=1e-5)   # t_{0.975, 2}
    assert s.loc["b", "seeds"] == 1 and np.isnan(s.loc["b", "val_cos_ci"])


def test_five_cat_table_and_sweep_read_the_evaluation(bank):
    rows, evals = experiments.baseline_rows(bank, eval_rows=40)
    table = experiments.five_cat_table(evals)
    copy = table[(table.label == "copy_last") & (table.split == "VAL")].iloc[0]
    assert copy["A peak k"] == -1 and copy["A"] == "fail"
    sweep = experiments.offset_sweep_frame(evals)
    assert sorted(sweep.k.unique()) == [-3, -2, -1, 0, 1, 2, 3]


def test_oracle_row_is_the_ceiling(bank):
    row = experiments.oracle_row(bank, eval_rows=60)
    assert row["val_cos"] == pytest.approx(1.0) and row["val_r1"] == 1.0 and row["ood_mrr"] == 1.0
    assert row["par"] == pytest.approx(1.0) and row["ca"] == pytest.approx(1.0)
    assert 0 < row["val_margin"] <= 2


def test_predictor_row_scores_any_function(bank):
    from lvmlib.retrieval import NearestContextPredictor
    row, ev = experiments.predictor_row(bank, "nearest", NearestContextPredictor(bank, k=2), eval_rows=40)
    assert row["val_cos"] == pytest.approx(ev["mean_cosine"]["mean"]) and "ood_ca" in row


def test_objective_configs_share_everything_but_the_objective():
    runs = experiments.objective_configs({"a": {"loss": {"mse": 1.0}}, "b": {"loss": {"cosine": 1.0},
                                                                           "options": {"residual": True}}},
                                         backbone="lstm", options={"hidden": 8}, train=TRAIN, train_concepts=100,
                                         seeds=[0, 1, 2])
    assert [r["label"] for r in runs][:3] == ["a · seed 0", "a · seed 1", "a · seed 2"] and len(runs) == 6
    assert all(r["train"] == TRAIN and r["train_concepts"] == 100 and r["model"] == "lstm" for r in runs)
    assert runs[3]["options"] == {"hidden": 8, "residual": True} and runs[0]["options"] == {"hidden": 8}
    with pytest.raises(experiments.ConfigError, match="lossy"):
        experiments.objective_configs({"c": {"lossy": {}}}, backbone="lstm", options={}, train=TRAIN)


def test_early_stop_patience_zero_means_off(bank):
    row, _, result = experiments.run_config(bank, {"model": "lstm", "options": SMALL,
                                                   "train": {"epochs": 3, "early_stop_patience": 0}}, eval_rows=20)
    assert result.epochs_run == 3 and not result.stopped_early
    assert row["train_rows_seen"] == 3 * row["train_sequences"]
