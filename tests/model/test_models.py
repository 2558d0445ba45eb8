"""Model contract, SPEC parameter counts, baselines, the P2 / P5 options and the flow head."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvmlib.models import (CONTEXT, FLOW_DEFAULTS, MODEL_NAMES, ModelError, build_model, count_parameters,
                           decay_mask)

D = 16
SMALL = {  # reduced sizes so the contract tests run in milliseconds
    "amn": dict(attn_dim=8, hidden=16, mid=8), "lstm": dict(hidden=16), "gru": dict(hidden=16, blocks=2),
    "transformer": dict(d_model=16, layers=1, heads=2, ff=32), "graphmert": dict(d_model=16, layers=2, heads=2, ff=32),
    "base_lcm": dict(d_model=16, layers=1, heads=2, ff=32),
}


FLOW = {"head": "flow", "flow_hidden": 16, "flow_layers": 2, "flow_steps": 3}


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def small(name, **options):
    torch.manual_seed(0)
    model = build_model(name, dim=D, **SMALL.get(name, {}), **options)
    if name == "global_mean":
        model.fit(unit(20, D, seed=9).numpy())
    return model.eval()


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("options", [{}, {"residual": True}, {"positional_scale": 0.03}, FLOW,
                                     {**FLOW, "residual": True, "flow_samples": 2}])
def test_contract(name, options):
    model = small(name, **options)
    ctx = unit(4, CONTEXT, D)
    out, raw = model(ctx), model.raw(ctx)
    assert out.shape == raw.shape == (4, D)
    assert torch.allclose(out.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(out, F.normalize(raw, dim=-1), atol=1e-6)
    # config rebuilds the same architecture; the state dict then gives the same outputs
    twin = build_model(**model.config)
    twin.load_state_dict(model.state_dict())
    assert count_parameters(twin) == count_parameters(model)
    assert torch.allclose(twin.eval()(ctx), out, atol=1e-6)


# SPEC table (D=768); our counts are 1,510,912 / 5,120,768 / 7,095,552 / 17,867,520 / 67,352,832
@pytest.mark.parametrize("name,expected", [("amn", 1.51e6), ("lstm", 5.1e6), ("gru", 7.1e6),
                                           ("transformer", 17.9e6), ("graphmert", 67e6)])
def test_parameter_counts_match_spec(name, expected):
    with torch.device("meta"):  # shapes only: no 270 MB of random init for GraphMERT
        n = count_parameters(build_model(name, dim=768))
    assert abs(n - expected) / expected <= 0.02, f"{name}: {n:,} parameters vs SPEC {expected:,.0f}"


def test_baselines_compute_what_they_claim():
    ctx = unit(3, CONTEXT, D)
    assert torch.allclose(small("copy_last")(ctx), ctx[:, -1], atol=1e-6)
    assert torch.allclose(small("linear_average")(ctx), F.normalize(ctx.mean(1), dim=-1), atol=1e-6)
    for name in ("linear_average", "copy_last", "global_mean"):
        assert count_parameters(build_model(name, dim=D)) == 0


def test_global_mean_comes_from_training_targets():
    targets = unit(50, D, seed=3).numpy()
    model = build_model("global_mean", dim=D)
    with pytest.raises(ModelError, match="fit"):
        model(unit(2, CONTEXT, D))               # no mean yet: refuse rather than invent one
    model.fit(targets)
    expected = F.normalize(torch.from_numpy(targets).mean(0), dim=-1)
    assert torch.allclose(model(unit(2, CONTEXT, D))[1], expected, atol=1e-6)
    given = build_model("global_mean", dim=D, mean=targets.mean(0))
    assert torch.allclose(given(unit(1, CONTEXT, D))[0], expected, atol=1e-6)
    assert "mean" not in given.config                     # data travels in the state dict, not the config
    twin = build_model(**given.config)
    twin.load_state_dict(given.state_dict())
    assert torch.allclose(twin(unit(1, CONTEXT, D))[0], expected, atol=1e-6)


def test_bad_name_option_and_input_are_named():
    with pytest.raises(ModelError, match="'lstmm'"):
        build_model("lstmm")
    with pytest.raises(ModelError, match="hiden"):
        build_model("lstm", dim=D, hiden=3)
    with pytest.raises(ModelError, match=r"\(B, 5, 16\)"):
        small("lstm")(unit(2, 4, D))


def test_residual_wrapper_formula_and_alpha_floor():
    model = small("lstm", residual=True, alpha_floor=0.1)
    assert model.alpha.item() == pytest.approx(0.5, abs=1e-6)        # init 0.5
    ctx = unit(3, CONTEXT, D)
    assert torch.allclose(model(ctx), ctx[:, -1], atol=1e-6)          # the correction starts at zero
    with torch.no_grad():
        torch.nn.init.normal_(model.core.head.weight)                 # as after some training
    delta = model.core(ctx)
    expected = F.normalize(F.normalize(ctx[:, -1], dim=-1) + 0.5 * delta, dim=-1)
    assert torch.allclose(model(ctx), expected, atol=1e-6)
    with torch.no_grad():
        model.alpha_rho.fill_(-1e4)                                   # push alpha as low as it goes
    assert model.alpha.item() == pytest.approx(0.1)                   # ... it stops at the floor, not 0
    assert not torch.allclose(model(ctx), ctx[:, -1], atol=1e-3)      # so it is not pure copying
    model.alpha_rho.grad = None
    model.raw(ctx).sum().backward()
    assert model.alpha_rho.grad is not None                           # alpha is learnable


def test_positional_channel_is_appended_and_used():
    model = small("lstm", positional_scale=0.03)
    assert model.core.lstm.input_size == D + 1
    x = model._input(unit(2, CONTEXT, D))
    assert torch.allclose(x[0, :, -1], torch.linspace(0, 1, CONTEXT) * 0.03)
    other = small("lstm", positional_scale=0.5)
    other.load_state_dict(model.state_dict())                        # same weights, other scale
    ctx = unit(2, CONTEXT, D)
    assert model(ctx).shape == (2, D)
    assert not torch.allclose(model(ctx), other(ctx))


def test_base_lcm_predicts_every_position_causally():
    model = small("base_lcm")
    ctx = unit(2, CONTEXT, D)
    all_pos = model.raw_all(ctx)
    assert all_pos.shape == (2, CONTEXT, D)
    assert torch.allclose(all_pos[:, -1], model.raw(ctx), atol=1e-6)
    changed = ctx.clone()
    changed[:, 3] = unit(2, D, seed=5)
    after = model.raw_all(changed)
    assert torch.allclose(after[:, :3], all_pos[:, :3], atol=1e-5)   # positions 0..2 cannot see slot 3
    assert not torch.allclose(after[:, 3:], all_pos[:, 3:], atol=1e-5)
    with pytest.raises(ModelError, match="raw_all"):
        small("lstm").raw_all(ctx)


def test_base_lcm_robust_scaler_is_fitted_and_undone():
    model = small("base_lcm")
    vectors = (unit(200, D, seed=2) * 0.3 + 0.1).numpy()
    model.fit(vectors)
    assert torch.allclose(model.core.center, torch.from_numpy(np.median(vectors, 0)), atol=0.02)
    q25, q75 = np.percentile(vectors, [25, 75], axis=0)
    assert torch.allclose(model.core.spread, torch.from_numpy((q75 - q25) / 1.349).float(), atol=1e-3)
    # post-net undoes the scaling: raw = post_net(h) * spread + center
    ctx = unit(2, CONTEXT, D)
    with torch.no_grad():
        model.core.post_net.weight.zero_()
        model.core.post_net.bias.zero_()
    assert torch.allclose(model.raw(ctx), model.core.center.expand(2, -1), atol=1e-6)
    fixed = build_model("base_lcm", dim=D, scale=0.25, **SMALL["base_lcm"])
    fixed.fit(vectors)                                               # a fixed scale stays fixed
    assert torch.all(fixed.core.spread == 0.25) and torch.all(fixed.core.center == 0)


def test_graphmert_decay_mask():
    m = decay_mask(5, decay=0.6, window=2)
    assert m[0, 2] == 0 and m[4, 2] == 0 and m[2, 2] == 0
    assert m[0, 3].item() == pytest.approx(-1e9 * (1 - 0.6 ** 3), rel=1e-6)
    assert m[4, 0].item() == pytest.approx(-1e9 * (1 - 0.6 ** 4), rel=1e-6)
    assert torch.equal(m, m.T)


# ----------------------------------------------------------------------------------------
# Generative head (conditional flow matching)

def test_flow_head_config_defaults_and_refusals():
    model = build_model("lstm", dim=D, hidden=16, head="flow")
    assert model.head == "flow" and build_model("lstm", dim=D, hidden=16).head is None
    # every flow option is in the config, defaults included, so the rebuild cannot drift
    assert {k: model.config[k] for k in FLOW_DEFAULTS} == {"flow_hidden": 512, "flow_layers": 3, "flow_steps": 10,
                                                          "flow_samples": 1, "flow_noise": 1.0, "flow_seed": 0}
    assert "head" not in build_model("lstm", dim=D, hidden=16, head=None).config   # today's configs unchanged
    with pytest.raises(ModelError, match="flow_steps need head='flow'"):
        build_model("lstm", dim=D, flow_steps=4)
    with pytest.raises(ModelError, match="'diffusion'"):
        build_model("lstm", dim=D, head="diffusion")
    with pytest.raises(ModelError, match="flow_step"):
        build_model("lstm", dim=D, head="flow", flow_step=4)                     # typo: not a flow option
    for key, bad in [("flow_steps", 0), ("flow_samples", 1.5), ("flow_hidden", True), ("flow_layers", 0),
                     ("flow_noise", 0.0), ("flow_seed", "a")]:
        with pytest.raises(ModelError, match=key):
            build_model("lstm", dim=D, head="flow", **{key: bad})


def test_flow_prediction_is_deterministic_and_ignores_global_rng():
    model = small("transformer", **FLOW)
    ctx = unit(4, CONTEXT, D)
    a = model(ctx)
    torch.manual_seed(123)
    torch.randn(1000)                                                     # move the global RNG along
    assert torch.equal(model(ctx), a)
    amn = small("amn", **FLOW).train()                                     # no dropout anywhere: train mode too
    first = amn(ctx)
    torch.randn(1000)
    assert torch.equal(amn(ctx), first)
    reseeded = build_model(**{**model.config, "flow_seed": 1})
    reseeded.load_state_dict(model.state_dict())
    assert not torch.allclose(reseeded.eval()(ctx), a, atol=1e-4)           # the noise is what flow_seed picks


def test_flow_samples_are_averaged_endpoints():
    model = small("lstm", **{**FLOW, "flow_samples": 3})
    ctx = unit(5, CONTEXT, D)
    c = model.condition(ctx)
    ends = model.flow.draws(c, 3, torch.Generator().manual_seed(model.flow.seed))   # what raw() averages
    assert ends.shape == (5, 3, D)
    assert not torch.allclose(ends[:, 0], ends[:, 1], atol=1e-3)              # three different draws per row
    assert torch.allclose(model.raw(ctx), ends.mean(dim=1), atol=1e-6)
    assert torch.allclose(model(ctx), F.normalize(ends.mean(dim=1), dim=-1), atol=1e-6)
    one = build_model(**{**model.config, "flow_samples": 1})
    one.load_state_dict(model.state_dict())                                   # same weights, one draw
    assert not torch.allclose(one.eval()(ctx), model(ctx), atol=1e-3)


def test_flow_euler_integration_by_hand():
    model = small("gru", **{**FLOW, "flow_steps": 2, "flow_noise": 0.5, "flow_seed": 7})
    ctx = unit(3, CONTEXT, D)
    c = model.condition(ctx)
    x = torch.randn(3, D, generator=torch.Generator().manual_seed(7)) * 0.5
    for t in (0.0, 0.5):
        x = x + 0.5 * model.flow.velocity(x, torch.full((3,), t), c)
    assert torch.allclose(model.raw(ctx), x / D ** 0.5, atol=1e-5)


def test_flow_matching_loss_formula_and_gradient():
    model = small("lstm", **{**FLOW, "flow_noise": 0.7})
    ctx, y = unit(6, CONTEXT, D), unit(6, D, seed=3)
    loss = model.head_loss(ctx, y, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(6, D, generator=g) * 0.7
    t = torch.rand(6, generator=g)[:, None]
    x1 = y * D ** 0.5                                                          # unit-variance coordinates
    v = model.flow.velocity((1 - t) * x0 + t * x1, t[:, 0], model.condition(ctx))
    assert loss.item() == pytest.approx(((v - (x1 - x0)) ** 2).sum(-1).mean().item() / D, rel=1e-5)
    loss.backward()
    assert model.core.lstm.weight_ih_l0.grad.abs().sum() > 0                   # the core learns through the head
    with pytest.raises(ModelError, match="no generative head"):
        small("lstm").head_loss(ctx, y)


def test_flow_head_on_base_lcm_predicts_last_position_only():
    model = small("base_lcm", **FLOW)
    assert not model.predicts_every_position
    with pytest.raises(ModelError, match="raw_all"):
        model.raw_all(unit(2, CONTEXT, D))


def test_amn_starts_as_the_linear_average_and_learns_position_weights():
    model = small("amn")
    ctx = unit(4, CONTEXT, D)
    assert torch.allclose(model(ctx), F.normalize(ctx.mean(1), dim=-1), atol=1e-6)
    model.raw(ctx).sum().backward()
    assert model.core.position_weights.grad is not None and model.core.mlp[-1].weight.grad.abs().sum() > 0
    original = small("amn", baseline_start=False)                       # the SPEC's: correction starts as noise
    assert not torch.allclose(original(ctx), F.normalize(ctx.mean(1), dim=-1), atol=1e-2)
    assert count_parameters(original) == count_parameters(model) - CONTEXT


@pytest.mark.parametrize("name", ["lstm", "gru", "transformer", "graphmert", "base_lcm"])
def test_baseline_start_begins_at_the_position_weighted_average(name):
    model = small(name, baseline_start=True).eval()
    if name == "base_lcm":
        model.fit(unit(64, D))             # a fitted scaler must not move the start (the center is left out)
    ctx = unit(4, CONTEXT, D)
    with torch.no_grad():
        assert torch.allclose(model.raw(ctx), ctx.mean(1), atol=1e-6)                 # w_i = 1/5, correction 0
        model.baseline.weights.copy_(torch.tensor([0.0, 0.0, 0.1, 0.3, 0.6]))
        assert torch.allclose(model.raw(ctx), torch.einsum("t,btd->bd", model.baseline.weights, ctx), atol=1e-6)
    model.train()
    model.raw(ctx).pow(2).sum().backward()
    assert model.baseline.weights.grad.abs().sum() > 0                              # the weights are learned
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.core.parameters())
    assert model.config["baseline_start"] is True


def test_baseline_start_every_position_is_each_prefix_average():
    model = small("base_lcm", baseline_start=True).eval()
    ctx = unit(3, CONTEXT, D)
    prefix_means = ctx.cumsum(1) / torch.arange(1, CONTEXT + 1)[None, :, None]
    with torch.no_grad():
        assert torch.allclose(model.raw_all(ctx), prefix_means, atol=1e-6)
        model.baseline.weights.copy_(torch.tensor([0.1, 0.1, 0.2, 0.2, 0.4]))
        out = model.raw_all(ctx)
    # the last position is the weighted sum; position 1 uses the two latest weights, rescaled to the same total
    assert torch.allclose(out[:, -1], torch.einsum("t,btd->bd", model.baseline.weights, ctx), atol=1e-6)
    assert torch.allclose(out[:, 1], (0.2 * ctx[:, 0] + 0.4 * ctx[:, 1]) * (1.0 / 0.6), atol=1e-6)


def test_baseline_start_refused_without_a_trained_core_and_kept_by_amn():
    with pytest.raises(ModelError, match="baseline_start"):
        build_model("linear_average", D, baseline_start=True)
    amn = small("amn", baseline_start=False)                 # AMN's own option: the wrapper adds nothing
    assert amn.baseline is None and not amn.core.position_weights.requires_grad
