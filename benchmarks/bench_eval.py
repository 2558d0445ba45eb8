"""Benchmark: full 5CAT on a synthetic bank, and FAISS vs NumPy brute-force top-k search.

    .venv/bin/python benchmarks/bench_eval.py                       # 100k concepts, 10k rows, D=384
    .venv/bin/python benchmarks/bench_eval.py --concepts 5000 --sequences 500 --dim 64 --queries 100

The predictor is the linear average (NumPy, near-free), so the times are the cost of the
evaluation itself, not of a model. Target: full 5CAT (VAL + OOD + E) <= 60 s at the default sizes.
Run with OMP_WAIT_POLICY=PASSIVE on shared CPUs.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lvmlib import evaluation, files  # noqa: E402
from lvmlib.data import synthetic_bank  # noqa: E402
from lvmlib.evaluation import ConceptIndex, brute_force_topk  # noqa: E402


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concepts", type=int, default=100_000, help="bank size")
    p.add_argument("--article-length", type=int, default=50, help="concepts per synthetic article")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--sequences", type=int, default=10_000, help="rows per split for 5CAT (max_rows)")
    p.add_argument("--queries", type=int, default=1000, help="queries for the search comparison")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the measurements here")
    args = p.parse_args(argv)
    if args.concepts < 10 * args.article_length:
        p.error("need at least 10 articles (--concepts >= 10 * --article-length)")

    n_articles = args.concepts // args.article_length
    (bank, _), t_bank = timed(synthetic_bank, n_articles=n_articles, length=args.article_length, dim=args.dim,
                              noise=0.3, seed=args.seed)
    print(f"bank: {len(bank)} concepts, D={bank.dim}, {n_articles} articles  (built in {t_bank:.1f} s)")

    predict = evaluation.linear_average
    fc, t_total = timed(evaluation.five_cat, predict, bank, max_rows=args.sequences, seed=args.seed)
    secs = fc["seconds"]
    tests_total = sum(v for s in ("val", "ood") for v in secs.get(s, {}).values()) + secs.get("E", 0.0)
    print(f"\n5CAT, {fc['splits']['val']['rows']} VAL + {fc['splits']['ood']['rows']} OOD rows (linear average)")
    for split in ("val", "ood"):
        print(f"  {split.upper():<4}" + "  ".join(f"{t} {secs[split][t]:6.2f} s" for t in "ABCD"))
    print(f"  E   {secs.get('E', 0.0):6.2f} s")
    print(f"  tests {tests_total:.2f} s; total with row building and base predictions {t_total:.2f} s "
          f"({'within' if t_total <= 60 else 'OVER'} the 60 s target)")

    seqs = evaluation.split_rows(bank, "val", args.sequences, args.seed)
    pred = evaluation.predict_all(predict, seqs.contexts)
    lcm, t_lcm = timed(evaluation.lcm_metrics, pred, seqs, bank)
    print(f"LCM metrics (CA over the split's {lcm['ca_mean_candidates']:.0f} concepts): {t_lcm:.2f} s")

    queries = pred[: args.queries]
    index, t_build = timed(ConceptIndex, bank)
    (f_scores, f_ids), t_faiss = timed(index.search, queries, args.k)
    (n_scores, n_ids), t_numpy = timed(brute_force_topk, bank.vectors, queries, args.k)
    same = float(np.mean(f_ids == n_ids))
    print(f"\ntop-{args.k} search, {len(queries)} queries x {len(bank)} concepts:")
    print(f"  FAISS IndexFlatIP {t_faiss:.3f} s (+ {t_build:.3f} s to build)   NumPy brute force {t_numpy:.3f} s   "
          f"NumPy/FAISS {t_numpy / t_faiss:.1f}x   same ids {same:.4f}   "
          f"max score diff {float(np.abs(f_scores - n_scores).max()):.2e}")

    if args.json:
        files.write_json(args.json, files.to_jsonable({
            "args": vars(args), "machine": {"python": platform.python_version(), "processor": platform.processor(),
                                            "numpy": np.__version__},
            "bank_seconds": t_bank,
            "five_cat": {"rows": {s: fc["splits"][s]["rows"] for s in ("val", "ood")}, "seconds": secs,
                         "tests_seconds": tests_total, "total_seconds": t_total},
            "lcm_seconds": t_lcm,
            "search": {"queries": len(queries), "k": args.k, "faiss_build_seconds": t_build,
                       "faiss_seconds": t_faiss, "numpy_seconds": t_numpy, "numpy_over_faiss": t_numpy / t_faiss,
                       "same_ids": same}}))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
