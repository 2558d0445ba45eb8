"""Cut paragraphs into concepts: sentences (blingfire: ~70x faster than pysbd here) merged greedily and
deterministically while that brings a concept closer to the target length, never across paragraphs."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import blingfire


@dataclass(frozen=True)
class ChunkerConfig:
    target_words: int = 60
    min_words: int = 10    # shorter leftovers join the previous concept, or are dropped (counted)
    max_words: int = 400   # longer sentences are cut at word boundaries

    def __post_init__(self):
        if not (0 < self.min_words <= self.target_words <= self.max_words):
            raise ValueError(f"chunker needs 0 < min_words <= target_words <= max_words, got {self}")

    def as_dict(self) -> dict:
        return {"splitter": f"blingfire {getattr(blingfire, '__version__', '0.1.8')}", **asdict(self)}


def split_sentences(paragraph: str) -> list[str]:
    return [s for s in blingfire.text_to_sentences(" ".join(paragraph.split())).split("\n") if s.strip()]


def chunk_paragraph(paragraph: str, cfg: ChunkerConfig) -> tuple[list[str], int]:
    """Concepts of one paragraph, and how many words were dropped as too short to stand alone."""
    pieces: list[list[str]] = []
    for words in map(str.split, split_sentences(paragraph)):
        pieces.extend(words[i:i + cfg.max_words] for i in range(0, len(words), cfg.max_words))
    concepts, current = [], []     # lists of words
    for words in pieces:
        merged = len(current) + len(words)
        farther = abs(merged - cfg.target_words) > abs(len(current) - cfg.target_words)
        if len(current) >= cfg.min_words and (merged > cfg.max_words or farther):   # a short one always merges
            concepts.append(current)
            current = []
        current = current + words
        while len(current) > cfg.max_words:         # (only a short one merged can get this long)
            concepts.append(current[:cfg.max_words])
            current = current[cfg.max_words:]
    dropped = 0
    if len(current) >= cfg.min_words:
        concepts.append(current)
    elif current and concepts and len(concepts[-1]) + len(current) <= cfg.max_words:
        concepts[-1] = concepts[-1] + current
    else:
        dropped = len(current)
    return [" ".join(c) for c in concepts], dropped


def chunk_article(paragraphs: list[str], cfg: ChunkerConfig) -> tuple[list[str], int]:
    chunked = [chunk_paragraph(p, cfg) for p in paragraphs]
    return [c for concepts, _ in chunked for c in concepts], sum(dropped for _, dropped in chunked)
