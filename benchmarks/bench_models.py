"""Training throughput of every model against the machine's fp32 matmul ceiling.

    python benchmarks/bench_models.py                       # D=768, batch 256, all trained models
    python benchmarks/bench_models.py --steps 3 --dim 64 --models lstm,transformer --json out.json

What it measures, in one run:
  ceiling     fp32 GFLOP/s of large square matmuls (best of a few), the most this device can do
  samples/s   training steps (index slicing of in-memory tensors, forward, MSE on raw, backward,
              grad clip, AdamW) at batch 256, seq 5, per model, after warm-up steps
  FLOPs       per sample, forward counted with torch.utils.flop_counter (plus an analytic count for
              LSTM layers, whose fused CPU/cuDNN kernels the counter does not see); training
              FLOPs = 3 x forward (backward ~ 2 x forward)
  achieved    samples/s x training FLOPs per sample, as a share of the ceiling
  data share  time spent slicing the batch out of the in-memory tensors / whole step time
  peak memory each model runs in its own process: ru_maxrss on CPU, max_memory_allocated on GPU

Targets printed beside the results: >= 70 % of the ceiling for LSTM and Transformer, data
feeding < 5 % of step time. Reference (plain torch, 2 vCPUs, D=768): LSTM ~510 samples/s,
Transformer ~200 samples/s. Run it on a quiet machine: other processes skew every number.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # 2-vCPU machines: no spin-waiting threads

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lvmlib.models import build_model, count_parameters  # noqa: E402
from lvmlib.training import pick_device  # noqa: E402

TRAINED = ("amn", "lstm", "gru", "transformer", "graphmert", "base_lcm")
CEILING_TARGET = {"lstm": 0.70, "transformer": 0.70}
REFERENCE = {"lstm": 510, "transformer": 200}      # samples/s, plain torch on the 2-vCPU machine, D=768
DATA_SHARE_TARGET = 0.05


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(device, seconds: float = 2.0) -> float:
    """fp32 GFLOP/s of square matmuls: best of several timed rounds."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False   # fp32 means fp32, here and in the models
    a @ b
    sync(device)
    reps = 4 if device.type == "cuda" else 1       # GPU: several matmuls per timing, to hide launch cost
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, reps * 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def forward_flops_per_sample(model: nn.Module, dim: int) -> float:
    """Forward FLOPs of one sample, counted on CPU; LSTM layers counted analytically."""
    model = model.cpu()
    batch = 4
    x = F.normalize(torch.randn(batch, 5, dim), dim=-1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.raw(x)
    total = counter.get_total_flops()
    for module in model.modules():
        if isinstance(module, nn.LSTM):    # fused kernel: invisible to the counter
            for layer in range(module.num_layers):
                in_size = module.input_size if layer == 0 else module.hidden_size
                total += batch * 5 * 2 * 4 * module.hidden_size * (in_size + module.hidden_size)
    return total / batch


def bench_one(name: str, dim: int, batch: int, steps: int, warmup: int, device_name: str) -> dict:
    device = pick_device(device_name)
    torch.manual_seed(0)
    model = build_model(name, dim=dim)
    params = count_parameters(model)
    fwd_flops = forward_flops_per_sample(model, dim)
    model.to(device).train()
    rows = batch * 8          # an in-memory "training set": batches are index slices of it
    contexts = F.normalize(torch.randn(rows, 5, dim, device=device), dim=-1)
    targets = F.normalize(torch.randn(rows, dim, device=device), dim=-1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data_time = step_time = 0.0
    order = torch.randperm(rows, device=device)
    for step in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        start = (step * batch) % rows
        idx = order[start:start + batch]
        ctx, tgt = contexts[idx], targets[idx]
        sync(device)
        t1 = time.perf_counter()
        if model.predicts_every_position:
            loss = F.mse_loss(model.raw_all(ctx), torch.cat([ctx[:, 1:], tgt[:, None]], dim=1))
        else:
            loss = F.mse_loss(model.raw(ctx), tgt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        sync(device)
        t2 = time.perf_counter()
        if step >= warmup:
            data_time += t1 - t0
            step_time += t2 - t0
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
    samples_per_s = steps * batch / step_time
    return {"model": name, "params": params, "fwd_gflop_per_sample": fwd_flops / 1e9,
            "train_gflop_per_sample": 3 * fwd_flops / 1e9, "samples_per_s": samples_per_s,
            "achieved_gflops": samples_per_s * 3 * fwd_flops / 1e9, "data_share": data_time / step_time,
            "peak_mb": peak_mb, "step_ms": 1000 * step_time / steps, "device": str(device)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--models", default=",".join(TRAINED))
    p.add_argument("--device", default="auto")
    p.add_argument("--ceiling-seconds", type=float, default=2.0)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--one", help=argparse.SUPPRESS)   # internal: benchmark one model in this process
    args = p.parse_args(argv)

    if args.one:
        print(json.dumps(bench_one(args.one, args.dim, args.batch, args.steps, args.warmup, args.device)))
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in TRAINED]
    if unknown:
        p.error(f"unknown model(s) {unknown}; expected some of {TRAINED}")
    device = pick_device(args.device)
    ceiling = matmul_ceiling(device, args.ceiling_seconds)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"fp32 matmul ceiling {ceiling:.1f} GFLOP/s", flush=True)
    results = []
    for name in models:   # one process per model, so peak memory is that model's own
        cmd = [sys.executable, __file__, "--one", name, "--dim", str(args.dim), "--batch", str(args.batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            results.append({"model": name, "error": proc.stderr[-2000:]})
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["ceiling_share"] = r["achieved_gflops"] / ceiling
        results.append(r)

    head = (f"{'model':12s} {'params':>11s} {'GFLOP/smp':>9s} {'smp/s':>8s} {'GFLOP/s':>8s} {'%ceil':>6s} "
            f"{'target':>9s} {'ref smp/s':>9s} {'data%':>6s} {'<5%':>4s} {'peak MB':>8s}")
    print(head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['model']:12s} failed")
            continue
        target = CEILING_TARGET.get(r["model"])
        verdict = "" if target is None else ("ok" if r["ceiling_share"] >= target else "BELOW")
        ref = REFERENCE.get(r["model"]) if args.dim == 768 and args.batch == 256 else None
        print(f"{r['model']:12s} {r['params']:11,d} {r['train_gflop_per_sample']:9.3f} {r['samples_per_s']:8.1f} "
              f"{r['achieved_gflops']:8.1f} {100 * r['ceiling_share']:5.1f}% "
              f"{(f'>=70% {verdict}' if target else ''):>9s} {(str(ref) if ref else ''):>9s} "
              f"{100 * r['data_share']:5.2f}% {'ok' if r['data_share'] < DATA_SHARE_TARGET else 'NO':>4s} "
              f"{r['peak_mb']:8.0f}")
    if args.json:
        doc = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "dim": args.dim, "batch": args.batch, "steps": args.steps, "ceiling_gflops": ceiling,
               "targets": {"ceiling_share": CEILING_TARGET, "data_share_below": DATA_SHARE_TARGET,
                           "reference_samples_per_s_at_768": REFERENCE},
               "results": results}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
