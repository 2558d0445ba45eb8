"""Data pipeline: corpus -> concepts -> vectors -> bank -> ctx-5 sequences."""
from .bank import (CONTEXT, SPLITS, Bank, BankError, Sequences, assign_splits, fingerprint, neighbours,
                   random_rotation, sequences, synthetic_bank, train_subset)
from .build import DEFAULT_MAX_ARTICLES, BuildConfig, build_bank
from .card import card_figure, dataset_card, format_card
from .chunk import ChunkerConfig, chunk_article, chunk_paragraph, split_sentences
from .corpus import CorpusError, CorpusReader, default_corpus
from .store import load_bank, save_bank

DEFAULT_BANK = "data/bank-default"  # relative to the repository root; what `make bank` builds


def open_bank(spec) -> Bank:
    """A bank from a folder path, {"bank": path}, or {"synthetic": {...synthetic_bank kwargs}}."""
    if isinstance(spec, dict) and "synthetic" in spec:
        return synthetic_bank(**(spec["synthetic"] or {}))[0]
    path = spec.get("bank") if isinstance(spec, dict) else spec
    if path is None:
        raise BankError(f"data spec {spec!r} names neither 'bank' nor 'synthetic'")
    from pathlib import Path
    from .corpus import repo_root
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (repo_root() / path).exists():
        path = repo_root() / path  # notebooks run in notebooks/; let them name data/bank-default
    return load_bank(path)


__all__ = ["CONTEXT", "SPLITS", "DEFAULT_BANK", "DEFAULT_MAX_ARTICLES", "Bank", "BankError", "BuildConfig",
           "ChunkerConfig", "CorpusError", "CorpusReader", "Sequences", "assign_splits", "build_bank",
           "card_figure", "chunk_article", "chunk_paragraph", "dataset_card", "default_corpus", "fingerprint",
           "format_card", "load_bank", "neighbours", "open_bank", "random_rotation", "save_bank", "sequences",
           "split_sentences", "synthetic_bank", "train_subset"]
