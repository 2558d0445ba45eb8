"""Each loss on a hand-computed case; rollout against real futures; guard on ctx[-1]; the schedule."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lvmlib.data import neighbours, sequences, synthetic_bank
from lvmlib.losses import (LossConfigError, Objective, anti_copy_loss, cosine_loss, directional_guard, drop_context,
                           info_nce_hard_loss, info_nce_loss, loss_config, mse_loss, rollout_loss)
from lvmlib.models import build_model

T = torch.tensor


def test_mse_on_raw_hand_computed():
    raw, target = T([[1.0, 0.0], [0.0, 0.0]]), T([[0.0, 0.0], [0.0, 1.0]])
    assert mse_loss(raw, target).item() == pytest.approx(0.5)   # (1 + 1) / 4 elements


def test_cosine_hand_computed():
    pred = T([[2.0, 0.0], [0.0, 3.0]])                            # not unit: cosine ignores the norm
    target = T([[1.0, 1.0], [0.0, 1.0]]) / T([[math.sqrt(2)], [1.0]])
    assert cosine_loss(pred, target).item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2, abs=1e-6)


def test_info_nce_symmetric_hand_computed():
    # both predictions point at target 0: logits = [[1, 0], [1, 0]] / tau
    pred, target, tau = T([[1.0, 0.0], [1.0, 0.0]]), T([[1.0, 0.0], [0.0, 1.0]]), 0.5
    rows = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2      # CE(y_hat t^T / tau)
    cols = (math.log(2) + math.log(2)) / 2                                   # CE(t y_hat^T / tau)
    assert info_nce_loss(pred, target, tau).item() == pytest.approx((rows + cols) / 2, abs=1e-6)
    # a perfect, well-separated batch costs almost nothing at tau = 0.07
    eye = torch.eye(4)
    assert info_nce_loss(eye, eye, 0.07).item() < 1e-5


def guard_case():
    pred = T([[1.0, 0.0, 0.0]])
    target = T([[0.6, 0.8, 0.0]])                                  # cos(pred, y) = 0.6
    ctx = torch.zeros(1, 5, 3)
    ctx[0, :, 2] = 1.0
    ctx[0, -1] = T([0.8, 0.0, 0.6])                                # cos(pred, ctx[-1]) = 0.8
    ctx[0, -2] = T([1.0, 0.0, 0.0])                                # cos(pred, ctx[-2]) = 1.0
    return pred, target, ctx


def test_guard_hand_computed_and_uses_last_context():
    pred, target, ctx = guard_case()
    value = directional_guard(pred, target, ctx, margin=0.01).item()
    assert value == pytest.approx(0.01 + 0.2, abs=1e-6)           # ReLU(m - (0.6 - 0.8)); ctx[-2] would give 0.41
    other = ctx.clone()
    other[0, -2] = T([0.0, 1.0, 0.0])
    assert directional_guard(pred, target, other, 0.01).item() == pytest.approx(value, abs=1e-7)
    other = ctx.clone()
    other[0, -1] = T([0.0, 0.0, 1.0])                              # cos 0 now: gap 0.6 > m, no penalty
    assert directional_guard(pred, target, other, 0.01).item() == 0.0


def test_anti_copy_hand_computed_over_all_slots():
    pred, target, ctx = guard_case()
    # the closest slot is ctx[-2] (cos 1.0): ReLU(0.05 - (0.6 - 1.0)) = 0.45
    assert anti_copy_loss(pred, target, ctx, margin=0.05).item() == pytest.approx(0.45, abs=1e-6)
    moved = ctx.clone()
    moved[0, 0], moved[0, -2] = ctx[0, -2], ctx[0, 0]              # the offending vector in slot 0 instead
    assert anti_copy_loss(pred, target, moved, margin=0.05).item() == pytest.approx(0.45, abs=1e-6)


def test_context_drop():
    ctx = F.normalize(torch.randn(400, 5, 8), dim=-1)
    assert drop_context(ctx, 0.0) is ctx
    dropped = drop_context(ctx, 0.3, torch.Generator().manual_seed(0))
    zero = dropped.abs().sum(-1) == 0
    kept = (dropped == ctx).all(-1)
    assert torch.all(zero | kept)                                  # a slot is either intact or zeroed
    assert 0.25 < zero.float().mean().item() < 0.35
    again = drop_context(ctx, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(again, dropped)                              # seeded


class RotationOracle(nn.Module):
    """The right answer on the synthetic bank: normalize(R ctx[-1])."""

    def __init__(self, rot):
        super().__init__()
        self.rot = torch.as_tensor(rot)

    def forward(self, ctx):
        return F.normalize(ctx[:, -1] @ self.rot.T, dim=-1)


@pytest.fixture(scope="module")
def rollout_data():
    bank, rot = synthetic_bank(n_articles=6, length=10, dim=16, noise=0.0, seed=1)
    seqs = sequences(bank, "train")
    future, valid = neighbours(bank, seqs.index, range(4))
    return bank, rot, seqs, torch.as_tensor(future), torch.as_tensor(valid)


def test_rollout_scores_real_future_targets(rollout_data):
    bank, rot, seqs, future, valid = rollout_data
    ctx = torch.as_tensor(seqs.contexts)
    assert not valid.all()                                          # windows near the end run out of article
    oracle = RotationOracle(rot)
    assert rollout_loss(oracle, ctx, future, valid).item() < 1e-5  # fed back, it stays on the true path
    copy = build_model("copy_last", dim=16)
    expected = ((1 - F.cosine_similarity(ctx[:, -1, None, :], future, dim=-1)) * valid).sum() / valid.sum()
    assert rollout_loss(copy, ctx, future, valid).item() == pytest.approx(expected.item(), abs=1e-5)


def test_rollout_feeds_predictions_back_by_hand():
    ctx = F.normalize(torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(4)), dim=-1)
    future = F.normalize(torch.randn(3, 2, 6, generator=torch.Generator().manual_seed(5)), dim=-1)
    valid = torch.ones(3, 2, dtype=torch.bool)
    p0 = F.normalize(ctx.mean(1), dim=-1)
    p1 = F.normalize(torch.cat([ctx[:, 1:], p0[:, None]], 1).mean(1), dim=-1)
    by_hand = ((1 - F.cosine_similarity(p0, future[:, 0], dim=-1)).sum()
               + (1 - F.cosine_similarity(p1, future[:, 1], dim=-1)).sum()) / 6
    model = build_model("linear_average", dim=6)
    assert rollout_loss(model, ctx, future, valid).item() == pytest.approx(by_hand.item(), abs=1e-6)


def test_rollout_depends_on_future_and_masks_outside_article(rollout_data):
    bank, rot, seqs, future, valid = rollout_data
    ctx = torch.as_tensor(seqs.contexts)
    model = build_model("copy_last", dim=16)
    base = rollout_loss(model, ctx, future, valid).item()
    i, h = map(int, torch.nonzero(valid[:, 1:])[0])                 # a valid step h >= 1
    changed = future.clone()
    changed[i, h + 1] = -changed[i, h + 1]
    assert rollout_loss(model, ctx, changed, valid).item() != pytest.approx(base, abs=1e-7)
    i, h = map(int, torch.nonzero(~valid)[0])                       # a step past the article's end
    changed = future.clone()
    changed[i, h] = torch.ones(16)
    assert rollout_loss(model, ctx, changed, valid).item() == pytest.approx(base, abs=1e-7)


def test_objective_schedule_and_validation():
    torch.manual_seed(0)
    model = build_model("lstm", dim=8, hidden=8)
    obj = Objective(model, {"mse": 1.0, "guard": {"weight": 0.5, "margin": 0.01, "start_epoch": 2},
                            "context_drop": 0.0})
    ctx, tgt = F.normalize(torch.randn(4, 5, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    _, warm, _ = obj(ctx, tgt, epoch=1)
    total, on, _ = obj(ctx, tgt, epoch=2)
    _, val, _ = obj(ctx, tgt, epoch=None)                           # validation: every term on
    assert set(warm) == {"mse"} and set(on) == set(val) == {"mse", "guard"}
    assert total.item() == pytest.approx(on["mse"].item() + 0.5 * on["guard"].item(), abs=1e-6)
    with pytest.raises(LossConfigError, match="future"):
        Objective(model, {"rollout": {"weight": 0.1}})(ctx, tgt, epoch=0)


def test_objective_base_lcm_mse_covers_every_position():
    torch.manual_seed(0)
    model = build_model("base_lcm", dim=8, d_model=8, layers=1, heads=2, ff=16).eval()
    ctx, tgt = F.normalize(torch.randn(3, 5, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    _, parts, _ = Objective(model, {"mse": 1.0})(ctx, tgt, epoch=None)
    next_vectors = torch.cat([ctx[:, 1:], tgt[:, None]], 1)
    assert parts["mse"].item() == pytest.approx(F.mse_loss(model.raw_all(ctx), next_vectors).item(), abs=1e-6)


def test_loss_config_defaults_and_unknown_keys():
    cfg = loss_config({"guard": {"weight": 0.002}})
    assert cfg["guard"] == {"weight": 0.002, "margin": 0.01, "start_epoch": 0}
    assert cfg["tau"] == 0.07 and cfg["mse"] == 1.0
    with pytest.raises(LossConfigError, match="'loss.guard.wieght'"):
        loss_config({"guard": {"wieght": 1.0}})
    with pytest.raises(LossConfigError, match="'loss.lambda_dir'"):
        loss_config({"lambda_dir": 0.002})
    with pytest.raises(LossConfigError, match="loss.tau"):
        loss_config({"tau": "hot"})
    with pytest.raises(LossConfigError, match="horizon"):
        loss_config({"rollout": {"horizon": 0}})


# ----------------------------------------------------------------------------------------
# InfoNCE with hard negatives (the same article's concepts and the context)

def hard_case():
    """Two rows, D = 3; row 1's article negatives are both outside the article."""
    e1, e2, e3 = torch.eye(3)
    pred = torch.stack([e1, e3])
    target = torch.stack([T([0.6, 0.8, 0.0]), e3])                  # row 0: cos 0.6, row 1: cos 1
    ctx = torch.stack([e3.expand(5, 3).clone(), e1.expand(5, 3).clone()])
    ctx[0, -1] = T([0.8, 0.0, 0.6])                                 # row 0: ctx[-1] has cos 0.8
    negatives = torch.stack([torch.stack([e1, e2]), torch.stack([e1, e2])])
    valid = T([[True, False], [False, False]])
    return pred, target, ctx, negatives, valid


def test_info_nce_hard_hand_computed():
    pred, target, ctx, negatives, valid = hard_case()
    tau = 0.5
    # row 0: [pos 0.6 | in-batch y1: 0 | ctx: 0, 0, 0, 0, 0.8 | article: 1.0 (valid), masked]
    row0 = [0.6, 0.0, 0, 0, 0, 0, 0.8, 1.0]
    # row 1: [pos 1.0 | in-batch y0: 0 | ctx: 0 x 5 | article: both masked]
    row1 = [1.0, 0.0, 0, 0, 0, 0, 0]
    ce = lambda row: -row[0] / tau + math.log(sum(math.exp(v / tau) for v in row))
    expected = (ce(row0) + ce(row1)) / 2
    got = info_nce_hard_loss(pred, target, tau, in_batch=True, contexts=ctx, negatives=negatives, negatives_valid=valid)
    assert got.item() == pytest.approx(expected, abs=1e-5)
    # each source switched off removes exactly its logits
    no_ctx = info_nce_hard_loss(pred, target, tau, in_batch=True, negatives=negatives, negatives_valid=valid)
    assert no_ctx.item() == pytest.approx((ce([0.6, 0.0, 1.0]) + ce([1.0, 0.0])) / 2, abs=1e-5)
    only_ctx = info_nce_hard_loss(pred, target, tau, in_batch=False, contexts=ctx)
    assert only_ctx.item() == pytest.approx((ce([0.6, 0, 0, 0, 0, 0.8]) + ce([1.0, 0, 0, 0, 0, 0])) / 2, abs=1e-5)


def test_info_nce_hard_ignores_masked_negatives():
    pred, target, ctx, negatives, valid = hard_case()
    base = info_nce_hard_loss(pred, target, 0.1, contexts=ctx, negatives=negatives, negatives_valid=valid)
    changed = negatives.clone()
    changed[~valid] = F.normalize(torch.randn(int((~valid).sum()), 3), dim=-1)   # outside the article: any vector
    changed[0, 1] = pred[0]                                                     # even the prediction itself
    again = info_nce_hard_loss(pred, target, 0.1, contexts=ctx, negatives=changed, negatives_valid=valid)
    assert again.item() == pytest.approx(base.item(), abs=1e-6)
    valid_moved = negatives.clone()
    valid_moved[0, 0] = T([0.0, 1.0, 0.0])                                      # a VALID negative does count
    moved = info_nce_hard_loss(pred, target, 0.1, contexts=ctx, negatives=valid_moved, negatives_valid=valid)
    assert moved.item() < base.item() - 0.1


def test_info_nce_hard_punishes_copying_the_last_context():
    # realistic regime: the truth is close to ctx[-1] (cos ~0.8), so MSE barely minds a copy
    g = torch.Generator().manual_seed(0)
    ctx = F.normalize(torch.randn(32, 5, 64, generator=g), dim=-1)
    target = F.normalize(ctx[:, -1] + 0.75 * F.normalize(torch.randn(32, 64, generator=g), dim=-1), dim=-1)
    assert F.cosine_similarity(ctx[:, -1], target).mean() > 0.75
    loss = lambda pred: info_nce_hard_loss(pred, target, 0.07, contexts=ctx).item()
    right, copy = loss(target), loss(ctx[:, -1])
    assert right < 0.1 and copy > right + 2.0, (right, copy)
    # without the context negatives the copy would look nearly as good as the truth
    no_ctx = info_nce_hard_loss(ctx[:, -1], target, 0.07, contexts=None).item()
    assert no_ctx < copy - 2.0


def test_objective_info_nce_hard_uses_bank_neighbours(rollout_data):
    bank, rot, seqs, _, _ = rollout_data
    offsets = [1, 2, -6]
    hard, hard_valid = map(torch.as_tensor, neighbours(bank, seqs.index, offsets))
    ctx, tgt = torch.as_tensor(seqs.contexts), torch.as_tensor(seqs.targets)
    model = build_model("linear_average", dim=16)
    cfg = {"mse": 0.0, "info_nce_hard": {"weight": 2.0, "tau": 0.1, "article_offsets": offsets}}
    total, parts, pred = Objective(model, cfg)(ctx, tgt, epoch=None, hard=hard, hard_valid=hard_valid)
    expected = info_nce_hard_loss(pred, tgt, 0.1, contexts=ctx, negatives=hard, negatives_valid=hard_valid)
    assert set(parts) == {"info_nce_hard"}
    assert parts["info_nce_hard"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert total.item() == pytest.approx(2 * expected.item(), abs=1e-5)
    with pytest.raises(LossConfigError, match="bank"):
        Objective(model, cfg)(ctx, tgt, epoch=None)                      # offsets asked for, none given
    # weight 0 means off; start_epoch works like the other terms
    _, off, _ = Objective(model, {"info_nce_hard": {"weight": 0.0}})(ctx, tgt, epoch=0)
    assert set(off) == {"mse"}
    warm = Objective(model, {"info_nce_hard": {"weight": 1.0, "start_epoch": 2}})
    assert set(warm(ctx, tgt, epoch=1)[1]) == {"mse"} and set(warm(ctx, tgt, epoch=2)[1]) == {"mse", "info_nce_hard"}


def test_info_nce_hard_config_validation():
    cfg = loss_config({"info_nce_hard": {"weight": 1.0, "article_offsets": [1, 2, 3, -6, -7]}})
    assert cfg["info_nce_hard"] == {"weight": 1.0, "tau": 0.07, "in_batch": True, "context": True,
                                    "article_offsets": [1, 2, 3, -6, -7], "start_epoch": 0}
    assert loss_config()["info_nce_hard"]["weight"] == 0.0                # off by default
    loss_config({"info_nce_hard": {"weight": 1.0, "context": False, "article_offsets": [-1]}})  # ctx[-1] via the bank
    for bad, match in [({"wieght": 1.0}, "'loss.info_nce_hard.wieght'"),
                       ({"article_offsets": [0]}, "0 is the target"),
                       ({"article_offsets": [-1, 2]}, r"\[-1\] are context slots"),
                       ({"article_offsets": [2, 2]}, "duplicates"),
                       ({"article_offsets": 2}, "list of ints"),
                       ({"article_offsets": [1.5]}, "list of ints"),
                       ({"in_batch": 1}, "true or false"),
                       ({"tau": 0.0}, "tau must be > 0"),
                       ({"weight": -1.0}, "weight and start_epoch"),
                       ({"weight": 1.0, "in_batch": False, "context": False}, "no negatives")]:
        with pytest.raises(LossConfigError, match=match):
            loss_config({"info_nce_hard": bad})


def test_mse_plus_info_nce_mixture_reports_both_parts():
    torch.manual_seed(0)
    model = build_model("lstm", dim=8, hidden=8).eval()
    ctx, tgt = F.normalize(torch.randn(6, 5, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    total, parts, pred = Objective(model, {"mse": 1.0, "info_nce": 0.1})(ctx, tgt, epoch=0)
    assert set(parts) == {"mse", "info_nce"}
    assert parts["mse"].item() == pytest.approx(mse_loss(model.raw(ctx), tgt).item(), abs=1e-6)
    assert parts["info_nce"].item() == pytest.approx(info_nce_loss(pred, tgt, 0.07).item(), abs=1e-5)
    assert total.item() == pytest.approx(parts["mse"].item() + 0.1 * parts["info_nce"].item(), abs=1e-5)
