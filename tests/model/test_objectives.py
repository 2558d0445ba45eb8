"""Notebook 04's objectives: the energy-score generative head (head="energy", loss term `energy`),
MSE over every position or the last only (loss.all_positions), the "small context" InfoNCE
(info_nce_hard with the 5 context concepts as its only negatives), and the TL;DR function
findings.objectives on results whose right answer is known."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lvmlib.config import run_spec
from lvmlib.data import sequences, synthetic_bank
from lvmlib.errors import InputError
from lvmlib.losses import Objective, info_nce_hard_loss, loss_config
from lvmlib.models import ENERGY_DEFAULTS, ModelError, build_model, count_parameters
from lvmlib.report import findings, tables
from lvmlib.training import CheckpointError, fit, load_checkpoint, save_checkpoint
from tests.values import per_row_values

D = 16
ENERGY = dict(head="energy", energy_hidden=32, energy_noise_dim=8)
ENERGY_LOSS = {"mse": 0.0, "energy": 1.0}


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def spec(**sections):
    return run_spec({"model": {"name": "transformer"}, "data": {"synthetic": {}}, **sections})


# ----------------------------------------------------------------------------------------
# The energy head

def test_energy_head_config_defaults_and_refusals():
    model = build_model("lstm", dim=D, hidden=16, head="energy")
    assert model.head == "energy" and model.flow is None and not model.predicts_every_position
    assert {k: model.config[k] for k in ENERGY_DEFAULTS} == ENERGY_DEFAULTS           # all in the config
    assert "head" not in build_model("lstm", dim=D, hidden=16).config
    for options, match in [({"energy_samples": 4}, "need head='energy'"),
                           ({"head": "flow", "energy_hidden": 8}, "need head='energy'"),
                           ({"head": "energy", "flow_steps": 4}, "need head='flow'"),
                           ({"head": "energy", "energy_train_samples": 1}, "energy_train_samples"),
                           ({"head": "energy", "energy_beta": 2.0}, "energy_beta"),
                           ({"head": "energy", "energy_hidden": True}, "energy_hidden"),
                           ({"head": "energy", "energy_seed": 1.5}, "energy_seed")]:
        with pytest.raises(ModelError, match=match):
            build_model("lstm", dim=D, hidden=16, **options)
    lcm = build_model("base_lcm", dim=D, d_model=16, layers=1, heads=2, ff=32, **ENERGY)
    assert not lcm.predicts_every_position
    with pytest.raises(ModelError, match="no raw_all"):
        lcm.raw_all(unit(2, 5, D))


def test_energy_loss_is_the_energy_score():
    torch.manual_seed(0)
    model = build_model("lstm", dim=D, hidden=16, energy_train_samples=3, **ENERGY).eval()   # no dropout
    ctx, y = unit(4, 5, D), unit(4, D, seed=1)
    c = model.condition(ctx)
    loss = model.energy.loss(c, y, torch.Generator().manual_seed(7))
    x = model.energy.draws(c, 3, torch.Generator().manual_seed(7))             # the same draws
    expected = []
    for b in range(4):
        to_y = np.mean([torch.linalg.vector_norm(x[b, i] - y[b]).item() for i in range(3)])
        spread = np.mean([torch.linalg.vector_norm(x[b, i] - x[b, j]).item()
                          for i in range(3) for j in range(3) if i != j])
        expected.append(to_y - 0.5 * spread)
    assert loss.item() == pytest.approx(np.mean(expected), abs=1e-5)
    assert torch.allclose(model.head_loss(ctx, y, torch.Generator().manual_seed(7)), loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_energy_prediction_is_deterministic_and_averages_its_samples():
    torch.manual_seed(0)
    model = build_model("lstm", dim=D, hidden=16, energy_samples=5, **ENERGY).eval()
    ctx = unit(3, 5, D)
    with torch.no_grad():
        a = model(ctx)
        torch.manual_seed(123)                                                  # the global RNG plays no part
        assert torch.equal(a, model(ctx))
        c = model.condition(ctx)
        draws = model.energy.draws(c, 5, torch.Generator().manual_seed(model.energy.seed))
        assert torch.allclose(model.raw(ctx), draws.mean(dim=1), atol=1e-6)
        assert draws.std(dim=1).mean() > 0                                     # the samples differ


@pytest.fixture(scope="module")
def rotation():
    bank, _ = synthetic_bank(n_articles=60, length=20, dim=32, noise=0.05)
    return bank, sequences(bank, "train"), sequences(bank, "val")


@pytest.fixture(scope="module")
def trained_energy(rotation, tmp_path_factory):
    bank, tr, va = rotation
    torch.manual_seed(0)
    model = build_model("transformer", dim=32, d_model=48, layers=2, heads=4, ff=96, dropout=0.0,
                        head="energy", energy_hidden=64)
    train = {"epochs": 10, "batch_size": 32, "lr": 3.0e-3, "device": "cpu"}
    return fit(model, tr, va, spec(loss=ENERGY_LOSS, train=train), bank=bank,
               out_dir=tmp_path_factory.mktemp("energy"), progress=False)


def test_energy_head_learns_the_rotation_rule(rotation, trained_energy):
    _, _, va = rotation
    # copy-last and the context mean score about 0 on this bank; the rule is learnable
    assert trained_energy.best_val_cosine > 0.6, trained_energy.best_val_cosine
    first, last = trained_energy.history[0], trained_energy.history[-1]
    assert set(first["train_parts"]) == set(first["val_parts"]) == {"energy"}
    assert last["val_parts"]["energy"] < first["val_parts"]["energy"]
    with torch.no_grad():
        pred = trained_energy.model.eval()(torch.as_tensor(va.contexts))
    cos = F.cosine_similarity(pred, torch.as_tensor(va.targets), dim=-1).mean().item()
    assert cos == pytest.approx(trained_energy.best_val_cosine, abs=1e-5)     # fit's val cosine = the prediction


def test_energy_checkpoint_reloads_and_verifies(rotation, trained_energy, tmp_path):
    _, _, va = rotation
    model, info = load_checkpoint(trained_energy.checkpoint)
    assert model.head == "energy" and info["model_config"]["energy_samples"] == 8
    ctx = torch.as_tensor(va.contexts)
    with torch.no_grad():
        assert torch.allclose(model(ctx), trained_energy.model.eval()(ctx), atol=1e-6)
    payload = torch.load(trained_energy.checkpoint, weights_only=True)
    payload["state_dict"]["energy.mlp.out.1.weight"] += 1e-2                     # the head is probed too
    torch.save(payload, tmp_path / "altered.pt")
    with pytest.raises(CheckpointError, match="probe outputs differ"):
        load_checkpoint(tmp_path / "altered.pt")
    assert save_checkpoint(tmp_path / "again.pt", model).is_file()


def test_loss_terms_that_do_not_fit_the_energy_head_are_refused(rotation):
    bank, tr, va = rotation
    energy = build_model("lstm", dim=32, hidden=16, head="energy", energy_hidden=16)
    plain = build_model("lstm", dim=32, hidden=16)
    flow = build_model("lstm", dim=32, hidden=16, head="flow", flow_hidden=16)
    for model, loss, match in [(energy, {"energy": 1.0}, r"loss\.mse > 0 with a head='energy'"),
                               (energy, {"mse": 0.0, "energy": 1.0, "info_nce": 0.5}, r"loss\.info_nce"),
                               (energy, {"mse": 0.0}, r"needs loss\.energy > 0"),
                               (energy, {"mse": 0.0, "energy": 1.0, "flow": 1.0}, "head='flow'"),
                               (plain, {"energy": 1.0}, "head='energy'"),
                               (flow, {"mse": 0.0, "flow": 1.0, "energy": 1.0}, "head='energy'")]:
        with pytest.raises(InputError, match=match):
            fit(model, tr, va, spec(loss=loss, train={"epochs": 1, "device": "cpu"}), bank=bank, progress=False)
    with pytest.raises(InputError, match="energy"):
        loss_config({"energy": -1.0})


# ----------------------------------------------------------------------------------------
# MSE at every position (Base-LCM) or the last only; InfoNCE with the context as negatives

def test_mse_all_positions_is_the_default_and_last_only_is_an_option():
    assert loss_config()["all_positions"] is True
    torch.manual_seed(0)
    model = build_model("base_lcm", dim=D, d_model=16, layers=1, heads=2, ff=32, dropout=0.0)
    ctx, y = unit(6, 5, D), unit(6, D, seed=2)
    every, parts_every, pred_every = Objective(model)(ctx, y)
    last, parts_last, pred_last = Objective(model, {"all_positions": False})(ctx, y)
    raw_all = model.raw_all(ctx)
    assert every.item() == pytest.approx(F.mse_loss(raw_all, torch.cat([ctx[:, 1:], y[:, None]], 1)).item())
    assert last.item() == pytest.approx(F.mse_loss(raw_all[:, -1], y).item())
    assert torch.allclose(pred_every, pred_last)                 # the same prediction, only the loss differs
    with pytest.raises(InputError, match="all_positions"):
        loss_config({"all_positions": 1})
    # a model that predicts the last position only is unaffected by the option
    lstm = build_model("lstm", dim=D, hidden=8).eval()
    assert Objective(lstm)(ctx, y)[0].item() == pytest.approx(Objective(lstm, {"all_positions": False})(ctx, y)[0].item())


def test_info_nce_hard_with_context_only_is_the_small_context_loss():
    """in_batch false, context true, no article offsets: softmax over [y, ctx_0..ctx_4] (Ippolito et
    al. 2020's "small context" negatives), nothing else."""
    pred, y, ctx = unit(5, D), unit(5, D, seed=1), unit(5, 5, D, seed=2)
    got = info_nce_hard_loss(pred, y, 0.07, in_batch=False, contexts=ctx)
    logits = torch.cat([(pred * y).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", pred, ctx)], dim=1) / 0.07
    assert logits.shape == (5, 6)
    assert got.item() == pytest.approx(F.cross_entropy(logits, torch.zeros(5, dtype=torch.long)).item(), rel=1e-6)
    cfg = loss_config({"mse": 0.0, "info_nce_hard": {"weight": 1.0, "in_batch": False, "context": True}})
    assert cfg["info_nce_hard"]["article_offsets"] == []
    model = build_model("lstm", dim=D, hidden=8).eval()
    objective = Objective(model, {"mse": 0.0, "info_nce_hard": {"weight": 1.0, "in_batch": False, "context": True}})
    total, parts, p = objective(ctx, y)
    assert total.item() == pytest.approx(info_nce_hard_loss(p, y, 0.07, in_batch=False, contexts=ctx).item(), rel=1e-5)


def test_energy_and_flow_at_equal_parameter_count_are_possible():
    """The head configurations of notebook 04 trade backbone width for head parameters."""
    backbone = dict(d_model=32, layers=1, heads=2, ff=64)
    p1 = count_parameters(build_model("base_lcm", dim=64, **backbone))
    energy = count_parameters(build_model("base_lcm", dim=64, **{**backbone, "ff": 16}, head="energy",
                                          energy_hidden=32, energy_noise_dim=8))
    assert abs(energy / p1 - 1) < 0.25


# ----------------------------------------------------------------------------------------
# The TL;DR

def summary_frame():
    """The three objectives' runs as seed_summary sees them, and their per-row values (ca_meta has none: it is
    named without a tie test)."""
    rows = []
    for seed in range(3):
        d = 0.002 * seed
        rows += [{"config": "P1 MSE", "val_cos": 0.45, "val_margin": -0.20 + d, "val_r1": 0.01, "val_r1_excl": 0.10 + d, "ca": 0.80,
                  "ca_meta": 0.95, "converged": True},
                 {"config": "InfoNCE (context)", "val_cos": 0.10 + d, "val_margin": -0.05 + d, "val_r1": 0.05 + d, "val_r1_excl": 0.12,
                  "ca": 0.70 + d, "ca_meta": 0.90, "converged": True},
                 {"config": "energy head", "val_cos": 0.40, "val_margin": -0.10 + d, "val_r1": 0.02, "val_r1_excl": 0.15 + d,
                  "ca": 0.85 + d, "ca_meta": 0.97 + d / 10, "converged": True}]
    rows = pd.DataFrame(rows).assign(label=lambda d: d.config + " · seed " + (d.index // 3).astype(str))
    values = per_row_values({r["label"]: {m: r[m] for m in ("val_cos", "val_margin", "val_r1", "val_r1_excl", "ca")}
                             for _, r in rows.iterrows()}, noise=0.005)
    return tables.seed_summary(rows, by="config", metrics=["val_cos", "val_margin", "val_r1", "val_r1_excl", "ca",
                                                           "ca_meta"], values=values), values


def gate_frame(passing=()):
    return pd.DataFrame([{"label": f"{c} · seed {s}", "split": split, "A": "PASS" if (c, split) in passing else "fail",
                          "B": "fail"} for c in ("P1 MSE", "InfoNCE (context)", "energy head")
                         for s in range(3) for split in ("VAL", "OOD")])


def test_objectives_tldr_names_the_best_with_intervals_and_the_ceiling_gap():
    summary, values = summary_frame()
    ceiling = {"k": 16, "train_concepts": 20000, "margin": 0.06, "r1": 0.13, "r1_excl": 0.18, "cos": 0.38}
    rows = pd.DataFrame([{"label": f"{c} · seed {s}", "converged": not (c == "flow head" and s == 1)}
                         for c in ("P1 MSE", "flow head") for s in range(3)])
    tldr = findings.objectives(summary, values, ceiling, {"val_margin": 0.53}, gate_frame(), floor=0.15, copy_r1=0.181,
                               rows=rows, previous={"source": "old report", "passing_A_and_B": 0, "runs": 15,
                                                    "best_margin": -0.067})
    assert 3 <= len(tldr) <= 5
    text = " ".join(tldr)
    assert tldr[0].startswith("5 of 6 trained runs converged") and "flow head · seed 1" in tldr[0]
    # InfoNCE (context) has the largest margin, but below the linear average's cosine: the ranking skips it, says why
    assert tldr[1].startswith("Largest VAL margin among configurations above the linear average "
                              "(VAL cosine > 0.150): energy head -0.098 [")
    assert "(ahead of the 1 other(s): paired, Holm-adjusted) over 3 seed(s), at VAL cosine 0.400" in tldr[1]
    assert "above P1 MSE's -0.198 [" in tldr[1] and "(paired +0.100 [" in tldr[1]
    assert "InfoNCE (context) has a larger one, -0.048 [" in tldr[1] and "below the linear average's" in tldr[1]
    assert "Best in-article R@1 (5CAT B): InfoNCE (context) 0.052" in text
    assert "left out of the candidates: energy head 0.152" in text and "Best CA: energy head 0.852" in text
    assert "energy head 0.970 (not tested against the others: no per-row values)" in text
    assert "0 of 18 converged run × split results pass A" in text and "0 pass B" in text
    assert "had 0 of 15 runs passing A and B, its best trained margin -0.067" in text
    assert "margin +0.060 vs energy head's -0.098 (+0.158 to go)" in text and "0.180 vs the best model's 0.152" in text
    assert "copy-last, the concept nearest the last context concept, scores 0.181 there" in text
    assert "+0.530" in text
    assert findings.best_forward(summary, 0.15).config == "energy head"
    assert findings.best_forward(summary).config == "InfoNCE (context)"     # no floor: the largest margin
    assert findings.best_forward(summary, 0.9) is None


def test_objectives_tldr_names_passing_runs_and_handles_no_convergence():
    ceiling = {"k": 4, "train_concepts": 100, "margin": 0.0, "r1": 0.0, "r1_excl": 0.0}
    summary, values = summary_frame()
    tldr = findings.objectives(summary, values, ceiling, {"val_margin": 0.5}, gate_frame(passing={("energy head", "VAL")}))
    assert len(tldr) == 4 and tldr[0].startswith("Largest VAL margin: InfoNCE (context) -0.048")
    assert "3 of 18 converged run × split results pass A" in tldr[2]
    assert "(energy head · seed 0, energy head · seed 1, energy head · seed 2)" in tldr[2]
    nothing = findings.objectives(summary, values, ceiling, {"val_margin": 0.5}, gate_frame(), floor=0.9)
    assert nothing[0].startswith("No configuration predicts better than the linear average (VAL cosine above 0.900)")
    empty = findings.objectives(summary.iloc[0:0], values, {}, {}, gate_frame())
    assert len(empty) == 1 and "No configuration converged" in empty[0]
