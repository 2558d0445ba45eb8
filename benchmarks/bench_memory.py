"""Peak memory of ctx-5 training windows: materialised (the old way) vs gathered per batch.

    python benchmarks/bench_memory.py                        # 200,000 concepts, D=384 (2,000 articles x 100)
    python benchmarks/bench_memory.py --concepts 400000 --dim 768 --json out.json
    python benchmarks/bench_memory.py --tiny                 # a smoke-test size

Builds a synthetic bank (random unit vectors; only the sizes matter here), writes it with
lvmlib.data.save_bank into a temporary folder, and measures peak RSS (getrusage ru_maxrss) in a
fresh subprocess per measurement, so the peaks do not mix:

  baseline  import torch + lvmlib (data, models, training): every other process starts there
  load      load_bank (memory-mapped, fingerprint verified) + the train/val Sequences
  old       the old way: load_bank read into memory + sequences(bank, "train").contexts and
            .targets materialised, (M, 5, D) + (M, D)
  new       load_bank memory-mapped + one training epoch of a small AMN through
            lvmlib.training.fit (CPU), contexts gathered per batch from the vectors

This process only starts the others (it never imports numpy, torch or lvmlib, and the bank is
built in a subprocess too): a child's ru_maxrss starts from its parent's peak (Linux carries it
over exec), so a heavy parent would raise every measurement. Each peak is reported above the
baseline process's peak (subtracted, so the interpreter, torch
and lvmlib do not count) and as a multiple of the vectors' size (N x D x 4 bytes). The pages of
a memory-mapped vectors.npy that a process has read count in its RSS like any other memory.
Target: new <= 2x the vectors' size above the baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # 2-vCPU machines: no spin-waiting threads
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET = 2.0                 # new: peak above baseline <= TARGET x the vectors' size
STAGES = ("baseline", "load", "old", "new")
AMN_SMALL = {"attn_dim": 32, "hidden": 64, "mid": 32}


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)     # bytes on macOS, KiB on Linux


def make_bank(folder: Path, concepts: int, dim: int, length: int, seed: int = 0) -> dict:
    """A bank of `concepts` random unit vectors in articles of `length`, saved to `folder`."""
    import numpy as np
    from lvmlib.data import Bank, assign_splits, save_bank

    n_articles = max(3, concepts // length)
    n = n_articles * length
    rng = np.random.default_rng(seed)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):
        block = rng.standard_normal((min(65536, n - start), dim), dtype=np.float32)
        vectors[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    article = np.repeat(np.arange(n_articles), length).astype(np.int32)
    position = np.tile(np.arange(length), n_articles).astype(np.int32)
    split, order = assign_splits(n_articles, 0.15, 0.15, seed)
    articles = [{"id": f"m{i}", "title": f"memory {i}", "split": s} for i, s in enumerate(split)]
    text = [f"c{i}" for i in range(n)]
    bank = Bank(vectors, article, position, text, articles, order)
    save_bank(bank, folder, {"kind": "bench_memory", "seed": seed})
    return {"concepts": n, "dim": dim, "articles": n_articles, "length": length, "vectors_bytes": int(vectors.nbytes)}


def measure(stage: str, folder: str, batch: int, max_steps: int | None) -> dict:
    """One stage, in this (fresh) process; returns its peak RSS and what it did."""
    import numpy as np  # noqa: F401
    import torch
    from lvmlib.config import run_spec
    from lvmlib.data import load_bank, sequences
    from lvmlib.models import build_model
    from lvmlib.training import fit

    out = {"stage": stage, "after_imports": peak_rss_bytes()}
    t0 = time.perf_counter()
    if stage == "load":
        bank = load_bank(folder)
        train, val = sequences(bank, "train"), sequences(bank, "val")
        out.update(train_windows=len(train), val_windows=len(val))
    elif stage == "old":
        bank = load_bank(folder, mmap=False)
        train = sequences(bank, "train")
        contexts, targets = train.contexts, train.targets
        out.update(train_windows=len(train), contexts_bytes=int(contexts.nbytes), targets_bytes=int(targets.nbytes))
    elif stage == "new":
        bank = load_bank(folder)
        train, val = sequences(bank, "train"), sequences(bank, "val")
        out["after_load"] = peak_rss_bytes()
        torch.manual_seed(0)
        model = build_model("amn", dim=bank.dim, **AMN_SMALL)
        spec = run_spec({"model": {"name": "amn", "options": AMN_SMALL}, "data": {"synthetic": {}},
                         "loss": {"mse": 1.0},
                         "train": {"epochs": 1, "batch_size": batch, "eval_batch_size": max(batch, 1024),
                                   "device": "cpu", "max_steps": max_steps}})
        result = fit(model, train, val, spec, bank=bank, progress=False)
        out.update(train_windows=len(train), val_windows=len(val), steps=result.optimizer_steps,
                   val_loss=result.best_val_loss, threads=torch.get_num_threads(),
                   targets_bytes=(len(train) + len(val)) * bank.dim * 4)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["peak_rss"] = peak_rss_bytes()
    return out


def child(args: list[str], what: str) -> dict:
    """Run this script with `args` in a fresh process; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_stage(stage: str, folder: Path, args) -> dict:
    extra = [] if args.max_steps is None else ["--max-steps", str(args.max_steps)]
    return child(["--measure", stage, "--bank", str(folder), "--batch", str(args.batch), *extra], f"stage {stage}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concepts", type=int, default=200_000, help="bank size (rounded down to whole articles)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--length", type=int, default=100, help="concepts per article")
    p.add_argument("--batch", type=int, default=1024, help="training batch size of the new way's epoch")
    p.add_argument("--max-steps", type=int, default=None, help="cap the new way's epoch at this many steps")
    p.add_argument("--tiny", action="store_true", help="a smoke-test size (2,000 concepts, D=16)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--measure", choices=STAGES, help=argparse.SUPPRESS)   # internal: one stage in this process
    p.add_argument("--bank", help=argparse.SUPPRESS)
    p.add_argument("--build", action="store_true", help=argparse.SUPPRESS)   # internal: write the bank
    args = p.parse_args(argv)

    if args.measure:
        print(json.dumps(measure(args.measure, args.bank, args.batch, args.max_steps)))
        return 0
    if args.build:
        print(json.dumps(make_bank(Path(args.bank), args.concepts, args.dim, args.length)))
        return 0
    if args.tiny:
        args.concepts, args.dim, args.length, args.batch = 2000, 16, 20, 64

    work = Path(tempfile.mkdtemp(prefix="bench_memory-"))
    try:
        t0 = time.perf_counter()
        size = child(["--build", "--bank", str(work / "bank"), "--concepts", str(args.concepts), "--dim",
                      str(args.dim), "--length", str(args.length)], "build")
        print(f"bank: {size['concepts']:,} concepts x D={size['dim']} ({size['articles']:,} articles of "
              f"{size['length']}), vectors {size['vectors_bytes'] / 2**20:,.1f} MiB; built in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        stages = {s: run_stage(s, work / "bank", args) for s in STAGES}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    v = size["vectors_bytes"]
    base = stages["baseline"]["peak_rss"]
    for s in stages.values():
        s["above_baseline"] = s["peak_rss"] - base
        s["x_vectors"] = round(s["above_baseline"] / v, 3)
    new = stages["new"]
    met = new["x_vectors"] <= TARGET
    print(f"baseline (python + torch + lvmlib imported): peak RSS {base / 2**20:,.1f} MiB, subtracted below")
    print(f"{'stage':10s} {'peak RSS MiB':>13s} {'above base MiB':>15s} {'x vectors':>10s} {'seconds':>8s}")
    for name, s in stages.items():
        print(f"{name:10s} {s['peak_rss'] / 2**20:13,.1f} {s['above_baseline'] / 2**20:15,.1f} "
              f"{s['x_vectors']:10.2f} {s['seconds']:8.1f}")
    print(f"old: train contexts {stages['old']['contexts_bytes'] / 2**20:,.1f} MiB + targets "
          f"{stages['old']['targets_bytes'] / 2**20:,.1f} MiB for {stages['old']['train_windows']:,} windows")
    print(f"new: one epoch, {new['steps']} steps of batch {args.batch} ({new['train_windows']:,} train, "
          f"{new['val_windows']:,} val windows), peak after loading {(new['after_load'] - base) / 2**20:,.1f} MiB "
          f"above base; target <= {TARGET:g}x vectors above base: {'met' if met else 'NOT met'} "
          f"({new['x_vectors']:.2f}x)")
    print(f"     (fit reads every train and val target once before training, for its data hash and the model's "
          f"statistics: {new['targets_bytes'] / 2**20:,.1f} MiB gathered)")
    if args.json:
        doc = {"machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
               **size, "baseline_rss": base, "target_x_vectors": TARGET, "target_met": met,
               "note": "peak RSS (ru_maxrss) per fresh subprocess; above_baseline subtracts the peak of a "
                       "process that only imports torch + lvmlib; x_vectors = above_baseline / vectors_bytes",
               "stages": stages}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
