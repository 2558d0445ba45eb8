"""Experiment runs the notebooks share: train one configuration, verify its checkpoint, evaluate it.

A configuration is a plain dict (it comes from a notebook's YAML params):

    {label: "LSTM · MSE", model: lstm, options: {}, loss: {mse: 1.0}, train: {epochs: 3},
     curriculum: null, train_concepts: null, seed: 0}

`run_config` returns one flat row for tables (every number measured in this call) plus the
full evaluation document; `baseline_rows` scores the parameter-free baselines on the very same
rows. Nothing here is specific to one notebook.
"""
from __future__ import annotations

import math
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from . import metrics
from .data import Bank, sequences, train_subset
from .models import build_model, count_parameters
from .train import fit, load_checkpoint, seed_everything, train_config

CONFIG_KEYS = {"label", "model", "options", "loss", "train", "curriculum", "train_concepts", "seed"}
BASELINES = ("linear_average", "copy_last", "global_mean")
# names as the seed reports print them, so our rows and theirs share labels and colours
DISPLAY = {"amn": "AMN", "lstm": "LSTM", "gru": "GRU", "transformer": "Transformer", "graphmert": "GraphMERT-LVM",
           "base_lcm": "Base-LCM", "linear_average": "Linear Average", "copy_last": "copy-last",
           "global_mean": "global mean"}
LOSS_DISPLAY = {"mse": "MSE", "info_nce": "InfoNCE", "cosine": "cosine", "flow": "flow", "info_nce_hard": "InfoNCE-hard"}


class ConfigError(InputError):
    pass


def check_config(config: dict) -> dict:
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in run config {config.get('label', config)}; "
                          f"expected {sorted(CONFIG_KEYS)}")
    if "model" not in config:
        raise ConfigError(f"run config {config} has no 'model'")
    return {"options": {}, "loss": {}, "train": {}, "curriculum": None, "train_concepts": None, "seed": 0,
            "label": config["model"], **config}


def summarize(ev: dict) -> dict:
    """The headline numbers of one evaluation document, flat, for a table row."""
    fc = ev["five_cat"]
    vs_avg = ev["baselines"]["model_minus"]["linear_average"]
    row = {"val_cos": ev["mean_cosine"]["mean"], "val_ci_low": ev["mean_cosine"]["ci_low"],
           "val_ci_high": ev["mean_cosine"]["ci_high"], "rows": ev["rows"],
           "minus_linavg": vs_avg["mean"], "minus_linavg_ci_low": vs_avg["ci_low"],
           "minus_linavg_ci_high": vs_avg["ci_high"],
           "ca": ev["lcm"]["ca"], "par": ev["lcm"]["par_median"], "l2": ev["lcm"]["l2"]}
    if "lcm_ood" in ev:
        row.update(ood_cos=ev["ood_mean_cosine"]["mean"], ood_ci_low=ev["ood_mean_cosine"]["ci_low"],
                   ood_ci_high=ev["ood_mean_cosine"]["ci_high"],
                   ood_ca=ev["lcm_ood"]["ca"], ood_par=ev["lcm_ood"]["par_median"])
    for split, res in fc["splits"].items():
        row[f"{split}_c0"] = res["A"]["c0"]
        row[f"{split}_margin"] = res["A"]["margin"]
        # the margin relative to c0: a prediction that is merely farther from everything has a
        # smaller margin without pointing any more forward; this ratio separates the two
        row[f"{split}_rel_margin"] = res["A"]["margin"] / res["A"]["c0"] if res["A"]["c0"] else None
        row[f"{split}_peak"] = res["A"]["peak_offset"]
        row[f"{split}_r1"] = res["B"]["r1"]
        row[f"{split}_r5"] = res["B"]["r5"]
        row[f"{split}_mrr"] = res["B"]["mrr"]
        row[f"{split}_rollout"] = res["D"]["mean"]
        row[f"{split}_gates"] = f"{sum(fc['summary'][split].values())}/{len(fc['summary'][split])}"
    row["gates"] = f"{fc['summary']['passed']}/{fc['summary']['total']}"
    return row


def evaluate_model(model, bank: Bank, *, train_concepts=None, eval_rows=None, seed=0) -> dict:
    """metrics.evaluate on VAL (5CAT on VAL and OOD), plus the LCM metrics on the same OOD rows."""
    if hasattr(model, "state_dict"):     # a torch model: predict on the device it lives on
        predict = metrics.predictor(model, device=str(next(model.parameters(), torch.zeros(0)).device))
    else:
        predict = model
    ev = metrics.evaluate(predict, bank, split="val", max_rows=eval_rows, seed=seed, train_concepts=train_concepts)
    ood = metrics.split_rows(bank, "ood", eval_rows, seed)
    pred = metrics.predict_all(predict, ood.contexts)
    ev["ood_mean_cosine"] = metrics.to_jsonable(metrics.mean_cosine(pred, ood.targets, seed=seed))
    ev["lcm_ood"] = metrics.to_jsonable(metrics.lcm_metrics(pred, ood, bank, seed=seed))
    return ev


def baseline_rows(bank: Bank, *, train_concepts=None, eval_rows=None, seed=0) -> tuple[list[dict], dict]:
    """Linear average, copy-last and the global mean of the training targets, scored like any model."""
    train_targets = sequences(bank, "train", train_concepts).targets
    rows, evals = [], {}
    for name in BASELINES:
        model = build_model(name, dim=bank.dim).fit(train_targets).eval()
        ev = evaluate_model(model, bank, train_concepts=train_concepts, eval_rows=eval_rows, seed=seed)
        rows.append({"label": DISPLAY[name], "model": DISPLAY[name], "loss": "-", "params": 0, "train_seconds": 0.0, **summarize(ev)})
        evals[name] = ev
    return rows, evals


def predictor_row(bank: Bank, label: str, predict, *, train_concepts=None, eval_rows=None, seed=0) -> tuple[dict, dict]:
    """Any predict function (e.g. retrieval.NearestContextPredictor), scored like a model."""
    ev = evaluate_model(predict, bank, train_concepts=train_concepts, eval_rows=eval_rows, seed=seed)
    return {"label": label, "model": label, "loss": "-", "params": 0, "train_seconds": 0.0, **summarize(ev)}, ev


def oracle_row(bank: Bank, *, eval_rows=None, seed=0) -> dict:
    """The perfect predictor ŷ = y on the same rows: a reference for every metric.

    It is the ceiling of cosine, R@k, MRR and CA, but not of the margin: its margin is 1 minus the
    target's mean cosine with the nearest offset, and a prediction that also turns away from the
    neighbouring concepts can score a larger one."""
    row = {"label": "oracle (ŷ = y)", "model": "oracle", "loss": "-", "params": 0}
    for split in ("val", "ood"):
        rows = metrics.split_rows(bank, split, eval_rows, seed)
        a = metrics.offset_sweep(None, bank, rows, pred=rows.targets)
        b = metrics.in_article_rank(None, bank, rows, pred=rows.targets)
        lcm = metrics.lcm_metrics(rows.targets, rows, bank, seed=seed)
        prefix = "" if split == "val" else "ood_"
        row.update({f"{split}_c0": a["c0"], f"{split}_margin": a["margin"], f"{split}_peak": a["peak_offset"],
                    f"{split}_r1": b["r1"], f"{split}_r5": b["r5"], f"{split}_mrr": b["mrr"],
                    f"{prefix}ca": lcm["ca"], f"{prefix}par": lcm["par_median"]})
    row["val_cos"] = row["val_c0"]
    return row


def _loss_name(loss: dict) -> str:
    """A short label for a loss config: its switched-on terms, e.g. "MSE+InfoNCE-hard"."""
    terms = [k for k, v in loss.items()
             if (isinstance(v, dict) and v.get("weight")) or (k in LOSS_DISPLAY and not isinstance(v, dict) and v)]
    if "mse" not in loss:          # mse defaults to 1 unless switched off
        terms.insert(0, "mse")
    return "+".join(LOSS_DISPLAY.get(t, t) for t in terms) or "none"


RELOAD_TOLERANCE = 1e-5


def reload_verified(model, checkpoint: Path, bank: Bank, probe_rows: np.ndarray):
    """Reload the best checkpoint (load_checkpoint re-runs its stored probe) and check that it
    predicts what the trained model predicts on real rows. Returns (reloaded model, max |diff|);
    a larger difference than RELOAD_TOLERANCE is an error: the reloaded model is what gets scored."""
    reloaded, _ = load_checkpoint(checkpoint, expected_fingerprint=bank.manifest.get("fingerprint"))
    device = next(model.parameters(), torch.zeros(0)).device
    reloaded = reloaded.to(device).eval()
    with torch.no_grad():
        x = torch.as_tensor(probe_rows, device=device)
        diff = float((model.eval()(x) - reloaded(x)).abs().max())
    if not diff <= RELOAD_TOLERANCE:
        raise RuntimeError(f"{checkpoint}: the reloaded model differs from the trained one by {diff:.2e}")
    return reloaded, diff


def portable_path(path) -> str:
    """A path inside the repository as a repo-relative string (lvmlib.data.open_bank resolves it
    from anywhere), so saved params work on another clone; other paths unchanged."""
    from .data.corpus import repo_root
    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def train_params(bank: Bank, config: dict, out: str | Path | None) -> dict:
    """The `lvm train` params that repeat this run exactly (same seed, data, model, loss, schedule).

    They are also stored in the run's checkpoints, so `lvm eval --checkpoint` finds the bank."""
    cfg = check_config(config)
    if bank.path is None:
        raise ConfigError("train_params needs a bank loaded from disk (an in-memory bank has no path)")
    return {"seed": cfg["seed"], "data": {"bank": portable_path(bank.path), "train_concepts": cfg["train_concepts"]},
            "model": {"name": cfg["model"], "options": dict(cfg["options"])}, "loss": cfg["loss"],
            "train": cfg["train"], "curriculum": cfg["curriculum"], "out": str(out) if out else None}


def seed_summary(rows, by: str = "config", metrics=("val_cos",), level: float = 0.95):
    """Mean and a t-interval across seeds of each metric, one row per configuration.

    With n seeds the half-width is t_{(1+level)/2, n-1} * sd / sqrt(n); n = 1 gives no interval."""
    import pandas as pd
    from scipy import stats
    df = pd.DataFrame(rows)
    out = []
    for key, group in df.groupby(by, sort=False):
        entry = {by: key, "seeds": len(group)}
        for m in metrics:
            x = pd.to_numeric(group[m], errors="coerce").dropna().to_numpy(dtype=float)
            half = stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else np.nan
            entry[m] = x.mean() if len(x) else np.nan
            entry[f"{m}_ci"] = half
        out.append(entry)
    return pd.DataFrame(out)


def run_config(bank: Bank, config: dict, *, out_root: str | Path | None = None, eval_rows: int | None = None,
               eval_seed: int = 0, progress: bool = False) -> tuple[dict, dict, object]:
    """Train one configuration, reload and verify its best checkpoint, and evaluate it.

    Checkpoints go to out_root/<label>/ (kept) or, when out_root is None, to a temporary folder
    removed afterwards: the reload check runs either way. Returns (row, evaluation, FitResult)."""
    if out_root is None:
        with tempfile.TemporaryDirectory(prefix="lvm-run-") as tmp:
            row, ev, result = run_config(bank, config, out_root=tmp, eval_rows=eval_rows, eval_seed=eval_seed,
                                         progress=progress)
        result.out_dir = None
        return {**row, "checkpoint": None}, ev, result
    cfg = check_config(config)
    train = sequences(bank, "train", cfg["train_concepts"])
    val = sequences(bank, "val")
    seed_everything(cfg["seed"])          # as `lvm train` does: the initial weights depend on the seed alone
    model = build_model(cfg["model"], dim=bank.dim, **cfg["options"])
    out_dir = Path(out_root) / re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg["label"])
    params = train_params(bank, cfg, out_dir)
    started = time.perf_counter()
    result = fit(model, train, val, {"loss": cfg["loss"], "train": cfg["train"], "curriculum": cfg["curriculum"]},
                 bank=bank, out_dir=out_dir, seed=cfg["seed"], progress=progress, params=params)
    seconds = time.perf_counter() - started
    batch = train_config(cfg["train"])["batch_size"]
    rows_seen = sum(h["train_rows"] for h in result.history)   # a curriculum trains on fewer rows per epoch
    reloaded, reload_diff = reload_verified(result.model, result.checkpoint, bank, val.contexts[:256])
    ev = evaluate_model(reloaded, bank, train_concepts=cfg["train_concepts"], eval_rows=eval_rows, seed=eval_seed)
    row = {"label": cfg["label"], "model": DISPLAY.get(cfg["model"], cfg["model"]), "loss": _loss_name(cfg["loss"]),
           "seed": cfg["seed"], "train_concepts": int(train_subset(bank, cfg["train_concepts"])[1].sum()),
           "train_sequences": len(train), "params": count_parameters(result.model),
           "epochs": result.epochs_run, "best_epoch": result.best_epoch,
           "train_rows_seen": rows_seen, "optimizer_steps": sum(math.ceil(h["train_rows"] / batch) for h in result.history),
           "train_seconds": round(seconds, 1),
           "train_samples_per_s": round(rows_seen / seconds, 1) if seconds else None,
           "checkpoint_reload_max_diff": reload_diff, "checkpoint": str(result.checkpoint), **summarize(ev)}
    return row, ev, result


def history_frame(results: dict):
    """Per-epoch training history of several runs, long form (label, epoch, train_loss, val_loss, val_cosine)."""
    import pandas as pd
    rows = []
    for label, result in results.items():
        for h in result.history:
            rows.append({"label": label, "epoch": h.get("epoch"), "train_loss": h.get("train_loss"),
                         "val_loss": h.get("val_loss"), "val_cosine": h.get("val_cosine")})
    return pd.DataFrame(rows)


def five_cat_table(evals: dict) -> "pd.DataFrame":
    """One row per (configuration, split): every 5CAT value beside its gate's pass/fail."""
    import pandas as pd
    rows = []
    for label, ev in evals.items():
        fc = ev["five_cat"]
        for split, res in fc["splits"].items():
            a, b, c, d = res["A"], res["B"], res["C"], res["D"]
            rows.append({
                "label": label, "split": split.upper(), "rows": res["rows"],
                "A c0": a["c0"], "A margin": a["margin"], "A peak k": a["peak_offset"], "A": _pf(a),
                "B R@1": b["r1"], "B R@5": b["r5"], "B MRR": b["mrr"], "B": _pf(b),
                "C shuffle": c["shuffle"]["delta"], "C reverse": c["reverse"]["delta"],
                "C leave-last-out": c["leave_one_out"]["4"]["delta"], "C repeat-pad": c["repeat_pad"]["delta"],
                "C foreign": c["foreign"]["4"]["delta"], "C": _pf(c),
                "D rollout": d["mean"], "D": _pf(d), "E": _pf({"pass": fc["E"]["pass"]}),
                "gates": f"{sum(fc['summary'][split].values())}/{len(fc['summary'][split])}",
            })
    return pd.DataFrame(rows)


def _pf(test: dict) -> str:
    return "PASS" if test["pass"] else "fail"


def offset_sweep_frame(evals: dict) -> "pd.DataFrame":
    """Long form (label, split, k, c_k) of 5CAT A for plotting c_k against the offset k."""
    import pandas as pd
    rows = [{"label": label, "model": label, "split": split.upper(), "k": int(k), "c_k": c}
            for label, ev in evals.items() for split, res in ev["five_cat"]["splits"].items()
            for k, c in res["A"]["c"].items()]
    return pd.DataFrame(rows)


VARIANT_KEYS = {"model", "options", "loss", "curriculum"}


def variant_config(label: str, variant: dict, *, model: str, options: dict, train: dict, warmup: int,
                   train_concepts=None, seed: int = 0) -> dict:
    """A run config from a base model plus one variant (P1-P5 style). In the variant's loss, a
    start_epoch given as the string "warmup" becomes the shared warm-up length."""
    unknown = set(variant) - VARIANT_KEYS
    if unknown:
        raise ConfigError(f"variant {label!r}: unknown key(s) {sorted(unknown)}; expected {sorted(VARIANT_KEYS)}")
    return {"label": label, "model": variant.get("model", model), "options": {**options, **variant.get("options", {})},
            "loss": _with_warmup(variant.get("loss", {"mse": 1.0}), warmup), "curriculum": variant.get("curriculum"),
            "train": train, "train_concepts": train_concepts, "seed": seed}


def _with_warmup(value, warmup: int):
    if isinstance(value, dict):
        return {k: _with_warmup(v, warmup) for k, v in value.items()}
    return warmup if value == "warmup" else value


OBJECTIVE_KEYS = {"model", "options", "loss", "curriculum"}


def objective_configs(configs: dict, *, backbone: str, options: dict, train: dict, train_concepts=None,
                      seeds=(0,)) -> list[dict]:
    """Run configs for a comparison of objectives: each named configuration (its own loss, and
    optionally its own model/options/curriculum) on the same backbone, data and schedule, once
    per seed. Labels are "<name> · seed <s>"."""
    runs = []
    for name, c in configs.items():
        unknown = set(c) - OBJECTIVE_KEYS
        if unknown:
            raise ConfigError(f"configuration {name!r}: unknown key(s) {sorted(unknown)}; expected {sorted(OBJECTIVE_KEYS)}")
        for seed in seeds:
            runs.append({"label": f"{name} · seed {seed}", "model": c.get("model", backbone),
                         "options": {**options, **c.get("options", {})}, "loss": c.get("loss", {"mse": 1.0}),
                         "curriculum": c.get("curriculum"), "train": train, "train_concepts": train_concepts,
                         "seed": seed})
    return runs
