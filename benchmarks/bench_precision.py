"""bf16 autocast against fp32: the same seeded run in both precisions, per model — VAL cosine (fidelity) and
training samples/s (speed-up).

    python benchmarks/bench_precision.py                                  # 01's quick widths, default bank
    python benchmarks/bench_precision.py --models AMN,GRU --steps 200 --json out.json
    python benchmarks/bench_precision.py --tiny                            # synthetic data, seconds

Each model of params/01_loss_comparison/quick.yaml (its widths, batch, LR, start at the average) trains for
--steps optimizer steps (no early stop) on the bank's 12k-concept subset, once with train.precision fp32 and
once with bf16, from the same seed; VAL cosine is that of the step-`--steps` weights on the run's fixed VAL rows.
Target: |bf16 - fp32| <= 0.002. Where the CPU has no native bf16 (no AVX-512 BF16 / AMX), bf16 is emulated and
much slower: `precision: auto` then takes fp32, and this script says which the machine has.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lvmlib  # noqa: E402  (sets the thread policy before torch loads)
import torch  # noqa: E402

from lvmlib import config  # noqa: E402
from lvmlib.training import train  # noqa: E402
from lvmlib.training.loop import resolve_precision  # noqa: E402

TARGET = 0.002


def specs(args) -> dict:
    profile = config.read_yaml(REPO / "params/01_loss_comparison/quick.yaml")
    models = profile["axes"]["model"]
    chosen = args.models.split(",") if args.models else list(models)
    base = config.merge(profile["base"], {"train": {"max_steps": args.steps, "epochs": 10_000, "patience_steps": 0},
                                          "data": {"bank": args.bank}})
    if args.tiny:
        base = config.merge(base, {"data": {"bank": None, "train_concepts": None,
                                            "synthetic": {"n_articles": 40, "length": 12, "dim": 16}},
                                   "train": {"batch_size": 32, "val_rows": None}})
        models = {m: config.merge(v, {"model": {"options": {k: 16 for k in ("hidden", "d_model")
                                                            if k in v["model"].get("options", {})}}})
                  for m, v in models.items()}
        models = {m: config.merge(v, {"model": {"options": {"heads": 2, "ff": 32}}})
                  if "heads" in v["model"].get("options", {}) else v for m, v in models.items()}
    return {m: config.merge(base, models[m]) for m in chosen}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bank", default="data/bank-default")
    p.add_argument("--models", default=None, help="comma-separated names of 01's model axis (default: all)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--tiny", action="store_true", help="synthetic data, tiny widths: a smoke run")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.tiny:
        args.steps = min(args.steps, 4)
    native = resolve_precision("auto", torch.device("cpu"))
    print(f"this CPU: precision auto -> {native} ({torch.backends.cpu.get_cpu_capability()})", file=sys.stderr)
    results = []
    for name, spec in specs(args).items():
        row = {"model": name, "steps": args.steps}
        for precision in ("fp32", "bf16"):
            run = config.merge(spec, {"train": {"precision": precision}})
            t0 = time.perf_counter()
            fit = train(config.run_spec(run, source="bench_precision"), progress=False)
            seconds = sum(h["seconds"] for h in fit.history)
            samples = sum(h["rank_samples"] for h in fit.history)
            row[precision] = {"val_cosine": fit.history[-1]["val_cosine"], "samples_per_s": samples / seconds,
                              "wall_seconds": time.perf_counter() - t0}
        row["cosine_diff"] = row["bf16"]["val_cosine"] - row["fp32"]["val_cosine"]
        row["speedup"] = row["bf16"]["samples_per_s"] / row["fp32"]["samples_per_s"]
        results.append(row)
        print(f"{name:14s} VAL cos fp32 {row['fp32']['val_cosine']:.4f} bf16 {row['bf16']['val_cosine']:.4f} "
              f"(diff {row['cosine_diff']:+.4f}, target |diff| <= {TARGET})  samples/s fp32 "
              f"{row['fp32']['samples_per_s']:.0f} bf16 {row['bf16']['samples_per_s']:.0f} ({row['speedup']:.2f}x)",
              file=sys.stderr, flush=True)
    out = {"native_bf16": native == "bf16", "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "torch": torch.__version__, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
