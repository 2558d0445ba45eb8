"""Evaluation on the synthetic rotation bank, where the right answer is known: v[t+1] = normalize(R v[t]).

The oracle normalize(ctx[-1] @ R.T) predicts y exactly; copy-last predicts v[t-1]; the "one-ahead"
predictor normalize(ctx[-1] @ (R²).T) predicts v[t+1] (what the original 5CAT effectively scored).
"""
import json

import numpy as np
import pytest

from lvmlib import cli
from lvmlib import evaluation as M
from lvmlib.evaluation import core, fivecat
from lvmlib.data import synthetic_bank


@pytest.fixture(scope="module")
def syn():
    bank, rot = synthetic_bank(n_articles=60, length=20, dim=32, seed=0)
    return bank, rot


@pytest.fixture(scope="module")
def val(syn):
    return M.split_rows(syn[0], "val")


def oracle_of(rot):
    return lambda ctx: ctx[:, -1] @ rot.T


def one_ahead_of(rot):
    return lambda ctx: ctx[:, -1] @ (rot @ rot).T


# ---------------------------------------------------------------- A offset sweep, B rank
def test_oracle_peaks_at_the_target(syn, val):
    bank, rot = syn
    a = M.offset_sweep(oracle_of(rot), bank, val)
    assert a["c0"] == pytest.approx(1.0, abs=1e-5)
    assert a["peak_offset"] == 0 and a["margin"] > 0.5
    assert a["gates"]["c0"]["pass"] and a["gates"]["margin"]["pass"] and a["pass"]
    b = M.in_article_rank(oracle_of(rot), bank, val)
    assert b["r1"] == 1.0 and b["r5"] == 1.0 and b["mrr"] == 1.0 and b["pass"]


def test_copy_last_peaks_one_step_back(syn, val):
    bank, _ = syn
    a = M.offset_sweep(M.copy_last, bank, val)
    assert a["c"]["-1"] == pytest.approx(1.0, abs=1e-5)
    assert a["peak_offset"] == -1 and a["margin"] < 0 and not a["pass"]
    b = M.in_article_rank(M.copy_last, bank, val)
    assert b["r1"] == 0.0 and not b["pass"]  # v[t-1] itself outranks v[t]


def test_offsets_are_not_shifted(syn, val):
    # predicting v[t+1] must show up at k = +1, not at k = 0 (defect 3)
    bank, rot = syn
    a = M.offset_sweep(one_ahead_of(rot), bank, val)
    assert a["peak_offset"] == 1 and a["c"]["1"] == pytest.approx(1.0, abs=1e-5) and a["c0"] < 0.9


def test_offset_rows_stay_in_the_article(syn, val):
    bank, _ = syn
    a = M.offset_sweep(M.copy_last, bank, val)
    length = bank.article_length[val.article]
    # every offset is averaged over the same rows: those with v[t+3] still in the article
    assert a["rows"] == int(np.sum(val.position + 3 < length)) and a["rows"] + a["rows_excluded"] == len(val)
    assert 0 < a["rows"] < len(val)
    inside = val.position + 3 < length
    assert a["c"]["0"] == pytest.approx(np.mean(np.sum(val.contexts[inside, -1] * val.targets[inside], 1)), abs=1e-6)


# ---------------------------------------------------------------- C ablations
def test_shuffle_never_identity_and_order_blind_model_unmoved(syn, val):
    bank, _ = syn
    perms = fivecat.shuffle_permutations(5000, np.random.default_rng(1))
    assert not (perms == np.arange(5)).all(axis=1).any()
    assert (np.sort(perms, axis=1) == np.arange(5)).all()
    c = M.ablations(M.linear_average, bank, val)
    assert abs(c["shuffle"]["delta"]) < 1e-6 and abs(c["reverse"]["delta"]) < 1e-6
    assert not c["gates"]["shuffle"]["pass"]  # an order-blind model must fail the shuffle gate


def test_leave_one_out_removes_the_slot(syn, val):
    bank, _ = syn
    assert fivecat.leave_one_out_slots(4).tolist() == [0, 0, 1, 2, 3]
    assert fivecat.leave_one_out_slots(0).tolist() == [1, 1, 2, 3, 4]
    assert fivecat.leave_one_out_slots(2).tolist() == [0, 0, 1, 3, 4]
    ctx = val.contexts[:10]
    dropped = fivecat.leave_one_out(ctx, 4)
    assert dropped.shape == ctx.shape and not np.array_equal(dropped, ctx)  # defect 4: not a no-op
    assert np.array_equal(dropped[:, -1], ctx[:, 3])
    c = M.ablations(M.copy_last, bank, val)
    assert abs(c["leave_one_out"]["4"]["delta"]) > 0.01  # copy-last now copies ctx[3]
    assert c["leave_one_out"]["4"]["agreement"] < 0.99
    for slot in "0123":  # copy-last ignores the earlier slots
        assert c["leave_one_out"][slot]["delta"] == 0.0
    assert c["repeat_pad"]["delta"] == 0.0


def test_foreign_context_comes_from_another_article(syn, val):
    bank, _ = syn
    donors = fivecat.foreign_donors(bank, val, np.random.default_rng(0))
    assert (bank.article[donors] != val.article).all()
    assert (bank.split[donors] == "val").all()
    c = M.ablations(M.copy_last, bank, val, foreign_every_slot=True)
    for slot in "01234":
        assert c["foreign"][slot]["same_article_rows"] == 0 and c["foreign"][slot]["donor_articles"] > 1
    assert c["foreign"]["4"]["agreement"] < 0.9  # copy-last now returns the foreign concept
    assert c["foreign"]["0"]["delta"] == 0.0


def test_oracle_passes_the_ablation_gates(syn, val):
    bank, rot = syn
    c = M.ablations(oracle_of(rot), bank, val)
    assert c["pass"], c["gates"]


# ---------------------------------------------------------------- D rollout
def test_rollout_oracle_scores_one_every_step(syn, val):
    bank, rot = syn
    d = M.rollout(oracle_of(rot), bank, val)
    assert d["per_step"] == pytest.approx([1.0] * 5, abs=1e-4)
    length = bank.article_length[val.article]
    assert d["rows"] == int(np.sum(val.position + 4 < length)) > 0
    assert M.rollout(one_ahead_of(rot), bank, val)["per_step"][0] < 0.9


def test_rollout_scores_true_future_targets(syn, val):
    # copy-last fed back keeps predicting v[t-1], so step h must equal mean cos(v[t-1], v[t+h])
    bank, _ = syn
    d = M.rollout(M.copy_last, bank, val)
    keep = val.position + 4 < bank.article_length[val.article]
    t = val.index[keep]
    expected = [float(np.mean(np.sum(bank.vectors[t - 1] * bank.vectors[t + h], axis=1))) for h in range(5)]
    assert d["per_step"] == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------- E coherence bins
def test_coherence_bins(syn):
    bank, rot = syn
    val, ood = M.split_rows(bank, "val"), M.split_rows(bank, "ood")
    e = M.coherence_bins(oracle_of(rot), bank, val, ood, min_rows=5, n_bins=3)
    assert sum(b["val_rows"] for b in e["bins"]) == len(val)
    assert sum(b["ood_rows"] for b in e["bins"]) == len(ood)
    assert e["edges"][0] == -1.0 and e["edges"][-1] == 1.0 and e["gated_bins"] >= 1 and e["pass"]
    coh = fivecat.context_coherence(val.contexts)
    assert coh[0] == pytest.approx(np.mean([val.contexts[0, i] @ val.contexts[0, i + 1] for i in range(4)]), abs=1e-6)
    # OOD predictions that are off in one coherence band must fail that bin
    ood_pred = oracle_of(rot)(ood.contexts)
    bad = fivecat.context_coherence(ood.contexts) < e["edges"][1]
    ood_pred[bad] = ood.contexts[bad, -1]
    e_bad = M.coherence_bins(oracle_of(rot), bank, val, ood, ood_pred=ood_pred, min_rows=5, n_bins=3)
    assert e_bad["bins"][0]["pass"] is False and not e_bad["pass"]


# ---------------------------------------------------------------- LCM metrics
def test_lcm_metrics_of_oracle_and_copy_last(syn, val):
    bank, rot = syn
    ora = M.lcm_metrics(M.predict_all(oracle_of(rot), val.contexts), val, bank)
    assert ora["l2"] == pytest.approx(0.0, abs=1e-3)
    assert ora["ca"] == 1.0
    assert ora["par_mean"] == pytest.approx(1.0, abs=1e-4) and ora["par_median"] == pytest.approx(1.0, abs=1e-4)
    cl = M.lcm_metrics(M.copy_last(val.contexts), val, bank)
    assert cl["par_median"] > 1.0 and cl["par_mean"] > 1.0 and cl["ca"] < 0.9
    assert cl["par_ctx5_median"] > 1.0 and cl["par_rows"] + cl["par_undefined_rows"] == len(val)


def test_par_reads_every_earlier_concept_of_the_article(syn, val):
    """PAR as Meta defines it: max over ALL earlier concepts of the article, checked against a direct loop over
    the bank; the 5-context ratio is kept apart (par_ctx5_*) and differs from it on this bank."""
    bank, _ = syn
    pred = M.copy_last(val.contexts)
    got = M.lcm_metrics(pred, val, bank)
    ratios, ratios5 = [], []
    for i, t in enumerate(val.index):
        earlier = [m for m in range(len(bank)) if bank.article[m] == val.article[i] and m < t]
        num, den = max(float(bank.vectors[m] @ pred[i]) for m in earlier), max(float(bank.vectors[m] @ val.targets[i])
                                                                              for m in earlier)
        num5, den5 = max(float(c @ pred[i]) for c in val.contexts[i]), max(float(c @ val.targets[i])
                                                                          for c in val.contexts[i])
        ratios += [num / den] if den > 1e-3 else []
        ratios5 += [num5 / den5] if den5 > 1e-3 else []
    assert got["par_median"] == pytest.approx(np.median(ratios), rel=1e-5)
    assert got["par_ctx5_median"] == pytest.approx(np.median(ratios5), rel=1e-5)
    assert got["par_rows"] == len(ratios) and got["par_median"] != pytest.approx(got["par_ctx5_median"], rel=1e-3)


def _ca_reference(pred, seqs, bank, pool_rows):
    out = []
    for p, t in zip(pred, seqs.index):
        excluded = {t, t - 1} | ({t + 1} if bank.article[min(t + 1, len(bank) - 1)] == bank.article[t] else set())
        cand = np.array([r for r in pool_rows if r not in excluded])
        s_y = float(bank.vectors[t] @ p)
        out.append(np.mean(bank.vectors[cand] @ p < s_y))
    return float(np.mean(out))


def test_ca_matches_a_direct_count(syn, val):
    bank, _ = syn
    rng = np.random.default_rng(5)
    pred = core._unit(val.targets + 0.8 * rng.standard_normal(val.targets.shape).astype(np.float32))
    pool = np.flatnonzero(bank.split == "val")
    got = M.lcm_metrics(pred, val, bank, ca_pool="split")
    assert got["ca"] == pytest.approx(_ca_reference(pred, val, bank, pool), abs=1e-9)
    assert 0.3 < got["ca"] < 1.0
    batch = M.lcm_metrics(pred, val, bank, ca_pool="batch", batch_size=32)
    assert 0.3 < batch["ca"] < 1.0 and batch["ca_rows"] == len(val)


# ---------------------------------------------------------------- mean cosine, CI, baselines
def test_baselines_are_computed_on_the_same_rows(syn, val):
    bank, _ = syn
    res = M.compare_to_baselines(M.linear_average, bank, val, n_boot=200)
    assert res["model"]["mean"] == pytest.approx(res["linear_average"]["mean"], abs=1e-7)
    assert res["model_minus"]["linear_average"]["mean"] == pytest.approx(0.0, abs=1e-7)
    assert all(res[k]["n"] == len(val) for k in ("model", "linear_average", "copy_last", "global_mean"))
    # global mean of the TRAIN targets, recomputed here by hand
    train = M.split_rows(bank, "train")
    mean = train.targets.mean(axis=0)
    mean /= np.linalg.norm(mean)
    assert res["global_mean"]["mean"] == pytest.approx(float(np.mean(val.targets @ mean)), abs=1e-5)
    # and a different bank gives different baselines: nothing is a constant
    other = synthetic_bank(n_articles=60, length=20, dim=32, seed=1)[0]
    res2 = M.compare_to_baselines(M.linear_average, other, M.split_rows(other, "val"), n_boot=200)
    assert res2["copy_last"]["mean"] != res["copy_last"]["mean"]


def test_bad_predictions_are_refused(syn, val):
    bank, _ = syn
    with pytest.raises(M.EvalError, match="shape"):
        M.predict_all(lambda ctx: ctx[:, -1, :5], val.contexts)
    with pytest.raises(M.EvalError, match="NaN"):
        M.predict_all(lambda ctx: ctx[:, -1] * np.nan, val.contexts)


def test_torch_predictor_batches_and_restores_mode(val):
    torch = pytest.importorskip("torch")

    class Mean(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.normalize(x.mean(dim=1), dim=-1)

    model = Mean().train()
    pred = M.predictor(model, batch_size=7)(val.contexts)
    assert np.allclose(pred, M.linear_average(val.contexts), atol=1e-6)
    assert model.training


# ---------------------------------------------------------------- 5CAT, evaluate, checkpoint, CLI
def test_five_cat_subsamples_reproducibly(syn):
    bank, rot = syn
    a = M.five_cat(oracle_of(rot), bank, max_rows=40, seed=7)
    b = M.five_cat(oracle_of(rot), bank, max_rows=40, seed=7)
    assert a["splits"]["val"]["rows"] == 40 and a["splits"]["ood"]["rows"] == 40
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}
    assert strip(a) == strip(b)
    assert set(a["summary"]) == {"val", "ood", "E_sanity", "passed", "total"} and a["summary"]["total"] == 8
    only_val = M.five_cat(oracle_of(rot), bank, splits=("val",), max_rows=40)
    assert only_val["E"]["pass"] is None and only_val["summary"]["total"] == 4


def test_evaluate_document_and_table(syn):
    bank, rot = syn
    res = M.evaluate(M.copy_last, bank, n_boot=100, max_rows=60)
    text = json.dumps(res, allow_nan=False)  # strict JSON
    assert json.loads(text)["schema"] == M.SCHEMA
    assert res["rows"] == 60 and res["bank"]["fingerprint"] == bank.manifest["fingerprint"]
    table = M.format_table(res)
    assert "FAIL" in table and "PASS" in table and "5CAT gates passed" in table


def _fake_checkpoint(monkeypatch, tmp_path, bank, fingerprint):
    torch = pytest.importorskip("torch")

    class Mean(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.normalize(x.mean(dim=1), dim=-1)

    bank_dir = tmp_path / "bank"
    bank_dir.mkdir()
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not read by the fake loader")
    info = {"spec": {"data": {"bank": str(bank_dir), "train_concepts": None}, "model": {"name": "linear_average"}},
            "data": {"fingerprint": fingerprint}}
    import lvmlib.data
    import lvmlib.training
    monkeypatch.setattr(lvmlib.training, "load_checkpoint", lambda path, map_location="cpu": (Mean(), info))
    monkeypatch.setattr(lvmlib.data, "load_bank", lambda path: bank, raising=False)
    return ckpt


def test_checkpoint_on_another_bank_is_refused(syn, tmp_path, monkeypatch, capsys):
    bank, _ = syn
    ckpt = _fake_checkpoint(monkeypatch, tmp_path, bank, "0123456789abcdef")
    with pytest.raises(M.EvalError, match="fingerprint"):
        cli.evaluate_checkpoint(ckpt)
    assert cli.main(["eval", "--checkpoint", str(ckpt)]) == 2
    assert "refusing" in capsys.readouterr().err


def test_cli_writes_json_atomically(syn, tmp_path, monkeypatch, capsys):
    bank, _ = syn
    ckpt = _fake_checkpoint(monkeypatch, tmp_path, bank, M.bank_fingerprint(bank))
    out = tmp_path / "reports" / "eval.json"
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--split", "ood", "--json", str(out), "--max-rows", "50"]) == 0
    doc = json.loads(out.read_text())
    assert doc["split"] == "ood" and doc["rows"] == 50 and doc["checkpoint"]["spec"]["model"]["name"] == "linear_average"
    # the checkpoint's model is the linear average, so it ties with the computed baseline
    assert doc["baselines"]["model_minus"]["linear_average"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]  # no temp file left behind
    assert "5CAT gates passed" in capsys.readouterr().out


def test_missing_checkpoint_is_an_input_error(tmp_path, capsys):
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt: no such checkpoint" in capsys.readouterr().err


def test_real_checkpoint_round_trip(tmp_path, capsys):
    # with the real trainer's checkpoint format: a synthetic-data checkpoint is evaluated, and the
    # same checkpoint claiming another bank's fingerprint is refused
    from lvmlib import models, training
    synthetic = {"n_articles": 40, "length": 16, "dim": 16, "seed": 4}
    bank = synthetic_bank(**synthetic)[0]
    spec = {"data": {"synthetic": synthetic}, "model": {"name": "linear_average", "options": {}}}
    model = models.build_model("linear_average", dim=16)
    good = training.save_checkpoint(tmp_path / "good.pt", model, spec=spec,
                                    data={"fingerprint": bank.manifest["fingerprint"]})
    res = cli.evaluate_checkpoint(good, max_rows=30)
    assert res["baselines"]["model_minus"]["linear_average"]["mean"] == pytest.approx(0.0, abs=1e-6)
    other = synthetic_bank(**{**synthetic, "seed": 5})[0].manifest["fingerprint"]
    bad = training.save_checkpoint(tmp_path / "bad.pt", model, spec=spec, data={"fingerprint": other})
    assert cli.main(["eval", "--checkpoint", str(bad)]) == 2
    assert "refusing" in capsys.readouterr().err
