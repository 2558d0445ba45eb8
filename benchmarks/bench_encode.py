"""Encoder variants on this machine: concepts/s, speed-up over fp32, and cosine to the fp32 vectors.

Real concepts (the corpus chunked as the build does) are cut into chunks; each round encodes every
chunk with every variant in turn, so the fp32 reference and the variants share the machine's load.
The speed-up is the median over rounds of fp32 time / variant time. Target: >= 3x at mean cosine
>= 0.99 and min cosine >= 0.97 to fp32.

    python benchmarks/bench_encode.py [--concepts 2000] [--variants fp32,bf16,int8] [--json out.json]
    python benchmarks/bench_encode.py --tiny      # seconds: a smoke test, nothing to conclude
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cpu_flags() -> list[str]:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16") or f.startswith("amx")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=None)
    p.add_argument("--concepts", type=int, default=2000)
    p.add_argument("--variants", default="fp32,bf16,int8", help="comma-separated; fp32 (the reference) is always run")
    p.add_argument("--batch-size", type=int, default=32, help="of the variants")
    p.add_argument("--ref-batch-size", type=int, default=32, help="of fp32, the reference (today's build: 32)")
    p.add_argument("--chunk", type=int, default=256, help="concepts per interleaved chunk")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="48 concepts, 1 round: checks that it runs")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.tiny:
        args.concepts, args.rounds, args.chunk = 48, 1, 24

    import numpy as np
    import torch
    from lvmlib.data import ChunkerConfig, CorpusReader, chunk_article, default_corpus
    from lvmlib.data.encode import Encoder

    corpus = Path(args.corpus) if args.corpus else default_corpus()
    texts: list[str] = []
    for art in CorpusReader(corpus):
        texts += chunk_article(art.paragraphs, ChunkerConfig())[0]
        if len(texts) >= args.concepts:
            break
    texts = texts[:args.concepts]
    variants = ["fp32"] + [v for v in args.variants.split(",") if v and v != "fp32"]
    encoders, init_s = {}, {}
    for v in variants:
        t = time.perf_counter()
        encoders[v] = Encoder(batch_size=args.ref_batch_size if v == "fp32" else args.batch_size, variant=v)
        init_s[v] = time.perf_counter() - t
        encoders[v].encode(texts[:64])                                       # warm-up
    chunks = [texts[i:i + args.chunk] for i in range(0, len(texts), args.chunk)]
    seconds = {v: [] for v in variants}
    first, last = {}, {}
    for r in range(args.rounds):
        spent = dict.fromkeys(variants, 0.0)
        out = {v: [] for v in variants}
        for chunk in chunks:
            for v in variants:
                t = time.perf_counter()
                out[v].append(encoders[v].encode(chunk))
                spent[v] += time.perf_counter() - t
        for v in variants:
            seconds[v].append(spent[v])
            last[v] = np.concatenate(out[v])
            first.setdefault(v, last[v])

    ref = last["fp32"]
    results = []
    for v in variants:
        cos = (last[v].astype(np.float64) * ref).sum(1)
        ratios = [f / s for f, s in zip(seconds["fp32"], seconds[v])]
        results.append({"variant": v, "concepts_per_s": round(len(texts) / float(np.median(seconds[v])), 1),
                        "speedup_vs_fp32": round(float(np.median(ratios)), 2),
                        "speedup_per_round": [round(x, 2) for x in ratios],
                        "mean_cosine": round(float(cos.mean()), 6), "min_cosine": round(float(cos.min()), 6),
                        "deterministic": bool(np.array_equal(first[v], last[v])),
                        "init_seconds": round(init_s[v], 1), "settings": encoders[v].settings()})
        print(f"{v:6s} {results[-1]['concepts_per_s']:8.1f} concepts/s  x{results[-1]['speedup_vs_fp32']:.2f} "
              f"{results[-1]['speedup_per_round']}  cosine mean {cos.mean():.5f} min {cos.min():.5f}", flush=True)
    result = {"machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads", "cpu_flags": cpu_flags(),
              "concepts": len(texts), "mean_words": round(float(np.mean([len(t.split()) for t in texts])), 1),
              "batch_size": args.batch_size, "ref_batch_size": args.ref_batch_size, "chunk": args.chunk, "rounds": args.rounds, "results": results,
              "target": {"speedup": 3.0, "mean_cosine": 0.99, "min_cosine": 0.97}}
    print(json.dumps({k: v for k, v in result.items() if k != "results"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
