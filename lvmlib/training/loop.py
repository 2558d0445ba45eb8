"""The training loop: `fit(model, train, val, spec)` on in-memory sequences.

AdamW, a plateau or warm-up + cosine LR schedule, gradient clipping, early stopping, the best weights by
val loss. All randomness of epoch e is seeded from (seed, e), so a resumed run replays an uninterrupted
one bit for bit. Under torch.distributed each rank trains on its shard of every batch; only rank 0 writes.
"""
from __future__ import annotations

import copy
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
from tqdm import tqdm

from ..config import ConfigError, RunSpec
from ..curriculum import Curriculum, curriculum_config
from ..data import Sequences
from ..data.bank import neighbour_rows
from ..losses import FLOW_VAL_SEED, Objective
from ..models import LVM
from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint

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
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and dist_info()[1] > 1:
        return torch.device("cuda", local_rank)
    return torch.device(name)


@dataclass
class FitResult:
    model: LVM                  # best weights by val loss, eval mode
    history: list[dict]         # one entry per epoch
    best_epoch: int | None      # 1-based; None for a model with nothing to train (then 0 epochs)
    best_val_loss: float
    best_val_cosine: float
    epochs_run: int
    stop_reason: str            # patience | lr_floor | max_epochs | max_steps | no_parameters
    optimizer_steps: int
    seconds: float
    out_dir: Path | None
    device: str

    @property
    def converged(self) -> bool:
        """Stopped because it had stopped improving, not by the epoch or step cap."""
        return self.stop_reason in CONVERGED

    @property
    def checkpoint(self) -> Path | None:
        return self.out_dir / "best.pt" if self.out_dir else None


class _Tensors:
    """One split on the device: the bank's vectors once (shared by the splits of one fit) and each window's
    row; batch(idx) gathers contexts, targets and, only for loss terms that need them, the rollout's future
    and info_nce_hard's neighbours. Sequences given as arrays are held as they are."""

    def __init__(self, seqs: Sequences, device, bank=None, horizon: int | None = None,
                 hard_offsets: list[int] | None = None, *, shared: list | None = None):
        self.device = torch.device(device)
        self._shared = [] if shared is None else shared      # (array, tensor): each array on the device once
        as_t = (lambda a: torch.as_tensor(np.ascontiguousarray(a), device=self.device))
        self._n = len(seqs)
        self.vectors = self.rows = self.offsets = self.contexts = self.targets = None
        if seqs.vectors is not None:
            self.vectors = self._on_device(seqs.vectors)
            self.rows = as_t(np.asarray(seqs.index, dtype=np.int64))
            self.offsets = torch.arange(-seqs.context, 0, device=self.device)
        else:
            self.contexts = as_t(seqs.contexts.astype(np.float32))
            self.targets = as_t(seqs.targets.astype(np.float32))
        self.bank_vectors = self.future = self.valid = self.hard = self.hard_valid = None
        if horizon or hard_offsets:
            self.bank_vectors = self._on_device(bank.vectors)
        if horizon:     # bank rows (M, K) and masks; the vectors are gathered per batch
            self.future, self.valid = map(as_t, neighbour_rows(bank, seqs.index, range(horizon), seqs.limit))
        if hard_offsets:
            self.hard, self.hard_valid = map(as_t, neighbour_rows(bank, seqs.index, hard_offsets, seqs.limit))
        seqs.release()  # all-window arrays gathered before (hash, model statistics, curriculum) go now

    def _on_device(self, vectors: np.ndarray) -> torch.Tensor:
        for array, tensor in self._shared:
            if array is vectors:
                return tensor
        v = np.asarray(vectors)
        with warnings.catch_warnings():     # a memory-mapped bank is read-only; nothing writes to it
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.as_tensor(np.ascontiguousarray(v if v.dtype == np.float32 else v.astype(np.float32)),
                                     device=self.device)
        self._shared.append((vectors, tensor))
        return tensor

    def __len__(self):
        return self._n

    def _neighbours(self, rows, valid, idx):
        """(B, K, D) bank vectors of windows idx; cells outside the article 0."""
        if rows is None:
            return None
        return self.bank_vectors[rows[idx]].masked_fill_(~valid[idx][..., None], 0.0)

    def batch(self, idx: torch.Tensor):
        """(contexts, targets, {future, valid, hard, hard_valid}: Objective's keyword inputs, None if unused)."""
        pick = (lambda t: None if t is None else t[idx])
        extra = {"future": self._neighbours(self.future, self.valid, idx), "valid": pick(self.valid),
                 "hard": self._neighbours(self.hard, self.hard_valid, idx), "hard_valid": pick(self.hard_valid)}
        if self.vectors is None:
            return pick(self.contexts), pick(self.targets), extra
        t = self.rows[idx]
        return self.vectors[t[:, None] + self.offsets], self.vectors[t], extra


@torch.no_grad()
def validate(objective: Objective, data: _Tensors, batch_size: int = 1024) -> dict:
    """Val loss (every term on, no context drop), its parts, and mean cos(y_hat, y)."""
    objective.model.eval()
    total, cos_sum, parts = 0.0, 0.0, {}
    device = data.device
    # the flow loss draws noise: one fixed stream per evaluation, so val losses compare across epochs
    gen = torch.Generator(device=device).manual_seed(FLOW_VAL_SEED)
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)), device=device)
        ctx, tgt, extra = data.batch(idx)
        loss, batch_parts, pred = objective(ctx, tgt, **extra, epoch=None, generator=gen)
        n = len(idx)
        total += loss.item() * n
        cos_sum += F.cosine_similarity(pred, tgt, dim=-1).sum().item()
        for k, v in batch_parts.items():
            parts[k] = parts.get(k, 0.0) + v.item() * n
    n = len(data)
    return {"loss": total / n, "cosine": cos_sum / n, "parts": {k: v / n for k, v in parts.items()}}


def _scheduler(optimizer, tcfg, total_steps: int):
    """plateau: ReduceLROnPlateau on the val loss, stepped per epoch; cosine: stepped per batch, linear
    warm-up over warmup_steps, then cosine decay to 0 at the last planned step."""
    if tcfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=tcfg.plateau_factor, patience=tcfg.plateau_patience)
    warm, total = tcfg.warmup_steps, max(total_steps, 1)

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class _State:
    """What a resumed run needs besides weights and optimizer: progress and the best epoch so far."""
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": None, "val_loss": math.inf, "val_cosine": float("nan"),
                                                "bad_epochs": 0})
    stop_reason: str | None = None
    steps: int = 0


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


# what may differ between a run and its --resume: the epoch cap, the device, and naming
RESUMABLE = {("train", "epochs"), ("train", "device"), ("label",), ("out",), ("tags",), ("eval",)}


def _check_resumable(last: dict, record: dict, model: LVM, where) -> None:
    """A resume must continue the same run: same model, data, seed and settings (epochs may grow)."""
    if last.get("model_config") != model.config:
        raise CheckpointError(f"{where}: saved model config {last.get('model_config')} differs from {model.config}")
    if last.get("data") != record["data"]:
        raise CheckpointError(f"{where}: trained on other data ({last.get('data')} vs {record['data']})")
    saved, now = copy.deepcopy(last.get("spec") or {}), copy.deepcopy(record["spec"])
    for path in RESUMABLE:
        for d in (saved, now):
            (d.get(path[0], {}) if len(path) == 2 else d).pop(path[-1], None)
    if saved != now:
        key = next(k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k))
        raise CheckpointError(f"{where}: params differ from the saved run at {key!r}")
    if last.get("optimizer") is None:
        raise CheckpointError(f"{where}: has no optimizer state to resume from")


def _train_epoch(step_module, trainable, optimizer, scheduler, data: _Tensors, order, tcfg, epoch, gen, bar,
                 steps_left=None):
    """One pass over `order` (at most steps_left steps): (summed loss, summed parts, rows this rank saw, steps)."""
    rank, world = dist_info()
    device = data.device
    order_t = torch.as_tensor(order, device=device)
    loss_sum, part_sums, seen, steps = torch.zeros((), device=device), {}, 0, 0
    starts = [s for s in range(0, len(order), tcfg.batch_size) if min(tcfg.batch_size, len(order) - s) >= world]
    for start in bar(starts[:steps_left]):
        rows = order_t[start:start + tcfg.batch_size]
        shard = rows[rank::world]
        ctx, tgt, extra = data.batch(shard)
        loss, parts, _ = step_module(ctx, tgt, **extra, epoch=epoch, generator=gen)
        # each rank's mean is weighted by its share, so DDP's gradient average is the batch mean
        optimizer.zero_grad(set_to_none=True)
        (loss * (len(shard) * world / len(rows))).backward()
        if tcfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, tcfg.grad_clip)
        optimizer.step()
        if tcfg.schedule == "cosine":
            scheduler.step()
        steps += 1
        loss_sum += loss.detach() * len(shard)
        for k, v in parts.items():
            part_sums[k] = part_sums.get(k, torch.zeros((), device=device)) + v * len(shard)
        seen += len(shard)
    return loss_sum, part_sums, seen, steps


def _all_reduce(loss_sum, part_sums, seen):
    """Sum the epoch's loss, parts and row count over the ranks (identity outside DDP)."""
    if dist_info()[1] == 1:
        return loss_sum.item(), {k: v.item() for k, v in part_sums.items()}, seen
    sums = torch.stack([loss_sum, torch.tensor(float(seen), device=loss_sum.device), *part_sums.values()])
    dist.all_reduce(sums)
    return sums[0].item(), dict(zip(part_sums, sums[2:].tolist())), sums[1].item()


def _after_epoch(state: _State, ev: dict, epoch: int, tcfg, lr_now: float) -> bool:
    """Update the best epoch and the stop reason from the val result; True if this epoch improved."""
    improved = ev["loss"] < state.best["val_loss"]
    if improved:
        state.best = {"epoch": epoch + 1, "val_loss": ev["loss"], "val_cosine": ev["cosine"], "bad_epochs": 0}
    else:
        state.best = {**state.best, "bad_epochs": state.best["bad_epochs"] + 1}
    if 0 < tcfg.early_stop_patience <= state.best["bad_epochs"]:      # early_stop_patience 0: off
        state.stop_reason = PATIENCE
    elif tcfg.schedule == "plateau" and tcfg.min_lr > 0 and lr_now < tcfg.min_lr:
        state.stop_reason = LR_FLOOR
    elif tcfg.max_steps is not None and state.steps >= tcfg.max_steps:
        state.stop_reason = MAX_STEPS
    elif epoch + 1 >= tcfg.epochs:
        state.stop_reason = MAX_EPOCHS
    return improved


def fit(model: LVM, train: Sequences, val: Sequences, spec: RunSpec, *, bank=None, out_dir=None,
        progress: bool = True, resume: bool = False) -> FitResult:
    """Train `model` as `spec` (loss, train, curriculum) says. bank: for the rollout and info_nce_hard
    terms and the data fingerprint; out_dir: where best.pt / last.pt go; resume: from out_dir/last.pt."""
    tcfg, seed = spec.train, spec.seed
    rank, world = dist_info()
    device = pick_device(tcfg.device, int(os.environ.get("LOCAL_RANK", 0)))
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"fit needs non-empty train and val sequences (got {len(train)} and {len(val)})")
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
    record = _record(spec, train, val, bank)
    seed_everything(seed)
    state, last = _State(), None
    if resume:
        _, last = read_checkpoint(out_dir / "last.pt")
        _check_resumable(last, record, model, out_dir / "last.pt")
        model.load_state_dict(last["state_dict"])
        state = _State(history=last["history"], **last["state"])
    else:
        model.fit(train.targets)   # statistics from the TRAINING targets only (global mean, robust scaler)
    model.to(device)
    horizon = objective.horizon if objective.needs_future else None
    shared = []     # the bank's vectors go to the device once, for both splits
    data = [_Tensors(s, device, bank, horizon, objective.hard_offsets, shared=shared) for s in (train, val)]
    writer = _Writer(out_dir, model, record, enabled=rank == 0)
    started = time.perf_counter()
    if not any(p.requires_grad for p in model.parameters()):
        return _measure_only(model, objective, data[1], tcfg, writer, out_dir, device)
    return _train(model, objective, data, curriculum, spec, state, last, writer, progress, device, started)


class _Writer:
    """Writes best.pt / last.pt with the run's record (rank 0 with an out_dir; otherwise nothing)."""

    def __init__(self, out_dir, model, record, enabled: bool):
        self.out_dir, self.model, self.record, self.enabled = out_dir, model, record, enabled and out_dir is not None

    def __call__(self, name, state: _State, epoch, optimizer=None, scheduler=None):
        if self.enabled:
            progress = {k: v for k, v in vars(state).items() if k != "history"}
            save_checkpoint(self.out_dir / name, self.model, **self.record, history=state.history, epoch=epoch,
                            state=progress, optimizer=optimizer.state_dict() if optimizer else None,
                            scheduler=scheduler.state_dict() if scheduler else None)


def _measure_only(model, objective, val_t, tcfg, writer, out_dir, device) -> FitResult:
    """Baselines have nothing to learn: measure the val loss once and record them like a run."""
    ev = validate(objective, val_t, tcfg.eval_batch_size)
    state = _State(history=[{"epoch": 0, "val_loss": ev["loss"], "val_parts": ev["parts"], "val_cosine": ev["cosine"]}],
                   best={"epoch": None, "val_loss": ev["loss"], "val_cosine": ev["cosine"], "bad_epochs": 0},
                   stop_reason=NOTHING_TO_TRAIN)
    writer("best.pt", state, 0)
    writer("last.pt", state, 0)
    return FitResult(model.eval(), state.history, None, ev["loss"], ev["cosine"], 0, NOTHING_TO_TRAIN, 0, 0.0,
                     out_dir, str(device))


def _train(model, objective, data, curriculum, spec, state, last, writer, progress, device, started) -> FitResult:
    tcfg, seed = spec.train, spec.seed
    rank, world = dist_info()
    train_t, val_t = data
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    per_epoch = math.ceil(len(train_t) / tcfg.batch_size)
    scheduler = _scheduler(optimizer, tcfg, min(per_epoch * tcfg.epochs, tcfg.max_steps or math.inf))
    best_state = None
    if last is not None:
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        if state.best["epoch"] is not None:
            best_state = copy.deepcopy(read_checkpoint(writer.out_dir / "best.pt")[0].state_dict())
    step_module = objective
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        step_module = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    for epoch in range(len(state.history), tcfg.epochs):
        if state.stop_reason in CONVERGED or state.stop_reason == MAX_STEPS:
            break
        t0 = time.perf_counter()
        # everything random in this epoch depends on (seed, epoch, rank) only: resume replays it
        torch.manual_seed(seed * 1_000_003 + epoch * 101 + rank)
        gen = torch.Generator(device=device).manual_seed(seed * 7919 + epoch * 31 + rank)  # context drop, flow noise
        order = (curriculum.epoch_order(epoch, seed) if curriculum is not None
                 else np.random.default_rng([seed, epoch]).permutation(len(train_t)))
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        bar = (lambda s: tqdm(s, desc=f"epoch {epoch + 1}/{tcfg.epochs}", leave=False, file=sys.stderr,
                              disable=not progress or rank != 0))
        steps_left = None if tcfg.max_steps is None else tcfg.max_steps - state.steps
        sums = _train_epoch(step_module, trainable, optimizer, scheduler, train_t, order, tcfg, epoch, gen, bar,
                            steps_left)
        loss_sum, part_sums, seen = _all_reduce(*sums[:3])
        state.steps += sums[3]
        ev = validate(objective, val_t, tcfg.eval_batch_size)
        if tcfg.schedule == "plateau":
            scheduler.step(ev["loss"])
        improved = _after_epoch(state, ev, epoch, tcfg, optimizer.param_groups[0]["lr"])
        if improved:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.history.append({
            "epoch": epoch + 1, "train_loss": loss_sum / seen,
            "train_parts": {k: v / seen for k, v in part_sums.items()},
            "val_loss": ev["loss"], "val_parts": ev["parts"], "val_cosine": ev["cosine"], "lr": lr,
            "seconds": time.perf_counter() - t0, "train_rows": len(order), "steps": sums[3],
            "world_size": world, "rank_samples": sums[2],      # rows this (writing) rank trained on
            **({"stage": curriculum.stage_at(epoch)} if curriculum is not None else {})})
        if improved:
            writer("best.pt", state, epoch + 1)
        writer("last.pt", state, epoch + 1, optimizer, scheduler)
        if progress and rank == 0:
            _report_epoch(state, improved)
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(model.eval(), state.history, state.best["epoch"], state.best["val_loss"],
                     state.best["val_cosine"], len(state.history), state.stop_reason or MAX_EPOCHS, state.steps,
                     time.perf_counter() - started, writer.out_dir, str(device))


def _report_epoch(state: _State, improved: bool) -> None:
    h = state.history[-1]
    stop = f"  (stop: {state.stop_reason})" if state.stop_reason in CONVERGED else ""
    tqdm.write(f"epoch {h['epoch']:3d}  train {h['train_loss']:.5f}  val {h['val_loss']:.5f}  val_cos "
               f"{h['val_cosine']:.4f}  lr {h['lr']:.2e}  {h['seconds']:.1f}s{'  *' if improved else ''}{stop}",
               file=sys.stderr)
