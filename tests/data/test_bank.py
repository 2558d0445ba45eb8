import numpy as np
import pytest

from lvmlib.data import (Bank, BankError, Sequences, assign_splits, fingerprint, load_bank, neighbours, save_bank,
                         sequences, synthetic_bank)


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


# ----------------------------------------------------------------------------------------
# Windows are gathered from the bank's vectors on demand; a bank on disk is memory-mapped

def materialised(bank, s):
    """What sequences() used to store: every window's contexts and target, copied out of the bank."""
    rows = s.index[:, None] + np.arange(-5, 0)
    return bank.vectors[rows], bank.vectors[s.index]


@pytest.mark.parametrize("split, budget", [("train", None), ("train", 56), ("val", None), ("ood", None)])
def test_gathered_windows_equal_the_materialised_ones(bank, split, budget):
    s = sequences(bank, split, train_concepts=budget)
    contexts, targets = materialised(bank, s)
    assert s.vectors is bank.vectors and len(s) == len(targets)            # a reference, not a copy
    rng = np.random.default_rng(0)
    for rows in (rng.permutation(len(s))[:7], slice(2, 9), s.position == 6, np.array([], dtype=np.int64)):
        assert np.array_equal(s.context_batch(rows), contexts[rows]) and s.context_batch(rows).dtype == np.float32
        assert np.array_equal(s.target_batch(rows), targets[rows])
        part = s.subset(rows)
        assert np.array_equal(part.contexts, contexts[rows]) and np.array_equal(part.targets, targets[rows])
        assert np.array_equal(part.index, s.index[rows]) and np.array_equal(part.limit, s.limit[rows])
    assert np.array_equal(s.context_rows(), s.index[:, None] + np.arange(-5, 0))
    assert np.array_equal(s.contexts, contexts) and np.array_equal(s.targets, targets)
    assert s.contexts.shape == (len(s), 5, bank.dim) and s.dim == bank.dim


def test_sequences_given_as_arrays_still_work(bank):
    """Sequences(contexts, targets, article, position, index, limit), as split_rows builds a subset."""
    s = sequences(bank, "val")
    keep = np.arange(0, len(s), 3)
    given = Sequences(s.contexts[keep], s.targets[keep], s.article[keep], s.position[keep], s.index[keep], s.limit[keep])
    assert given.vectors is None and len(given) == len(keep) and given.context == 5
    assert np.array_equal(given.contexts, s.context_batch(keep)) and np.array_equal(given.targets, s.target_batch(keep))
    assert np.array_equal(given.context_batch([0, 2]), s.context_batch(keep[[0, 2]]))
    assert np.array_equal(given.subset([1]).targets, s.target_batch(keep[[1]]))
    with pytest.raises(TypeError, match="contexts and targets"):
        Sequences(article=s.article, position=s.position, index=s.index)


def test_training_batches_are_gathered_exactly(bank):
    """_Tensors holds the vectors once and gathers per batch: the same numbers as the stored windows."""
    torch = pytest.importorskip("torch")
    from lvmlib.training.loop import _Tensors
    shared = []
    s = sequences(bank, "train", train_concepts=200)
    data = _Tensors(s, "cpu", bank, horizon=3, hard_offsets=[1, -6], shared=shared)
    val = _Tensors(sequences(bank, "val"), "cpu", bank, shared=shared)
    assert len(shared) == 1 and data.vectors is val.vectors                 # the bank's vectors, once
    contexts, targets = materialised(bank, s)
    idx = torch.as_tensor(np.random.default_rng(1).permutation(len(s))[:40])
    ctx, tgt, extra = data.batch(idx)
    assert torch.equal(ctx, torch.as_tensor(contexts)[idx]) and torch.equal(tgt, torch.as_tensor(targets)[idx])
    for key, valid_key, offsets in (("future", "valid", range(3)), ("hard", "hard_valid", [1, -6])):
        vecs, valid = neighbours(bank, s.index, offsets, s.limit)         # what _Tensors used to hold
        assert torch.equal(extra[key], torch.as_tensor(vecs)[idx]) and torch.equal(extra[valid_key], torch.as_tensor(valid)[idx])
    given = Sequences(contexts.astype(np.float64), targets, s.article, s.position, s.index, s.limit)
    ctx2, tgt2, _ = _Tensors(given, "cpu").batch(idx)                   # arrays with no bank behind them
    assert torch.equal(ctx2, ctx) and torch.equal(tgt2, tgt) and ctx2.dtype == torch.float32


def test_memory_mapped_bank_loads_and_verifies(bank, tmp_path):
    manifest = save_bank(bank, tmp_path / "bank", {"kind": "test"})
    mapped = load_bank(tmp_path / "bank")                                   # memory-mapped by default
    assert isinstance(mapped.vectors, np.memmap) and not mapped.vectors.flags.writeable
    assert np.array_equal(mapped.vectors, bank.vectors) and mapped.manifest["fingerprint"] == manifest["fingerprint"]
    assert manifest["fingerprint"] == bank.manifest["fingerprint"]         # the streamed hash is the same hash
    s, t = sequences(mapped, "val"), sequences(bank, "val")
    assert np.array_equal(s.contexts, t.contexts) and type(s.contexts) is np.ndarray
    read = load_bank(tmp_path / "bank", mmap=False)
    assert type(read.vectors) is np.ndarray and np.array_equal(read.vectors, bank.vectors)


@pytest.mark.parametrize("mmap", [True, False])
def test_changed_or_truncated_vectors_are_refused(bank, tmp_path, mmap):
    folder = tmp_path / "bank"
    save_bank(bank, folder, {"kind": "test"})
    v = bank.vectors.copy()
    v[[0, 1]] = v[[1, 0]]
    np.save(folder / "vectors.npy", v)
    with pytest.raises(BankError, match="fingerprint"):
        load_bank(folder, mmap=mmap)
    raw = (folder / "vectors.npy").read_bytes()
    (folder / "vectors.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BankError, match="unreadable"):
        load_bank(folder, mmap=mmap)


def test_checks_and_fingerprint_stream_in_blocks(bank, monkeypatch):
    import hashlib
    from lvmlib.data import bank as bank_module
    whole = hashlib.sha256()
    for part in (bank.vectors, bank.article, bank.position):
        whole.update(np.ascontiguousarray(part).tobytes())
    whole.update("\n".join(a["split"] for a in bank.articles).encode())
    monkeypatch.setattr(bank_module, "CHUNK_BYTES", 5 * bank.vectors[:1].nbytes)       # 5 rows a block
    assert fingerprint(bank.vectors, bank.article, bank.position, [a["split"] for a in bank.articles]) \
        == whole.hexdigest()[:16] == bank.manifest["fingerprint"]
    for value, message in ((np.nan, "3 vector rows contain NaN/inf \\(first row 7\\)"),
                           (0.0, "3 vector rows are not unit-norm \\(row 7 has norm 0\\)")):
        v = bank.vectors.copy()
        v[[7, 12, 31]] = value                                               # rows in three different blocks
        with pytest.raises(BankError, match=message):
            Bank(v, bank.article, bank.position, bank.text, bank.articles, bank.train_order)
