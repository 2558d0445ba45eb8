"""The fitted baselines a learner must beat: position-weighted average and ridge on its residual.

Known truths: on a bank whose target is an exact weighted average of its context, the
position-weighted fit recovers the weights; on the rotation bank (y = R ctx[-1]) a linear map of the
context is the right answer, so the ridge finds it; ridge never fits its own training rows worse
than the average it starts from; and nothing outside the TRAIN windows moves either fit.
"""
import json

import numpy as np
import pytest

from lvmlib import evaluation as E
from lvmlib.data import CONTEXT, assign_splits, sequences, synthetic_bank
from lvmlib.data.bank import Bank

WEIGHTS = np.array([0.1, -0.2, 0.3, 0.5, 1.0])


def weighted_average_bank(weights=WEIGHTS, n_articles=120, dim=16, seed=0):
    """Articles of 6 concepts: 5 orthonormal context vectors and y = Σ w_i ctx_i / ‖w‖ (a unit vector)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_articles):
        ctx = np.linalg.qr(rng.standard_normal((dim, CONTEXT)))[0].T
        rows += [*ctx, weights @ ctx / np.linalg.norm(weights)]
    vectors = np.array(rows, dtype=np.float32)
    article = np.repeat(np.arange(n_articles), CONTEXT + 1).astype(np.int32)
    position = np.tile(np.arange(CONTEXT + 1), n_articles).astype(np.int32)
    split, order = assign_splits(n_articles, 0.15, 0.15, seed)
    articles = [{"id": f"w{i}", "title": f"weighted {i}", "split": s} for i, s in enumerate(split)]
    return Bank(vectors, article, position, [""] * len(vectors), articles, order)


def mean_cos(predict, seqs):
    return float(E.row_cosine(predict(seqs.contexts), seqs.targets).mean())


def test_position_weighted_recovers_the_weights():
    bank = weighted_average_bank()
    pw = E.fit_position_weighted(bank)
    assert pw.weights == pytest.approx(WEIGHTS / np.linalg.norm(WEIGHTS), abs=1e-5)
    val = sequences(bank, "val")
    assert mean_cos(pw, val) == pytest.approx(1.0, abs=1e-6)
    assert mean_cos(E.linear_average, val) < 0.9       # the plain average is not the answer here
    ridge = E.fit_residual_ridge(bank)                 # nothing left to explain: it stays on the average
    assert mean_cos(ridge, val) == pytest.approx(1.0, abs=1e-5)


def test_position_weights_are_the_least_squares_fit_of_the_training_subset():
    bank = synthetic_bank(n_articles=50, length=14, dim=12, noise=0.5, seed=4)[0]
    train = sequences(bank, "train", 300)
    stacked = train.contexts.transpose(0, 2, 1).reshape(-1, CONTEXT).astype(np.float64)  # one row per (window, dim)
    expected = np.linalg.lstsq(stacked, train.targets.reshape(-1).astype(np.float64), rcond=None)[0]
    assert E.fit_position_weighted(bank, 300).weights == pytest.approx(expected, abs=1e-9)
    assert not np.allclose(E.fit_position_weighted(bank).weights, expected)  # the subset matters


def test_ridge_solves_its_normal_equations_and_shrinks_towards_the_average():
    bank = synthetic_bank(n_articles=50, length=14, dim=12, noise=0.5, seed=4)[0]
    ridge = E.fit_residual_ridge(bank, 300)
    train = sequences(bank, "train", 300)
    x = train.contexts.reshape(len(train), -1).astype(np.float64)
    # gradient of ‖x(P + W) − y‖² + λ‖W‖² at the fit is zero (P: the position-weighted map)
    grad = x.T @ (ridge.raw(train.contexts) - train.targets) + ridge.lam * ridge.matrix
    assert np.abs(grad).max() < 1e-8 * max(1.0, np.abs(x.T @ train.targets).max())
    assert ridge.weights == pytest.approx(E.fit_position_weighted(bank, 300).weights, abs=1e-12)
    assert ridge.lam in E.core.RIDGE_LAMBDAS and set(ridge.info()["holdout_cos"]) == {"1", "10", "100", "1000", "10000"}


@pytest.mark.parametrize("noise, train_concepts", [(0.0, None), (0.3, None), (0.8, 400)])
def test_ridge_never_worse_than_position_weighted_on_its_training_rows(noise, train_concepts):
    bank = synthetic_bank(n_articles=60, length=16, dim=16, noise=noise, seed=2)[0]
    pw, ridge = E.fit_position_weighted(bank, train_concepts), E.fit_residual_ridge(bank, train_concepts)
    train = sequences(bank, "train", train_concepts)
    sq = lambda f: float(np.sum((f.raw(train.contexts) - train.targets) ** 2))
    assert sq(ridge) <= sq(pw)                          # the least-squares objective it minimises
    assert mean_cos(ridge, train) >= mean_cos(pw, train)


def test_ridge_learns_the_rotation_rule():
    bank, _ = synthetic_bank(n_articles=60, length=20, dim=16, seed=0)
    val = sequences(bank, "val")
    ridge = E.fit_residual_ridge(bank)
    assert mean_cos(ridge, val) > 0.95 > mean_cos(E.fit_position_weighted(bank), val) + 0.5
    assert ridge.info()["holdout_articles"] >= 1 and ridge.info()["train_windows"] == len(sequences(bank, "train"))


def test_fits_never_touch_val_or_ood():
    bank = synthetic_bank(n_articles=60, length=16, dim=16, noise=0.3, seed=5)[0]
    other = np.random.default_rng(9).standard_normal(bank.vectors.shape).astype(np.float32)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    vectors = np.where((bank.split == "train")[:, None], bank.vectors, other)
    changed = Bank(vectors, bank.article, bank.position, bank.text, bank.articles, bank.train_order)
    assert not np.array_equal(changed.vectors, bank.vectors)
    a, b = E.fit_residual_ridge(bank), E.fit_residual_ridge(changed)
    assert a.lam == b.lam and a.info() == b.info()
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.matrix, b.matrix)
    assert np.array_equal(E.fit_position_weighted(bank).weights, E.fit_position_weighted(changed).weights)


def test_baselines_in_the_evaluation_document():
    bank = synthetic_bank(n_articles=60, length=20, dim=32, seed=0)[0]
    val = E.split_rows(bank, "val")
    res = E.compare_to_baselines(E.copy_last, bank, val, n_boot=100)
    names = ("linear_average", "copy_last", "global_mean", "position_weighted", "residual_ridge")
    assert all(res[k]["n"] == len(val) for k in names) and set(res["model_minus"]) == set(names)
    assert res["residual_ridge"]["mean"] == pytest.approx(mean_cos(E.fit_residual_ridge(bank), val), abs=1e-7)
    assert res["model_minus"]["copy_last"]["mean"] == pytest.approx(0.0, abs=1e-7)
    doc = E.evaluate(E.copy_last, bank, n_boot=100, max_rows=60)
    fitted = json.loads(json.dumps(doc, allow_nan=False))["baselines"]["fitted"]
    assert len(fitted["position_weighted"]["weights"]) == CONTEXT and fitted["residual_ridge"]["lam"] > 0
    assert "residual_ridge" in E.format_table(doc) and "ridge λ" in E.format_table(doc)
    # baselines fitted once and passed in give the same document
    again = E.evaluate(E.copy_last, bank, n_boot=100, max_rows=60, baselines=E.fit_baselines(bank))
    strip = lambda d: {k: v for k, v in d.items() if k != "five_cat"}
    assert strip(again) == strip(doc)
