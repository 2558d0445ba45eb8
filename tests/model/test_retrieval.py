"""FAISS search over the bank agrees with a NumPy brute force, and decodes to the bank's texts."""
import numpy as np
import pytest

from lvmlib.data import synthetic_bank
from lvmlib.evaluation import ConceptIndex, brute_force_topk


@pytest.fixture(scope="module")
def bank():
    return synthetic_bank(n_articles=50, length=20, dim=24, seed=2)[0]


def test_faiss_equals_brute_force(bank):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((40, bank.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores, ids = ConceptIndex(bank).search(q, 7)
    ref_scores, ref_ids = brute_force_topk(bank.vectors, q, 7)
    assert ids.shape == (40, 7) and np.array_equal(ids, ref_ids)
    assert np.allclose(scores, ref_scores, atol=1e-5)
    assert np.allclose(scores[:, 0], (q @ bank.vectors.T).max(axis=1), atol=1e-5)


def test_split_index_returns_global_rows_of_that_split(bank):
    index = ConceptIndex(bank, split="val")
    q = bank.vectors[::97]
    _, ids = index.search(q, 3)
    assert (bank.split[ids] == "val").all()
    pool = np.flatnonzero(bank.split == "val")
    _, ref = brute_force_topk(bank.vectors[pool], q, 3)
    assert np.array_equal(ids, pool[ref])


def test_decode_reads_back_texts_and_titles(bank):
    rows = np.array([0, 123, 999])
    hits = ConceptIndex(bank).decode(bank.vectors[rows], k=2)
    for row, h in zip(rows, hits):
        assert h[0]["id"] == row and h[0]["text"] == bank.text[row] and h[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert h[0]["title"] == bank.articles[bank.article[row]]["title"] and len(h) == 2


def test_bad_queries_are_refused(bank):
    index = ConceptIndex(bank)
    with pytest.raises(ValueError, match="shape"):
        index.search(np.zeros((2, bank.dim + 1), np.float32), 1)
    with pytest.raises(ValueError, match="holds only"):
        index.search(bank.vectors[:1], len(bank) + 1)


def test_nearest_context_predictor_recovers_a_repeated_rule():
    """On the rotation bank, the same rule holds in every article, so a val context's nearest
    training contexts (after rotation, nearby starting points) continue almost like it does."""
    from lvmlib.data import sequences, synthetic_bank
    from lvmlib.evaluation import NearestContextPredictor
    bank, rot = synthetic_bank(n_articles=400, length=12, dim=3, noise=0.0, seed=1)
    val = sequences(bank, "val")
    pred = NearestContextPredictor(bank, k=1)(val.contexts)
    cos = (pred * val.targets).sum(1)
    assert cos.mean() > 0.95                      # dense 3-d data: a near-identical context exists
    copy_last = (val.contexts[:, -1] * val.targets).sum(1).mean()
    assert cos.mean() > copy_last + 0.1


def test_nearest_context_predictor_uses_training_rows_only():
    from lvmlib.data import sequences, synthetic_bank
    from lvmlib.evaluation import NearestContextPredictor
    bank, _ = synthetic_bank(n_articles=30, length=10, dim=8, seed=2)
    p = NearestContextPredictor(bank, k=3)
    assert p.index.ntotal == len(sequences(bank, "train"))
