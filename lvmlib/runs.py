"""Run specs as every experiment notebook does: train -> reload and verify the best checkpoint -> evaluate on
VAL and OOD -> one row of numbers measured in this call, beside baselines fitted on the same training subset and
scored on the same rows. A cache (keyed by the run spec and the bank fingerprint) shares trainings."""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import evaluation, files
from .config import ConfigError, EvalSpec, RunSpec
from .data import Bank, sequences, train_subset
from .models import build_model, count_parameters
from .training import FitResult, fit, load_checkpoint, seed_everything

# names as the seed reports print them, so our rows and theirs share labels and colours
DISPLAY = {"amn": "AMN", "lstm": "LSTM", "gru": "GRU", "transformer": "Transformer", "graphmert": "GraphMERT-LVM",
           "base_lcm": "Base-LCM", "linear_average": "Linear Average", "copy_last": "copy-last",
           "global_mean": "global mean", "position_weighted": "position-weighted avg",
           "residual_ridge": "residual ridge"}
RELOAD_TOLERANCE = 1e-5
# bump when training changes what a spec produces (2: baseline-start inits; 4: the stop rule; 5: a step budget
# is scored at its end)
CACHE_VERSION = 5
_KEPT = ("history", "best_epoch", "best_val_loss", "best_val_cosine", "epochs_run", "stop_reason", "optimizer_steps",
         "seconds", "device", "val_cos_slope", "flat", "precision", "initial_val_cosine")    # what result.json keeps of a FitResult (the model is best.pt)


def _device(model) -> torch.device:
    return next(model.parameters(), torch.zeros(0)).device


def as_predict(predict):
    """A predict function (numpy contexts -> unit vectors) from a torch model (on its device) or a function."""
    return evaluation.predictor(predict, device=str(_device(predict))) if hasattr(predict, "state_dict") else predict


def evaluate_model(predict, bank: Bank, train_concepts=None, ev: EvalSpec = EvalSpec(), baselines=None) -> dict:
    """evaluation.evaluate on VAL (5CAT on VAL and OOD), plus cosine and LCM metrics on OOD rows."""
    predict = as_predict(predict)
    doc = evaluation.evaluate(predict, bank, split="val", max_rows=ev.rows, seed=ev.seed,
                              train_concepts=train_concepts, baselines=baselines)
    ood = evaluation.split_rows(bank, "ood", ev.rows, ev.seed)
    pred = evaluation.predict_all(predict, ood.contexts)
    doc["ood_mean_cosine"] = files.to_jsonable(evaluation.mean_cosine(pred, ood.targets, ood.article, seed=ev.seed))
    doc["lcm_ood"] = files.to_jsonable(evaluation.lcm_metrics(pred, ood, bank, seed=ev.seed))
    doc["bank"]["path"] = portable_path(doc["bank"]["path"]) if doc["bank"]["path"] else None
    return doc


def summarize(doc: dict) -> dict:
    """The headline numbers of one evaluation document, flat, for a table row."""
    fc, mc, ood = doc["five_cat"], doc["mean_cosine"], doc["ood_mean_cosine"]
    row = {"val_cos": mc["mean"], "val_cos_low": mc["ci_low"], "val_cos_high": mc["ci_high"], "rows": doc["rows"],
           "ca": doc["lcm"]["ca"], "par": doc["lcm"]["par_median"], "l2": doc["lcm"]["l2"],
           "ood_cos": ood["mean"], "ood_cos_low": ood["ci_low"], "ood_cos_high": ood["ci_high"],
           "ood_ca": doc["lcm_ood"]["ca"], "ood_par": doc["lcm_ood"]["par_median"]}
    for name, d in doc["baselines"]["model_minus"].items():
        short = {"linear_average": "linavg", "position_weighted": "posavg", "residual_ridge": "ridge"}.get(name)
        if short:
            row.update({f"minus_{short}": d["mean"], f"minus_{short}_low": d["ci_low"],
                        f"minus_{short}_high": d["ci_high"]})
    for split, res in fc["splits"].items():
        a, b = res["A"], res["B"]
        row.update({f"{split}_c0": a["c0"], f"{split}_margin": a["margin"], f"{split}_peak": a["peak_offset"],
                    # the margin relative to c0: a prediction that is merely farther from everything
                    # has a smaller margin without pointing any more forward; this ratio separates the two
                    f"{split}_rel_margin": a["margin"] / a["c0"] if a["c0"] else None,
                    f"{split}_r1": b["r1"], f"{split}_r5": b["r5"], f"{split}_mrr": b["mrr"],
                    f"{split}_rollout": res["D"]["mean"],
                    f"{split}_gates": f"{sum(fc['summary'][split].values())}/{len(fc['summary'][split])}"})
    row["gates"] = f"{fc['summary']['passed']}/{fc['summary']['total']}"
    return row


def predictor_row(bank: Bank, label: str, predict, train_concepts=None, ev: EvalSpec = EvalSpec(),
                  baselines=None) -> tuple[dict, dict]:
    """Any predict function (a baseline, retrieval.NearestContextPredictor, ...), scored like a model."""
    doc = evaluate_model(predict, bank, train_concepts, ev, baselines)
    return {"label": label, "model": label, "loss": "-", "params": 0, "train_seconds": 0.0, **summarize(doc)}, doc


def baseline_rows(bank: Bank, train_concepts=None, ev: EvalSpec = EvalSpec()) -> Results:
    """Every computed baseline (evaluation.fit_baselines), scored like any model."""
    fitted, out = evaluation.fit_baselines(bank, train_concepts), Results()
    for name, predict in fitted.items():
        row, out.evals[DISPLAY[name]] = predictor_row(bank, DISPLAY[name], predict, train_concepts, ev, fitted)
        out.rows.append({**row, "baseline": True})
        out.values[DISPLAY[name]] = row_values(predict, bank, ev)
    return out


def oracle_row(bank: Bank, ev: EvalSpec = EvalSpec()) -> dict:
    """The perfect predictor ŷ = y on the same rows: the ceiling of cosine, R@k, MRR and CA, but not of the
    margin (1 minus the target's mean cosine with the nearest offset; turning away from neighbours beats it)."""
    row = {"label": "oracle (ŷ = y)", "model": "oracle", "loss": "-", "params": 0}
    for split in ("val", "ood"):
        rows = evaluation.split_rows(bank, split, ev.rows, ev.seed)
        a = evaluation.offset_sweep(None, bank, rows, pred=rows.targets)
        b = evaluation.in_article_rank(None, bank, rows, pred=rows.targets)
        lcm = evaluation.lcm_metrics(rows.targets, rows, bank, seed=ev.seed)
        prefix = "" if split == "val" else "ood_"
        row.update({f"{split}_c0": a["c0"], f"{split}_margin": a["margin"], f"{split}_peak": a["peak_offset"],
                    f"{split}_r1": b["r1"], f"{split}_r5": b["r5"], f"{split}_mrr": b["mrr"],
                    f"{prefix}ca": lcm["ca"], f"{prefix}par": lcm["par_median"]})
    row["val_cos"] = row["val_c0"]
    return row


def portable_path(path) -> str:
    """A path as committed outputs and saved specs write it: repo-relative, so they work on another clone."""
    return files.portable(str(path))


def reproducing_spec(bank: Bank, spec: RunSpec, out) -> RunSpec:
    """The spec that `lvm train --params` repeats this run with (bank as a repo-relative path)."""
    return replace(spec, data=replace(spec.data, bank=portable_path(bank.path), synthetic=None),
                   out=str(out) if out else None)


def cache_key(bank: Bank, spec: RunSpec) -> str:
    """Runs that must give the same weights share a key: the spec minus naming, and the bank's fingerprint (not
    its path: a moved or re-cloned repository keeps its cache)."""
    what = {k: v for k, v in spec.to_dict().items() if k not in ("label", "tags", "out", "eval")}
    what["data"] = {k: v for k, v in what["data"].items() if k != "bank"}
    blob = json.dumps([CACHE_VERSION, bank.manifest.get("fingerprint"), what], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Results:
    rows: list = field(default_factory=list)      # one flat dict per run (pandas.DataFrame(rows))
    evals: dict = field(default_factory=dict)     # label -> evaluation document
    fits: dict = field(default_factory=dict)      # label -> FitResult
    values: dict = field(default_factory=dict)    # label -> {metric: evaluation.PerRow} (intervals, paired tests)


def row_values(predict, bank: Bank, ev: EvalSpec = EvalSpec()) -> dict:
    """evaluation.per_row on the VAL and OOD rows an evaluation scores (the same seeded rows for every predictor):
    {val_cos, val_margin, ..., ca, ood_cos, ...: PerRow}."""
    out = {}
    for split in ("val", "ood"):
        rows = evaluation.split_rows(bank, split, ev.rows, ev.seed)
        pred = evaluation.predict_all(as_predict(predict), rows.contexts)
        out.update(evaluation.per_row(pred, bank, rows, prefix=f"{split}_"))
    return out


def reload_verified(model, checkpoint: Path, fingerprint: str | None, probe_rows: np.ndarray):
    """Reload the best checkpoint (load_checkpoint re-runs its stored probe) and check that it predicts what the
    trained model predicts on real rows: (reloaded model, max |diff|). The reloaded model is what gets scored."""
    reloaded, _ = load_checkpoint(checkpoint, expected_fingerprint=fingerprint)
    reloaded = reloaded.to(_device(model)).eval()
    with torch.no_grad():
        x = torch.as_tensor(probe_rows, device=_device(model))
        diff = float((model.eval()(x) - reloaded(x)).abs().max())
    if not diff <= RELOAD_TOLERANCE:
        raise RuntimeError(f"{checkpoint}: the reloaded model differs from the trained one by {diff:.2e}")
    return reloaded, diff


def run_spec_once(bank: Bank, spec: RunSpec, out_dir: Path, *, baselines=None, progress=False,
                  reuse: bool = False) -> tuple[dict, dict, FitResult]:
    """Train (as `lvm train` does: weights seeded by the spec alone) or, with reuse, take a finished run from
    out_dir; reload and verify its best checkpoint (the reloaded model is what gets scored), and evaluate it."""
    train, val = sequences(bank, "train", spec.data.train_concepts), sequences(bank, "val")
    done, fingerprint = out_dir / "result.json", bank.manifest.get("fingerprint")
    seed_everything(spec.seed)
    cached = reuse and done.exists()
    if cached:
        reloaded, _ = load_checkpoint(out_dir / "best.pt", expected_fingerprint=fingerprint)
        result, reload_diff = FitResult(model=reloaded, out_dir=out_dir, **json.loads(done.read_text())), 0.0
    else:
        model = build_model(spec.model.name, dim=bank.dim, **spec.model.options)
        result = fit(model, train, val, reproducing_spec(bank, spec, out_dir), bank=bank, out_dir=out_dir,
                     progress=progress)
        files.write_json(done, files.to_jsonable({k: getattr(result, k) for k in _KEPT}))
        reloaded, reload_diff = reload_verified(result.model, result.checkpoint, fingerprint,
                                                val.context_batch(slice(0, 256)))
    doc = evaluate_model(reloaded, bank, spec.data.train_concepts, spec.eval, baselines)
    rows_seen = sum(h.get("train_rows", 0) for h in result.history)   # fewer with a curriculum; none: nothing to train
    row = {"label": spec.name, **spec.tags, "model": DISPLAY.get(spec.model.name, spec.model.name),
           "seed": spec.seed, "train_concepts": int(train_subset(bank, spec.data.train_concepts)[1].sum()),
           "train_sequences": len(train), "params": count_parameters(reloaded),
           "epochs": result.epochs_run, "best_epoch": result.best_epoch, "converged": result.converged,
           "stop_reason": result.stop_reason, "optimizer_steps": result.optimizer_steps,
           "best_step": _best_step(result), "val_cos_slope": result.val_cos_slope, "precision": result.precision,
           "start": "average" if reloaded.baseline is not None or (
               spec.model.name == "amn" and spec.model.options.get("baseline_start", True)) else "plain",
           "batch_size": spec.train.batch_size, "lr": spec.train.lr, "train_rows_seen": rows_seen,
           "train_seconds": round(result.seconds, 1), "device": result.device, "cached": cached,
           "checkpoint_reload_max_diff": reload_diff, **summarize(doc)}
    return row, doc, result


def _best_step(result: FitResult) -> int | None:
    """The optimizer step of the best checkpoint (None: nothing trained)."""
    if result.best_epoch is None:
        return None
    if result.best_epoch == 0:      # the start (the position-weighted average, for a baseline start) was best
        return 0
    return next((h.get("step") for h in result.history if h["epoch"] == result.best_epoch), None)


def run_specs(bank: Bank, specs: list[RunSpec], *, out_root=None, cache=None, progress=False, log=print) -> Results:
    """Every spec through run_spec_once, into `cache`/<key>/ (reused across notebooks), else `out_root`/<label>/,
    else a temporary folder removed afterwards. The baselines are fitted once per training subset."""
    results, fitted = Results(), {}
    if cache is not None and not Path(cache).is_absolute():
        cache = files.REPO_ROOT / cache     # notebooks run in notebooks/; the cache is the repository's
    labels = [spec.name for spec in specs]
    if len(set(labels)) < len(labels):
        raise ConfigError(f"run labels must be unique (tables and checkpoint folders use them): "
                          f"{sorted({x for x in labels if labels.count(x) > 1})}")
    with tempfile.TemporaryDirectory(prefix="lvm-run-") as tmp:
        for spec in specs:
            tc = spec.data.train_concepts
            if tc not in fitted:
                fitted[tc] = evaluation.fit_baselines(bank, tc)
            if cache is not None:
                out_dir = Path(cache) / cache_key(bank, spec)
            else:
                out_dir = Path(out_root or tmp) / "".join(c if c.isalnum() or c in "_.-" else "_" for c in spec.name)
            row, doc, result = run_spec_once(bank, spec, out_dir, baselines=fitted[tc], progress=progress,
                                             reuse=cache is not None)
            row["checkpoint"] = portable_path(result.checkpoint) if (cache or out_root) else None
            results.rows.append(row)
            results.evals[spec.name], results.fits[spec.name] = doc, result
            results.values[spec.name] = row_values(result.model, bank, spec.eval)
            if log:
                log(f"{spec.name:<40} val cos {row['val_cos']:.4f}  {row['optimizer_steps']} steps, "
                    f"stop: {row['stop_reason']}{'' if row['converged'] else ' (not converged)'}"
                    f"{' (cached)' if row['cached'] else ''}, {row['train_seconds']:.0f} s")
    return results
