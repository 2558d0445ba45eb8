"""Checkpoints that prove what they hold (SPEC defect 7): weights, model config, a probe (the model's outputs
on fixed seeded inputs) and the run's record. Loading rebuilds the model and re-runs the probe, so a truncated,
corrupted or altered file, or weights that do not fit their config, is refused with an error naming the file."""
import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import files
from ..errors import InputError
from ..models import LVM, ModelError, build_model

FORMAT = "lvmlib-checkpoint/1"
PROBE_SEED = 20240531
PROBE_BATCH = 8
PROBE_ATOL = 1e-5


class CheckpointError(InputError):
    """A checkpoint that cannot be read, or is not what it claims to be."""


@torch.no_grad()
def _probe(model: LVM, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return model(F.normalize(torch.randn(PROBE_BATCH, 5, model.dim, generator=gen), dim=-1))


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


def _to_cpu(obj):
    """Tensors anywhere in nested dicts, lists and tuples moved to the CPU (a checkpoint loads anywhere)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path, model: LVM, **record) -> Path:
    """Write weights + config + probe + `record` atomically, once the model rebuilt from them predicts as it does."""
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    probe = _probe(_rebuild(model.config, state, path), PROBE_SEED)   # on CPU, from the saved weights
    live = _probe(copy.deepcopy(model).cpu().eval(), PROBE_SEED)       # the model as it was trained
    if not torch.allclose(live, probe, rtol=0, atol=PROBE_ATOL):
        raise RuntimeError(f"{path}: the model rebuilt from its config and weights does not predict what the "
                           f"trained model predicts (max |diff| {(live - probe).abs().max().item():.3g})")
    payload = {"format": FORMAT, "model_config": dict(model.config), "state_dict": state,
               "probe": {"seed": PROBE_SEED, "outputs": probe}, "torch_version": str(torch.__version__),
               **_to_cpu(record)}
    files.atomic_write(path, lambda f: torch.save(payload, f))   # never half a checkpoint on disk
    return path


def fingerprint_of(info: dict) -> str | None:
    """The bank fingerprint a checkpoint's run trained on (stored once, in its data record)."""
    return (info.get("data") or {}).get("fingerprint")


def load_checkpoint(path, map_location="cpu", expected_fingerprint: str | None = None) -> tuple[LVM, dict]:
    """A verified model in eval mode and everything saved beside its weights (spec, data, history, ...)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, pickle of the wrong kind...
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: cannot read the checkpoint, truncated or corrupted? "
                              f"({type(e).__name__}: {first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise CheckpointError(f"{path}: not an lvmlib checkpoint (format {found!r})")
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
        raise CheckpointError(f"{path}: probe outputs differ from the saved ones (max |diff| {diff:.3g} > "
                              f"{PROBE_ATOL}): the weights are not those that were saved")
    if expected_fingerprint is not None and fingerprint_of(payload) != expected_fingerprint:
        raise CheckpointError(f"{path}: trained on data {fingerprint_of(payload)!r}, expected {expected_fingerprint!r}")
    return model.to(map_location).eval(), {k: v for k, v in payload.items() if k != "state_dict"}
