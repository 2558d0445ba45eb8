"""P5 curriculum: train first on "forward-distinct" samples (the target near ctx[-1] and nearer to it than to
any earlier slot), then on wider stages (the `curriculum:` params: docs/architecture.md)."""
from __future__ import annotations

import math

import numpy as np

from .errors import InputError

STAGE_KEYS = ("start_epoch", "min_sim_prev", "min_adv_prev", "top_fraction")
PRESETS = {
    # SPEC P5 thresholds, then wider stages, then everything
    "p5": [{"start_epoch": 0, "min_sim_prev": 0.66, "min_adv_prev": 0.08},
           {"start_epoch": 4, "min_sim_prev": 0.5, "min_adv_prev": 0.0},
           {"start_epoch": 8}],
    # what seed report 004 ran as stage A: the top 30 % by adv_prev
    "p5_top30": [{"start_epoch": 0, "top_fraction": 0.3},
                 {"start_epoch": 4, "top_fraction": 0.7},
                 {"start_epoch": 8}],
}


class CurriculumError(InputError):
    """A `curriculum:` section with an unknown key, a bad value, or an empty stage."""


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def forward_distinctness(contexts: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sim_prev, adv_prev), each (M,): cos(y, ctx[-1]), and its lead over max_{i<=3} cos(y, ctx_i)
    (high when the target resembles ctx[-1] most; the original had it inverted, SPEC defect 6)."""
    cos = np.einsum("mtd,md->mt", _unit(contexts), _unit(targets))          # (M, 5): cos(y, ctx_i)
    return cos[:, -1], cos[:, -1] - cos[:, :-1].max(axis=1)


def curriculum_config(given: dict | None, where: str = "curriculum") -> list[dict] | None:
    """Validated list of stages (sorted by start_epoch, first at 0), or None for no curriculum; `given` is
    {stages: [...]}, {preset: name} or the list of stages itself."""
    if given is None:
        return None
    if isinstance(given, list):          # already a list of stages (e.g. a validated config read back)
        given = {"stages": given}
    if not isinstance(given, dict):
        raise CurriculumError(f"{where} must be a mapping or null, got {type(given).__name__}")
    unknown = set(given) - {"stages", "preset"}
    if unknown:
        raise CurriculumError(f"unknown key '{where}.{sorted(unknown)[0]}'; expected 'stages' or 'preset'")
    if ("stages" in given) == ("preset" in given):
        raise CurriculumError(f"{where} needs exactly one of 'stages' or 'preset'")
    if "preset" in given and given["preset"] not in PRESETS:
        raise CurriculumError(f"{where}.preset {given['preset']!r} unknown; expected one of {sorted(PRESETS)}")
    stages = PRESETS[given["preset"]] if "preset" in given else given["stages"]
    if not isinstance(stages, list) or not stages:
        raise CurriculumError(f"{where}.stages must be a non-empty list")
    out = []
    for i, stage in enumerate(stages):
        here = f"{where}.stages[{i}]"
        if not isinstance(stage, dict):
            raise CurriculumError(f"{here} must be a mapping")
        for key, value in stage.items():
            if key not in STAGE_KEYS:
                raise CurriculumError(f"unknown key '{here}.{key}'; expected one of {STAGE_KEYS}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CurriculumError(f"{here}.{key} must be a number, got {value!r}")
        if "top_fraction" in stage and not 0 < stage["top_fraction"] <= 1:
            raise CurriculumError(f"{here}.top_fraction must be in (0, 1], got {stage['top_fraction']}")
        out.append({**stage, "start_epoch": int(stage.get("start_epoch", 0))})
    out.sort(key=lambda s: s["start_epoch"])
    if out[0]["start_epoch"] != 0:
        raise CurriculumError(f"{where}: the first stage must start at epoch 0")
    if len({s["start_epoch"] for s in out}) != len(out):
        raise CurriculumError(f"{where}: two stages start at the same epoch")
    return out


def stage_rows(sim_prev: np.ndarray, adv_prev: np.ndarray, stage: dict) -> np.ndarray:
    """Sorted row indices of the samples a stage trains on: those passing its thresholds, then (with
    top_fraction) the top fraction of those by adv_prev; a stage with no filter is all rows."""
    keep = np.ones(len(sim_prev), dtype=bool)
    if "min_sim_prev" in stage:
        keep &= sim_prev >= stage["min_sim_prev"]
    if "min_adv_prev" in stage:
        keep &= adv_prev >= stage["min_adv_prev"]
    rows = np.flatnonzero(keep)
    if "top_fraction" in stage:
        n = math.ceil(stage["top_fraction"] * len(rows))
        rows = np.sort(rows[np.argsort(-adv_prev[rows], kind="stable")[:n]])
    return rows


class Curriculum:
    """Training rows per epoch for a list of stages (see curriculum_config)."""

    def __init__(self, contexts: np.ndarray, targets: np.ndarray, stages: list[dict]):
        self.stages = stages
        self.sim_prev, self.adv_prev = forward_distinctness(contexts, targets)
        self.rows_per_stage = [stage_rows(self.sim_prev, self.adv_prev, s) for s in stages]
        for i, rows in enumerate(self.rows_per_stage):
            if len(rows) == 0:
                raise CurriculumError(f"curriculum stage {i} ({stages[i]}) selects no training samples")

    def stage_at(self, epoch: int) -> int:
        return max(i for i, s in enumerate(self.stages) if s["start_epoch"] <= epoch)

    def rows(self, epoch: int) -> np.ndarray:
        return self.rows_per_stage[self.stage_at(epoch)]

    def epoch_order(self, epoch: int, seed: int) -> np.ndarray:
        """The rows of this epoch's stage in a seeded random order."""
        rows = self.rows(epoch)
        return rows[np.random.default_rng([seed, epoch]).permutation(len(rows))]
