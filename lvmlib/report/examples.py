"""Decoded examples: what a prediction "says", read back as its nearest concepts in the bank (FAISS), for a
few seeded VAL windows; a hit that is one of the window's own context concepts is marked as a copy."""
from __future__ import annotations

import html

import numpy as np

from ..data import sequences
from ..evaluation import ConceptIndex, predict_all
from ..runs import as_predict


def _snippet(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return html.escape(text if len(text) <= limit else text[:limit - 1] + "…")


def pick_windows(bank, n: int = 5, seed: int = 0) -> np.ndarray:
    """n VAL windows from n different articles (seeded), as indices into sequences(bank, "val")."""
    val = sequences(bank, "val")
    rng = np.random.default_rng(seed)
    firsts = {}
    for i in rng.permutation(len(val)):
        firsts.setdefault(int(val.article[i]), int(i))
        if len(firsts) == n:
            break
    return np.array(sorted(firsts.values()), dtype=np.int64)


def decode(bank, predictors: dict, windows: np.ndarray, k: int = 3, index: ConceptIndex | None = None) -> list[dict]:
    """Per window: its rows and, per predictor, its k nearest concepts as (bank row, cosine, is_copy, is_target)."""
    val = sequences(bank, "val")
    index = index or ConceptIndex(bank)
    out = [{"target": int(val.index[w]), "context": [int(val.index[w]) - 5 + j for j in range(5)], "hits": {}}
           for w in windows]
    for name, predict in predictors.items():
        pred = predict_all(as_predict(predict), val.context_batch(windows))
        scores, ids = index.search(pred / np.linalg.norm(pred, axis=1, keepdims=True), k)
        for ex, s_row, id_row in zip(out, scores, ids):
            ex["hits"][name] = [(int(i), float(s), int(i) in ex["context"], int(i) == ex["target"])
                                for s, i in zip(s_row, id_row)]
    return out


def copy_rate(examples: list[dict]) -> dict:
    """Share of each predictor's top hits that are one of the window's own context concepts."""
    names = examples[0]["hits"] if examples else {}
    return {name: float(np.mean([ex["hits"][name][0][2] for ex in examples])) for name in names}


def to_html(bank, examples: list[dict]) -> str:
    """One block per window: context, true next concept, and each predictor's nearest concepts."""
    blocks = []
    for n, ex in enumerate(examples, 1):
        title = html.escape(str(bank.articles[int(bank.article[ex["target"]])].get("title") or ""))
        ctx = "".join(f"<li>{_snippet(bank.text[r])}</li>" for r in ex["context"])
        rows = "".join(
            f"<tr><td><b>{html.escape(name)}</b></td><td>{rank}</td><td>{cos:.3f}</td>"
            f"<td>{'<b>copy of context</b>' if is_copy else ('<b>true next ✓</b>' if is_target else '')}</td>"
            f"<td>{_snippet(bank.text[row])}</td></tr>"
            for name, hits in ex["hits"].items() for rank, (row, cos, is_copy, is_target) in enumerate(hits, 1))
        blocks.append(f"<h4>Example {n}{': ' + title if title else ''}</h4><p>Context (5 concepts, oldest first):</p>"
                      f"<ol>{ctx}</ol><p><b>True next concept:</b> {_snippet(bank.text[ex['target']])}</p>"
                      "<table><tr><th>predictor</th><th>rank</th><th>cosine</th><th>hit is</th><th>nearest concept "
                      f"in the bank</th></tr>{rows}</table>")
    return "\n".join(blocks) + ("<p><small>Concept text: English Wikipedia, CC BY-SA 3.0, Wikipedia "
                                "contributors.</small></p>")
