"""Shared seaborn figures: one theme, and "theirs vs ours" panels.

"Theirs" are numbers quoted from a seed report (``lvmlib.seeds``); "ours" are measured in the
run that draws the figure. They always go in separate, labelled panels, never in one series.

Figures are built with ``matplotlib.figure.Figure`` (not pyplot), so a notebook shows a figure
once when it is the cell's value (no duplicate from the inline backend) and nothing leaks
into pyplot's global state. Every function returns the Figure.
"""
from __future__ import annotations

import textwrap
from typing import Any, Mapping, Sequence

import matplotlib
from matplotlib.figure import Figure

OURS_TITLE = "Ours (measured in this run)"
# Fixed colour slots (of seaborn's 10-colour "colorblind" palette) for the project's models,
# so a model has the same colour in every figure whatever else is drawn; baselines are grey.
MODEL_COLOUR_SLOT = {"AMN": 0, "LSTM": 1, "GRU": 2, "Transformer": 3, "GraphMERT-LVM": 4}
BASELINE_GREYS = {"Linear Average": "0.55", "linear average": "0.55", "copy-last": "0.35"}


def theirs_title(seed: str) -> str:
    return f"Theirs (seed report {seed}, quoted)"


def set_theme() -> None:
    """The project's look: whitegrid, colour-blind palette, readable sizes.

    In a Jupyter kernel it also switches on the inline backend: with MPLBACKEND=Agg in the
    environment (as `make` sets it for scripts) a Figure returned by a cell would otherwise show
    only as the text "<Figure size ...>" and the report would have no images."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "axes.titlesize": 11,
                                "figure.titlesize": 12})
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and "IPKernelApp" in shell.config:
        shell.run_line_magic("matplotlib", "inline")


def model_palette(names: Sequence[str]) -> dict[str, Any]:
    """A colour per name: fixed for known models and baselines; others take the free slots."""
    import seaborn as sns

    base = sns.color_palette("colorblind", n_colors=10)
    free = [c for i, c in enumerate(base) if i not in MODEL_COLOUR_SLOT.values()]
    others = sorted(n for n in dict.fromkeys(map(str, names))
                    if n not in MODEL_COLOUR_SLOT and n not in BASELINE_GREYS)
    if len(others) > len(free):
        free = sns.color_palette("husl", n_colors=len(others))
    out: dict[str, Any] = {}
    for n in dict.fromkeys(map(str, names)):
        if n in MODEL_COLOUR_SLOT:
            out[n] = base[MODEL_COLOUR_SLOT[n]]
        elif n in BASELINE_GREYS:
            out[n] = BASELINE_GREYS[n]
        else:
            out[n] = free[others.index(n)]
    return out


def _frame(data, x: str, y: str, hue: str | None, which: str):
    """Accept a DataFrame, a list of row dicts, or {x_value: y_value}; check the columns."""
    import pandas as pd

    if data is None:
        return None
    if isinstance(data, Mapping):
        df = pd.DataFrame({x: list(data.keys()), y: list(data.values())})
    else:
        df = pd.DataFrame(data)
    missing = [c for c in (x, y, hue) if c is not None and c not in df.columns]
    if missing:
        raise KeyError(f"{which}: missing column(s) {missing}; has {list(df.columns)}")
    df = df.copy()
    df[y] = pd.to_numeric(df[y], errors="coerce")
    return df


def _empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    # tick_params, not set_*ticks: with sharey the latter would wipe the other panel's ticks
    ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
    ax.grid(False)


def _ref_lines(ax, refs: Mapping[str, float] | None) -> None:
    for i, (label, value) in enumerate((refs or {}).items()):
        style = ("--", ":", "-.")[i % 3]
        ax.axhline(value, color="0.3", ls=style, lw=1, label=f"{label} ({value:.4g})")


def _two_panels(seed: str, title: str | None, sharey: bool, width: float = 11, height: float = 4):
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, 2, sharey=sharey)
    axes[1].tick_params(labelleft=True)   # keep our panel's scale readable even when shared (or theirs is empty)
    axes[0].set_title(theirs_title(seed))
    axes[1].set_title(OURS_TITLE)
    if title:
        fig.suptitle(title)
    return fig, axes


def theirs_vs_ours_bar(theirs, ours, *, y: str, seed: str, x: str = "model", hue: str | None = None,
                       ylabel: str | None = None, title: str | None = None,
                       refs_theirs: Mapping[str, float] | None = None,
                       refs_ours: Mapping[str, float] | None = None,
                       sharey: bool = True, fmt: str = "{:.3f}") -> Figure:
    """Bars of metric ``y`` per ``x`` (model): their quoted values left, ours right.

    ``theirs``/``ours``: DataFrame, row dicts, or ``{model: value}``; either may be None (the
    panel then says so). Rows whose value is missing ("?" in a report) are left out and named
    under the panel. ``refs_*``: horizontal reference lines, e.g. ``{"Linear Average": 0.5462}``.
    """
    import seaborn as sns

    if theirs is None and ours is None:
        raise ValueError("theirs_vs_ours_bar: both theirs and ours are None")
    dt, do = _frame(theirs, x, y, hue, "theirs"), _frame(ours, x, y, hue, "ours")
    key = hue or x
    names = [n for d in (dt, do) if d is not None for n in d[key].astype(str)]
    palette = model_palette(names)
    fig, axes = _two_panels(seed, title, sharey)
    for ax, df, refs, what in ((axes[0], dt, refs_theirs, "not reported"),
                               (axes[1], do, refs_ours, "not measured yet")):
        if df is None:
            _empty_panel(ax, what)
            continue
        gone = df[df[y].isna()]
        df = df[df[y].notna()]
        if df.empty:
            _empty_panel(ax, what)
        else:
            sns.barplot(data=df.assign(**{key: df[key].astype(str)}), x=x, y=y, hue=key,
                        palette=palette, ax=ax, legend=hue is not None, errorbar=None)
            for cont in ax.containers:
                ax.bar_label(cont, fmt=fmt, fontsize=8, padding=2)
            ax.tick_params(axis="x", labelrotation=20)
        _ref_lines(ax, refs)
        if refs or (hue is not None and not df.empty):
            ax.legend(fontsize=8, loc="best")
        ax.set_ylabel(ylabel or y)
        # rows without a value are named under the panel, so a gap is never silent
        ax.set_xlabel("" if gone.empty else textwrap.fill(
            "not reported: " + ", ".join(gone[x].astype(str)), 60), fontsize=8, color="0.4")
    return fig


def theirs_vs_ours_lines(theirs, ours, *, x: str, y: str, seed: str, hue: str = "model",
                         xlabel: str | None = None, ylabel: str | None = None,
                         title: str | None = None, sharey: bool = True,
                         refs_theirs: Mapping[str, float] | None = None,
                         refs_ours: Mapping[str, float] | None = None,
                         vline: float | None = None) -> Figure:
    """Lines of ``y`` vs ``x`` per ``hue`` (model), theirs left and ours right.

    E.g. cosine vs training-set size (``lvmlib.seeds.scaling_long``), or an offset sweep.
    ``vline`` draws a vertical marker (k = 0 in an offset sweep).
    """
    import seaborn as sns

    if theirs is None and ours is None:
        raise ValueError("theirs_vs_ours_lines: both theirs and ours are None")
    dt, do = _frame(theirs, x, y, hue, "theirs"), _frame(ours, x, y, hue, "ours")
    names = [n for d in (dt, do) if d is not None for n in d[hue].astype(str)]
    palette = model_palette(names)
    fig, axes = _two_panels(seed, title, sharey)
    for ax, df, refs, what in ((axes[0], dt, refs_theirs, "not reported"),
                               (axes[1], do, refs_ours, "not measured yet")):
        if df is None or df[y].notna().sum() == 0:
            _empty_panel(ax, what)
            continue
        df = df[df[y].notna()]
        sns.lineplot(data=df.assign(**{hue: df[hue].astype(str)}), x=x, y=y, hue=hue, palette=palette,
                     marker="o", ax=ax, errorbar=None)
        if vline is not None:
            ax.axvline(vline, color="0.5", lw=1, ls=":")
        _ref_lines(ax, refs)
        ax.legend(fontsize=8)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(ylabel or y)
    return fig


def offset_sweep(theirs, ours, *, seed: str, k: str = "k", c: str = "c_k", hue: str = "model",
                 title: str | None = "Offset sweep: mean cos(ŷ, v[t+k])") -> Figure:
    """5CAT-A offset sweep, ``c_k`` vs ``k`` per model, with k = 0 (the true target) marked.

    A forward-predicting model peaks at k = 0; a copy-last model peaks at k = -1.
    """
    return theirs_vs_ours_lines(theirs, ours, x=k, y=c, seed=seed, hue=hue, xlabel="offset k",
                                ylabel="c_k", title=title, vline=0)


def training_curves(history, *, y: str = "val_cosine", hue: str = "label",
                    title: str = "Validation cosine per epoch (ours, measured in this run)") -> Figure:
    """One line per run of ``y`` against the epoch (``lvmlib.experiments.history_frame``)."""
    import seaborn as sns

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.subplots()
    if history is None or len(history) == 0:
        _empty_panel(ax, "no epochs recorded")
        return fig
    sns.lineplot(data=history, x="epoch", y=y, hue=hue, marker="o", ax=ax)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3, loc="best")
    return fig
