"""`lvm data build`: corpus -> concepts -> vectors -> bank folder, resumable. In `OUT/.build/` the build writes
the concept layout, then encodes fixed-size shards, each atomically, so a killed build resumes at the first
missing shard with the same vectors. The manifest is written last: a folder with one is a complete bank."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np

from .bank import Bank, BankError, assign_splits
from .chunk import ChunkerConfig, chunk_article
from .corpus import CorpusReader, default_corpus, sha256_file
from .encode import DEFAULT_ENCODER, VARIANTS, Encoder
from ..files import LOCK_NAME, folder_lock, write_json
from ..progress import Lines, bar
from .store import FORMAT, atomic_write, load_bank, read_jsonl, save_bank, save_layout

DEFAULT_MAX_ARTICLES = 1900  # ~107k concepts: the default bank, built in minutes on 2 cores (int8 encoder)


@dataclass
class BuildConfig:
    corpus: str | None = None            # None: $LVM_CORPUS or ../shared/corpora/enwiki-2015-25k.jsonl.gz
    max_articles: int | None = DEFAULT_MAX_ARTICLES
    skip_bad: bool = False
    encoder: str = DEFAULT_ENCODER
    encoder_variant: str = "int8"        # int8 (OpenVINO, ~3.4x, cos 0.998 to fp32), bf16 (~2.3x), fp32 (reference)
    encode_batch_size: int = 32          # 16-32 beats 256 for MiniLM on this CPU
    device: str | None = None
    chunker: ChunkerConfig = field(default_factory=ChunkerConfig)
    val_fraction: float = 0.1
    ood_fraction: float = 0.1
    split_seed: int = 0
    shard_size: int = 2048

    def __post_init__(self):
        """Refuse settings no build can use, before any work, naming the CLI flag too."""
        for name, flag in (("shard_size", "--shard-size"), ("encode_batch_size", "--batch-size"),
                           ("max_articles", "--max-articles")):
            value = getattr(self, name)
            every = " (or None; 0 on the command line: every article)" if name == "max_articles" else ""
            if (type(value) is not int or value < 1) and not (every and value is None):    # bool is no int here
                raise BankError(f"{name} ({flag}) must be an integer >= 1{every}, got {value!r}")
        for name, value in (("corpus", self.corpus), ("encoder", self.encoder)):
            if not isinstance(value, (str, PurePath)) and not (name == "corpus" and value is None):
                raise BankError(f"{name} (--{name}) must be a path or name, got {value!r}")
        if self.encoder_variant not in VARIANTS:
            raise BankError(f"encoder_variant (--encoder-variant) must be one of {', '.join(VARIANTS)}, "
                            f"got {self.encoder_variant!r}")
        val, ood = self.val_fraction, self.ood_fraction
        if not (0 <= val < 1 and 0 <= ood < 1 and val + ood < 1):
            raise BankError(f"val_fraction and ood_fraction (--val-fraction, --ood-fraction) must be in [0, 1) with a "
                            f"sum below 1, got {self.val_fraction} and {self.ood_fraction}")

    def corpus_path(self) -> Path:
        return Path(self.corpus) if self.corpus else default_corpus()


def _plan(cfg: BuildConfig, corpus_sha: str) -> dict:
    """What determines the bank's content; a resume must match it exactly."""
    encoder = {"name": cfg.encoder, "batch_size": cfg.encode_batch_size}
    if cfg.encoder_variant != "fp32":    # fp32 plans stay as they were, so existing banks still match
        encoder["variant"] = cfg.encoder_variant
    return {"corpus": {"path": str(cfg.corpus_path()), "sha256": corpus_sha, "max_articles": cfg.max_articles,
                       "skip_bad": cfg.skip_bad},
            "chunker": cfg.chunker.as_dict(),
            "encoder": encoder,
            "split": {"seed": cfg.split_seed, "val_fraction": cfg.val_fraction, "ood_fraction": cfg.ood_fraction,
                      "val": "seeded random articles", "ood": "the last block of articles in corpus order"},
            "shard_size": cfg.shard_size}


def _chunk_corpus(cfg: BuildConfig, work: Path, plan: dict, progress: bool = True) -> None:
    """Write the corpus's concept layout (texts, article/position per concept, articles with their split) into
    `work`, then plan.json and layout.json (counts and chunking stats), which mark it complete."""
    reader = CorpusReader(cfg.corpus_path(), cfg.max_articles, cfg.skip_bad)
    texts, articles, lengths, dropped_words = [], [], [], 0
    lines = Lines("chunking", reader.articles_read, " articles", enabled=progress)
    for art in bar(reader, desc="chunking", unit=" articles", total=cfg.max_articles, mininterval=2,
                   disable=not progress):
        concepts, dropped = chunk_article(art.paragraphs, cfg.chunker)
        dropped_words += dropped
        if concepts:
            articles.append({"id": art.id, "title": art.title})
            texts.extend(concepts)
            lengths.append(len(concepts))
    if not articles:
        raise BankError(f"corpus {cfg.corpus_path()} gave no concepts")
    lines.total = reader.articles_read
    lines.update(reader.articles_read)      # off a terminal: one line for the whole pass
    split, train_order = assign_splits(len(articles), cfg.val_fraction, cfg.ood_fraction, cfg.split_seed)
    for a, s in zip(articles, split):
        a["split"] = s
    save_layout(work, np.repeat(np.arange(len(lengths)), lengths), np.concatenate([np.arange(n) for n in lengths]),
                texts, articles, train_order)
    stats = {"bad_lines": len(reader.bad_lines), "bad_line_numbers": reader.bad_lines[:100],
             "articles_without_concepts": reader.articles_read - len(articles), "dropped_short_words": dropped_words,
             "corpus_truncated": reader.truncated, "articles_read": reader.articles_read}
    write_json(work / "plan.json", plan)
    write_json(work / "layout.json", {"concepts": len(texts), "stats": stats})


def _read_json(path: Path):
    """The JSON value in `path`, or None if it is not JSON (or not UTF-8)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def _shard_path(work: Path, i: int) -> Path:
    return work / "shards" / f"{i:05d}.npy"


def _shard_ok(path: Path, rows: int) -> bool:
    try:
        v = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):     # missing, truncated or corrupt
        return False
    return v.dtype == np.float32 and v.ndim == 2 and v.shape[0] == rows


def build_bank(out: str | Path, cfg: BuildConfig | None = None, progress: bool = True,
               encoder: Encoder | None = None, force: bool = False) -> Bank:
    """Build (or resume, or find up to date) the bank in `out`, holding `out/.lock` throughout (FolderInUse
    for a second build). `encoder` reuses a loaded model; `force` first deletes the bank already there."""
    cfg = cfg or BuildConfig()
    out, work = Path(out), Path(out) / ".build"
    corpus = cfg.corpus_path()
    if not corpus.is_file():
        raise BankError(f"corpus not found: {corpus} (set --corpus or $LVM_CORPUS)")
    with folder_lock(out, "lvm data build", "bank folder (--out)"):
        if force:
            remove_bank(out)
        plan = _plan(cfg, sha256_file(corpus))
        if (out / "manifest.json").exists():
            existing = _read_json(out / "manifest.json")
            if not isinstance(existing, dict):
                raise BankError(f"{out / 'manifest.json'} is not a bank manifest; choose another --out")
            if existing.get("plan") != plan:
                raise BankError(f"{out} already holds a bank built with other settings; "
                                "choose another --out or delete it (use --force)")
            print(f"bank {out} is up to date")
            return load_bank(out)
        if (work / "plan.json").exists() and _read_json(work / "plan.json") != plan:
            print(f"{work}: an unfinished build with other settings; starting over")
            shutil.rmtree(work)
        started = time.time()
        if not (work / "layout.json").exists():
            _chunk_corpus(cfg, work, plan, progress)
        texts = read_jsonl(work / "texts.jsonl")
        encoder, encode_seconds = _encode_shards(work, cfg, texts, encoder, progress)
        return _finish(out, work, cfg, plan, texts, encoder, {"this_run_seconds": round(time.time() - started, 1),
                                                              "encode_seconds_this_run": round(encode_seconds, 1)})


def remove_bank(folder: str | Path) -> None:
    """`--force`: delete the bank in `folder` (only a bank's files; the folder and its lock stay), the
    manifest first, so a deletion cut short leaves no folder that claims to be complete."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return
    found = _read_json(manifest)
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise BankError(f"--force refuses to delete {folder}: its manifest.json is not an lvm bank's")
    manifest.unlink()
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.name != LOCK_NAME:       # the caller holds the lock
            entry.unlink()


def _encode_shards(work: Path, cfg: BuildConfig, texts: list, encoder: Encoder | None, progress: bool):
    """Encode every shard not yet on disk (each written atomically); (encoder, seconds encoding)."""
    given = (encoder.name, encoder.batch_size, getattr(encoder, "variant", "fp32")) if encoder else None
    if encoder is not None and given != (cfg.encoder, cfg.encode_batch_size, cfg.encoder_variant):
        raise BankError(f"encoder {given[0]!r} (batch {given[1]}, {given[2]}) given, but the build config says "
                        f"{cfg.encoder!r} (batch {cfg.encode_batch_size}, {cfg.encoder_variant})")
    shards = [texts[start:start + cfg.shard_size] for start in range(0, len(texts), cfg.shard_size)]
    todo = [i for i, shard in enumerate(shards) if not _shard_ok(_shard_path(work, i), len(shard))]
    encode_seconds, initial = 0.0, len(texts) - sum(len(shards[i]) for i in todo)
    lines = Lines("encoding", len(texts), " concepts", initial, enabled=progress)
    with bar(total=len(texts), initial=initial, desc="encoding", unit=" concepts", disable=not progress,
             mininterval=2, smoothing=0) as shown:
        for i in todo:
            if encoder is None:
                encoder = Encoder(cfg.encoder, device=cfg.device, batch_size=cfg.encode_batch_size,
                                  variant=cfg.encoder_variant)
            if i == todo[0]:    # the rate is this run's concepts / time since encoding began (not model loading)
                shown.unpause()
                lines.start()
            t0 = time.time()
            v = encoder.encode(shards[i])
            encode_seconds += time.time() - t0
            atomic_write(_shard_path(work, i), lambda f: np.save(f, v))
            shown.update(len(shards[i]))
            lines.update(len(shards[i]))
    return encoder, encode_seconds


def _finish(out: Path, work: Path, cfg: BuildConfig, plan: dict, texts: list, encoder, timing: dict) -> Bank:
    """Write the bank from the shards and the layout, the manifest last (it marks a complete bank); .build
    goes only then, so a build killed before still resumes from it."""
    shards = [np.load(_shard_path(work, i)) for i in range(-(-len(texts) // cfg.shard_size))]
    dims = {s.shape[1] for s in shards}
    if len(dims) != 1:
        raise BankError(f"{work}: shards of different widths {sorted(dims)} (encoder changed mid-build?)")
    vectors = np.concatenate(shards).astype(np.float32, copy=False)
    with np.load(work / "concepts.npz") as z:
        article, position, train_order = z["article"], z["position"], z["train_order"]
    bank = Bank(vectors, article, position, texts, read_jsonl(work / "articles.jsonl"), train_order)
    encoder_info = encoder.settings() if encoder else {"name": cfg.encoder, "batch_size": cfg.encode_batch_size,
                                                      "variant": cfg.encoder_variant, "dim": int(vectors.shape[1]),
                                                      "resumed_without_encoding": True}
    stats = json.loads((work / "layout.json").read_text())["stats"]
    corpus_info = {**plan["corpus"], "truncated": stats.get("corpus_truncated", False),
                   "articles_read": stats.get("articles_read")}
    save_bank(bank, out, {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "plan": plan, "corpus": corpus_info, "chunker": plan["chunker"], "encoder": encoder_info,
                          "split": plan["split"], "chunk_stats": stats, "timing": timing})
    shutil.rmtree(work)
    return load_bank(out)
