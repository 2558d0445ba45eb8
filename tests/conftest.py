"""Shared fixtures: a tiny corpus the tests write themselves, the real corpus when present."""
import gzip
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPUS = REPO.parent / "shared" / "corpora" / "enwiki-2015-25k.jsonl.gz"

TOPICS = {
    "Volcano": ["A volcano is a rupture in the crust of a planet.", "It lets hot lava, ash and gases escape.",
                "Earth's volcanoes occur because its crust is broken into tectonic plates.",
                "Most are found where plates diverge or converge.", "Many are under the sea."],
    "Violin": ["The violin is a wooden string instrument.", "It is the smallest and highest-pitched member of its family.",
               "Violins are played by drawing a bow across the strings.", "They can also be plucked with the fingers.",
               "The instrument is important in many musical traditions."],
    "Bread": ["Bread is a staple food prepared from a dough of flour and water.", "It is usually baked.",
              "Throughout history it has been a prominent food in large parts of the world.",
              "Yeast makes the dough rise by producing carbon dioxide.", "Flatbreads are made without leavening."],
}


def tiny_articles(n_articles=9, paragraphs=4):
    """Deterministic articles with varied sentences (so concepts differ), 2-4 concepts a paragraph."""
    arts = []
    names = list(TOPICS)
    for i in range(n_articles):
        topic = names[i % len(names)]
        sents = TOPICS[topic]
        paras = []
        for p in range(paragraphs):
            rot = sents[p % len(sents):] + sents[:p % len(sents)]
            paras.append(" ".join(f"{s[:-1]} in part {p} of article {i}." for s in rot * 3))
        arts.append({"id": str(100 + i), "title": f"{topic} {i}", "paragraphs": paras})
    return arts


def write_corpus(path, articles, gz=False, extra_lines=()):
    lines = [json.dumps(a) for a in articles] + list(extra_lines)
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny_corpus(tmp_path):
    return write_corpus(tmp_path / "tiny.jsonl", tiny_articles())


@pytest.fixture(scope="session")
def encoder():
    from lvmlib.data.encode import Encoder
    return Encoder()


@pytest.fixture(scope="session")
def shared_corpus():
    if not SHARED_CORPUS.is_file():
        pytest.skip("../shared/corpora not present")
    return SHARED_CORPUS
