"""Training losses for next-concept-vector prediction, and the weighted objective built from them.

Terms (weights and warm-ups from the `loss:` section of the params):
    mse         mean squared error of the RAW output vs the target (base_lcm: every position)
    cosine      mean(1 - cos(y_hat, y))
    info_nce    symmetric InfoNCE with in-batch negatives, temperature tau:
                (CE(y_hat . t^T / tau) + CE(t . y_hat^T / tau)) / 2   (the two directions averaged)
    guard       P3 directional guard: mean ReLU(m - (cos(y_hat, y) - cos(y_hat, ctx[-1])))
                (ctx[-1], the LAST context vector; the original used ctx[-2], SPEC defect 5)
    anti_copy   mean ReLU(m - (cos(y_hat, y) - max_i cos(y_hat, ctx_i))) over all 5 context slots
    rollout     P4: feed predictions back (ctx <- [ctx[1:], y_hat]) for H steps and score step h
                by 1 - cos(y_hat_h, v[t+h]), the TRUE vector h steps after the target in the same
                article; steps past the article's end are masked out; mean over valid steps.
    context_drop  augmentation: each context slot is zeroed with probability p (training only).

A term with `start_epoch: k` is switched on from epoch index k (0-based), i.e. after k warm-up
epochs. Validation always uses every term with its full weight, so val losses of different
epochs are comparable (early stopping and the best checkpoint depend on that).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSS_DEFAULTS = {
    "mse": 1.0,
    "cosine": 0.0,
    "info_nce": 0.0,
    "tau": 0.07,
    "guard": {"weight": 0.0, "margin": 0.01, "start_epoch": 0},
    "anti_copy": {"weight": 0.0, "margin": 0.0, "start_epoch": 0},
    "rollout": {"weight": 0.0, "horizon": 3, "start_epoch": 0},
    "context_drop": 0.0,
}


class LossConfigError(ValueError):
    """A `loss:` section with an unknown key or a bad value."""


def _merge(defaults: dict, given: dict, where: str) -> dict:
    """defaults updated with `given`; an unknown key is an error naming its full path."""
    if not isinstance(given, dict):
        raise LossConfigError(f"{where} must be a mapping, got {type(given).__name__}")
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        path = f"{where}.{key}"
        if key not in defaults:
            raise LossConfigError(f"unknown key {path!r}; expected one of {sorted(defaults)}")
        if isinstance(defaults[key], dict):
            out[key] = _merge(defaults[key], value, path)
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LossConfigError(f"{path} must be a number, got {value!r}")
            out[key] = value
    return out


def loss_config(given: dict | None = None, where: str = "loss") -> dict:
    """The `loss:` params with defaults filled in, validated."""
    cfg = _merge(LOSS_DEFAULTS, given or {}, where)
    for key in ("mse", "cosine", "info_nce"):
        if cfg[key] < 0:
            raise LossConfigError(f"{where}.{key} must be >= 0, got {cfg[key]}")
    for term in ("guard", "anti_copy", "rollout"):
        if cfg[term]["weight"] < 0 or cfg[term]["start_epoch"] < 0:
            raise LossConfigError(f"{where}.{term}: weight and start_epoch must be >= 0")
    if cfg["tau"] <= 0:
        raise LossConfigError(f"{where}.tau must be > 0, got {cfg['tau']}")
    if not 0 <= cfg["context_drop"] < 1:
        raise LossConfigError(f"{where}.context_drop must be in [0, 1), got {cfg['context_drop']}")
    h = cfg["rollout"]["horizon"]
    if int(h) != h or h < 1:
        raise LossConfigError(f"{where}.rollout.horizon must be an int >= 1, got {h}")
    cfg["rollout"]["horizon"] = int(h)
    return cfg


# ----------------------------------------------------------------------------------------
# The terms, each a plain function of tensors.

def mse_loss(raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(raw, target)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()


def info_nce_loss(pred: torch.Tensor, target: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE: row i's positive is target i, the other targets in the batch are negatives."""
    logits = F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T / tau
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def directional_guard(pred: torch.Tensor, target: torch.Tensor, contexts: torch.Tensor, margin: float) -> torch.Tensor:
    """ReLU(m - (cos(y_hat, y) - cos(y_hat, ctx[-1]))): the prediction must be closer to the
    target than to the last context vector by at least m."""
    gap = F.cosine_similarity(pred, target, dim=-1) - F.cosine_similarity(pred, contexts[:, -1], dim=-1)
    return F.relu(margin - gap).mean()


def anti_copy_loss(pred: torch.Tensor, target: torch.Tensor, contexts: torch.Tensor, margin: float) -> torch.Tensor:
    """ReLU(m - (cos(y_hat, y) - max_i cos(y_hat, ctx_i))): no context slot may be closer than the target."""
    to_context = F.cosine_similarity(pred[:, None, :], contexts, dim=-1).max(dim=1).values
    return F.relu(margin - (F.cosine_similarity(pred, target, dim=-1) - to_context)).mean()


def drop_context(contexts: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero each context slot independently with probability p (returns a new tensor)."""
    if p <= 0:
        return contexts
    keep = torch.rand(contexts.shape[:2], generator=generator, device=contexts.device) >= p
    return contexts * keep[..., None].to(contexts.dtype)


def rollout_loss(model: nn.Module, contexts: torch.Tensor, future: torch.Tensor, valid: torch.Tensor,
                 first: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-step rollout against the real future.

    future (B, H, D): v[t+h] for h = 0..H-1 (h = 0 is the target itself), from
    lvmlib.data.neighbours(bank, seqs.index, range(H)); valid (B, H) marks steps inside the
    article. Each step's prediction is fed back as the newest context vector; gradients flow
    through the whole chain. Returns mean over valid steps of 1 - cos(y_hat_h, v[t+h]).
    `first` may pass in model(contexts) when the caller already has it.
    """
    horizon = future.shape[1]
    ctx = contexts
    pred = model(ctx) if first is None else first
    step_losses = []
    for h in range(horizon):
        if h > 0:
            ctx = torch.cat([ctx[:, 1:], pred[:, None, :]], dim=1)
            pred = model(ctx)
        step_losses.append(1 - F.cosine_similarity(pred, future[:, h], dim=-1))
    losses = torch.stack(step_losses, dim=1)                      # (B, H)
    mask = valid.to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------------------

class Objective(nn.Module):
    """The weighted training objective around a model.

    One forward = one whole loss (rollout calls the model several times inside it), so it can be
    wrapped in DistributedDataParallel as a single module.
    """

    def __init__(self, model: nn.Module, config: dict | None = None):
        super().__init__()
        self.model = model
        self.cfg = loss_config(config)

    @property
    def needs_future(self) -> bool:
        return self.cfg["rollout"]["weight"] > 0

    @property
    def horizon(self) -> int:
        return self.cfg["rollout"]["horizon"]

    def weight(self, term: str, epoch: int | None) -> float:
        """Weight of a term at an epoch; epoch None (validation) means every term is on."""
        spec = self.cfg[term]
        if isinstance(spec, dict):
            on = epoch is None or epoch >= spec["start_epoch"]
            return float(spec["weight"]) if on else 0.0
        return float(spec)

    def forward(self, contexts, targets, future=None, valid=None, epoch: int | None = None,
                generator: torch.Generator | None = None):
        """Returns (total loss, {term: detached value}, detached unit predictions).
        epoch None = validation (all terms on, no context drop)."""
        training = epoch is not None
        model_in = drop_context(contexts, self.cfg["context_drop"], generator) if training else contexts
        parts = {}
        total = contexts.new_zeros(())

        w = self.weight("mse", epoch)
        if self.model.predicts_every_position:
            # base_lcm: position i predicts ctx[i+1]; the last position predicts the target
            raw_all = self.model.raw_all(model_in)
            raw = raw_all[:, -1]
            if w:
                parts["mse"] = mse_loss(raw_all, torch.cat([contexts[:, 1:], targets[:, None]], dim=1))
        else:
            raw = self.model.raw(model_in)
            if w:
                parts["mse"] = mse_loss(raw, targets)
        total = total + w * parts["mse"] if w else total
        pred = F.normalize(raw, dim=-1)

        terms = {
            "cosine": lambda: cosine_loss(pred, targets),
            "info_nce": lambda: info_nce_loss(pred, targets, self.cfg["tau"]),
            "guard": lambda: directional_guard(pred, targets, contexts, self.cfg["guard"]["margin"]),
            "anti_copy": lambda: anti_copy_loss(pred, targets, contexts, self.cfg["anti_copy"]["margin"]),
            "rollout": lambda: rollout_loss(self.model, model_in, future, valid, first=pred),
        }
        for name, compute in terms.items():
            w = self.weight(name, epoch)
            if not w:
                continue
            if name == "rollout" and future is None:
                raise LossConfigError("loss.rollout.weight > 0 needs future targets (pass bank= to fit)")
            parts[name] = compute()
            total = total + w * parts[name]
        return total, {k: v.detach() for k, v in parts.items()}, pred.detach()
