"""Write and read a concept bank folder; refuse one whose files do not match its manifest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import atomic_write, write_json
from .bank import CONTEXT, SPLITS, Bank, BankError, fingerprint

FORMAT = "lvm-bank/1"
FILES = ("manifest.json", "vectors.npy", "concepts.npz", "texts.jsonl", "articles.jsonl")


def write_jsonl(path, rows) -> None:
    atomic_write(path, lambda f: f.writelines((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in rows))


def read_jsonl(path: Path) -> list:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BankError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows


def save_layout(folder: Path, article, position, text, articles, train_order) -> None:
    """Everything but the vectors (the build writes these first, then encodes)."""
    atomic_write(folder / "concepts.npz", lambda f: np.savez(
        f, article=np.asarray(article, np.int32), position=np.asarray(position, np.int32),
        train_order=np.asarray(train_order, np.int64)))
    write_jsonl(folder / "texts.jsonl", text)
    write_jsonl(folder / "articles.jsonl", articles)


def save_bank(bank: Bank, folder: str | Path, manifest: dict) -> dict:
    """Write a whole bank; the manifest goes last, so a folder with a manifest is complete."""
    folder = Path(folder)
    save_layout(folder, bank.article, bank.position, bank.text, bank.articles, bank.train_order)
    atomic_write(folder / "vectors.npy", lambda f: np.save(f, bank.vectors))
    manifest = {**manifest, "format": FORMAT, **describe(bank)}
    write_json(folder / "manifest.json", manifest)
    return manifest


def describe(bank: Bank) -> dict:
    """Counts and the content fingerprint, as the manifest records them."""
    lengths = {s: bank.article_length[bank.articles_in(s)] for s in SPLITS}
    per_split = {s: {"articles": len(n), "concepts": int(n.sum()),
                     "sequences": int(np.clip(n - CONTEXT, 0, None).sum())} for s, n in lengths.items()}
    return {"shape": list(bank.vectors.shape), "dtype": str(bank.vectors.dtype),
            "counts": {"articles": len(bank.articles), "concepts": len(bank), "per_split": per_split},
            "fingerprint": fingerprint(bank.vectors, bank.article, bank.position, [a["split"] for a in bank.articles])}


def load_bank(folder: str | Path, mmap: bool = True) -> Bank:
    """Read a bank folder, refusing missing or corrupt files and a fingerprint other than the manifest's.
    mmap: vectors.npy is memory-mapped read-only (checks, fingerprint and windows stream through it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BankError(f"no bank folder at {folder} (build one with `lvm data build`)")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        hint = " (an unfinished build? run `lvm data build` again to resume)" if (folder / ".build").exists() else ""
        raise BankError(f"bank {folder} is missing {', '.join(missing)}{hint}")
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except json.JSONDecodeError as e:
        raise BankError(f"{folder / 'manifest.json'}: not valid JSON ({e.msg})") from None
    if manifest.get("format") != FORMAT:
        raise BankError(f"{folder / 'manifest.json'}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    name = "vectors.npy"
    try:
        vectors = np.load(folder / name, mmap_mode="r" if mmap else None, allow_pickle=False)
        name = "concepts.npz"
        with np.load(folder / name, allow_pickle=False) as z:
            article, position, train_order = z["article"], z["position"], z["train_order"]
    except (ValueError, OSError, KeyError, EOFError) as e:
        raise BankError(f"{folder / name}: unreadable, truncated or corrupt ({e}); rebuild the bank") from None
    if list(vectors.shape) != manifest.get("shape") or str(vectors.dtype) != manifest.get("dtype"):
        raise BankError(f"{folder / 'vectors.npy'}: shape {vectors.shape} {vectors.dtype}, but the manifest "
                        f"says {manifest.get('shape')} {manifest.get('dtype')}")
    bank = Bank(vectors, article, position, read_jsonl(folder / "texts.jsonl"), read_jsonl(folder / "articles.jsonl"),
                train_order, manifest, folder)
    found = fingerprint(vectors, article, position, [a["split"] for a in bank.articles])
    if found != manifest.get("fingerprint"):
        raise BankError(f"bank {folder}: content fingerprint {found} does not match the manifest's "
                        f"{manifest.get('fingerprint')} (files changed after the build?)")
    return bank
