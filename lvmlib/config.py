"""The one run specification (`RunSpec`, validated once, here) and the one YAML reader in lvmlib.
A notebook's params give a `base` spec plus `axes` (named variations, crossed) and `seeds`, which `expand`
turns into run specs (docs/architecture.md). Every error names the file and the key path."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import InputError


class ConfigError(InputError):
    """A params file or mapping with an unknown key, a missing key, or a value of the wrong type."""


def read_yaml(path, *, what: str = "params") -> Any:
    """The one YAML reader: safe_load, errors naming the file. An empty file reads as {}."""
    path = Path(path)
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what} file ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or 'unparsable'})") from None
    return {} if value is None else value


def dump_yaml(value) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class DataSpec:
    bank: str | None = "data/bank-default"   # relative paths resolve from the repository root
    train_concepts: int | None = None        # a nested training subset of this many concepts (None: all)
    synthetic: dict | None = None            # lvmlib.data.synthetic_bank options instead of a bank


@dataclass(frozen=True)
class ModelSpec:
    name: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 5.0e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    schedule: str = "plateau"       # plateau: ReduceLROnPlateau on the stop metric; cosine: warm-up + cosine decay
    warmup_steps: int = 0           # linear LR warm-up (cosine schedule)
    plateau_factor: float = 0.5
    plateau_patience: int = 3       # validations without a min_delta gain before the LR is lowered
    # the stop rule (docs/architecture.md); the best checkpoint and the stop read `stop_metric`
    stop_metric: str = "cosine"     # cosine: VAL cosine (what the reports read); loss: the VAL loss
    patience_steps: int = 300       # floor of the patience, in optimizer steps (0: no early stop)
    patience_share: float = 0.25    # the patience grows with the run: this share of the steps run so far
    min_delta: float = 5.0e-4       # a smaller gain in the stop metric is not an improvement
    flat_share: float = 0.05        # flat: as many steps again would add less than this share of the gain so far
    min_lr: float = 0.0             # plateau: stop once the LR has decayed below this, if flat (0: off)
    max_steps: int | None = None    # stop after this many steps, scored there (a fixed-compute control; not converged)
    precision: str = "fp32"         # fp32 | bf16 (autocast, fp32 master weights) | auto (bf16 where native)
    val_rows: int | None = None     # validate on a fixed sample of this many VAL windows (None: all of them)
    eval_batch_size: int = 1024
    device: str = "auto"            # auto, cpu, cuda, cuda:N, mps


@dataclass(frozen=True)
class EvalSpec:
    rows: int | None = None   # VAL/OOD rows scored, a seeded sample (None: all)
    seed: int = 0             # the sample's and the bootstraps' seed


@dataclass(frozen=True)
class RunSpec:
    model: ModelSpec
    data: DataSpec = DataSpec()
    loss: dict = field(default_factory=lambda: {"mse": 1.0})
    curriculum: dict | None = None
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()
    seed: int = 0
    label: str | None = None
    out: str | None = None
    tags: dict = field(default_factory=dict)   # axis values from `expand` (table columns), e.g. {"loss": "MSE"}

    @property
    def name(self) -> str:
        return self.label or self.model.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_KIND_NAMES = {int: "an int", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}
_AT_LEAST = {**dict.fromkeys(("epochs", "batch_size", "eval_batch_size", "val_rows"), 1),
             **dict.fromkeys(("lr", "weight_decay", "grad_clip", "warmup_steps", "plateau_patience", "patience_steps",
                              "patience_share", "min_delta", "flat_share", "min_lr", "train_concepts", "rows",
                              "max_steps"), 0)}


def _typed(value, kind, where: str):
    """Check `value` against a type annotation (int, float, str, bool, dict, X | None, a spec class)."""
    if dataclasses.is_dataclass(kind):
        return _section(kind, value, where)
    args = typing.get_args(kind)
    if args and type(None) in args:
        return None if value is None else _typed(value, next(a for a in args if a is not type(None)), where)
    # a float field takes an int too; only a bool field takes a bool (which Python counts as an int)
    ok = isinstance(value, (int, float) if kind is float else kind)
    if not ok or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where} must be {_KIND_NAMES[kind]}, got {value!r}")
    least = _AT_LEAST.get(where.rsplit(".", 1)[-1])
    if least is not None and value < least:
        raise ConfigError(f"{where} must be >= {least}, got {value!r}")
    return float(value) if kind is float else value


def _unknown(given, known, where: str, what: str = "") -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}{what}; expected some of {sorted(known)}")


def _section(cls, given, where: str):
    """A spec dataclass from a mapping: unknown keys and wrong types are errors naming the key path."""
    if isinstance(given, cls):
        return given
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {given!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _unknown(given, fields, where)
    missing = [n for n, f in fields.items() if n not in given and f.default is f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key {where}.{missing[0]}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _typed(v, hints[k], f"{where}.{k}") for k, v in given.items()})


def run_spec(given, source: str = "params") -> RunSpec:
    """A validated RunSpec from a mapping (or a RunSpec); errors start with `source` (the file)."""
    from .curriculum import curriculum_config
    from .losses import loss_config
    data = given.get("data") if isinstance(given, Mapping) else None
    if isinstance(data, Mapping) and data.get("synthetic") is not None and "bank" not in data:
        given = {**given, "data": {**data, "bank": None}}      # synthetic data replaces the default bank
    try:
        spec = _section(RunSpec, given, "params")
        _check(spec)
        loss_config(spec.loss, where="params.loss")      # the loss and curriculum schemas are their modules'
        curriculum_config(spec.curriculum, where="params.curriculum")
    except InputError as e:
        raise ConfigError(f"{source}: {e}") from None
    return spec


def _check(spec: RunSpec) -> None:
    """What a type does not say: one data source, a known schedule, a known model and its options."""
    from . import models
    from .data import synthetic_bank
    data, model, train = spec.data, spec.model, spec.train
    if (data.bank is None) == (data.synthetic is None):
        raise ConfigError("params.data needs exactly one of 'bank' (a path) or 'synthetic' (options)")
    if data.synthetic is not None and data.train_concepts is not None:
        raise ConfigError("params.data.train_concepts applies to a bank, not to synthetic data")
    _unknown(data.synthetic or {}, inspect.signature(synthetic_bank).parameters, "params.data.synthetic")
    if train.schedule not in ("plateau", "cosine"):
        raise ConfigError(f"params.train.schedule must be 'plateau' or 'cosine', got {train.schedule!r}")
    for key, allowed in (("stop_metric", ("cosine", "loss")), ("precision", ("fp32", "bf16", "auto"))):
        if getattr(train, key) not in allowed:
            raise ConfigError(f"params.train.{key} must be one of {', '.join(allowed)}, got {getattr(train, key)!r}")
    if not 0 < train.plateau_factor < 1:
        raise ConfigError(f"params.train.plateau_factor must be in (0, 1), got {train.plateau_factor}")
    if model.name not in models.CORES:
        raise ConfigError(f"params.model.name: unknown model {model.name!r}; expected one of {sorted(models.CORES)}")
    known = (set(inspect.signature(models.CORES[model.name]).parameters) - {"in_dim", "out_dim"}
             | {"head", *models.WRAPPER_OPTIONS, *models.FLOW_DEFAULTS, *models.ENERGY_DEFAULTS})
    _unknown(model.options, known, "params.model.options", f" for model {model.name!r}")


def eval_spec(base: Mapping, source: str = "params") -> EvalSpec:
    """The eval section of a (partial) run spec, validated: what baselines are scored on."""
    try:
        return _section(EvalSpec, base.get("eval") or {}, "params.eval")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def read_run_spec(path) -> RunSpec:
    """`lvm train --params FILE`: one run spec from a YAML file."""
    return run_spec(read_yaml(path), source=str(path))


def merge(base: Mapping, override: Mapping) -> dict:
    """`override` on top of `base`: mappings merge key by key, other values replace."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def expand(base: Mapping, axes: Mapping[str, Mapping[str, Mapping]] | None = None, seeds=None,
           source: str = "params") -> list[RunSpec]:
    """Run specs for every combination of the axes' variations ({axis: {label: partial spec merged onto
    base}}), once per seed; labels join the variation labels (" · "), tags hold {axis: label, "seed": s}."""
    axes = dict(axes or {})
    seeds = list(seeds) if seeds is not None else [base.get("seed", 0)]
    bad = [axis for axis, variations in axes.items() if not isinstance(variations, Mapping) or not variations]
    if bad:
        raise ConfigError(f"{source}: axes.{bad[0]} must be a non-empty mapping of label: partial run spec")
    specs = []
    for combo in itertools.product(*(variations.items() for variations in axes.values())):
        spec = functools.reduce(merge, (override or {} for _, override in combo), dict(base))
        labels = [label for label, _ in combo]
        for seed in seeds:
            label = " · ".join(labels + ([f"seed {seed}"] if len(seeds) > 1 else [])) or base.get("label")
            tags = {**dict(zip(axes, labels)), "seed": seed}
            specs.append(run_spec({**spec, "seed": seed, "label": label, "tags": tags}, source))
    return specs
