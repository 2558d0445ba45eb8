"""The predictability ceiling (lvmlib.evaluation.ceiling), in-article rank with the context left out
(fivecat.in_article_rank(exclude_context=True)) and CA as Meta's released code counts it
(lcm.ca_other_documents): each checked against a brute-force count or a bank whose answer is known."""
import numpy as np
import pytest

from lvmlib.data import sequences, synthetic_bank
from lvmlib.evaluation import NearestContextPredictor, ceiling, copy_last, in_article_rank, lcm_metrics, split_rows
from lvmlib.evaluation.lcm import ca_other_documents


@pytest.fixture(scope="module")
def bank():
    return synthetic_bank(n_articles=40, length=16, dim=16, noise=0.3, seed=3)[0]


def brute_rank(bank, rows, pred, exclude_context):
    """Rank of v[t] among its article's concepts (optionally without v[t-5..t-1]), one row at a time."""
    ranks = []
    for i in range(len(rows)):
        a, t = rows.article[i], rows.position[i]
        start, n = bank.article_start[a], bank.article_length[a]
        cand = [p for p in range(n) if not (exclude_context and t - 5 <= p < t)]
        s = {p: float(pred[i] @ bank.vectors[start + p]) for p in cand}
        ranks.append(1 + sum(v > s[t] for v in s.values()))
    return np.array(ranks)


def test_in_article_rank_default_is_5cat_b_and_exclude_context_drops_the_context(bank):
    rows = split_rows(bank, "val")
    rng = np.random.default_rng(0)
    for pred in (copy_last(rows.contexts), rows.targets + 0.5 * rng.standard_normal(rows.targets.shape)):
        pred = (pred / np.linalg.norm(pred, axis=1, keepdims=True)).astype(np.float32)
        default = in_article_rank(None, bank, rows, pred=pred)
        assert default == in_article_rank(None, bank, rows, pred=pred, exclude_context=False)   # today's B
        assert "exclude_context" not in default
        for exclude in (False, True):
            got = in_article_rank(None, bank, rows, pred=pred, exclude_context=exclude)
            ranks = brute_rank(bank, rows, pred, exclude)
            assert got["r1"] == pytest.approx(np.mean(ranks == 1)) and got["mrr"] == pytest.approx(np.mean(1 / ranks))
    excl = in_article_rank(None, bank, rows, pred=rows.targets, exclude_context=True)
    assert excl["r1"] == 1.0 and excl["exclude_context"] is True
    assert excl["chance"]["r1"] == pytest.approx(1 / (16 - 5)) and excl["mean_candidates"] == 11


def test_copy_problem_in_one_number(bank):
    rows = split_rows(bank, "val")
    cp = ceiling.copy_problem(bank, rows)
    # ctx[-1] is its own nearest concept, so copy-last never ranks the true next concept first with the context in
    assert cp["r1_with_context"] == 0.0
    pred = copy_last(rows.contexts)
    assert cp["r1_without_context"] == pytest.approx(np.mean(brute_rank(bank, rows, pred, True) == 1))
    assert cp["chance_without_context"] == pytest.approx(1 / 11)


def test_ca_other_documents_counts_only_other_articles(bank):
    rows = split_rows(bank, "val")
    rng = np.random.default_rng(1)
    pred = rows.targets + 0.8 * rng.standard_normal(rows.targets.shape)
    pred = (pred / np.linalg.norm(pred, axis=1, keepdims=True)).astype(np.float32)
    got = ca_other_documents(pred, rows, bank)
    expected = []
    for i in range(len(rows)):
        other = rows.article != rows.article[i]
        s = rows.targets[other] @ pred[i]
        expected.append(np.mean(s < pred[i] @ rows.targets[i]))
    assert got["ca"] == pytest.approx(np.mean(expected)) and got["rows"] == len(rows)
    assert got["mean_candidates"] == pytest.approx(np.mean([(rows.article != a).sum() for a in rows.article]))
    assert ca_other_documents(rows.targets, rows, bank)["ca"] == 1.0            # the truth beats every other document
    batched = ca_other_documents(pred, rows, bank, batch_size=16, seed=0)
    assert batched["mean_candidates"] < 16 and 0 < batched["ca"] <= 1
    assert batched == ca_other_documents(pred, rows, bank, batch_size=16, seed=0)   # seeded
    # the paper's CA (lcm_metrics) is a different count: same-article concepts are negatives there
    assert lcm_metrics(pred, rows, bank)["ca"] != got["ca"]


def known_bank():
    """A synthetic bank in which VAL article 0 is an exact copy of a training article: its windows'
    nearest training contexts are their own copies, whose next concepts are the true ones."""
    bank = synthetic_bank(n_articles=30, length=14, dim=16, noise=0.5, seed=5)[0]
    val_art = int(bank.articles_in("val")[0])
    train_art = int(bank.train_order[0])
    s_v, s_t = bank.article_start[val_art], bank.article_start[train_art]
    bank.vectors[s_v:s_v + 14] = bank.vectors[s_t:s_t + 14]
    return bank, val_art


def test_best_of_k_ceiling_is_exact_where_the_data_repeats():
    bank, val_art = known_bank()
    rows = split_rows(bank, "val")
    index = ceiling.ContextIndex(bank)
    assert len(index) == len(sequences(bank, "train"))
    assert np.array_equal(np.sort(index.targets), np.sort(sequences(bank, "train").index))
    preds = ceiling.best_of_k(bank, rows, index, ks=(1, 4, 16))
    copy_rows = rows.article == val_art
    cos = {k: np.einsum("md,md->m", p, rows.targets) for k, p in preds.items()}
    assert np.allclose(cos[1][copy_rows], 1.0, atol=1e-5)
    assert np.all(cos[4] >= cos[1] - 1e-6) and np.all(cos[16] >= cos[4] - 1e-6)    # more choice never hurts
    # k = 1 is the nearest training context's next concept: what NearestContextPredictor(k=1) predicts
    nearest = NearestContextPredictor(bank, k=1)(rows.contexts)
    assert np.allclose(preds[1], nearest, atol=1e-5)
    # picked by a prediction instead of the answer: a predictor, never above the oracle-selected choice; picked by
    # the answer itself, it is the oracle; k = 1 leaves nothing to pick
    picked = ceiling.best_of_k(bank, rows, index, ks=(1, 16), by=rows.contexts[:, -1])
    by_answer = ceiling.best_of_k(bank, rows, index, ks=(16,), by=rows.targets)
    assert np.allclose(by_answer[16], preds[16]) and np.allclose(picked[1], preds[1])
    assert np.all(np.einsum("md,md->m", picked[16], rows.targets) <= cos[16] + 1e-6)
    assert not np.allclose(picked[16], preds[16])
    repeats = ceiling.near_repeats(rows, index)       # the copied article's contexts repeat a training one exactly
    assert repeats["max"] == pytest.approx(1.0, abs=1e-5) and repeats["counts"]["0.95"] >= copy_rows.sum()
    table, _ = ceiling.knn_ceiling(bank, rows, ks=(1, 16), index=index)
    assert [r["k"] for r in table] == [1, 16] and table[1]["cos"] >= table[0]["cos"]
    assert table[1]["r1_excl"] >= table[1]["r1"] - 1e-9 and table[0]["train_windows"] == len(index)


def test_curve_runs_over_nested_training_sizes(bank):
    total = int(sum(bank.article_length[bank.train_order]))
    assert ceiling.subset_sizes(bank, [100, 50, None, 10 ** 9]) == [50, 100, None]
    assert ceiling.subset_sizes(bank, [100, 10 ** 9]) == [100, None]      # too large: the whole train split
    assert ceiling.subset_sizes(bank, [100]) == [100]
    rows = ceiling.curve(bank, "val", sizes=(60, 200, None), ks=(1, 8), max_rows=40)
    assert [(r["train_concepts"], r["k"]) for r in rows] == [(60, 1), (60, 8), (200, 1), (200, 8), (total, 1), (total, 8)]
    assert all(r["rows"] == 40 and r["split"] == "val" for r in rows)
    small, large = ceiling.ContextIndex(bank, 60), ceiling.ContextIndex(bank, 200)
    assert set(small.targets) <= set(large.targets)                        # nested, as the models' subsets
    with pytest.raises(Exception, match="k must be"):
        small.search(split_rows(bank, "val").contexts[:2], len(small) + 1)


def test_rank_table_orders_scorers_by_r1_without_context(bank):
    rows = split_rows(bank, "val")
    table = ceiling.rank_table(bank, rows, {"copy-last": copy_last(rows.contexts), "oracle": rows.targets})
    assert [r["scorer"] for r in table] == ["oracle", "copy-last"]
    assert table[0]["r1"] == table[0]["r1_excl"] == 1.0 and table[1]["r1"] == 0.0
