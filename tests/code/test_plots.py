"""lvmlib.plots: the report figures' standard (palette, CIs, facets, reference lines, theirs panels)."""
from __future__ import annotations

import io

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

matplotlib.use("Agg")
from lvmlib import plots  # noqa: E402


def _errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _bar_colour(fig, name):
    for ax in fig.axes:
        for c in ax.containers:
            if isinstance(c, BarContainer) and c.get_label() == name:
                return to_rgb(c.patches[0].get_facecolor())
    raise AssertionError(f"no bars for {name}")


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def _losses(models=("AMN", "GRU", "LSTM"), losses=("MSE", "InfoNCE")):
    rows = [{"model": m, "loss": loss, "val_cos": 0.5 + 0.01 * i} for i, (m, loss) in
            enumerate((m, loss) for m in models for loss in losses)]
    df = pd.DataFrame(rows)
    return df.assign(val_cos_low=df.val_cos - 0.02, val_cos_high=df.val_cos + 0.03)


def test_palette_fixed_names_and_stable_colours():
    needed = ["AMN", "LSTM", "GRU", "Transformer", "GraphMERT-LVM", "Base-LCM", "MSE", "InfoNCE", "cosine",
              "InfoNCE-hard", "flow", "energy", "Linear Average", "copy-last", "global mean", "position-weighted avg",
              "residual ridge", "nearest training context", "oracle (ŷ = y)", "P1 MSE", "P2 residual", "P3 guard",
              "P4 rollout", "P5 curriculum"]
    assert all(n in plots.PALETTE for n in needed)
    assert to_rgb(plots.colour("P3 guard")) != to_rgb(plots.colour("Linear Average"))
    baselines = needed[12:19]
    greys = [to_rgb(plots.colour(n)) for n in baselines]
    assert len(set(greys)) == len(baselines) and all(r == g == b for r, g, b in greys)
    for n in needed[:12] + needed[19:]:  # models, losses and variants have real colours
        r, g, b = to_rgb(plots.colour(n))
        assert not r == g == b, n
    assert plots.colour("linear average") == plots.colour("Linear Average")
    assert plots.colour("some new model") == plots.colour("some new model") in plots._SAFE


def test_bars_ci_refs_and_theirs_panel():
    ours = _losses()
    ours.loc[0, "val_cos_low"] = np.nan  # no CI for this bar
    theirs = pd.DataFrame({"model": ["AMN", "GRU", "LSTM", "Transformer"], "val_cos": [0.55, "?", 0.52, 0.54]})
    fig = plots.bars(ours, x="model", y="val_cos", hue="loss", refs={"Linear Average": 0.5462, "copy-last": 0.49},
                     theirs=theirs, theirs_seed="003", theirs_file="seeds/003_x.txt", title="Loss comparison")
    assert isinstance(fig, Figure)
    left, right = fig.axes
    assert left.get_title().replace("\n", " ") == "Theirs (seed report 003, seeds/003_x.txt)"   # wrapped to fit
    assert right.get_title() == "Ours (measured in this run)"
    assert len(left.patches) == 3 and "GRU" in left.get_xlabel()  # "?" is not drawn, but named
    assert not _errorbars(left)  # their quoted numbers have no CIs
    assert len(right.patches) == 6  # the references are not bars
    assert sum(len(c.lines[2][0].get_segments()) for c in _errorbars(right)) == 5  # one CI is NaN: no bar
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    for label, value in (("Linear Average", 0.5462), ("copy-last", 0.49)):
        assert any(t.startswith(label) and f"{value:.4g}" in t for t in legend)
        assert any(ln.get_linestyle() != "-" and np.allclose(ln.get_ydata(), value) for ln in right.lines)
    assert len({ln.get_linestyle() for ln in right.lines} - {"None", "-"}) == 2   # two references, two dashes
    assert fig.legends and not right.get_legend()  # one legend, outside the panels
    fig.savefig(io.BytesIO(), format="png")


def test_bars_slant_many_names():
    many = pd.DataFrame({"variant": [f"P{i} variant" for i in range(8)], "margin": np.linspace(-0.5, 0, 8)})
    ax = plots.bars(many, x="variant", y="margin").axes[0]
    assert all(t.get_rotation() == 35 for t in ax.get_xticklabels())
    few = plots.bars(many.head(3), x="variant", y="margin").axes[0]
    assert all(t.get_rotation() == 0 for t in few.get_xticklabels())


def test_bars_asymmetric_error_bars_and_no_hue():
    df = pd.DataFrame({"model": ["AMN", "a rather long configuration name"], "r1": [0.4, 0.6],
                       "r1_low": [0.3, 0.55], "r1_high": [0.45, 0.9]})
    fig = plots.bars(df, x="model", y="r1")
    (seg_a, seg_b), = [c.lines[2][0].get_segments() for c in _errorbars(fig.axes[0])]
    assert np.allclose([seg_a[0][1], seg_a[1][1]], [0.3, 0.45]) and np.allclose([seg_b[0][1], seg_b[1][1]], [0.55, 0.9])
    assert "\n" in fig.axes[0].get_xticklabels()[1].get_text()  # long labels wrapped
    with pytest.raises(KeyError, match="bars: missing column"):
        plots.bars(df, x="model", y="val_cos")
    with pytest.raises(ValueError, match="theirs_seed"):
        plots.bars(df, x="model", y="r1", theirs=df)


def test_a_name_keeps_its_colour_across_figures():
    a = plots.bars(_losses(losses=("MSE", "InfoNCE", "my new loss")), x="model", y="val_cos", hue="loss")
    b = plots.bars(_losses(losses=("cosine", "my new loss", "InfoNCE")), x="model", y="val_cos", hue="loss")
    for name in ("InfoNCE", "my new loss"):
        assert _bar_colour(a, name) == _bar_colour(b, name) == to_rgb(plots.colour(name))


def _curves(n, xs=(10, 20, 40)):
    rows = [{"model": f"config {i}", "size": s, "val_cos": 0.3 + 0.01 * i + 0.001 * s} for i in range(n) for s in xs]
    df = pd.DataFrame(rows)
    return df.assign(val_cos_low=df.val_cos - 0.01, val_cos_high=df.val_cos + 0.02)


def test_lines_facet_when_more_than_six_and_share_y():
    fig = plots.lines(_curves(14), x="size", y="val_cos", hue="model", logx=True)
    assert len(fig.axes) == 3  # 14 lines: 3 panels of at most 6
    drawn = [[ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")] for ax in fig.axes]
    assert all(len(d) <= 6 for d in drawn) and sum(map(len, drawn)) == 14
    assert all(fig.axes[0].get_shared_y_axes().joined(fig.axes[0], ax) for ax in fig.axes[1:])
    assert all(_errorbars(ax) for ax in fig.axes) and fig.axes[0].get_xscale() == "log"
    assert len(plots.lines(_curves(6), x="size", y="val_cos", hue="model").axes) == 1
    fig = plots.lines(_curves(4).assign(split=lambda d: np.where(d.index % 2, "val", "test")), x="size",
                      y="val_cos", hue="model", facet="split")
    assert sorted(ax.get_title() for ax in fig.axes) == ["split = test", "split = val"]


def test_lines_refs_band_and_theirs():
    many = _curves(2, xs=range(1, 21))
    ridge = pd.DataFrame({"size": [1, 10, 20], "val_cos": [0.31, 0.32, 0.33]})
    theirs = pd.DataFrame({"model": ["AMN"] * 3, "size": [10, 20, 40], "val_cos": [0.3, 0.31, 0.32]})
    fig = plots.lines(many, x="size", y="val_cos", hue="model", refs={"oracle (ŷ = y)": 0.32, "residual ridge": ridge},
                      theirs=theirs, theirs_seed="000", theirs_file="seeds/000_y.txt")
    left, right = fig.axes
    assert "seed report 000" in left.get_title() and "seeds/000_y.txt" in left.get_title()
    assert right.get_title() == "Ours (measured in this run)"
    assert right.collections and not _errorbars(right)  # 20 points: a CI band
    legend = [t.get_text() for t in fig.legends[0].get_texts()]     # close references: named in the legend
    assert "residual ridge" in legend and any(t.startswith("oracle (ŷ = y) = 0.32") for t in legend)
    assert len(right.get_lines()) > len(left.get_lines())           # refs belong to our panel only
    fig = plots.lines(_curves(2), x="size", y="val_cos", hue="model", refs={"oracle (ŷ = y)": 1.0})
    assert any("off scale" in t for t in _texts(fig.axes[0]))  # the scale stays the data's
    assert fig.axes[0].get_ylim()[1] < 0.9


def test_table_numbers_never_scientific():
    assert [plots.table_number(v) for v in (822405.0, 301.0, 5.667, -0.2052, 0.0015, 4.831e-04, -2.0)] == [
        "822,405", "301", "5.667", "-0.205", "0.0015", "0.0005", "-2"]
    plots.set_theme()
    html = pd.DataFrame({"params": [822405.0], "val_r1": [1.5e-3]}).to_html()
    assert "822,405" in html and "0.0015" in html and "e-0" not in html


def test_training_curves_panels_and_best_epoch():
    rows = [{"label": f"GRU / InfoNCE / lr {i}", "epoch": e, "split": s, "loss": 1 / (e + 1) + (0.1 * e if s == "val" else 0)}
            for i in range(6) for e in range(1, 6) for s in ("train", "val")]
    fig = plots.training_curves(pd.DataFrame(rows), best_epochs={"GRU / InfoNCE / lr 0": 3})
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (2, 4)  # at most 4 a row
    assert {ln.get_label() for ln in fig.axes[0].lines} >= {"train", "val", "best epoch"}
    best = [ln for ln in fig.axes[0].lines if ln.get_label() == "best epoch"][0]
    assert best.get_xdata()[0] == 3
    assert fig.axes[1].get_title().startswith("GRU / InfoNCE / lr 1")
    wide = pd.DataFrame({"label": ["a"] * 3, "epoch": [1, 2, 3], "train_loss": [3, 2, 1], "val_loss": [3, 1, 2]})
    fig = plots.training_curves(wide)
    assert [ln.get_xdata()[0] for ln in fig.axes[0].lines if ln.get_label() == "lowest val loss"] == [2]
    assert len(plots.training_curves(pd.DataFrame(rows), max_panels=4).axes) == 4


def test_offset_sweep_marks_true_next_and_peaks():
    rows = [{"label": f"P{i} x", "k": k, "c_k": 0.5 - 0.05 * abs(k - (i % 2)) - 0.01 * i}
            for i in range(8) for k in range(-3, 4)]
    fig = plots.offset_sweep(pd.DataFrame(rows))
    assert len(fig.axes) == 2  # 8 lines: faceted
    ax = fig.axes[0]
    assert any(np.allclose(ln.get_xdata(), 0) and ln.get_linestyle() == ":" for ln in ax.lines)
    assert "true next" in _texts(ax)
    peaks = [ln for ln in ax.lines if ln.get_label() == "_peak"]
    assert sorted(float(p.get_xdata()[0]) for p in peaks) == [0, 0, 1, 1]
    df = pd.DataFrame(rows[:7]).assign(c_k_low=lambda d: d.c_k - 0.01, c_k_high=lambda d: d.c_k + 0.01)
    assert _errorbars(plots.offset_sweep(df).axes[0])


def test_frontier_points_cis_front_and_theirs_panel():
    points = pd.DataFrame([{"label": "ridge", "kind": "baseline", "val_cos": 0.57, "val_cos_low": 0.56,
                            "val_cos_high": 0.58, "val_margin": -0.25, "val_margin_low": -0.26, "val_margin_high": -0.24},
                           {"label": "InfoNCE", "kind": "objective", "val_cos": 0.29, "val_margin": -0.09},
                           {"label": "copy-last", "kind": "baseline", "val_cos": 0.45, "val_margin": -0.30}])
    theirs = pd.DataFrame([{"model": "P5 Stage A", "val_cos": 0.463, "val_margin": -0.041}])
    fig = plots.frontier(points, x="val_cos", y="val_margin", front=["InfoNCE", "ridge"], theirs=theirs,
                         theirs_seed="004", theirs_file="seeds/004.txt")
    theirs_ax, ours_ax = fig.axes[:2]
    assert "Theirs (seed report 004" in theirs_ax.get_title() and "P5 Stage A" in _texts(theirs_ax)
    assert len(_errorbars(ours_ax)) >= 1 and not _errorbars(theirs_ax)
    front = [l for l in ours_ax.get_lines() if l.get_label().startswith("Pareto front")][0]
    assert list(front.get_xdata()) == [0.29, 0.57] and _texts(ours_ax) == ["1", "2"]
    assert "1: InfoNCE" in ours_ax.get_xlabel() and "2: ridge" in ours_ax.get_xlabel()
    with pytest.raises(ValueError, match="theirs_seed"):
        plots.frontier(points, x="val_cos", y="val_margin", theirs=theirs)
