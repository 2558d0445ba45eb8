"""The seed reports' own numbers ("theirs"), transcribed as written.

Every table is a plain dict ``{"name", "source", "label", "rows": [...]}``; a row may carry
its own ``"source"`` when it comes from another file. ``source`` is relative to the shared
folder (``seeds/NNN_<hash>.txt`` or ``SPEC.md``). Rules of the transcription:

- numbers are copied as printed, including units: ``*_pct`` columns are percentages
  (3.2 means 3.2 %), ``params_m`` is millions of parameters, ``size_k`` is the report's
  "NNNk" dataset name;
- "?" in a report is ``None``; nothing is filled in, derived or corrected (where two reports
  disagree, both are kept, each with its source);
- ``tests/code/test_seeds.py`` re-reads the source files and checks that every number and
  text cell here appears in its source.

``frame(name)`` returns a table as a pandas DataFrame with a ``source`` column and
``df.attrs["source"]``/``df.attrs["label"]``.
"""
from __future__ import annotations

import copy
from typing import Any

S000 = "seeds/000_dd5e308de521ea4e.txt"
S001 = "seeds/001_7adf3a9d81820315.txt"
S002 = "seeds/002_6fd6f854a8584e35.txt"
S003 = "seeds/003_1d4e398342e42604.txt"
S004 = "seeds/004_2d1d940c5bfd2f0d.txt"
SPEC = "SPEC.md"

# --------------------------------------------------------------------------- seed 003
SEED_003_MSE = {
    "name": "seed003_mse",
    "source": S003,
    "label": "Seed 003: val cosine after 20 epochs of MSE training (their ranking table)",
    "rows": [
        {"model": "Transformer", "loss": "MSE", "epochs": 20, "val_cos": 0.5817, "vs_baseline_pct": 6.5,
         "params_m": 17.9, "efficiency": 0.0325},
        {"model": "LSTM", "loss": "MSE", "epochs": 20, "val_cos": 0.5713, "vs_baseline_pct": 4.6,
         "params_m": 5.1, "efficiency": 0.1119},
        {"model": "GRU", "loss": "MSE", "epochs": 20, "val_cos": 0.5675, "vs_baseline_pct": 3.9,
         "params_m": 7.1, "efficiency": 0.0800},
        {"model": "AMN", "loss": "MSE", "epochs": 20, "val_cos": 0.5664, "vs_baseline_pct": 3.7,
         "params_m": 1.5, "efficiency": 0.3767},
    ],
}

SEED_003_LOSSES = {
    "name": "seed003_losses",
    "source": S003,
    "label": "Seed 003: Transformer val cosine, InfoNCE vs MSE (20 epochs each)",
    "rows": [
        {"model": "Transformer", "loss": "InfoNCE", "epochs": 20, "val_cos": 0.3539},
        {"model": "Transformer", "loss": "MSE", "epochs": 20, "val_cos": 0.5817},
    ],
}

BASELINES = {
    "name": "baselines",
    "source": S003,
    "label": "Parameter-free baselines as quoted (val cosine)",
    "rows": [
        {"model": "Linear Average", "val_cos": 0.5462},
        # copy-last is not in any seed report's text; SPEC.md quotes it from the original code base.
        {"model": "copy-last", "val_cos": 0.4383, "source": SPEC},
    ],
}

# --------------------------------------------------------------------------- seed 002
SEED_002_DATASETS = {
    "name": "seed002_datasets",
    "source": S002,
    "label": "Seed 002: the 80k and 232k datasets",
    "rows": [
        {"size_k": 80, "vectors": 80634, "sequences": 80629, "articles": 1032},
        {"size_k": 232, "vectors": 232605, "sequences": 232600, "articles": 3431},
    ],
}

SEED_002_SCALING = {
    "name": "seed002_scaling",
    "source": S002,
    "label": "Seed 002: training val cosine, 80k vs 232k concepts (their final table)",
    "rows": [
        {"model": "GRU", "val_cos_80k": 0.5754, "val_cos_232k": 0.5771, "change_pct": 0.29},
        {"model": "AMN", "val_cos_80k": 0.5664, "val_cos_232k": 0.5645, "change_pct": -0.35},
        {"model": "Transformer", "val_cos_80k": 0.5820, "val_cos_232k": 0.5787, "change_pct": -0.57},
        {"model": "LSTM", "val_cos_80k": 0.5758, "val_cos_232k": 0.5695, "change_pct": -1.10},
        {"model": "GraphMERT-LVM", "val_cos_80k": 0.5783, "val_cos_232k": 0.5601, "change_pct": -3.14},
    ],
}

SEED_002_EARLIER_CLAIMS = {
    "name": "seed002_earlier_claims",
    "source": S002,
    "label": ("Seed 002: 80k cosines stated in its 'Key Questions' section; they contradict its own "
              "final table (AMN 0.5664, GraphMERT-LVM 0.5783 at 80k)"),
    "rows": [
        {"model": "GraphMERT-LVM", "size_k": 80, "val_cos": 0.4119},
        {"model": "AMN", "size_k": 80, "val_cos": 0.8046},
    ],
}

# --------------------------------------------------------------------------- seed 001
SEED_001_DATASETS = {
    "name": "seed001_datasets",
    "source": S001,
    "label": "Seed 001: data growth timeline (note: its 232k counts differ from seed 002's)",
    "rows": [
        {"size_k": 232, "concepts": 232525, "articles": 3425, "articles_approx": False, "sequences": 232520},
        {"size_k": 340, "concepts": 339657, "articles": 3432, "articles_approx": True, "sequences": 339652},
        {"size_k": 367, "concepts": 367380, "articles": 3931, "articles_approx": True, "sequences": 367373},
    ],
}

SEED_001_FAIR_232_340 = {
    "name": "seed001_fair_232k_340k",
    "source": S001,
    "label": "Seed 001: 'fair comparison' on a fixed 10k test set (first 10k vectors of the 232k data)",
    "rows": [
        {"model": "Transformer", "val_cos_232k": 0.5576, "val_cos_340k": 0.5743, "diff": 0.0167, "change_pct": 2.99},
        {"model": "GRU", "val_cos_232k": 0.5502, "val_cos_340k": 0.5644, "diff": 0.0142, "change_pct": 2.58},
        {"model": "AMN", "val_cos_232k": 0.5357, "val_cos_340k": 0.5400, "diff": 0.0043, "change_pct": 0.80},
        {"model": "LSTM", "val_cos_232k": 0.4247, "val_cos_340k": 0.3265, "diff": -0.0982, "change_pct": -23.13},
    ],
}

SEED_001_INVALID_COMPARISON = {
    "name": "seed001_invalid_comparison",
    "source": S001,
    "label": "Seed 001: the first 340k-vs-232k comparison (unseeded random_split), change in %",
    "rows": [
        {"model": "Transformer", "change_pct": -2.8},
        {"model": "LSTM", "change_pct": -4.0},
        {"model": "GRU", "change_pct": -3.6},
        {"model": "AMN", "change_pct": -4.6},
    ],
}

SEED_001_LSTM_340K_LOG = {
    "name": "seed001_lstm_340k_log",
    "source": S001,
    "label": "Seed 001: the 340k LSTM's own training log, which contradicts its 0.3265 in the comparison",
    "rows": [{"model": "LSTM", "size_k": 340, "best_val_loss": 0.001161, "final_val_cos": 0.5526}],
}

# --------------------------------------------------------------------------- seed 000
SEED_000_FAIR_232_340_367 = {
    "name": "seed000_fair_232k_340k_367k",
    "source": S000,
    "label": ("Seed 000: final 'fair comparison' on the same fixed 10,000 samples (its 232k/340k "
              "numbers differ from seed 001's)"),
    "rows": [
        {"model": "Transformer", "val_cos_232k": 0.5402, "val_cos_340k": 0.5517, "val_cos_367k": 0.5614,
         "total_change_pct": 3.92},
        {"model": "GRU", "val_cos_232k": 0.5314, "val_cos_340k": 0.5384, "val_cos_367k": 0.5625,
         "total_change_pct": 5.84},
        {"model": "AMN", "val_cos_232k": 0.5228, "val_cos_340k": 0.5254, "val_cos_367k": 0.5275,
         "total_change_pct": 0.89},
        {"model": "LSTM", "val_cos_232k": 0.3921, "val_cos_340k": 0.3140, "val_cos_367k": 0.1102,
         "total_change_pct": -71.90},
    ],
}

SEED_000_LSTM_COLLAPSE = {
    "name": "seed000_lstm_collapse",
    "source": S000,
    "label": "Seed 000: the LSTM collapse (cosine on the fixed test set, change from 232k)",
    "rows": [
        {"model": "LSTM", "size_k": 232, "val_cos": 0.3921, "change_pct": None},
        {"model": "LSTM", "size_k": 340, "val_cos": 0.3140, "change_pct": -19.93},
        {"model": "LSTM", "size_k": 367, "val_cos": 0.1102, "change_pct": -71.90},
    ],
}

SEED_000_STEP_CHANGES = {
    "name": "seed000_step_changes",
    "source": S000,
    "label": "Seed 000: change per data step, in %",
    "rows": [
        {"model": "GRU", "change_232k_340k_pct": 1.31, "change_340k_367k_pct": 4.47},
        {"model": "Transformer", "change_232k_340k_pct": 2.13, "change_340k_367k_pct": 1.75},
        {"model": "AMN", "change_232k_340k_pct": 0.50, "change_340k_367k_pct": 0.40},
    ],
}

SEED_000_TRAINING_TIME = {
    "name": "seed000_training_time",
    "source": S000,
    "label": "Seed 000: training time on 367k concepts (Apple MPS; approximate, '~' in the report)",
    "rows": [
        {"model": "AMN", "minutes": 20, "samples_per_s": 306},
        {"model": "LSTM", "minutes": 20, "samples_per_s": 306},
        {"model": "GRU", "minutes": 20, "samples_per_s": 306},
        {"model": "Transformer", "minutes": 22, "samples_per_s": 278},
    ],
}

# --------------------------------------------------------------------------- seed 004
SEED_004_MODELS = {
    "name": "seed004_models",
    "source": S004,
    "label": "Seed 004: complete model comparison (VAL margin; R@k in %; gates passed of 5)",
    "rows": [
        {"row": 11, "model": "P5 Stage A", "date": "Nov 2, 10:06", "size_mb": 205,
         "approach": "Curriculum (top30%) + pos=0.03", "val_cos": 0.463, "margin_val": -0.041,
         "r1_pct": 3.2, "r5_pct": 17.5, "gates_passed": 1, "status": "FAILED"},
        {"row": 10, "model": "P4 Rollout", "date": "Nov 1, 18:09", "size_mb": 205,
         "approach": "Rollout + Adaptive Guards", "val_cos": 0.338, "margin_val": -0.149,
         "r1_pct": 1.0, "r5_pct": 22.1, "gates_passed": 2, "status": "FAILED (collapsed)"},
        {"row": 9, "model": "P3 Tiny Guards", "date": "Nov 1, 15:55", "size_mb": 205,
         "approach": "λ_dir=0.002 (tiny)", "val_cos": 0.526, "margin_val": -0.064,
         "r1_pct": None, "r5_pct": None, "gates_passed": None, "status": "Partial (51% improvement)"},
        {"row": 8, "model": "P2 Residual", "date": "Nov 1, 14:50", "size_mb": 205,
         "approach": "Residual arch (ŷ=norm(u+α·Δ))", "val_cos": 0.472, "margin_val": -0.534,
         "r1_pct": None, "r5_pct": None, "gates_passed": None, "status": "FAILED (worse)"},
        {"row": 7, "model": "P1 Baseline", "date": "Nov 1, 13:41", "size_mb": 205,
         "approach": "Pure MSE (20 epochs)", "val_cos": 0.550, "margin_val": -0.167,
         "r1_pct": 1.08, "r5_pct": 24.3, "gates_passed": 2, "status": "Neutral (backward bias)"},
        {"row": 6, "model": "V3 Directional", "date": "Oct 31, 15:01", "size_mb": 205,
         "approach": "Strong guards (λ=0.01)", "val_cos": 0.354, "margin_val": -0.132,
         "r1_pct": None, "r5_pct": None, "gates_passed": None, "status": "FAILED (collapsed)"},
        {"row": 5, "model": "Directional Fix", "date": "Oct 31, 10:59", "size_mb": 205,
         "approach": "Directional guards attempt", "val_cos": None, "margin_val": None,
         "r1_pct": None, "r5_pct": None, "gates_passed": None, "status": "FAILED"},
        {"row": 4, "model": "584k Stable", "date": "Oct 31, 08:37", "size_mb": 205,
         "approach": "Pure MSE (584k clean data)", "val_cos": None, "margin_val": None,
         "r1_pct": None, "r5_pct": None, "gates_passed": None, "status": "Stable"},
        {"row": 3, "model": "AMN 790k Split", "date": "Oct 31, 00:17", "size_mb": 17,
         "approach": "AMN architecture", "val_cos": None, "margin_val": -0.002,
         "r1_pct": None, "r5_pct": None, "gates_passed": None, "status": "Random"},
        {"row": 2, "model": "Transformer Optimized", "date": "Oct 24, 08:55", "size_mb": 205,
         "approach": "Optimized training (340k data)", "val_cos": None, "margin_val": -0.134,
         "r1_pct": None, "r5_pct": None, "gates_passed": None, "status": "Backward bias"},
        {"row": 1, "model": "AMN 584k Fresh", "date": "Oct 28, 22:33", "size_mb": 17,
         "approach": "AMN on clean data", "val_cos": None, "margin_val": None,
         "r1_pct": None, "r5_pct": None, "gates_passed": None, "status": "Working"},
    ],
}

# 5CAT detail tables. Numeric cells go to val/ood; the "Fail"/"Pass" cells of tests C and E
# go to val_text/ood_text. ``target`` is the report's own target (P5 table only); note it is
# not the SPEC's gate (e.g. margin >= +0.02 here vs 0.12 in the SPEC).
SEED_004_5CAT = {
    "name": "seed004_5cat",
    "source": S004,
    "label": "Seed 004: 5CAT detail (VAL and OOD) for P5 Stage A, P4 Rollout and P1 Baseline",
    "rows": [
        # P5 Stage A, 2000 samples
        {"model": "P5 Stage A", "samples": 2000, "test": "A: Offset Margin", "metric": "margin",
         "val": -0.041, "ood": -0.046, "val_text": None, "ood_text": None, "target": "≥ +0.02", "status": "FAIL"},
        {"model": "P5 Stage A", "samples": 2000, "test": "B: Retrieval R@1", "metric": "r1_pct",
         "val": 3.2, "ood": 1.75, "val_text": None, "ood_text": None, "target": "≥ 60%", "status": "FAIL"},
        {"model": "P5 Stage A", "samples": 2000, "test": "B: Retrieval R@5", "metric": "r5_pct",
         "val": 17.5, "ood": 10.9, "val_text": None, "ood_text": None, "target": "≥ 60%", "status": "FAIL"},
        {"model": "P5 Stage A", "samples": 2000, "test": "C: Ablations", "metric": "ablations",
         "val": None, "ood": None, "val_text": "Fail", "ood_text": "Fail", "target": "Pass", "status": "FAIL"},
        {"model": "P5 Stage A", "samples": 2000, "test": "D: Rollout", "metric": "rollout",
         "val": 0.448, "ood": 0.476, "val_text": None, "ood_text": None, "target": "≥ 0.46", "status": "Mixed"},
        {"model": "P5 Stage A", "samples": 2000, "test": "E: Bins Delta", "metric": "bins_delta",
         "val": None, "ood": None, "val_text": "Pass", "ood_text": "Pass", "target": "Pass", "status": "PASS"},
        # P4 Rollout, best checkpoint (epoch 3); sample count not stated
        {"model": "P4 Rollout", "samples": None, "test": "Margin", "metric": "margin",
         "val": -0.149, "ood": -0.152, "val_text": None, "ood_text": None, "target": None, "status": "Backward bias (BEFORE rollout)"},
        {"model": "P4 Rollout", "samples": None, "test": "R@1", "metric": "r1_pct",
         "val": 1.04, "ood": 0.70, "val_text": None, "ood_text": None, "target": None, "status": "FAIL"},
        {"model": "P4 Rollout", "samples": None, "test": "R@5", "metric": "r5_pct",
         "val": 22.12, "ood": 20.60, "val_text": None, "ood_text": None, "target": None, "status": "FAIL"},
        {"model": "P4 Rollout", "samples": None, "test": "Rollout", "metric": "rollout",
         "val": 0.360, "ood": 0.408, "val_text": None, "ood_text": None, "target": None, "status": "FAIL"},
        # P1 Baseline, 5000 samples
        {"model": "P1 Baseline", "samples": 5000, "test": "Margin", "metric": "margin",
         "val": -0.167, "ood": -0.167, "val_text": None, "ood_text": None, "target": None, "status": "WORSE than P4!"},
        {"model": "P1 Baseline", "samples": 5000, "test": "R@1", "metric": "r1_pct",
         "val": 1.08, "ood": 1.04, "val_text": None, "ood_text": None, "target": None, "status": "FAIL"},
        {"model": "P1 Baseline", "samples": 5000, "test": "R@5", "metric": "r5_pct",
         "val": 24.32, "ood": 24.08, "val_text": None, "ood_text": None, "target": None, "status": "FAIL"},
        {"model": "P1 Baseline", "samples": 5000, "test": "Rollout", "metric": "rollout",
         "val": 0.486, "ood": 0.493, "val_text": None, "ood_text": None, "target": None, "status": "Borderline"},
    ],
}

SEED_004_PROGRESSION = {
    "name": "seed004_progression",
    "source": S004,
    "label": "Seed 004: val cosine (and margin) during training, V3 / P3 / P4 collapses",
    "rows": [
        {"model": "V3 Directional", "epochs": "1-3", "phase": "Stable MSE warm-up", "val_cos": 0.540, "margin": None},
        {"model": "V3 Directional", "epochs": "4", "phase": "Catastrophic collapse", "val_cos": 0.354, "margin": None},
        {"model": "P3 Tiny Guards", "epochs": "1-5", "phase": "Warm-up", "val_cos": 0.550, "margin": 0.0},
        {"model": "P3 Tiny Guards", "epochs": "6", "phase": "Guards", "val_cos": 0.507, "margin": -0.067},
        {"model": "P3 Tiny Guards", "epochs": "20", "phase": "Final", "val_cos": 0.526, "margin": -0.064},
        # P4: from its analysis text ("val_cos 0.540 → 0.338" when rollout switched on at epoch 4)
        {"model": "P4 Rollout", "epochs": "3", "phase": "MSE", "val_cos": 0.540, "margin": -0.149},
        {"model": "P4 Rollout", "epochs": "4", "phase": "rollout", "val_cos": 0.338, "margin": None},
    ],
}

SEED_004_P5_SETUP = {
    "name": "seed004_p5_setup",
    "source": S004,
    "label": "Seed 004: P5 Stage A training set-up as stated",
    "rows": [{"model": "P5 Stage A", "stage_a_samples": 131571, "total_samples": 438568,
              "top_pct": 30, "threshold": 0.6455, "epochs": 4, "pos_scale": 0.03}],
}

# --------------------------------------------------------------------------- SPEC: peers
PEER_LCM = {
    "name": "peer_lcm",
    "source": SPEC,
    "label": "Meta 'Large Concept Models' (2024) as quoted in SPEC.md: CA in %, PAR ratio (ranges)",
    "rows": [
        {"model": "Base-LCM", "metric": "CA_pct", "low": 69, "high": 72},
        {"model": "Base-LCM", "metric": "PAR", "low": 1.8, "high": 2.0},
        {"model": "diffusion LCMs", "metric": "CA_pct", "low": 75, "high": 81},
    ],
}

TABLES: dict[str, dict[str, Any]] = {t["name"]: t for t in (
    SEED_003_MSE, SEED_003_LOSSES, BASELINES,
    SEED_002_DATASETS, SEED_002_SCALING, SEED_002_EARLIER_CLAIMS,
    SEED_001_DATASETS, SEED_001_FAIR_232_340, SEED_001_INVALID_COMPARISON, SEED_001_LSTM_340K_LOG,
    SEED_000_FAIR_232_340_367, SEED_000_LSTM_COLLAPSE, SEED_000_STEP_CHANGES, SEED_000_TRAINING_TIME,
    SEED_004_MODELS, SEED_004_5CAT, SEED_004_PROGRESSION, SEED_004_P5_SETUP,
    PEER_LCM,
)}


def rows(name: str) -> list[dict[str, Any]]:
    """A table's rows as fresh dicts, each with its ``source`` filled in."""
    try:
        table = TABLES[name]
    except KeyError:
        raise KeyError(f"no seed table {name!r}; known: {sorted(TABLES)}") from None
    return [{**copy.deepcopy(r), "source": r.get("source", table["source"])} for r in table["rows"]]


def frame(name: str):
    """A table as a DataFrame (None -> NaN in numeric columns); attrs carry source and label."""
    import pandas as pd

    df = pd.DataFrame(rows(name))
    df.attrs.update(source=TABLES[name]["source"], label=TABLES[name]["label"], name=name)
    return df


def scaling_long(name: str = "seed000_fair_232k_340k_367k"):
    """A ``val_cos_<N>k`` wide table reshaped to long form: model, size_k, val_cos, source.

    For line plots of cosine vs training-set size (seed 000, 001 or 002 scaling tables).
    """
    import pandas as pd

    out = []
    for r in rows(name):
        for key, value in r.items():
            if key.startswith("val_cos_") and key.endswith("k"):
                out.append({"model": r["model"], "size_k": int(key[len("val_cos_"):-1]),
                            "val_cos": value, "source": r["source"]})
    if not out:
        raise ValueError(f"seed table {name!r} has no val_cos_<N>k columns")
    df = pd.DataFrame(out)
    df.attrs.update(source=TABLES[name]["source"], label=TABLES[name]["label"], name=name)
    return df
