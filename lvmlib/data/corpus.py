"""Read a corpus of articles: JSON lines {"id", "title", "paragraphs": [...]}, plain or gzip."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import InputError

DEFAULT_CORPUS_NAME = "enwiki-2015-25k.jsonl.gz"
CORPUS_ENV = "LVM_CORPUS"


class CorpusError(InputError):
    """A corpus file or line that is not a valid article."""


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    paragraphs: list[str]


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_corpus() -> Path:
    """$LVM_CORPUS if set, else ../shared/corpora/enwiki-2015-25k.jsonl.gz beside the repo."""
    return Path(os.environ.get(CORPUS_ENV) or repo_root().parent / "shared" / "corpora" / DEFAULT_CORPUS_NAME)


def _parse(line: str, path: Path, lineno: int) -> Article:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise CorpusError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "title", "paragraphs"):
        if key not in obj:
            raise CorpusError(f"{path}:{lineno}: missing key {key!r}")
    paragraphs = obj["paragraphs"]
    if not isinstance(paragraphs, list) or not all(isinstance(p, str) for p in paragraphs):
        raise CorpusError(f"{path}:{lineno}: 'paragraphs' must be a list of strings")
    if not isinstance(obj["title"], str) or not isinstance(obj["id"], (str, int)):
        raise CorpusError(f"{path}:{lineno}: 'id' must be a string or integer and 'title' a string")
    return Article(str(obj["id"]), obj["title"], paragraphs)


class CorpusReader:
    """Iterates articles; refuses (or with skip_bad, counts) malformed lines. A truncated or corrupt file is
    a CorpusError; with skip_bad, reading stops there and `truncated` is set."""

    def __init__(self, path: str | Path, max_articles: int | None = None, skip_bad: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise CorpusError(f"corpus not found: {self.path} (set --corpus or ${CORPUS_ENV})")
        self.max_articles, self.skip_bad = max_articles, skip_bad
        self.bad_lines, self.truncated, self.articles_read = [], False, 0      # set again by each pass

    def __iter__(self) -> Iterator[Article]:
        self.bad_lines, self.truncated, self.articles_read = [], False, 0
        lineno = 0
        with open(self.path, "rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        with gzip.open(self.path, "rt", encoding="utf-8") if gz else open(self.path, encoding="utf-8") as f:
            try:
                for lineno, line in enumerate(f, start=1):
                    if self.max_articles is not None and self.articles_read >= self.max_articles:
                        return
                    if not line.strip():
                        continue
                    try:
                        article = _parse(line, self.path, lineno)
                    except CorpusError:
                        if not self.skip_bad:
                            raise
                        self.bad_lines.append(lineno)
                        continue
                    self.articles_read += 1
                    yield article
                    if self.articles_read == self.max_articles:
                        return          # before reading on: a fault past the articles asked for is no matter
            except (EOFError, OSError, zlib.error, UnicodeDecodeError) as e:  # gzip.BadGzipFile is an OSError
                if not self.skip_bad:
                    where = f"after line {lineno}" if lineno else "at the start"
                    raise CorpusError(f"{self.path}: truncated or corrupt {where} ({type(e).__name__}: {e}); "
                                      f"{self.articles_read} article(s) were read before the fault. Download it "
                                      "again, or pass --skip-bad to use those articles") from None
                self.truncated = True


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
