import numpy as np
import pytest

from lvmlib.data import Bank, BankError, assign_splits, neighbours, sequences, synthetic_bank


@pytest.fixture
def bank():
    return synthetic_bank(n_articles=40, length=12, dim=16, seed=3)[0]


def test_no_window_crosses_an_article(bank):
    for split in ("train", "val", "ood"):
        s = sequences(bank, split)
        rows = s.index[:, None] + np.arange(-5, 1)
        assert (bank.article[rows] == s.article[:, None]).all()
        assert np.array_equal(s.contexts, bank.vectors[rows[:, :5]])
        assert np.array_equal(s.targets, bank.vectors[s.index])
        assert (s.position >= 5).all()


def test_window_count_per_article(bank):
    s = sequences(bank, "val")
    assert len(s) == len(bank.articles_in("val")) * (12 - 5)


def test_no_article_in_two_splits(bank):
    seen = {split: set(sequences(bank, split).article) for split in ("train", "val", "ood")}
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["ood"]) and not (seen["val"] & seen["ood"])
    assert set(np.unique(bank.article)) == seen["train"] | seen["val"] | seen["ood"]


def test_splits_are_seeded_and_ood_is_the_last_block():
    a, order_a = assign_splits(100, 0.1, 0.1, seed=7)
    b, order_b = assign_splits(100, 0.1, 0.1, seed=7)
    c, _ = assign_splits(100, 0.1, 0.1, seed=8)
    assert a == b and np.array_equal(order_a, order_b) and a != c
    assert a[90:] == ["ood"] * 10 and a.count("val") == 10
    assert sorted(order_a) == [i for i, s in enumerate(a) if s == "train"]


def test_train_subsets_are_nested_and_exact(bank):
    sizes = [20, 50, 130, 300]
    subsets = [sequences(bank, "train", train_concepts=k) for k in sizes]
    for small, large in zip(subsets, subsets[1:]):
        assert set(small.index) <= set(large.index)
    full = sequences(bank, "train")
    assert set(subsets[-1].index) <= set(full.index)
    with pytest.raises(BankError, match="training concepts"):
        sequences(bank, "train", train_concepts=10_000)
    with pytest.raises(BankError, match="train split only"):
        sequences(bank, "val", train_concepts=10)


def test_val_and_ood_do_not_depend_on_train_size(bank):
    before = sequences(bank, "val").index
    sequences(bank, "train", train_concepts=50)
    assert np.array_equal(sequences(bank, "val").index, before)


def test_neighbours_stay_in_article(bank):
    s = sequences(bank, "ood")
    v, valid = neighbours(bank, s.index, range(-3, 4))
    assert np.array_equal(v[:, 3], s.targets) and np.array_equal(v[:, 2], s.contexts[:, -1])
    last = s.position == 11
    assert (~valid[last, 4:]).all() and (v[last, 4:] == 0).all()


def test_rotation_oracle_scores_one():
    bank, rot = synthetic_bank(n_articles=10, length=10, dim=24, noise=0.0)
    s = sequences(bank, "train")
    oracle = s.contexts[:, -1] @ rot.T
    assert np.allclose((oracle * s.targets).sum(1), 1.0, atol=1e-5)
    assert abs((s.contexts[:, -1] * s.targets).sum(1).mean()) < 0.3     # copy-last is far off


@pytest.mark.parametrize("corrupt, message", [
    (lambda v: v.astype(np.float64), "float32"),
    (lambda v: v[:-1], "article has shape"),
    (lambda v: np.where(np.arange(len(v))[:, None] == 4, np.nan, v).astype(np.float32), "NaN"),
    (lambda v: np.where(np.arange(len(v))[:, None] == 4, 0.0, v).astype(np.float32), "not unit-norm"),
])
def test_bad_arrays_are_refused(bank, corrupt, message):
    with pytest.raises(BankError, match=message):
        Bank(corrupt(bank.vectors), bank.article, bank.position, bank.text, bank.articles, bank.train_order)


def test_positions_must_follow_articles(bank):
    position = bank.position.copy()
    position[5] = 7
    with pytest.raises(BankError, match="positions"):
        Bank(bank.vectors, bank.article, position, bank.text, bank.articles, bank.train_order)


def test_sequences_limit_marks_the_training_budget(bank):
    s = sequences(bank, "train", train_concepts=56)          # 12-concept articles: 4 whole, the 5th cut to 8
    assert set(s.limit) == {12, 8} and (s.limit == 8).sum() == 3
    v, valid = neighbours(bank, s.index, range(0, 8), s.limit)
    pos = s.position[:, None] + np.arange(8)
    assert (valid == (pos < s.limit[:, None])).all()          # nothing past the budget is ever read
    full = sequences(bank, "val")
    assert (full.limit == 12).all()


def test_train_order_must_be_the_training_articles(bank):
    bad = bank.train_order.copy()
    bad[0] = bank.articles_in("val")[0]
    with pytest.raises(BankError, match="train_order"):
        Bank(bank.vectors, bank.article, bank.position, bank.text, bank.articles, bad)


def test_every_listed_article_needs_concepts(bank):
    articles = bank.articles + [{"id": "ghost", "title": "ghost", "split": "val"}]
    with pytest.raises(BankError, match="every article"):
        Bank(bank.vectors, bank.article, bank.position, bank.text, articles, bank.train_order)
