"""Training: `train(spec)` (data, model, fit, out/), `fit` on in-memory sequences, verified checkpoints."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .. import files
from ..config import ConfigError, RunSpec, dump_yaml
from ..data import open_bank, sequences
from ..models import ModelError, build_model, count_parameters
from .checkpoint import CheckpointError, fingerprint_of, load_checkpoint, save_checkpoint
from .loop import CONVERGED, FitResult, dist_info, fit, pick_device, seed_everything, validate


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
            result = fit(model, train_seqs, val_seqs, spec, bank=bank, out_dir=out, progress=progress,
                         resume=resume)
            if writes:
                files.write_json(out / "history.json", files.to_jsonable(result.history))
        return result
    finally:
        if started_dist:
            dist.destroy_process_group()


__all__ = ["CONVERGED", "CheckpointError", "FitResult", "dist_info", "fingerprint_of", "fit", "load_checkpoint",
           "pick_device", "save_checkpoint", "seed_everything", "train", "validate"]
