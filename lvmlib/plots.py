"""Shared figures (``matplotlib.figure.Figure``, not pyplot: a notebook shows each once). One colour per name;
95 % CIs from ``<y>_low``/``<y>_high``; legends right of the panels; ≤ ~6 lines a panel; references as labelled
dashed lines; numbers quoted from a seed report ("theirs") only in a panel of their own naming report and file."""
from __future__ import annotations

import math
import sys
import textwrap
import zlib
from typing import Any, Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

OURS_TITLE = "Ours (measured in this run)"
PALETTE: dict[str, Any] = {  # models: seaborn "colorblind"; losses: Paul Tol "muted"; variants: not grey
    "AMN": "#0173b2", "LSTM": "#de8f05", "GRU": "#029e73", "Transformer": "#d55e00", "GraphMERT-LVM": "#cc78bc",
    "Base-LCM": "#ca9161", "MSE": "#332288", "InfoNCE": "#117733", "cosine": "#44aa99", "InfoNCE-hard": "#88ccee",
    "flow": "#ddcc77", "energy": "#aa4499", "P1 MSE": "#882255", "P2 residual": "#cc6677", "P3 guard": "#999933",
    "P4 rollout": "#56b4e9", "P5 curriculum": "#6a3d9a",  # then the oracle and baselines: black, distinct greys
    "oracle (ŷ = y)": "#000000", "nearest training context": "#262626", "Linear Average": "#404040",
    "residual ridge": "#595959", "position-weighted avg": "#737373", "copy-last": "#8c8c8c", "global mean": "#a6a6a6"}
_BY_LOWER = {k.lower(): v for k, v in PALETTE.items()}
# other names: a colour-blind-safe colour (no grey, no pale yellow) from a CRC of the name (stable, unlike hash())
_SAFE = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#56b4e9", "#332288",
         "#117733", "#44aa99", "#88ccee", "#ddcc77", "#cc6677", "#aa4499", "#882255", "#999933"]


def colour(name: Any) -> Any:
    """PALETTE's colour for ``name`` (case-insensitive), else a stable one derived from the name."""
    name = str(name)
    return PALETTE.get(name) or _BY_LOWER.get(name.lower()) or _SAFE[zlib.crc32(name.encode()) % len(_SAFE)]


def table_number(v: float) -> str:
    """A table cell: whole numbers with thousands separators, others to 3 decimals (4 below 0.01), never 1e-3."""
    if not np.isfinite(v):
        return str(v)
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.3f}" if abs(v) >= 0.01 else f"{v:.4f}"


def set_theme() -> None:
    """The project's look (whitegrid, colour-blind palette, readable sizes); in a Jupyter kernel also the inline
    backend: under MPLBACKEND=Agg (set by `make`) a returned Figure would show only as "<Figure size ...>"."""
    import seaborn as sns

    # tables are shown whole (the report scrolls a wide one), numbers without scientific notation
    pd.set_option("display.max_columns", None, "display.max_rows", 500, "display.width", None,
                  "display.max_colwidth", 200, "display.float_format", table_number)
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "axes.titlesize": 11, "figure.titlesize": 12})
    ipython = sys.modules.get("IPython")  # a running shell has imported it
    shell = ipython.get_ipython() if ipython else None
    if shell is not None and "IPKernelApp" in shell.config:
        shell.run_line_magic("matplotlib", "inline")


def _frame(data, cols, y: str, which: str):
    """``data`` as a DataFrame (columns checked, ``y`` numeric): (rows with a value, rows without)."""
    df = pd.DataFrame(data).copy()
    missing = [c for c in cols if c is not None and c not in df.columns]
    if missing:
        raise KeyError(f"{which}: missing column(s) {missing}; has {list(df.columns)}")
    df[y] = pd.to_numeric(df[y], errors="coerce")
    return df[df[y].notna()], df[df[y].isna()]


def _theirs(theirs, seed, file, x: str, y: str, hue: str | None, xlabel: str = "") -> list:
    """[the theirs panel] (title, rows, x, y, hue, no CIs, x label naming the rows they give no value), or []."""
    if theirs is None:
        return []
    if seed is None or file is None:
        raise ValueError("theirs needs theirs_seed and theirs_file: quoted numbers name their source")
    df, gone = _frame(theirs, (x, y, hue), y, "theirs")
    rows = gone[[c for c in (hue, x) if c]].itertuples(index=False)
    names = ", ".join(dict.fromkeys(" ".join(map(str, r)) for r in rows))
    note = textwrap.fill("not reported: " + names, 50) if names else ""
    caution = textwrap.fill("caution: " + theirs.attrs["caution"], 50) if getattr(theirs, "attrs", {}).get("caution") else ""
    return [(f"Theirs (seed report {seed}, {file})", df, x, y, hue, False, "\n".join(filter(None, (xlabel, note, caution))))]


def _grid(n: int, *, ncols: int, w: float, h: float, sharey: bool = True):
    ncols = max(1, min(n, ncols))
    fig = Figure(figsize=(w * ncols + 1.8, h * math.ceil(n / ncols)), layout="constrained")
    axes = list(fig.subplots(math.ceil(n / ncols), ncols, sharey=sharey, squeeze=False).flat)
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def _ci(ax, xs, d, y: str, color, band: bool = False) -> None:
    """Asymmetric 95 % CI from ``y_low``/``y_high`` (error bars, or a band); nothing where NaN."""
    if f"{y}_low" not in d or f"{y}_high" not in d:
        return
    v, lo, hi = (pd.to_numeric(d[c], errors="coerce").to_numpy(float) for c in (y, f"{y}_low", f"{y}_high"))
    ok = np.isfinite(v + lo + hi)
    if band and ok.any():
        ax.fill_between(np.asarray(xs)[ok], lo[ok], hi[ok], color=color, alpha=0.2, lw=0, label="_ci")
    elif ok.any():
        ax.errorbar(np.asarray(xs)[ok], v[ok], yerr=np.clip([v[ok] - lo[ok], hi[ok] - v[ok]], 0, None),
                    fmt="none", ecolor=color, elinewidth=1, capsize=3, label="_ci")


REF_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))   # reference lines, told apart by dash as well as grey


def _refs(ax, refs, x: str | None = None, y: str | None = None) -> None:
    """{label: value or frame with x, y} as dashed lines named in the legend (labels beside the lines overlapped
    when baselines lie close); a value far outside the data is only written at the panel's edge."""
    lo, hi = ax.get_ylim()
    for i, (label, ref) in enumerate((refs or {}).items()):
        c = colour(label) if str(label).lower() in _BY_LOWER else "0.35"
        style = dict(ls=REF_STYLES[i % len(REF_STYLES)], lw=1.3, color=c)
        if not np.isscalar(ref):
            d = pd.DataFrame(ref).sort_values(x)
            ax.plot(d[x], d[y], label=str(label), **style)
        elif lo - (hi - lo) <= float(ref) <= hi + (hi - lo):
            ax.axhline(float(ref), label=f"{label} = {float(ref):.4g}", **style)
        else:
            up = float(ref) > hi
            ax.text(0.99, 0.98 if up else 0.02, f"{'↑' if up else '↓'} {label} = {float(ref):.4g} (off scale)",
                    transform=ax.transAxes, ha="right", va="top" if up else "bottom", fontsize=8, color=c)


def _finish(fig, axes, title, ylabel=None) -> Figure:
    """One legend for the figure, right of the panels (an entry per name); the title; the y label."""
    pairs = [(label, h) for ax in axes for h, label in zip(*ax.get_legend_handles_labels())]
    if pairs:  # an entry per name, the first handle drawn for it
        first = dict(pairs[::-1])
        fig.legend([first[k] for k in dict(pairs)], list(dict(pairs)), loc="outside right upper", fontsize=8,
                   frameon=False)
    if ylabel:
        axes[0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title)
    return fig


def bars(frame, *, x: str, y: str, hue: str | None = None, refs: Mapping[str, float] | None = None,
         title: str | None = None, ylabel: str | None = None, theirs=None, theirs_seed=None, theirs_file=None,
         theirs_x: str | None = None, theirs_y: str | None = None, theirs_hue: str | None = None) -> Figure:
    """Grouped bars of ``y`` by ``x`` (and ``hue``) with CI error bars, ``refs`` as labelled lines, and
    ``theirs`` (quoted, no error bars) in a panel of its own at the left."""
    ours, _ = _frame(frame, (x, y, hue), y, "bars")
    th = theirs_hue or (hue if hue in getattr(theirs, "columns", ()) else None)
    panels = _theirs(theirs, theirs_seed, theirs_file, theirs_x or x, theirs_y or y, th) + [
        (OURS_TITLE if theirs is not None else "", ours, x, y, hue, True, "")]
    n_bars = max(len(p[1]) for p in panels)
    fig, axes = _grid(len(panels), ncols=2, w=max(3.5, 0.35 * n_bars + 1.2), h=3.8)
    order = list(dict.fromkeys(ours[x].astype(str)))  # theirs follow our order where they share a name
    for ax, (ptitle, d, px, py, ph, ci, note) in zip(axes, panels):
        cats = sorted(dict.fromkeys(d[px].astype(str)), key=lambda c: order.index(c) if c in order else len(order))
        hues = list(dict.fromkeys(d[ph].astype(str))) if ph else [None]
        w = 0.8 / len(hues)
        for j, h in enumerate(hues):
            g = d if h is None else d[d[ph].astype(str) == h]
            xs = g[px].astype(str).map(cats.index).to_numpy(float) + (j - (len(hues) - 1) / 2) * w
            cols = [colour(h)] * len(g) if h else [colour(c) for c in g[px].astype(str)]
            ax.bar(xs, g[py].to_numpy(float), w * 0.95, color=cols, label=h or "_bars")
            if ci:
                _ci(ax, xs, g, py, "0.15")
        if len(cats) > 5:     # many names in one panel: slanted, so neighbours do not overprint
            ax.set_xticks(range(len(cats)), cats, fontsize=8, rotation=35, ha="right", rotation_mode="anchor")
        else:
            ax.set_xticks(range(len(cats)), [textwrap.fill(c, 14) for c in cats], fontsize=8)
        ax.set_title(textwrap.fill(ptitle, 40))   # two long panel titles side by side must not overlap
        ax.set_xlabel(note, fontsize=8, color="0.4")
    _refs(axes[-1], refs)
    return _finish(fig, axes, title, ylabel or y)


def lines(frame, *, x: str, y: str, hue: str, facet: str | None = None, refs: Mapping[str, Any] | None = None,
          logx: bool = False, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
          max_lines: int = 6, theirs=None, theirs_seed=None, theirs_file=None, theirs_x: str | None = None,
          theirs_y: str | None = None, theirs_hue: str | None = None, theirs_xlabel: str | None = None) -> Figure:
    """One line per ``hue`` value with CIs, split into panels by ``facet`` or beyond ``max_lines``; ``refs`` as
    dashed lines named in the legend; ``theirs`` in a panel of its own (x label: theirs_xlabel, else ours)."""
    df, _ = _frame(frame, (x, y, hue, facet), y, "lines")
    if facet is not None:
        groups = [(f"{facet} = {v}", df[df[facet] == v]) for v in dict.fromkeys(df[facet])]
    else:
        names = list(dict.fromkeys(df[hue].astype(str))) or [""]
        k = math.ceil(len(names) / max(1, max_lines))
        size = math.ceil(len(names) / k)
        groups = [(f"lines {i // size + 1} of {k}" if k > 1 else "",
                   df[df[hue].astype(str).isin(names[i:i + size])]) for i in range(0, len(names), size)]
    ours = OURS_TITLE if theirs is not None else ""
    panels = _theirs(theirs, theirs_seed, theirs_file, theirs_x or x, theirs_y or y, theirs_hue or hue,
                     theirs_xlabel or xlabel or theirs_x or x) + [
        (": ".join(filter(None, (ours, t))), d, x, y, hue, True, xlabel or x) for t, d in groups]
    fig, axes = _grid(len(panels), ncols=3, w=4.2, h=3.4)
    for ax, (ptitle, d, px, py, ph, ci, pxlabel) in zip(axes, panels):
        for h, g in d.groupby(d[ph].astype(str), sort=False):
            g = g.sort_values(px) if pd.api.types.is_numeric_dtype(g[px]) else g
            marker = "osD^vPX*"[zlib.crc32(b"m" + h.encode()) % 8]  # a second cue: hashed colours can collide
            ax.plot(g[px], g[py], marker=marker, ms=5, color=colour(h), label=h)
            if ci:  # many points: a band reads better than a comb of error bars
                _ci(ax, g[px].to_numpy(), g, py, colour(h), band=d[px].nunique() > 12)
        ax.set(title=textwrap.fill(ptitle, 45), xlabel=pxlabel)
        if logx:  # ticks at the measured x values, written plainly (not 2×10¹)
            ax.set_xscale("log")
            ax.set_xticks(np.unique(d[px]), [f"{v:g}" for v in np.unique(d[px])], minor=False)
            ax.minorticks_off()
    for ax in axes[1 if theirs is not None else 0:]:  # once all panels are drawn: their y axis is shared
        _refs(ax, refs, x, y)
    return _finish(fig, axes, title, ylabel or y)


def training_curves(history, *, facet: str = "label", max_panels: int = 12,
                    best_epochs: Mapping[str, int] | None = None, title: str | None = None) -> Figure:
    """Train and val loss per epoch, a panel per configuration, the best epoch marked. ``history``: long
    (label, epoch, split, loss[, best_epoch]) or wide (label, epoch, train_loss, val_loss)."""
    h, wide = pd.DataFrame(history), ["train_loss", "val_loss"]
    if "split" not in h and set(wide) <= set(h):
        h = h.melt(id_vars=h.columns.difference(wide).tolist(), value_vars=wide, var_name="split", value_name="loss")
        h["split"] = h["split"].str.removesuffix("_loss")
    h, _ = _frame(h, (facet, "epoch", "split", "loss"), "loss", "training_curves")
    h = h.assign(**{facet: h[facet].astype(str)})
    labels = list(dict.fromkeys(h[facet]))
    # the best epoch: given (best_epochs, else a best_epoch column), else that of the lowest validation loss
    given = dict(h.dropna(subset=["best_epoch"]).groupby(facet)["best_epoch"].first()) if "best_epoch" in h else {}
    given.update(best_epochs or {})
    fig, axes = _grid(max(1, min(len(labels), max_panels)), ncols=4, w=3.0, h=2.6, sharey=False)
    if not labels:
        axes[0].text(0.5, 0.5, "no epochs recorded", ha="center", transform=axes[0].transAxes)
    for i, (ax, label) in enumerate(zip(axes, labels)):
        g = h[h[facet] == label]
        for split, c in (("train", "#0173b2"), ("val", "#de8f05")):
            s = g[g["split"] == split].sort_values("epoch")
            ax.plot(s["epoch"], s["loss"], marker="o", ms=3, lw=1.3, color=c, label=split)
        val = g[g["split"] == "val"]
        best, what = given.get(label), "best epoch"
        if best is None and len(val):
            best, what = val.loc[val["loss"].idxmin(), "epoch"], "lowest val loss"
        if best is not None:
            ax.axvline(best, color="0.3", ls=":", lw=1.2, label=what)
            at = val.loc[val["epoch"] == best, "loss"]
            ax.plot([best] * len(at), at, marker="*", ms=11, color="#de8f05", mec="black", ls="none", label="_best")
        ax.set(title=textwrap.fill(label, 30), xlabel="epoch", ylabel="loss" if i % 4 == 0 else "")
        ax.title.set_fontsize(9)
    more = f" (first {max_panels} of {len(labels)} configurations)" if len(labels) > max_panels else ""
    return _finish(fig, axes, (title or "Training and validation loss per epoch") + more)


def step_curves(curves, *, facet: str = "model", hue: str = "start", refs: Mapping[str, float] | None = None,
                title: str | None = None) -> Figure:
    """VAL cosine against optimizer steps (curves: long frame with facet, hue, step, val_cosine), a panel per
    `facet`, a line per `hue`, the reference values as dashed lines; each run's best step starred."""
    c, _ = _frame(curves, (facet, hue, "step", "val_cosine"), "val_cosine", "step_curves")
    panels = list(dict.fromkeys(c[facet].astype(str)))
    fig, axes = _grid(max(1, len(panels)), ncols=3, w=3.4, h=2.7, sharey=True)
    styles = dict(zip(dict.fromkeys(c[hue].astype(str)), ("-", "--", ":", "-.")))
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        g = c[c[facet].astype(str) == panel]
        for name, line in g.groupby(g[hue].astype(str), sort=False):
            line = line.sort_values("step")
            ax.plot(line["step"], line["val_cosine"], ls=styles[name], lw=1.4, color=colour(panel), label=name)
            top = line.loc[line["val_cosine"].idxmax()]
            ax.plot([top["step"]], [top["val_cosine"]], marker="*", ms=9, color=colour(panel), mec="black",
                    ls="none", label="_best")
        _refs(ax, refs)
        ax.set(title=panel, xlabel="optimizer steps", ylabel="VAL cosine" if i % 3 == 0 else "")
    return _finish(fig, axes, title or "VAL cosine against optimizer steps (★ the best checkpoint)")


def offset_sweep(frame, *, hue: str = "label", facet: str | None = None, title: str | None = None) -> Figure:
    """c_k = mean cos(ŷ, v[t+k]) against the offset k, k = 0 marked and each line's peak starred (a forward
    predictor peaks at k = 0, a copy-last one at k = -1)."""
    fig = lines(frame, x="k", y="c_k", hue=hue, facet=facet, ylabel="c_k", xlabel="offset k  (★ = peak)",
                title=title or "Offset sweep: mean cos(ŷ, v[t+k])")
    for ax in fig.axes:
        ax.axvline(0, color="0.3", ls=":", lw=1, label="_true next")
        ax.text(0.05, 0.99, "true next", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="0.3")
        for line in [ln for ln in ax.lines if not ln.get_label().startswith("_")]:
            (xs, ys), i = map(np.asarray, line.get_data()), np.nanargmax(line.get_ydata())  # drawn lines have values
            ax.plot(xs[i], ys[i], "*", ms=13, color=line.get_color(), mec="black", mew=0.5, label="_peak")
        ax.set_xticks(range(-3, 4))
    return fig


def frontier(points, *, x: str, y: str, front=(), hue: str = "kind", title: str | None = None,
             xlabel: str | None = None, ylabel: str | None = None, theirs=None, theirs_seed=None, theirs_file=None,
             theirs_x: str | None = None, theirs_y: str | None = None, theirs_label: str = "model") -> Figure:
    """Each predictor a point (x, y) with its CIs both ways, one colour per ``hue`` value (in order: kinds are not
    palette names); the Pareto ``front`` (labels) joined by a line, numbered, and listed under the panel; ``theirs``
    (quoted, no CIs, each point named) in a panel of its own at the left."""
    ours, _ = _frame(points, ("label", x, hue), y, "frontier")
    on = ours.drop_duplicates("label").set_index("label")
    on = on.loc[[f for f in front if f in on.index]].sort_values(x)
    key = "\n".join(textwrap.shorten(f"{i}: {label}", 60) for i, label in enumerate(on.index, 1))
    panels = _theirs(theirs, theirs_seed, theirs_file, theirs_x or x, theirs_y or y, None) + [
        (OURS_TITLE if theirs is not None else "", ours, x, y, hue, True, "on the front:\n" + key if key else "")]
    fig, axes = _grid(len(panels), ncols=2, w=5.0, h=4.4)
    kinds = {k: _SAFE[i % len(_SAFE)] for i, k in enumerate(dict.fromkeys(ours[hue].astype(str)))}
    for ax, (ptitle, d, px, py, ph, ci, note) in zip(axes, panels):
        for name, g in d.groupby(ph, sort=False) if ph else [(None, d)]:
            c = kinds.get(str(name), "0.25")
            ax.scatter(g[px], g[py], s=24, color=c, zorder=3, label=str(name) if name is not None else "_theirs")
            err = {k: np.clip([g[v] - g[f"{v}_low"], g[f"{v}_high"] - g[v]], 0, None).astype(float)
                   for k, v in (("xerr", px), ("yerr", py)) if ci and f"{v}_low" in g}
            if err:
                ax.errorbar(g[px], g[py], **{k: np.nan_to_num(e) for k, e in err.items()}, fmt="none", ecolor=c,
                            elinewidth=0.8, alpha=0.6, label="_ci")
            if not ci:     # theirs: each point named (they are few)
                for r in g.itertuples():
                    ax.annotate(str(getattr(r, theirs_label)), (getattr(r, px), getattr(r, py)), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
        ax.set_title(textwrap.fill(ptitle, 40))
        ax.set_xlabel("\n".join(filter(None, (xlabel or px, note))), fontsize=8)
    if len(on):
        axes[-1].plot(on[x], on[y], "-", color="0.3", lw=1, zorder=2, label="Pareto front (point estimates)")
        for i, (_, r) in enumerate(on.iterrows(), 1):
            axes[-1].annotate(str(i), (r[x], r[y]), fontsize=7, fontweight="bold", xytext=(3, 3),
                              textcoords="offset points")
    return _finish(fig, axes, title, ylabel or y)
