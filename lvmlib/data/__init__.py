"""Data pipeline: corpus -> concepts -> vectors -> bank -> ctx-5 sequences."""
import os
from pathlib import Path

from .bank import (CONTEXT, SPLITS, Bank, BankError, Sequences, assign_splits, fingerprint, neighbours, sequences,
                   synthetic_bank, train_subset)
from .build import DEFAULT_MAX_ARTICLES, BuildConfig, build_bank
from .card import card_figure, dataset_card, format_card
from .chunk import ChunkerConfig, chunk_article, chunk_paragraph, split_sentences
from .corpus import CorpusError, CorpusReader, default_corpus, repo_root
from .store import load_bank, save_bank

DEFAULT_BANK = "data/bank-default"  # relative to the repository root; what `make bank` builds
TINY_BANK = "data/bank-tiny"        # what `make bank-tiny` (and so `make test`) builds
BANK_ENV = "LVM_BANK"


def _from_root(path) -> Path:
    """`path` as given if it exists from here, else from the repository root (notebooks run in notebooks/)."""
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (repo_root() / path).exists():
        return repo_root() / path
    return path


def resolve_bank(name=None) -> Path:
    """The bank folder to use: `name`, else $LVM_BANK, else the default bank if built (has a manifest), else
    the tiny one, else a BankError saying how to build one. Relative paths fall back to the repository root."""
    if name is not None:
        return _from_root(name)
    env = os.environ.get(BANK_ENV)
    if env:
        path = _from_root(env)
        if not path.is_dir():
            raise BankError(f"${BANK_ENV}={env}: no bank folder there (build it with `lvm data build --out {env}`, "
                            f"or unset {BANK_ENV})")
        return path
    for candidate in (DEFAULT_BANK, TINY_BANK):
        path = repo_root() / candidate
        if (path / "manifest.json").is_file():
            return path
    raise BankError(f"no bank: neither {DEFAULT_BANK} nor {TINY_BANK} is built under {repo_root()}, and "
                    f"${BANK_ENV} is not set. Build one: `make bank` (the default bank, minutes) or "
                    f"`make bank-tiny` (the tiny test bank, seconds)")


def open_bank(spec=None) -> Bank:
    """A bank from a folder path, {"bank": path}, {"synthetic": {synthetic_bank options}}, or None (resolve_bank)."""
    if spec is None:
        return load_bank(resolve_bank())
    if isinstance(spec, dict) and "synthetic" in spec:
        return synthetic_bank(**(spec["synthetic"] or {}))[0]
    path = spec.get("bank") if isinstance(spec, dict) else spec
    if path is None:
        raise BankError(f"data spec {spec!r} names neither 'bank' nor 'synthetic'")
    return load_bank(_from_root(path))

