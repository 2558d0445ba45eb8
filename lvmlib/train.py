"""Training: `fit` on in-memory sequences, `train(params)` from a params dict, and the CLI

    lvm train --params FILE [--resume]
    python -m lvmlib.train --params FILE [--resume]
    python -m torch.distributed.run --nproc_per_node 2 -m lvmlib.train --params FILE   (DDP)

Params (YAML), every key optional except data and model; an unknown key is an error naming it:

    seed: 0
    data: {bank: data/bank-default, train_concepts: null}
          # or data: {synthetic: {n_articles: 60, length: 20, dim: 32, noise: 0.0, seed: 0}}
    model: {name: lstm, options: {}}                      # lvmlib.models.build_model(name, dim, **options)
    loss: {mse: 1.0, ...}                                 # lvmlib.losses.LOSS_DEFAULTS
    curriculum: null                                      # lvmlib.curriculum (P5), e.g. {preset: p5}
    train: {epochs: 20, batch_size: 64, lr: 5.0e-4, weight_decay: 0.01, grad_clip: 1.0,
            plateau_factor: 0.5, plateau_patience: 3, early_stop_patience: 6,
            eval_batch_size: 1024, device: auto}
    out: runs/lstm                                        # null: write nothing

What a run does: AdamW; ReduceLROnPlateau on the val loss; gradient clipping; early stopping;
the best checkpoint by val loss (out/best.pt) and the last one (out/last.pt, for --resume).
Batches are index slices of tensors held in memory, in a seeded permutation per epoch. All the
randomness of epoch e is seeded from (seed, e), so a resumed run replays exactly what an
uninterrupted run would have done.

Checkpoints hold the weights, model config, data fingerprint, params, history, optimizer and
scheduler state, and a probe: the model's outputs on fixed seeded inputs. load_checkpoint
rebuilds the model and re-runs the probe, so a truncated, corrupted, or altered file, or one
whose weights do not fit its config, is refused with an error naming the file (SPEC defect 7).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import inspect
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from .errors import InputError
from . import files
from .curriculum import Curriculum, CurriculumError, curriculum_config
from .data import BankError, Sequences, neighbours, open_bank, sequences, synthetic_bank
from .losses import FLOW_VAL_SEED, LossConfigError, Objective, loss_config
from .models import LVM, ModelError, build_model, count_parameters

CHECKPOINT_FORMAT = "lvmlib-checkpoint/1"
PROBE_SEED = 20240531
PROBE_BATCH = 8
PROBE_ATOL = 1e-5

TRAIN_DEFAULTS = {
    "epochs": 20, "batch_size": 64, "lr": 5.0e-4, "weight_decay": 0.01, "grad_clip": 1.0,
    "plateau_factor": 0.5, "plateau_patience": 3, "early_stop_patience": 6,
    "eval_batch_size": 1024, "device": "auto",
}
PARAMS_KEYS = ("seed", "data", "model", "loss", "curriculum", "train", "out")
# what may change between a run and its --resume
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "device")}


class ParamsError(InputError):
    """Params (a YAML file or a dict) with an unknown key or a bad value."""


class CheckpointError(InputError):
    """A checkpoint that cannot be read, or is not what it claims to be."""


# ----------------------------------------------------------------------------------------
# Params

def _check_keys(section: dict, allowed, where: str) -> None:
    if not isinstance(section, dict):
        raise ParamsError(f"{where} must be a mapping, got {type(section).__name__}")
    for key in section:
        if key not in allowed:
            raise ParamsError(f"unknown key {f'{where}.{key}'!r}; expected one of {sorted(allowed)}")


def train_config(given: dict | None, where: str = "train") -> dict:
    given = given or {}
    _check_keys(given, TRAIN_DEFAULTS, where)
    cfg = {**TRAIN_DEFAULTS, **given}
    for key in ("epochs", "batch_size", "plateau_patience", "early_stop_patience", "eval_batch_size"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if "patience" in key else 1):
            kind = "an int >= 0 (0: off)" if key == "early_stop_patience" else (
                "an int >= 0" if "patience" in key else "a positive int")
            raise ParamsError(f"{where}.{key} must be {kind}, got {v!r}")
    for key in ("lr", "weight_decay", "grad_clip", "plateau_factor"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ParamsError(f"{where}.{key} must be a number >= 0, got {v!r}")
    if not 0 < cfg["plateau_factor"] < 1:
        raise ParamsError(f"{where}.plateau_factor must be in (0, 1), got {cfg['plateau_factor']}")
    if not isinstance(cfg["device"], str):
        raise ParamsError(f"{where}.device must be a string (auto, cpu, cuda, cuda:N, mps)")
    return cfg


def fit_config(config: dict | None) -> dict:
    """The training part of the params: {loss, train, curriculum}, validated, defaults filled."""
    config = config or {}
    _check_keys(config, ("loss", "train", "curriculum"), "config")
    try:
        return {"loss": loss_config(config.get("loss")), "train": train_config(config.get("train")),
                "curriculum": curriculum_config(config.get("curriculum"))}
    except (LossConfigError, CurriculumError) as e:
        raise ParamsError(str(e)) from None


def params_config(params: dict, source: str = "params") -> dict:
    """Whole params dict, validated; errors name the key (and the file, via `source`)."""
    try:
        _check_keys(params, PARAMS_KEYS, "params")
        for key in ("data", "model"):
            if key not in params:
                raise ParamsError(f"missing key 'params.{key}'")
        seed = params.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ParamsError(f"params.seed must be an int, got {seed!r}")
        data = params["data"]
        _check_keys(data, ("bank", "train_concepts", "synthetic"), "data")
        if ("bank" in data) == ("synthetic" in data):
            raise ParamsError("data needs exactly one of 'bank' (a path) or 'synthetic' (options)")
        if "synthetic" in data:
            if "train_concepts" in data:
                raise ParamsError("data.train_concepts applies to a bank, not to synthetic data")
            _check_keys(data["synthetic"] or {}, inspect.signature(synthetic_bank).parameters, "data.synthetic")
        model = params["model"]
        _check_keys(model, ("name", "options"), "model")
        if "name" not in model:
            raise ParamsError("missing key 'model.name'")
        _check_keys(model.get("options") or {}, _any_key(), "model.options")  # checked by build_model
        out = params.get("out")
        if out is not None and not isinstance(out, str):
            raise ParamsError(f"params.out must be a path or null, got {out!r}")
        fitcfg = fit_config({k: params[k] for k in ("loss", "train", "curriculum") if k in params})
    except ParamsError as e:
        raise ParamsError(f"{source}: {e}") from None
    return {"seed": seed, "data": data, "model": {"name": model["name"], "options": dict(model.get("options") or {})},
            **fitcfg, "out": out}


class _any_key:
    def __contains__(self, key):
        return True


def read_params(path) -> dict:
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ParamsError(f"{path}: cannot read params file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: params must be a YAML mapping")
    return params


# ----------------------------------------------------------------------------------------
# Small helpers

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sequences_hash(train: Sequences, val: Sequences) -> str:
    """Identifies the exact train/val rows a run saw (with or without a bank)."""
    h = hashlib.blake2b(digest_size=8)
    for arr in (train.index, train.targets, val.index, val.targets):
        arr = np.ascontiguousarray(arr)
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _first_difference(a, b, path=()):
    """Path (tuple of keys) of the first place two nested dicts differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return path + (key,)
            found = _first_difference(a[key], b[key], path + (key,))
            if found:
                return found
        return None
    return None if a == b else path


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# ----------------------------------------------------------------------------------------
# Checkpoints

def probe_inputs(dim: int, seed: int = PROBE_SEED) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(PROBE_BATCH, 5, dim, generator=gen), dim=-1)


def _rebuild(config: dict, state: dict, where) -> LVM:
    """A CPU model from config + weights; errors name `where`. Does not touch the global RNG."""
    with torch.random.fork_rng(devices=[]):
        try:
            model = build_model(**config)
        except (ModelError, TypeError) as e:
            raise CheckpointError(f"{where}: cannot rebuild the model from its config ({e})") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: weights do not fit the model config ({str(e).splitlines()[0]})") from None
    return model.eval()


@torch.no_grad()
def _probe(model: LVM, seed: int) -> torch.Tensor:
    return model(probe_inputs(model.dim, seed))


def save_checkpoint(path, model: LVM, **info) -> Path:
    """Write weights + config + probe + `info` (history, params, optimizer state, ...) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    probe = _probe(_rebuild(model.config, state, path), PROBE_SEED)   # on CPU, from the saved weights
    live = _probe(copy.deepcopy(model).cpu().eval(), PROBE_SEED)       # the model as it was trained
    if not torch.allclose(live, probe, rtol=0, atol=PROBE_ATOL):
        raise CheckpointError(f"{path}: the model rebuilt from its config and weights does not predict what the "
                              f"trained model predicts (max |diff| {(live - probe).abs().max().item():.3g})")
    payload = {"format": CHECKPOINT_FORMAT, "model_config": dict(model.config), "state_dict": state,
               "probe": {"seed": PROBE_SEED, "outputs": probe}, "torch_version": str(torch.__version__),
               **_to_cpu(info)}
    files.atomic_write(path, lambda f: torch.save(payload, f))   # never half a checkpoint on disk
    return path


def read_checkpoint(path) -> tuple[LVM, dict]:
    """(verified CPU model, whole payload). See load_checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, pickle of the wrong kind...
        raise CheckpointError(f"{path}: cannot read the checkpoint, truncated or corrupted? ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an lvmlib checkpoint (format {payload.get('format') if isinstance(payload, dict) else None!r})")
    for key in ("model_config", "state_dict", "probe"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    model = _rebuild(payload["model_config"], payload["state_dict"], path)
    probe = payload["probe"]
    if not isinstance(probe, dict) or not {"outputs", "seed"} <= set(probe):
        raise CheckpointError(f"{path}: checkpoint probe lacks 'outputs' or 'seed'")
    saved = probe["outputs"]
    try:
        got = _probe(model, int(probe["seed"]))
    except Exception as e:
        raise CheckpointError(f"{path}: the rebuilt model fails on the probe batch ({e})") from None
    if got.shape != saved.shape or not torch.allclose(got, saved, rtol=0, atol=PROBE_ATOL, equal_nan=True):
        diff = (got - saved).abs().max().item() if got.shape == saved.shape else float("nan")
        raise CheckpointError(f"{path}: probe outputs differ from the saved ones (max |diff| {diff:.3g} > {PROBE_ATOL}): "
                              "the weights are not those that were saved")
    return model, payload


def load_checkpoint(path, map_location="cpu", expected_fingerprint: str | None = None) -> tuple[LVM, dict]:
    """Rebuild a model from a checkpoint and verify it. Returns (model in eval mode, info), info
    being everything saved except the weights (model_config, data, params, history, epoch, ...)."""
    model, payload = read_checkpoint(path)
    if expected_fingerprint is not None:
        saved = payload.get("fingerprint")
        if saved != expected_fingerprint:
            raise CheckpointError(f"{path}: trained on data {saved!r}, expected {expected_fingerprint!r}")
    info = {k: v for k, v in payload.items() if k != "state_dict"}
    return model.to(map_location).eval(), info


# ----------------------------------------------------------------------------------------
# Fitting

@dataclass
class FitResult:
    model: LVM                  # best weights by val loss, eval mode
    history: list[dict]         # one entry per epoch
    best_epoch: int | None      # 1-based; None for a model with nothing to train (then 0 epochs)
    best_val_loss: float
    best_val_cosine: float
    epochs_run: int
    stopped_early: bool
    out_dir: Path | None
    device: str

    @property
    def checkpoint(self) -> Path | None:
        return self.out_dir / "best.pt" if self.out_dir else None


class _Tensors:
    """One split held on the device: contexts, targets, and only when a loss term needs them
    (from the bank) the rollout's future targets + mask and info_nce_hard's v[t+k] + mask."""

    def __init__(self, seqs: Sequences, device, bank=None, horizon: int | None = None,
                 hard_offsets: list[int] | None = None):
        self.contexts = torch.as_tensor(np.ascontiguousarray(seqs.contexts, dtype=np.float32), device=device)
        self.targets = torch.as_tensor(np.ascontiguousarray(seqs.targets, dtype=np.float32), device=device)
        self.future = self.valid = self.hard = self.hard_valid = None
        if horizon:
            future, valid = neighbours(bank, seqs.index, range(horizon), seqs.limit)
            self.future = torch.as_tensor(future, device=device)
            self.valid = torch.as_tensor(valid, device=device)
        if hard_offsets:
            hard, hard_valid = neighbours(bank, seqs.index, hard_offsets, seqs.limit)
            self.hard = torch.as_tensor(hard, device=device)
            self.hard_valid = torch.as_tensor(hard_valid, device=device)

    def __len__(self):
        return len(self.targets)

    def batch(self, idx: torch.Tensor):
        """(contexts, targets, {future, valid, hard, hard_valid}: Objective's keyword inputs, None if unused)."""
        pick = (lambda t: None if t is None else t[idx])
        extra = {"future": pick(self.future), "valid": pick(self.valid),
                 "hard": pick(self.hard), "hard_valid": pick(self.hard_valid)}
        return pick(self.contexts), pick(self.targets), extra


@torch.no_grad()
def evaluate(objective: Objective, data: _Tensors, batch_size: int = 1024) -> dict:
    """Val loss (every term on, no context drop), its parts, and mean cos(y_hat, y)."""
    objective.model.eval()
    total, cos_sum, parts = 0.0, 0.0, {}
    device = data.targets.device
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


def fit(model: LVM, train: Sequences, val: Sequences, config: dict | None = None, *, bank=None, out_dir=None,
        seed: int = 0, progress: bool = True, resume: bool = False, params: dict | None = None) -> FitResult:
    """Train `model` on in-memory sequences; config = {loss, train, curriculum} sections of the params.

    bank: needed for the rollout loss (future targets) and info_nce_hard's article_offsets, and
    recorded as the data fingerprint.
    out_dir: where best.pt / last.pt go (None: nothing is written). resume: continue from
    out_dir/last.pt. params: the whole params, stored in checkpoints for the record.
    Under torch.distributed each rank trains on its shard of every batch; only rank 0 writes.
    """
    cfg = fit_config(config)
    tcfg = cfg["train"]
    rank, world = dist_info()
    device = pick_device(tcfg["device"], int(os.environ.get("LOCAL_RANK", 0)))
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"fit needs non-empty train and val sequences (got {len(train)} and {len(val)})")
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise ParamsError("resume needs an output folder (params.out / out_dir)")
    try:
        objective = Objective(model, cfg["loss"])   # refuses loss terms the model cannot take (flow head)
    except LossConfigError as e:
        raise ParamsError(str(e)) from None
    if objective.needs_future and bank is None:
        raise ParamsError("loss.rollout.weight > 0 needs the bank (future targets): pass bank= to fit")
    if objective.hard_offsets and bank is None:
        raise ParamsError("loss.info_nce_hard.article_offsets needs the bank (the article's vectors): pass bank= to fit")
    curriculum = Curriculum(train.contexts, train.targets, cfg["curriculum"]) if cfg["curriculum"] else None
    data_id = {"fingerprint": (bank.manifest.get("fingerprint") if bank is not None else None),
               "sequences": sequences_hash(train, val), "n_train": len(train), "n_val": len(val)}
    # "fingerprint" (the bank's) at top level is what lvmlib.metrics checks before evaluating
    record = {"fit_config": cfg, "seed": seed, "data": data_id, "fingerprint": data_id["fingerprint"],
              "params": params if params is not None else {}}

    seed_everything(seed)
    start_epoch, history, best = 0, [], {"epoch": None, "val_loss": math.inf, "val_cosine": float("nan"), "bad_epochs": 0}
    stopped_early, last = False, None
    if resume:
        _, last = read_checkpoint(out_dir / "last.pt")
        _check_resumable(last, record, model, out_dir / "last.pt")
        model.load_state_dict(last["state_dict"])
        start_epoch, history, best, stopped_early = last["epoch"], last["history"], last["best"], last["stopped_early"]
    else:
        model.fit(train.targets)   # statistics from the TRAINING targets only (global mean, robust scaler)
    model.to(device)

    horizon = objective.horizon if objective.needs_future else None
    train_t = _Tensors(train, device, bank, horizon, objective.hard_offsets)
    val_t = _Tensors(val, device, bank, horizon, objective.hard_offsets)
    trainable = [p for p in model.parameters() if p.requires_grad]
    writes = rank == 0 and out_dir is not None

    def checkpoint(name, epoch, optimizer=None, scheduler=None):
        save_checkpoint(out_dir / name, model, **record, history=history, epoch=epoch, best=best,
                        stopped_early=stopped_early,
                        optimizer=optimizer.state_dict() if optimizer else None,
                        scheduler=scheduler.state_dict() if scheduler else None)

    if not trainable:   # baselines: nothing to learn, just measure them
        ev = evaluate(objective, val_t, tcfg["eval_batch_size"])
        history = [{"epoch": 0, "val_loss": ev["loss"], "val_parts": ev["parts"], "val_cosine": ev["cosine"]}]
        best = {"epoch": None, "val_loss": ev["loss"], "val_cosine": ev["cosine"], "bad_epochs": 0}
        if writes:
            checkpoint("best.pt", 0)
            checkpoint("last.pt", 0)
        return FitResult(model.eval(), history, None, ev["loss"], ev["cosine"], 0, False, out_dir, str(device))

    optimizer = torch.optim.AdamW(trainable, lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=tcfg["plateau_factor"],
                                                           patience=tcfg["plateau_patience"])
    best_state = None
    if resume:
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        if best["epoch"] is not None:
            best_model, _ = read_checkpoint(out_dir / "best.pt")
            best_state = copy.deepcopy(best_model.state_dict())
        del last

    step_module = objective
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        step_module = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)

    n_train = len(train_t)
    batch_size = tcfg["batch_size"]
    for epoch in range(start_epoch, tcfg["epochs"]):
        if stopped_early:
            break
        t0 = time.perf_counter()
        # everything random in this epoch depends on (seed, epoch, rank) only: resume replays it
        torch.manual_seed(seed * 1_000_003 + epoch * 101 + rank)
        # context drop and the flow loss's noise draw from it
        drop_gen = torch.Generator(device=device).manual_seed(seed * 7919 + epoch * 31 + rank)
        if curriculum is not None:
            order = curriculum.epoch_order(epoch, seed)
        else:
            order = np.random.default_rng([seed, epoch]).permutation(n_train)
        order_t = torch.as_tensor(order, device=device)
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=device)
        part_sums: dict[str, torch.Tensor] = {}
        seen = 0
        starts = [s for s in range(0, len(order), batch_size) if min(batch_size, len(order) - s) >= world]
        bar = tqdm(starts, desc=f"epoch {epoch + 1}/{tcfg['epochs']}", leave=False, file=sys.stderr,
                   disable=not progress or rank != 0)
        for start in bar:
            rows = order_t[start:start + batch_size]
            shard = rows[rank::world]
            ctx, tgt, extra = train_t.batch(shard)
            loss, parts, _ = step_module(ctx, tgt, **extra, epoch=epoch, generator=drop_gen)
            # each rank's mean is weighted by its share, so DDP's gradient average is the batch mean
            share = len(shard) * world / len(rows)
            optimizer.zero_grad(set_to_none=True)
            (loss * share).backward()
            if tcfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(trainable, tcfg["grad_clip"])
            optimizer.step()
            loss_sum += loss.detach() * len(shard)
            for k, v in parts.items():
                part_sums[k] = part_sums.get(k, torch.zeros((), device=device)) + v * len(shard)
            seen += len(shard)
        rank_samples = seen
        if world > 1:
            sums = torch.stack([loss_sum, torch.tensor(float(seen), device=device), *part_sums.values()])
            dist.all_reduce(sums)
            loss_sum, seen, part_vals = sums[0], sums[1].item(), sums[2:]
            part_sums = dict(zip(part_sums, part_vals))
        ev = evaluate(objective, val_t, tcfg["eval_batch_size"])
        scheduler.step(ev["loss"])
        improved = ev["loss"] < best["val_loss"]
        if improved:
            best = {"epoch": epoch + 1, "val_loss": ev["loss"], "val_cosine": ev["cosine"], "bad_epochs": 0}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            best = {**best, "bad_epochs": best["bad_epochs"] + 1}
        # early_stop_patience 0 switches early stopping off
        stopped_early = 0 < tcfg["early_stop_patience"] <= best["bad_epochs"]
        history.append({
            "epoch": epoch + 1, "train_loss": loss_sum.item() / seen,
            "train_parts": {k: v.item() / seen for k, v in part_sums.items()},
            "val_loss": ev["loss"], "val_parts": ev["parts"], "val_cosine": ev["cosine"], "lr": lr,
            "seconds": time.perf_counter() - t0, "train_rows": len(order),
            "world_size": world, "rank_samples": rank_samples,      # rows this (writing) rank trained on
            **({"stage": curriculum.stage_at(epoch)} if curriculum is not None else {}),
        })
        if writes:
            if improved:
                checkpoint("best.pt", epoch + 1)
            checkpoint("last.pt", epoch + 1, optimizer, scheduler)
        if progress and rank == 0:
            h = history[-1]
            tqdm.write(f"epoch {h['epoch']:3d}  train {h['train_loss']:.5f}  val {h['val_loss']:.5f}  "
                       f"val_cos {h['val_cosine']:.4f}  lr {lr:.2e}  {h['seconds']:.1f}s"
                       f"{'  *' if improved else ''}{'  (early stop)' if stopped_early else ''}", file=sys.stderr)

    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(model.eval(), history, best["epoch"], best["val_loss"], best["val_cosine"],
                     len(history), stopped_early, out_dir, str(device))


def _check_resumable(last: dict, record: dict, model: LVM, where) -> None:
    """A resume must continue the same run: same model, data, seed and settings (epochs may grow)."""
    if last.get("model_config") != model.config:
        raise CheckpointError(f"{where}: saved model config {last.get('model_config')} differs from {model.config}")
    if last.get("data") != record["data"]:
        raise CheckpointError(f"{where}: trained on other data ({last.get('data')} vs {record['data']})")
    if last.get("seed") != record["seed"]:
        raise CheckpointError(f"{where}: trained with seed {last.get('seed')}, resuming with {record['seed']}")
    saved, now = copy.deepcopy(last.get("fit_config")), copy.deepcopy(record["fit_config"])
    for section, key in RESUMABLE_CHANGES:
        saved.get(section, {}).pop(key, None)
        now[section].pop(key, None)
    diff = _first_difference(saved, now)
    if diff:
        raise CheckpointError(f"{where}: params differ from the saved run at {'.'.join(map(str, diff))!r}")
    if last.get("optimizer") is None:
        raise CheckpointError(f"{where}: has no optimizer state to resume from")


# ----------------------------------------------------------------------------------------
# From params / the command line

def load_data(data: dict):
    """The bank a params `data:` section names (a bank folder, or synthetic options)."""
    return open_bank({k: v for k, v in data.items() if k != "train_concepts"})


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


def train(params: dict, *, resume: bool = False, progress: bool = True, source: str = "params") -> FitResult:
    """Run the training a params dict describes (see the module docstring)."""
    p = params_config(params, source)
    started_dist = _init_distributed(p["train"]["device"])
    try:
        rank, _ = dist_info()
        seed_everything(p["seed"])
        bank = load_data(p["data"])
        train_seqs = sequences(bank, "train", p["data"].get("train_concepts"))
        val_seqs = sequences(bank, "val")
        try:
            model = build_model(p["model"]["name"], dim=bank.dim, **p["model"]["options"])
        except ModelError as e:
            raise ParamsError(f"{source}: model: {e}") from None
        out = Path(p["out"]) if p["out"] else None
        if out is not None and rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        if progress and rank == 0:
            print(f"{p['model']['name']}: {count_parameters(model):,} parameters, {len(train_seqs):,} train / "
                  f"{len(val_seqs):,} val sequences, dim {bank.dim}", file=sys.stderr)
        result = fit(model, train_seqs, val_seqs, {k: p[k] for k in ("loss", "train", "curriculum")}, bank=bank,
                     out_dir=out, seed=p["seed"], progress=progress, resume=resume, params=p)
        if out is not None and rank == 0:
            (out / "history.json").write_text(json.dumps(result.history, indent=1))
        return result
    finally:
        if started_dist:
            dist.destroy_process_group()


def cli_main(argv: list[str]) -> int:
    """`lvm train --params FILE [--resume] [--quiet]` (argv without the program name)."""
    if argv and argv[0] == "train":   # tolerate being handed the subcommand too
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="lvm train", description="Train a next-concept-vector model.")
    parser.add_argument("--params", required=True, help="params YAML file")
    parser.add_argument("--resume", action="store_true", help="continue from out/last.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        result = train(read_params(args.params), resume=args.resume, progress=not args.quiet, source=args.params)
    except (ParamsError, CheckpointError, ModelError, BankError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:   # the process group is gone by now
        where = f"  checkpoint {result.checkpoint}" if result.checkpoint else ""
        print(f"best epoch {result.best_epoch}  val_loss {result.best_val_loss:.6f}  "
              f"val_cosine {result.best_val_cosine:.4f}  ({result.epochs_run} epochs){where}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
