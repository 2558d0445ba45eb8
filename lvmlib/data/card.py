"""The dataset card: what is in a bank, in numbers and one figure."""
from __future__ import annotations

import numpy as np

from ..files import portable
from .bank import Bank
from .store import describe


def _stats(x) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "median": float(np.median(x)), "min": float(x.min()), "max": float(x.max()),
            "p10": float(np.percentile(x, 10)), "p90": float(np.percentile(x, 90))}


def adjacent_and_random_cosines(bank: Bank, n_pairs: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of consecutive concepts of one article, and of random pairs from different articles: the
    gap between the two is the signal a next-concept model can use at all."""
    rng = np.random.default_rng(seed)
    same = np.flatnonzero(np.diff(bank.article) == 0)          # i and i+1 in one article
    i = rng.choice(same, size=min(n_pairs, len(same)), replace=False)
    adjacent = np.einsum("nd,nd->n", bank.vectors[i], bank.vectors[i + 1])
    a, b = rng.integers(0, len(bank), size=(2, n_pairs))
    keep = bank.article[a] != bank.article[b]
    return adjacent, np.einsum("nd,nd->n", bank.vectors[a[keep]], bank.vectors[b[keep]])


def dataset_card(bank: Bank, n_pairs: int = 20000, seed: int = 0) -> dict:
    words = np.array([len(t.split()) for t in bank.text])
    adjacent, random = adjacent_and_random_cosines(bank, n_pairs, seed)
    m = bank.manifest
    corpus, encoder = m.get("corpus") or {}, m.get("encoder") or {}
    return {"bank": portable(str(bank.path)) if bank.path else m.get("kind", "in memory"),
            "fingerprint": m.get("fingerprint"), "corpus": portable(corpus.get("path")),
            "corpus_truncated": f"{corpus.get('articles_read')} articles read" if corpus.get("truncated") else None,
            "encoder": " ".join(filter(None, [encoder.get("name"), encoder.get("variant")])) or None,
            "dim": bank.dim, "articles": len(bank.articles), "concepts": len(bank),
            "per_split": describe(bank)["counts"]["per_split"],
            "concepts_per_article": _stats(bank.article_length), "words_per_concept": _stats(words),
            "cosine_adjacent": _stats(adjacent), "cosine_random": _stats(random)}


def format_card(card: dict) -> str:
    truncated = f"  (corpus truncated: {card['corpus_truncated']})" if card.get("corpus_truncated") else ""
    lines = [f"bank {card['bank']}  (fingerprint {card['fingerprint']})",
             f"corpus {card['corpus']}{truncated}", f"encoder {card['encoder']}  dim {card['dim']}",
             f"{card['articles']} articles, {card['concepts']} concepts", "",
             f"{'split':<6}{'articles':>10}{'concepts':>10}{'sequences':>11}"]
    for s, row in card["per_split"].items():
        lines.append(f"{s:<6}{row['articles']:>10}{row['concepts']:>10}{row['sequences']:>11}")
    lines.append("")
    for key in ("concepts_per_article", "words_per_concept", "cosine_adjacent", "cosine_random"):
        st = card[key]
        lines.append(f"{key:<22} mean {st['mean']:8.3f}  median {st['median']:8.3f}  "
                     f"p10 {st['p10']:8.3f}  p90 {st['p90']:8.3f}  [{st['min']:.3f}, {st['max']:.3f}]")
    return "\n".join(lines)


def card_figure(bank: Bank, n_pairs: int = 20000, seed: int = 0):
    """Three panels: concepts per article, words per concept, adjacent vs random cosine."""
    import seaborn as sns
    from matplotlib.figure import Figure   # not pyplot: shown once as a cell's value, no global state
    words = [len(t.split()) for t in bank.text]
    adjacent, random = adjacent_and_random_cosines(bank, n_pairs, seed)
    fig = Figure(figsize=(14, 3.6), layout="constrained")
    ax = fig.subplots(1, 3)
    sns.histplot(x=bank.article_length, ax=ax[0], bins=40)
    ax[0].set(title="concepts per article", xlabel="concepts")
    sns.histplot(x=words, ax=ax[1], bins=40)
    ax[1].set(title="words per concept", xlabel="words")
    sns.histplot({"adjacent (same article)": adjacent, "random (different articles)": random},
                 ax=ax[2], bins=60, stat="density", common_norm=False, element="step")
    ax[2].set(title="cosine of concept pairs", xlabel="cosine")
    return fig
