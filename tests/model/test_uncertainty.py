"""The uncertainty model (lvmlib.evaluation.uncertainty) on synthetic data whose right answer is known."""
import numpy as np
import pytest

from lvmlib import evaluation as M


def _clustered(rng, n_articles=40, rows=25, article_sd=1.0, row_sd=1.0):
    """Rows of articles with a per-article offset: the true mean is 0, and rows of one article are correlated."""
    groups = np.repeat(np.arange(n_articles), rows)
    return rng.normal(0, article_sd, n_articles)[groups] + rng.normal(0, row_sd, len(groups)), groups


def test_level_interval_basics():
    rng = np.random.default_rng(0)
    small, large = M.interval(rng.normal(0.5, 0.2, 100)), M.interval(rng.normal(0.5, 0.2, 10_000))
    for r in (small, large):
        assert r["ci_low"] < r["mean"] < r["ci_high"] and r["seeds"] == 1
    assert (large["ci_high"] - large["ci_low"]) < 0.3 * (small["ci_high"] - small["ci_low"])
    assert M.interval(np.arange(50.0), seed=3) == M.interval(np.arange(50.0), seed=3)
    for bad in ([], [np.nan, 1.0]):
        with pytest.raises(M.EvalError):
            M.interval(bad)
    with pytest.raises(M.EvalError, match="groups"):
        M.interval(np.ones(5), groups=[0, 1])
    with pytest.raises(M.EvalError, match="same rows"):
        M.interval(np.ones(5), minus=np.ones(4))


def test_article_bootstrap_covers_where_the_window_bootstrap_does_not():
    """Over repeated draws of a clustered bank, the article bootstrap's 95 % interval holds the true mean (0)
    about 95 % of the time; treating windows as independent under-covers badly."""
    rng, hits = np.random.default_rng(1), {"articles": 0, "windows": 0}
    draws = 150
    for d in range(draws):
        values, groups = _clustered(rng)
        for name, g in (("articles", groups), ("windows", None)):
            r = M.interval(values, g, n_boot=400, seed=d)
            hits[name] += r["ci_low"] <= 0 <= r["ci_high"]
    assert 0.88 <= hits["articles"] / draws <= 0.99
    assert hits["windows"] / draws < 0.7


def test_paired_difference_finds_what_overlap_misses():
    """Two predictors on the same rows, the rows' difficulty shared: their level intervals overlap, yet the paired
    difference (+0.01 on every row, with a little noise) is clearly above zero."""
    rng = np.random.default_rng(2)
    base, groups = _clustered(rng, article_sd=0.3, row_sd=0.3)
    better = base + 0.01 + rng.normal(0, 0.005, len(base))
    a, b = M.interval(better, groups), M.interval(base, groups)
    assert a["ci_low"] < b["ci_high"]                       # overlap: "not separable" by the old rule
    diff = M.interval(better, groups, minus=base)
    assert diff["ci_low"] > 0 and diff["p"] < 0.01 and M.sign(diff) == 1
    assert diff["mean"] == pytest.approx(float(np.mean(better - base)))


def test_seeds_are_resampled_with_the_articles():
    """Identical seeds add no width (and never a zero-width interval); seeds that disagree widen the interval."""
    rng = np.random.default_rng(3)
    values, groups = _clustered(rng, article_sd=0.2, row_sd=0.2)
    one = M.interval(values, groups)
    same = M.interval([values] * 3, groups)
    apart = M.interval([values - 0.2, values, values + 0.2], groups)
    width = {k: r["ci_high"] - r["ci_low"] for k, r in (("one", one), ("same", same), ("apart", apart))}
    assert same["seeds"] == 3 and width["same"] == pytest.approx(width["one"], rel=0.25) and width["same"] > 0
    assert width["apart"] > 2 * width["one"]


def test_holm_adjusts_a_family_of_comparisons():
    diffs = {k: {"p": p, "ci_low": 0.1, "ci_high": 0.2} for k, p in (("a", 0.01), ("b", 0.04), ("c", 0.03))}
    adj = M.holm(diffs)
    assert [adj[k]["p_adj"] for k in "abc"] == pytest.approx([0.03, 0.06, 0.06])
    assert M.sign(adj["a"]) == 1 and M.sign(adj["b"]) == 0     # b's raw p < 0.05 does not survive the family
