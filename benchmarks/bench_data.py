"""Data pipeline throughput on this machine: chunking, raw encoder, and the whole build.

The pipeline's cost over the raw encoder is (build time - raw encode time) / raw encode time,
measured on the same concepts with the same batch size. Target: < 10 %.

    python benchmarks/bench_data.py [--articles 40] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--corpus", default=None)
    p.add_argument("--articles", type=int, default=40)
    p.add_argument("--chunk-articles", type=int, default=2000, help="articles for the chunking-only timing")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer
    from lvmlib.data import BuildConfig, build_bank, chunk_article, CorpusReader, default_corpus
    from lvmlib.data.encode import Encoder, resolve_encoder

    corpus = Path(args.corpus) if args.corpus else default_corpus()
    cfg = BuildConfig(corpus=str(corpus), max_articles=args.articles)

    t = time.perf_counter()
    n_art = n_con = n_words = 0
    for art in CorpusReader(corpus, max_articles=args.chunk_articles):
        concepts, _ = chunk_article(art.paragraphs, cfg.chunker)
        n_art += 1
        n_con += len(concepts)
        n_words += sum(len(c.split()) for c in concepts)
    chunk_s = time.perf_counter() - t

    texts = [c for art in CorpusReader(corpus, max_articles=args.articles)
             for c in chunk_article(art.paragraphs, cfg.chunker)[0]]
    model = SentenceTransformer(resolve_encoder(cfg.encoder))
    model.encode(texts[:64], batch_size=cfg.encode_batch_size)            # warm-up
    t = time.perf_counter()
    model.encode(texts, batch_size=cfg.encode_batch_size, normalize_embeddings=True, show_progress_bar=False)
    raw_s = time.perf_counter() - t

    encoder = Encoder(cfg.encoder, batch_size=cfg.encode_batch_size)    # loaded outside the timing, like the raw one
    encoder.encode(texts[:64])
    out = Path(tempfile.mkdtemp()) / "bank"
    t = time.perf_counter()
    bank = build_bank(out, cfg, progress=False, encoder=encoder)
    build_s = time.perf_counter() - t
    shutil.rmtree(out.parent)
    assert len(bank) == len(texts)

    words = sum(len(c.split()) for c in texts) / len(texts)
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "chunking": {"articles": n_art, "concepts": n_con, "seconds": round(chunk_s, 2),
                     "articles_per_s": round(n_art / chunk_s, 1), "concepts_per_s": round(n_con / chunk_s, 1)},
        "encode": {"concepts": len(texts), "mean_words": round(words, 1), "raw_seconds": round(raw_s, 2),
                   "raw_concepts_per_s": round(len(texts) / raw_s, 1), "build_seconds": round(build_s, 2),
                   "build_concepts_per_s": round(len(texts) / build_s, 1),
                   "pipeline_overhead_pct": round(100 * (build_s - raw_s) / raw_s, 1), "target_overhead_pct": 10},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
