"""The generative (flow-matching) head trained end to end: it learns a known rule, its predictions
are deterministic and survive a verified checkpoint, averaging samples helps, loss terms that do
not fit it are refused, and a resumed run replays an uninterrupted one."""
import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from lvmlib.data import sequences, synthetic_bank
from lvmlib.models import build_model
from lvmlib.cli import main as lvm
from lvmlib.config import run_spec
from lvmlib.errors import InputError
from lvmlib.training import CheckpointError, fit, load_checkpoint
from lvmlib.training import train as train_spec


def train(params, **kw):
    return train_spec(run_spec(params), **kw)


def spec(**sections):
    return run_spec({"model": {"name": "amn"}, "data": {"synthetic": {}}, **sections})

SYNTH = {"n_articles": 60, "length": 20, "dim": 32, "noise": 0.05}
FLOW_MODEL = dict(d_model=48, layers=2, heads=4, ff=96, dropout=0.0, head="flow", flow_hidden=64, flow_layers=2)
FLOW_LOSS = {"mse": 0.0, "flow": 1.0}
TRAIN = {"epochs": 15, "batch_size": 32, "lr": 3.0e-3, "device": "cpu"}


@pytest.fixture(scope="module")
def rotation_data():
    bank, _ = synthetic_bank(**SYNTH)
    return bank, sequences(bank, "train"), sequences(bank, "val")


@pytest.fixture(scope="module")
def trained(rotation_data, tmp_path_factory):
    bank, tr, va = rotation_data
    torch.manual_seed(0)
    model = build_model("transformer", dim=32, **FLOW_MODEL)
    out = tmp_path_factory.mktemp("flow")
    return fit(model, tr, va, spec(loss=FLOW_LOSS, train=TRAIN), bank=bank, out_dir=out, progress=False)


def val_cosine(model, va):
    with torch.no_grad():
        pred = model.eval()(torch.as_tensor(va.contexts))
    return F.cosine_similarity(pred, torch.as_tensor(va.targets), dim=-1).mean().item()


def test_flow_head_learns_the_rotation_rule(rotation_data, trained):
    bank, tr, va = rotation_data
    baseline = {name: fit(build_model(name, dim=32), tr, va, spec(train=TRAIN), bank=bank, progress=False).best_val_cosine
                for name in ("linear_average", "copy_last")}
    assert max(baseline.values()) < 0.2
    assert trained.best_val_cosine > max(baseline.values()) + 0.4, (trained.best_val_cosine, baseline)
    assert val_cosine(trained.model, va) == pytest.approx(trained.best_val_cosine, abs=1e-5)  # fit's val = sampling
    first, last = trained.history[0], trained.history[-1]
    assert set(first["train_parts"]) == set(first["val_parts"]) == {"flow"}
    assert last["val_parts"]["flow"] < first["val_parts"]["flow"] - 0.5     # from ~2 (noise vs target) down


def test_flow_checkpoint_reloads_and_verifies_its_probe(rotation_data, trained, tmp_path):
    _, _, va = rotation_data
    model, info = load_checkpoint(trained.checkpoint)                        # rebuilds and re-runs the probe
    assert model.head == "flow" and info["model_config"]["flow_steps"] == 10
    ctx = torch.as_tensor(va.contexts)
    with torch.no_grad():
        assert torch.allclose(model(ctx), trained.model.eval()(ctx), atol=1e-6)
        assert torch.equal(model(ctx), model(ctx))
    payload = torch.load(trained.checkpoint, weights_only=True)
    payload["state_dict"]["flow.skip.weight"] += 1e-3                        # the head's weights are probed too
    torch.save(payload, tmp_path / "altered.pt")
    with pytest.raises(CheckpointError, match="probe outputs differ"):
        load_checkpoint(tmp_path / "altered.pt")


def test_averaging_flow_samples_beats_one_sample(rotation_data, trained):
    _, _, va = rotation_data
    scores = {}
    for samples in (1, 8):
        twin = build_model(**{**trained.model.config, "flow_samples": samples})
        twin.load_state_dict(trained.model.state_dict())                   # same weights, more draws
        scores[samples] = val_cosine(twin, va)
    assert scores[1] == pytest.approx(trained.best_val_cosine, abs=1e-5)
    assert scores[8] > scores[1] + 0.05, scores


def test_loss_terms_that_do_not_fit_the_model_are_refused(rotation_data):
    bank, tr, va = rotation_data
    flow_model = build_model("lstm", dim=32, hidden=16, head="flow", flow_hidden=16)
    plain = build_model("lstm", dim=32, hidden=16)
    for model, loss, match in [
            (flow_model, {"flow": 1.0}, r"loss\.mse > 0 with a head='flow'"),       # mse defaults to 1
            (flow_model, {"mse": 0.0, "flow": 1.0, "guard": {"weight": 0.1}}, r"loss\.guard\.weight"),
            (flow_model, {"mse": 0.0, "flow": 1.0, "info_nce_hard": {"weight": 0.1}}, r"loss\.info_nce_hard\.weight"),
            (flow_model, {"mse": 0.0}, r"needs loss\.flow > 0"),
            (plain, {"flow": 1.0}, "head='flow'"),
            (plain, {"flow_weight": 1.0}, r"params\.loss\.flow_weight")]:
        with pytest.raises(InputError, match=match):
            fit(model, tr, va, spec(loss=loss, train={**TRAIN, "epochs": 1}), bank=bank, progress=False)


def tiny_flow_params(out, epochs=4):
    return {"seed": 0, "data": {"synthetic": {"n_articles": 24, "length": 12, "dim": 8, "noise": 0.05}},
            "model": {"name": "lstm", "options": {"hidden": 16, "dropout": 0.2, "head": "flow", "flow_hidden": 16,
                                                  "flow_steps": 4, "flow_samples": 2}},
            "loss": {**FLOW_LOSS, "context_drop": 0.1},
            "train": {"epochs": epochs, "batch_size": 16, "lr": 3.0e-3, "device": "cpu"}, "out": str(out)}


def test_flow_resume_continues_the_same_run(tmp_path):
    def run(params, name, *extra):
        (tmp_path / name).write_text(yaml.safe_dump(params))
        assert lvm(["train", "--params", str(tmp_path / name), "--quiet", *extra]) == 0

    run(tiny_flow_params(tmp_path / "straight"), "straight.yaml")
    run(tiny_flow_params(tmp_path / "resumed", epochs=2), "first.yaml")
    run(tiny_flow_params(tmp_path / "resumed"), "second.yaml", "--resume")
    strip = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]
    a = json.loads((tmp_path / "straight/history.json").read_text())
    b = json.loads((tmp_path / "resumed/history.json").read_text())
    assert len(a) == len(b) == 4 and strip(a) == strip(b)
    ma, _ = load_checkpoint(tmp_path / "straight/last.pt")
    mb, _ = load_checkpoint(tmp_path / "resumed/last.pt")
    for x, y in zip(ma.state_dict().values(), mb.state_dict().values()):
        assert torch.equal(x, y)
    again = train({**tiny_flow_params(tmp_path / "straight"), "out": None}, progress=False)
    assert strip(again.history) == strip(a)                                  # same seed, same run


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_flow_noise_is_drawn_on_the_model_device():
    torch.manual_seed(0)
    model = build_model("lstm", dim=16, hidden=16, head="flow", flow_hidden=16).cuda().eval()
    ctx = F.normalize(torch.randn(4, 5, 16, device="cuda"), dim=-1)
    assert torch.equal(model(ctx), model(ctx))
    loss = model.head_loss(ctx, ctx[:, -1], torch.Generator(device="cuda").manual_seed(0))
    assert loss.device.type == "cuda" and torch.isfinite(loss)
