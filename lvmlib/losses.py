"""Training losses for next-concept-vector prediction, and the weighted objective built from them (the
terms of the `loss:` params, their warm-ups and the generative heads' terms: docs/architecture.md)."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data.bank import CONTEXT  # the window length, defined once
from .errors import InputError

FLOW_VAL_SEED = 1234    # a generative head's loss noise at validation (fixed: val losses compare across epochs)

LOSS_DEFAULTS = {
    "mse": 1.0, "cosine": 0.0, "info_nce": 0.0, "tau": 0.07,
    "guard": {"weight": 0.0, "margin": 0.01, "start_epoch": 0},
    "anti_copy": {"weight": 0.0, "margin": 0.0, "start_epoch": 0},
    "rollout": {"weight": 0.0, "horizon": 3, "start_epoch": 0},
    "info_nce_hard": {"weight": 0.0, "tau": 0.07, "in_batch": True, "context": True, "article_offsets": [],
                      "start_epoch": 0},
    "flow": 0.0, "context_drop": 0.0, "energy": 0.0, "all_positions": True,
}
# terms of the deterministic prediction: a generative (flow or energy) head is trained by its own term only
PREDICTION_TERMS = ("mse", "cosine", "info_nce", "info_nce_hard", "guard", "anti_copy", "rollout")
GENERATIVE_HEADS = ("flow", "energy")


class LossConfigError(InputError):
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
        default = defaults[key]
        if isinstance(default, dict):
            value = _merge(default, value, path)
        elif isinstance(default, list):
            if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int)
                                                           for v in value):
                raise LossConfigError(f"{path} must be a list of ints, got {value!r}")
            value = [int(v) for v in value]
        elif isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, (int, float)):
            # a flag takes true or false only, a number anything numeric but a bool
            raise LossConfigError(f"{path} must be {'true or false' if isinstance(default, bool) else 'a number'}, "
                                  f"got {value!r}")
        out[key] = value
    return out


def loss_config(given: dict | None = None, where: str = "loss") -> dict:
    """The `loss:` params with defaults filled in, validated."""
    cfg = _merge(LOSS_DEFAULTS, given or {}, where)
    for key in ("mse", "cosine", "info_nce", "flow", "energy"):
        if cfg[key] < 0:
            raise LossConfigError(f"{where}.{key} must be >= 0, got {cfg[key]}")
    for term in ("guard", "anti_copy", "rollout", "info_nce_hard"):
        if cfg[term]["weight"] < 0 or cfg[term]["start_epoch"] < 0:
            raise LossConfigError(f"{where}.{term}: weight and start_epoch must be >= 0")
    hard, here = cfg["info_nce_hard"], f"{where}.info_nce_hard"
    for path, tau in ((f"{where}.tau", cfg["tau"]), (f"{here}.tau", hard["tau"])):
        if tau <= 0:
            raise LossConfigError(f"{path} must be > 0, got {tau}")
    if not 0 <= cfg["context_drop"] < 1:
        raise LossConfigError(f"{where}.context_drop must be in [0, 1), got {cfg['context_drop']}")
    h = cfg["rollout"]["horizon"]
    if int(h) != h or h < 1:
        raise LossConfigError(f"{where}.rollout.horizon must be an int >= 1, got {h}")
    cfg["rollout"]["horizon"] = int(h)
    offsets = hard["article_offsets"]
    if 0 in offsets:
        raise LossConfigError(f"{here}.article_offsets: 0 is the target itself, not a negative")
    if len(set(offsets)) != len(offsets):
        raise LossConfigError(f"{here}.article_offsets has duplicates: {offsets}")
    in_context = sorted(k for k in offsets if -CONTEXT <= k <= -1)
    if hard["context"] and in_context:
        raise LossConfigError(f"{here}.article_offsets {in_context} are context slots, already negatives "
                              "with context: true")
    if hard["weight"] > 0 and not (hard["in_batch"] or hard["context"] or offsets):
        raise LossConfigError(f"{here} has no negatives: set in_batch, context or article_offsets")
    return cfg


mse_loss = F.mse_loss  # of the RAW output (before normalising)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()


def info_nce_loss(pred: torch.Tensor, target: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE: row i's positive is target i, the other targets in the batch are negatives."""
    logits = F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T / tau
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def info_nce_hard_loss(pred: torch.Tensor, target: torch.Tensor, tau: float = 0.07, *, in_batch: bool = True,
                       contexts: torch.Tensor | None = None, negatives: torch.Tensor | None = None,
                       negatives_valid: torch.Tensor | None = None) -> torch.Tensor:
    """One-directional InfoNCE, positive y_i at index 0; candidates: (in_batch) y_j for j != i, contexts[i]
    (B, 5, D), negatives[i] (B, K, D) where negatives_valid[i]; excluded candidates get -inf."""
    p = F.normalize(pred, dim=-1)
    y = F.normalize(target, dim=-1)
    logits = [(p * y).sum(-1, keepdim=True)]                                 # (B, 1): the positive
    if in_batch:
        eye = torch.eye(len(p), dtype=torch.bool, device=p.device)
        logits.append((p @ y.T).masked_fill(eye, float("-inf")))           # the diagonal is the positive
    for candidates, valid in ((contexts, None), (negatives, negatives_valid)):
        if candidates is not None:
            sims = torch.einsum("bd,bkd->bk", p, F.normalize(candidates, dim=-1))
            logits.append(sims if valid is None else sims.masked_fill(~valid.bool(), float("-inf")))
    return F.cross_entropy(torch.cat(logits, dim=1) / tau, torch.zeros(len(p), dtype=torch.long, device=p.device))


def directional_guard(pred: torch.Tensor, target: torch.Tensor, contexts: torch.Tensor, margin: float) -> torch.Tensor:
    """ReLU(m - (cos(y_hat, y) - cos(y_hat, ctx[-1]))): closer to the target than to the last context by m."""
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
    """Mean over valid steps (valid (B, H): inside the article) of 1 - cos(y_hat_h, v[t+h]), future (B, H, D)
    = v[t+h] for h = 0..H-1, each prediction fed back as the newest context; `first`: model(contexts)."""
    ctx, pred = contexts, (model(contexts) if first is None else first)
    step_losses = []
    for h in range(future.shape[1]):
        if h > 0:
            ctx = torch.cat([ctx[:, 1:], pred[:, None, :]], dim=1)
            pred = model(ctx)
        step_losses.append(1 - F.cosine_similarity(pred, future[:, h], dim=-1))
    losses = torch.stack(step_losses, dim=1)                      # (B, H)
    mask = valid.to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp_min(1.0)


class Objective(nn.Module):
    """The weighted training objective around a model; one forward is one whole loss (rollout calls the
    model several times inside it), so it can be wrapped in DistributedDataParallel as a single module."""

    def __init__(self, model: nn.Module, config: dict | None = None):
        super().__init__()
        self.model = model
        self.cfg = loss_config(config)
        head = getattr(model, "head", None)
        self.generative = head if head in GENERATIVE_HEADS else None
        for name in GENERATIVE_HEADS:
            if self.cfg[name] > 0 and head != name:
                raise LossConfigError(f"loss.{name} > 0 needs a model built with head='{name}'")
        if self.generative:
            on = [k if not isinstance(self.cfg[k], dict) else f"{k}.weight" for k in PREDICTION_TERMS
                  if self.weight(k, None) > 0]
            example = f"e.g. loss: {{mse: 0.0, {head}: 1.0}}"
            if on:
                raise LossConfigError(f"loss.{', loss.'.join(on)} > 0 with a head='{head}' model: it is trained "
                                      f"by loss.{head} only (set them to 0, {example})")
            if self.cfg[head] <= 0:
                raise LossConfigError(f"a head='{head}' model needs loss.{head} > 0 ({example})")

    @property
    def needs_future(self) -> bool:
        return self.cfg["rollout"]["weight"] > 0

    @property
    def hard_offsets(self) -> list[int] | None:
        """Article offsets whose vectors info_nce_hard needs from the bank (None if it needs none)."""
        hard = self.cfg["info_nce_hard"]
        return list(hard["article_offsets"]) if hard["weight"] > 0 and hard["article_offsets"] else None

    @property
    def horizon(self) -> int:
        return self.cfg["rollout"]["horizon"]

    def weight(self, term: str, epoch: int | None) -> float:
        """Weight of a term at an epoch; epoch None (validation) means every term is on."""
        spec = self.cfg[term]
        if not isinstance(spec, dict):
            return float(spec)
        return float(spec["weight"]) if epoch is None or epoch >= spec["start_epoch"] else 0.0

    def forward(self, contexts, targets, future=None, valid=None, epoch: int | None = None,
                generator: torch.Generator | None = None, hard=None, hard_valid=None):
        """(total loss, {term: detached value}, detached unit predictions); epoch None = validation (all terms
        on, no context drop). hard, hard_valid: v[t+k] for info_nce_hard's article_offsets, in-article mask."""
        model_in = contexts if epoch is None else drop_context(contexts, self.cfg["context_drop"], generator)
        if self.generative:
            return self._generative_forward(model_in, targets, epoch, generator)
        if self.model.predicts_every_position and self.cfg["all_positions"]:
            # base_lcm: position i predicts ctx[i+1]; the last position predicts the target
            mse_pred = self.model.raw_all(model_in)
            raw, mse_target = mse_pred[:, -1], torch.cat([contexts[:, 1:], targets[:, None]], dim=1)
        else:
            raw = mse_pred = self.model.raw(model_in)
            mse_target = targets
        pred = F.normalize(raw, dim=-1)
        terms = {
            "mse": lambda: mse_loss(mse_pred, mse_target),
            "cosine": lambda: cosine_loss(pred, targets),
            "info_nce": lambda: info_nce_loss(pred, targets, self.cfg["tau"]),
            "guard": lambda: directional_guard(pred, targets, contexts, self.cfg["guard"]["margin"]),
            "anti_copy": lambda: anti_copy_loss(pred, targets, contexts, self.cfg["anti_copy"]["margin"]),
            "rollout": lambda: rollout_loss(self.model, model_in, future, valid, first=pred),
            "info_nce_hard": lambda: self._info_nce_hard(pred, targets, contexts, hard, hard_valid),
        }
        parts, total = {}, contexts.new_zeros(())
        for name, compute in terms.items():
            w = self.weight(name, epoch)
            if not w:
                continue
            if name == "rollout" and future is None:
                raise LossConfigError("loss.rollout.weight > 0 needs future targets (pass bank= to fit)")
            parts[name] = compute()
            total = total + w * parts[name]
        return total, {k: v.detach() for k, v in parts.items()}, pred.detach()

    def _info_nce_hard(self, pred, targets, contexts, hard, hard_valid):
        h = self.cfg["info_nce_hard"]
        if self.hard_offsets and hard is None:
            raise LossConfigError("loss.info_nce_hard.article_offsets needs the article's vectors (pass bank= to fit)")
        # the context negatives are the TRUE context (not the dropped one): the basin is ctx[-1] itself
        return info_nce_hard_loss(pred, targets, h["tau"], in_batch=h["in_batch"],
                                  contexts=contexts if h["context"] else None,
                                  negatives=hard if self.hard_offsets else None,
                                  negatives_valid=hard_valid if self.hard_offsets else None)

    def _generative_forward(self, model_in, targets, epoch, generator):
        """A flow or energy head: its own loss; at validation also its sampled (averaged) predictions."""
        if generator is None:
            # a fixed stream, so a validation loss is a function of the weights only
            generator = torch.Generator(device=targets.device).manual_seed(FLOW_VAL_SEED)
        head = getattr(self.model, self.generative)
        c = self.model.condition(model_in)
        loss = head.loss(c, targets, generator)
        pred = None
        if epoch is None:     # validation: sample the head; training skips it
            with torch.no_grad():
                pred = F.normalize(head.sample(c.detach()), dim=-1)
        return self.weight(self.generative, epoch) * loss, {self.generative: loss.detach()}, pred
