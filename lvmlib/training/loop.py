"""The training loop: `fit(model, train, val, spec)` on in-memory sequences. AdamW, a plateau or warm-up + cosine
LR schedule, gradient clipping, optional bf16 autocast, the best weights by the stop metric and the stop rule
(docs/architecture.md). All randomness of epoch e is seeded from (seed, e), so a resumed run replays an uninterrupted
one bit for bit. Under torch.distributed each rank trains on its shard of every batch; only rank 0 writes."""
import contextlib
import hashlib
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import files
from ..config import ConfigError, RunSpec, dump_yaml
from ..curriculum import Curriculum, curriculum_config
from ..data import Sequences, open_bank, sequences
from ..data.bank import neighbour_rows
from ..losses import FLOW_VAL_SEED, Objective
from ..models import LVM, ModelError, build_model, count_parameters
from ..progress import bar, eta_text
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

# stop reasons; those in CONVERGED mean the run had stopped improving
PATIENCE, LR_FLOOR, MAX_EPOCHS, MAX_STEPS = "patience", "lr_floor", "max_epochs", "max_steps"
NOTHING_TO_TRAIN = "no_parameters"
CONVERGED = (PATIENCE, LR_FLOOR, NOTHING_TO_TRAIN)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The device `name` means here; auto: cuda:local_rank, else mps, else cpu."""
    if name == "auto" and torch.cuda.is_available() or name == "cuda" and dist_info()[1] > 1:
        return torch.device("cuda", local_rank)
    if name == "auto":
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    return torch.device(name)


@dataclass
class FitResult:
    model: LVM                  # best weights by the stop metric, eval mode
    history: list[dict]         # one entry per epoch
    best_epoch: int | None      # 1-based; 0: the start was best; None for a model with nothing to train
    best_val_loss: float
    best_val_cosine: float
    epochs_run: int
    stop_reason: str            # patience | lr_floor | max_epochs | max_steps | no_parameters
    optimizer_steps: int
    seconds: float
    out_dir: Path | None
    device: str
    val_cos_slope: float | None = None   # VAL cosine per 1,000 steps over the last stretch (None: too short)
    initial_val_cosine: float | None = None   # before the first step
    flat: bool = False                   # that slope times the stretch is below min_delta
    precision: str = "fp32"              # what the forward and backward passes ran in

    @property
    def converged(self) -> bool:
        """Stopped because it had stopped improving (not by the epoch or step cap) and ends flat."""
        return self.stop_reason in CONVERGED and self.flat

    @property
    def checkpoint(self) -> Path | None:
        return self.out_dir / "best.pt" if self.out_dir else None


def _tensor(array: np.ndarray, device, dtype=None) -> torch.Tensor:
    with warnings.catch_warnings():     # a memory-mapped bank is read-only; nothing writes to it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(np.ascontiguousarray(array, dtype=dtype), device=device)


class _Tensors:
    """One split on the device: the bank's vectors once (shared by the splits of one fit) and each window's
    row; batch(idx) gathers contexts, targets and, only for loss terms that need them, the rollout's future
    and info_nce_hard's neighbours. Sequences given as arrays are held as they are."""

    def __init__(self, seqs: Sequences, device, bank=None, horizon: int | None = None,
                 hard_offsets: list[int] | None = None, *, shared: list | None = None):
        self.device, self._n = torch.device(device), len(seqs)
        self._shared = [] if shared is None else shared      # (array, tensor): each array on the device once
        self.vectors = None if seqs.vectors is None else self._on_device(seqs.vectors)
        if self.vectors is None:
            self.contexts, self.targets = (_tensor(a, self.device, np.float32) for a in (seqs.contexts, seqs.targets))
        else:
            self.rows = _tensor(seqs.index, self.device, np.int64)
            self.offsets = torch.arange(-seqs.context, 0, device=self.device)
        self.neighbours = {}    # (key, mask key) -> bank rows (M, K), mask; the vectors are gathered per batch
        for keys, offsets in ((("future", "valid"), range(horizon or 0)), (("hard", "hard_valid"), hard_offsets or [])):
            if len(offsets):
                rows = neighbour_rows(bank, seqs.index, offsets, seqs.limit)
                self.neighbours[keys] = [_tensor(a, self.device) for a in rows]
                self.bank_vectors = self._on_device(bank.vectors)
        seqs.release()  # all-window arrays gathered before (hash, model statistics, curriculum) go now

    def _on_device(self, vectors: np.ndarray) -> torch.Tensor:
        tensor = next((t for array, t in self._shared if array is vectors), None)
        if tensor is None:
            tensor = _tensor(vectors, self.device, np.float32)
            self._shared.append((vectors, tensor))
        return tensor

    def __len__(self):
        return self._n

    def batch(self, idx: torch.Tensor):
        """(contexts, targets, {future, valid, hard, hard_valid}: Objective's keyword inputs for the terms on)."""
        extra = {}
        for (key, mask_key), (rows, valid) in self.neighbours.items():
            extra[key] = self.bank_vectors[rows[idx]].masked_fill_(~valid[idx][..., None], 0.0)   # 0 off-article
            extra[mask_key] = valid[idx]
        if self.vectors is None:
            return self.contexts[idx], self.targets[idx], extra
        t = self.rows[idx]
        return self.vectors[t[:, None] + self.offsets], self.vectors[t], extra


@torch.no_grad()
def validate(objective: Objective, data: _Tensors, batch_size: int = 1024) -> dict:
    """Val loss (every term on, no context drop), its parts, and mean cos(y_hat, y)."""
    objective.model.eval()
    total, cos_sum, parts = 0.0, 0.0, {}
    # the flow loss draws noise: one fixed stream per evaluation, so val losses compare across epochs
    gen = torch.Generator(device=data.device).manual_seed(FLOW_VAL_SEED)
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)), device=data.device)
        ctx, tgt, extra = data.batch(idx)
        loss, batch_parts, pred = objective(ctx, tgt, **extra, epoch=None, generator=gen)
        total += loss.item() * len(idx)
        cos_sum += F.cosine_similarity(pred, tgt, dim=-1).sum().item()
        for k, v in batch_parts.items():
            parts[k] = parts.get(k, 0.0) + v.item() * len(idx)
    n = len(data)
    return {"loss": total / n, "cosine": cos_sum / n, "parts": {k: v / n for k, v in parts.items()}}


def _scheduler(optimizer, tcfg, n_train: int):
    """plateau: ReduceLROnPlateau on the stop metric (a gain below min_delta is none), stepped per epoch; cosine:
    stepped per batch, linear warm-up over warmup_steps, then cosine decay to 0 at the last planned step."""
    if tcfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if tcfg.stop_metric == "cosine" else "min", factor=tcfg.plateau_factor,
            patience=tcfg.plateau_patience, threshold=tcfg.min_delta, threshold_mode="abs")
    warm, total = tcfg.warmup_steps, max(min(math.ceil(n_train / tcfg.batch_size) * tcfg.epochs,
                                             tcfg.max_steps or math.inf), 1)

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _record(spec: RunSpec, train: Sequences, val: Sequences, bank) -> dict:
    """What identifies a run: its spec and the exact data it saw (bank fingerprint, hash of the rows)."""
    rows = hashlib.blake2b(digest_size=8)
    for arr in (train.index, train.targets, val.index, val.targets):
        arr = np.ascontiguousarray(arr)
        rows.update(str(arr.shape).encode())
        rows.update(arr.data)      # the buffer itself: no copy of the targets
    return {"spec": spec.to_dict(), "seed": spec.seed,
            "data": {"fingerprint": bank.manifest.get("fingerprint") if bank is not None else None,
                     "sequences": rows.hexdigest(), "n_train": len(train), "n_val": len(val)}}


def _resumable(spec: dict) -> dict:
    """The spec a --resume must match: all but the epoch cap, the device and naming (label, out, tags, eval)."""
    kept = {k: v for k, v in spec.items() if k not in ("label", "out", "tags", "eval")}
    return {**kept, "train": {k: v for k, v in kept.get("train", {}).items() if k not in ("epochs", "device")}}


def _check_resumable(last: dict, record: dict, model: LVM, where) -> None:
    """A resume must continue the same run: same model, data, seed and settings (epochs may grow)."""
    saved = {**_resumable(last.get("spec") or {}), "model_config": last.get("model_config"), "rows": last.get("data")}
    now = {**_resumable(record["spec"]), "model_config": model.config, "rows": record["data"]}
    key = next((k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)), None)
    if key is not None:
        raise CheckpointError(f"{where}: {key!r} differs from the saved run ({saved.get(key)!r} vs {now.get(key)!r})")
    if last.get("optimizer") is None:
        raise CheckpointError(f"{where}: has no optimizer state to resume from")


@dataclass
class _Run:
    """What the pieces of one fit share; save() writes best.pt / last.pt (rank 0 with an out_dir only)."""
    model: LVM
    objective: Objective
    record: dict        # spec and data identity, stored in every checkpoint
    out_dir: Path | None
    device: torch.device
    history: list = field(default_factory=list)
    # what a resume needs besides weights and optimizer: the best epoch so far, why it stopped, steps taken
    state: dict = field(default_factory=lambda: {
        "best": {"epoch": None, "val_loss": math.inf, "val_cosine": math.nan, "score": -math.inf},
        "anchor": {"score": -math.inf, "step": 0}, "lr_lowered": False, "stop_reason": None, "steps": 0})

    def save(self, name: str, epoch: int, optimizer=None, scheduler=None) -> None:
        if dist_info()[0] == 0 and self.out_dir is not None:
            save_checkpoint(self.out_dir / name, self.model, **self.record, history=self.history, epoch=epoch,
                            state=self.state, optimizer=optimizer.state_dict() if optimizer else None,
                            scheduler=scheduler.state_dict() if scheduler else None)


def fit(model: LVM, train: Sequences, val: Sequences, spec: RunSpec, *, bank=None, out_dir=None,
        progress: bool = True, resume: bool = False) -> FitResult:
    """Train `model` as `spec` (loss, train, curriculum) says. bank: for the rollout and info_nce_hard
    terms and the data fingerprint; out_dir: where best.pt / last.pt go; resume: from out_dir/last.pt."""
    device = pick_device(spec.train.device, int(os.environ.get("LOCAL_RANK", 0)))
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"fit needs non-empty train and val sequences (got {len(train)} and {len(val)})")
    if spec.train.val_rows and spec.train.val_rows < len(val):   # the same rows for every run and seed
        val = val.subset(np.sort(np.random.default_rng(0).choice(len(val), spec.train.val_rows, replace=False)))
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise ConfigError("resume needs an output folder (params.out)")
    objective = Objective(model, spec.loss)   # refuses loss terms the model cannot take (flow head)
    for needed, what in ((objective.needs_future, "loss.rollout.weight > 0"),
                         (objective.hard_offsets, "loss.info_nce_hard.article_offsets")):
        if needed and bank is None:
            raise ConfigError(f"{what} needs the bank (the article's vectors): pass bank= to fit")
    stages = curriculum_config(spec.curriculum)
    curriculum = Curriculum(train.contexts, train.targets, stages) if stages else None
    run = _Run(model, objective, _record(spec, train, val, bank), out_dir, device)
    seed_everything(spec.seed)
    last = None
    if resume:
        last_model, last = load_checkpoint(out_dir / "last.pt")
        _check_resumable(last, run.record, model, out_dir / "last.pt")
        model.load_state_dict(last_model.state_dict())
        run.history, run.state = last["history"], last["state"]
    else:
        model.fit(train.targets)   # statistics from the TRAINING targets only (global mean, robust scaler)
    model.to(device)
    horizon = objective.horizon if objective.needs_future else None
    shared = []     # the bank's vectors go to the device once, for both splits
    train_t, val_t = (_Tensors(s, device, bank, horizon, objective.hard_offsets, shared=shared) for s in (train, val))
    if not any(p.requires_grad for p in model.parameters()):
        return _measure_only(run, val_t, spec.train)
    return _train(run, spec, train_t, val_t, curriculum, last, progress)


def _measure_only(run: _Run, val_t: _Tensors, tcfg) -> FitResult:
    """Baselines have nothing to learn: measure the val loss once and record them like a run."""
    ev = validate(run.objective, val_t, tcfg.eval_batch_size)
    run.history = [{"epoch": 0, "val_loss": ev["loss"], "val_parts": ev["parts"], "val_cosine": ev["cosine"]}]
    run.state = {"best": {"epoch": None, "val_loss": ev["loss"], "val_cosine": ev["cosine"], "score": None},
                 "anchor": None, "lr_lowered": False, "stop_reason": NOTHING_TO_TRAIN, "steps": 0}
    run.save("best.pt", 0)
    run.save("last.pt", 0)
    return FitResult(run.model.eval(), run.history, None, ev["loss"], ev["cosine"], 0, NOTHING_TO_TRAIN, 0, 0.0,
                     run.out_dir, str(run.device), flat=True)


def _train(run: _Run, spec: RunSpec, train_t: _Tensors, val_t: _Tensors, curriculum, last, progress) -> FitResult:
    """The epochs: AdamW, the LR schedule, validation, early stopping and checkpoints; the best weights win."""
    started, tcfg, seed, (rank, world), device = time.perf_counter(), spec.train, spec.seed, dist_info(), run.device
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    scheduler = _scheduler(optimizer, tcfg, len(train_t))
    step_module = (run.objective if world == 1 else
                   DistributedDataParallel(run.objective, device_ids=[device.index] if device.type == "cuda" else None))
    precision = resolve_precision(tcfg.precision, device)
    if last is None:
        best_weights = _start(run, val_t, tcfg)
    else:
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        has_best = run.state["best"]["epoch"] is not None
        best_weights = load_checkpoint(run.out_dir / "best.pt")[0].state_dict() if has_best else None
    for epoch in range(len(run.history), tcfg.epochs):
        if run.state["stop_reason"] in CONVERGED or run.state["stop_reason"] == MAX_STEPS:
            break
        t0 = time.perf_counter()
        # everything random in this epoch depends on (seed, epoch, rank) only: resume replays it
        torch.manual_seed(seed * 1_000_003 + epoch * 101 + rank)
        gen = torch.Generator(device=device).manual_seed(seed * 7919 + epoch * 31 + rank)  # context drop, flow noise
        order = (curriculum.epoch_order(epoch, seed) if curriculum is not None
                 else np.random.default_rng([seed, epoch]).permutation(len(train_t)))
        run.model.train()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_parts, seen, steps = _train_epoch(step_module, trainable, optimizer, scheduler, train_t,
                                                            order, tcfg, epoch, gen, progress, run.state["steps"],
                                                            precision)
        run.state["steps"] += steps
        ev = validate(run.objective, val_t, tcfg.eval_batch_size)
        if tcfg.schedule == "plateau":
            scheduler.step(ev["cosine"] if tcfg.stop_metric == "cosine" else ev["loss"])
        run.state["lr_lowered"] |= tcfg.schedule == "cosine" or optimizer.param_groups[0]["lr"] < lr
        run.history.append({
            "epoch": epoch + 1, "train_loss": train_loss, "train_parts": train_parts,
            "val_loss": ev["loss"], "val_parts": ev["parts"], "val_cosine": ev["cosine"], "lr": lr,
            "seconds": time.perf_counter() - t0, "train_rows": len(order), "steps": steps, "step": run.state["steps"],
            "world_size": world, "rank_samples": seen,      # rows this (writing) rank trained on
            **({"stage": curriculum.stage_at(epoch)} if curriculum is not None else {})})
        improved = _early_stopping(run.state, run.history, tcfg, optimizer.param_groups[0]["lr"])
        if improved:
            best_weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
            run.save("best.pt", epoch + 1)
        run.save("last.pt", epoch + 1, optimizer, scheduler)
        if progress and rank == 0:
            _log_epoch(run, improved, tcfg.epochs)
    if best_weights is not None:
        run.model.load_state_dict(best_weights)
    return _result(run, tcfg, time.perf_counter() - started, precision)


def _start(run: _Run, val_t: _Tensors, tcfg) -> dict:
    """Validate before the first step: the start is a candidate checkpoint (a run that never beats the average it
    starts from keeps it), the patience's first anchor, and what a flat run's gain is measured from."""
    ev = validate(run.objective, val_t, tcfg.eval_batch_size)
    run.state["initial_cosine"] = ev["cosine"]
    score = _score(tcfg, ev["cosine"], ev["loss"])
    run.state["best"] = {"epoch": 0, "val_loss": ev["loss"], "val_cosine": ev["cosine"], "score": score}
    run.state["anchor"] = {"score": score, "step": 0}
    run.save("best.pt", 0)
    return {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def _result(run: _Run, tcfg, seconds: float, precision: str) -> FitResult:
    best, (slope, flat) = run.state["best"], flatness(run.history, tcfg, run.state.get("initial_cosine"))
    return FitResult(run.model.eval(), run.history, best["epoch"], best["val_loss"], best["val_cosine"],
                     len(run.history), run.state["stop_reason"] or MAX_EPOCHS, run.state["steps"], seconds,
                     run.out_dir, str(run.device), val_cos_slope=slope, flat=flat, precision=precision,
                     initial_val_cosine=run.state.get("initial_cosine"))


def resolve_precision(name: str, device: torch.device) -> str:
    """fp32 or bf16: what `train.precision` means on this device (auto: bf16 where the hardware has it natively:
    CUDA with bf16 support, or a CPU with AVX-512 BF16 or AMX)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = Path("/proc/cpuinfo").read_text() if device.type == "cpu" else ""
    except OSError:
        flags = ""
    return "bf16" if " avx512_bf16" in flags or " amx_bf16" in flags else "fp32"


def _autocast(precision: str, device: torch.device):
    """bf16 autocast for the forward pass (the weights, their gradients and AdamW stay fp32)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def patience(tcfg, steps: int, per_epoch: int = 0) -> int:
    """Steps without a min_delta gain before a run stops: a floor, growing with the steps run so far, and at least
    two epochs (validations come once an epoch, and the final slope needs three of them)."""
    return max(tcfg.patience_steps, math.ceil(tcfg.patience_share * steps), 2 * per_epoch)


def _per_epoch(history: list[dict]) -> int:
    """The most optimizer steps any epoch took (0 before the first)."""
    return max((h.get("steps", 0) for h in history), default=0)


def _score(tcfg, cosine: float, loss: float) -> float:
    """The stop metric, higher is better."""
    return cosine if tcfg.stop_metric == "cosine" else -loss


def final_slope(history: list[dict], window: int) -> float | None:
    """Least-squares slope of VAL cosine against optimizer steps over the last `window` steps, per 1,000 steps
    (None with fewer than 3 validations in it): how fast the run was still learning at its end."""
    points = [(h["step"], h["val_cosine"]) for h in history if "step" in h]
    if not points:
        return None
    last = points[-1][0]
    xs, ys = zip(*[(x, y) for x, y in points if x >= last - window])
    if len(xs) < 3 or max(xs) == min(xs):
        return None
    return float(np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)[0] * 1000)


def flatness(history: list[dict], tcfg, initial: float | None = None) -> tuple[float | None, bool]:
    """(slope per 1,000 steps over the last patience window, flat) as the stop rule defines them (docs/architecture.md),
    the gain counted from `initial`, else the first validation; flat's second part catches a slow learner."""
    steps = history[-1].get("step", 0) if history else 0
    window = patience(tcfg, steps, _per_epoch(history))
    slope = final_slope(history, window)
    if slope is None:
        return None, False
    gained = max(h["val_cosine"] for h in history) - (history[0]["val_cosine"] if initial is None else initial)
    return slope, slope * window / 1000 <= tcfg.min_delta and slope * steps / 1000 <= tcfg.flat_share * max(gained, 0)


def _train_epoch(step_module, trainable, optimizer, scheduler, data: _Tensors, order, tcfg, epoch: int, gen,
                 progress: bool, steps_done: int, precision: str = "fp32") -> tuple[float, dict, int, int]:
    """One pass over `order`, within max_steps: (mean loss, mean loss parts, rows this rank saw, steps); under
    DDP each rank trains on its shard of every batch and the means are over all ranks."""
    rank, world = dist_info()
    order_t, size = torch.as_tensor(order, device=data.device), tcfg.batch_size
    starts = [s for s in range(0, len(order), size) if min(size, len(order) - s) >= world]
    starts = starts if tcfg.max_steps is None else starts[:tcfg.max_steps - steps_done]
    loss_sum, part_sums, seen = torch.zeros((), device=data.device), {}, 0
    for start in bar(starts, desc=f"epoch {epoch + 1}/{tcfg.epochs}", leave=False, disable=not progress or rank != 0):
        rows = order_t[start:start + size]
        shard = rows[rank::world]
        ctx, tgt, extra = data.batch(shard)
        with _autocast(precision, data.device):
            loss, parts, _ = step_module(ctx, tgt, **extra, epoch=epoch, generator=gen)
        loss, parts = loss.float(), {k: v.float() for k, v in parts.items()}
        # each rank's mean is weighted by its share, so DDP's gradient average is the batch mean
        optimizer.zero_grad(set_to_none=True)
        (loss * (len(shard) * world / len(rows))).backward()
        if tcfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, tcfg.grad_clip)
        optimizer.step()
        if tcfg.schedule == "cosine":
            scheduler.step()
        loss_sum += loss.detach() * len(shard)
        for k, v in parts.items():
            part_sums[k] = part_sums.get(k, 0) + v * len(shard)
        seen += len(shard)
    total = seen
    if world > 1:   # the epoch's loss, parts and rows, summed over the ranks
        sums = torch.stack([loss_sum, torch.tensor(float(seen), device=data.device), *part_sums.values()])
        dist.all_reduce(sums)
        loss_sum, total, part_sums = sums[0], sums[1].item(), dict(zip(part_sums, sums[2:]))
    return loss_sum.item() / total, {k: v.item() / total for k, v in part_sums.items()}, seen, len(starts)


def _early_stopping(state: dict, history: list[dict], tcfg, lr_now: float) -> bool:
    """Update the best epoch, the patience anchor and the stop reason from the latest validation (the stop rule:
    docs/architecture.md); True if the stop metric is the best so far (its weights are kept). Only a gain of
    min_delta over the anchor resets the patience, so a slow learner's small gains add up."""
    best, anchor, h = state["best"], state["anchor"], history[-1]
    score = _score(tcfg, h["val_cosine"], h["val_loss"])
    if score >= anchor["score"] + tcfg.min_delta:
        anchor.update(score=score, step=state["steps"])
    waited, per_epoch = state["steps"] - anchor["step"], _per_epoch(history)
    # never within the first two patience floors: a run still in its early dip below the start is not flat
    waited_enough = (tcfg.patience_steps > 0 and state["lr_lowered"] and state["steps"] >= 2 * tcfg.patience_steps
                     and waited >= patience(tcfg, state["steps"], per_epoch))
    floor = tcfg.schedule == "plateau" and lr_now < tcfg.min_lr      # min_lr 0: off
    flat = (waited_enough or floor) and flatness(history, tcfg, state.get("initial_cosine"))[1]
    stop = {PATIENCE: waited_enough and flat, LR_FLOOR: floor and flat,
            MAX_STEPS: tcfg.max_steps is not None and state["steps"] >= tcfg.max_steps,
            MAX_EPOCHS: h["epoch"] >= tcfg.epochs}
    state["stop_reason"] = next((reason for reason, hit in stop.items() if hit), state["stop_reason"])
    # a step budget (a fixed-compute control) is scored at exactly its budget, not at its best epoch
    improved = score > best["score"] or state["stop_reason"] == MAX_STEPS
    if improved:
        best.update(epoch=h["epoch"], val_loss=h["val_loss"], val_cosine=h["val_cosine"], score=score)
    return improved


def _log_epoch(run: _Run, improved: bool, epochs: int) -> None:
    """One line per epoch (never a bar frame), with its rate and the time left if it runs to `epochs`."""
    h, reason = run.history[-1], run.state["stop_reason"]
    why = f"  (stop: {reason})" if reason in CONVERGED else ""
    left = None if reason in CONVERGED else (epochs - h["epoch"]) * h["seconds"]
    tqdm.write(f"epoch {h['epoch']:3d}  step {h['step']:6d}  train {h['train_loss']:.5f}  val {h['val_loss']:.5f}  "
               f"val_cos {h['val_cosine']:.4f}  lr {h['lr']:.2e}  {h['seconds']:.1f}s  "
               f"{h['steps'] / max(h['seconds'], 1e-9):.1f} steps/s  {eta_text(left)} at most"
               f"{'  *' if improved else ''}{why}", file=sys.stderr)


def _init_distributed(device_name: str) -> bool:
    """Join the process group torchrun set up (nccl on CUDA, gloo otherwise). True if we did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def _check_device(name: str) -> None:
    """params.train.device must name a device this machine has: a ConfigError before any work."""
    try:
        device = torch.device("cpu" if name == "auto" else name)
    except RuntimeError:
        raise ConfigError(f"params.train.device: {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
                          ) from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        problem = f"torch {torch.__version__} sees {torch.cuda.device_count()} CUDA device(s) on this machine"
    elif device.type == "mps" and not torch.backends.mps.is_available():
        problem = "MPS is not available here"
    else:
        return
    raise ConfigError(f"params.train.device: {name!r}, but {problem}; use auto or cpu")


def train(spec: RunSpec, *, resume: bool = False, progress: bool = True) -> FitResult:
    """Run the training a spec describes; params, checkpoints and history go to spec.out (if set), whose
    .lock rank 0 (the only writer) holds once data and model are known good (a bad spec leaves no folder)."""
    _check_device(spec.train.device)
    started_dist = _init_distributed(spec.train.device)
    try:
        rank, _ = dist_info()
        seed_everything(spec.seed)
        data = spec.data
        bank = open_bank({"synthetic": data.synthetic} if data.synthetic is not None else {"bank": data.bank})
        train_seqs, val_seqs = sequences(bank, "train", data.train_concepts), sequences(bank, "val")
        try:
            model = build_model(spec.model.name, dim=bank.dim, **spec.model.options)
        except ModelError as e:
            raise ConfigError(f"params.model: {e}") from None
        out = Path(spec.out) if spec.out else None
        writes = out is not None and rank == 0
        with files.folder_lock(out, "lvm train", "run folder (params.out)") if writes else contextlib.nullcontext():
            if writes:
                files.write_text(out / "params.yaml", dump_yaml(spec.to_dict()))
            if progress and rank == 0:
                print(f"{spec.model.name}: {count_parameters(model):,} parameters, {len(train_seqs):,} train / "
                      f"{len(val_seqs):,} val sequences, dim {bank.dim}", file=sys.stderr)
            result = fit(model, train_seqs, val_seqs, spec, bank=bank, out_dir=out, progress=progress, resume=resume)
            if writes:
                files.write_json(out / "history.json", files.to_jsonable(result.history))
        return result
    finally:
        if started_dist:
            dist.destroy_process_group()
