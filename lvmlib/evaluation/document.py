"""One evaluation document (mean cosine + CI, baselines, LCM metrics, 5CAT) and its readable table."""
from __future__ import annotations

import numpy as np

from .. import files
from ..data.bank import CONTEXT, Bank, check_split, fingerprint
from .core import BATCH, Predict, compare_to_baselines, fit_baselines, row_cosine
from .fivecat import OFFSETS, _prepare, article_ranks, five_cat, margin_of, offset_cosines
from .lcm import _ca_split, lcm_metrics
from .uncertainty import PerRow

SCHEMA = "lvm-eval/2"   # 2: CIs over articles, PAR over every earlier concept


def bank_fingerprint(bank: Bank) -> str:
    """Content fingerprint of the bank as it is in memory (vectors, layout, splits)."""
    return fingerprint(bank.vectors, bank.article, bank.position, [a["split"] for a in bank.articles])


def per_row(pred: np.ndarray, bank: Bank, seqs, prefix: str = "val_") -> dict[str, PerRow]:
    """The metrics that are means over rows (or, the margin, a function of such means), per row of `seqs`, for
    intervals and paired comparisons (uncertainty.compare): {prefix + cos, margin, r1, r5, mrr, r1_excl, ca}."""
    art = seqs.article
    used, offsets = offset_cosines(pred, bank, seqs)
    out = {"cos": PerRow(row_cosine(pred, seqs.targets), art), "margin": PerRow(offsets, art[used], margin_of)}
    for suffix, exclude in (("", False), ("_excl", True)):
        kept, ranks = article_ranks(pred, bank, seqs, exclude_context=exclude)
        out.update({f"r1{suffix}": PerRow(ranks == 1, art[kept]), f"mrr{suffix}": PerRow(1.0 / ranks, art[kept])})
        out.update({"r5": PerRow(ranks <= 5, art[kept])} if not exclude else {})
    out["ca"] = PerRow(_ca_split(pred, seqs, bank, 1024)[0], art)
    return {(k if k == "ca" and prefix == "val_" else prefix + k): v for k, v in out.items()}


def evaluate(predict: Predict, bank: Bank, *, split: str = "val", five_cat_splits=("val", "ood"),
             max_rows: int | None = None, seed: int = 0, train_mean: np.ndarray | None = None,
             train_concepts: int | None = None, baselines: dict | None = None, n_boot: int = 1000,
             ca_pool: str = "split", foreign_every_slot: bool = False, batch_size: int = BATCH) -> dict:
    """Mean cosine + CI, baselines (fitted on TRAIN unless given), LCM metrics on `split`, and 5CAT on
    `five_cat_splits` (the same rows of a split everywhere), as one JSON-able document (docs/architecture.md)."""
    check_split(split)
    baselines = fit_baselines(bank, train_concepts, train_mean) if baselines is None else baselines
    prepared = _prepare(predict, bank, list(dict.fromkeys([split, *five_cat_splits])), max_rows, seed, batch_size)
    seqs, pred = prepared[split]
    base = compare_to_baselines(predict, bank, seqs, baselines=baselines, n_boot=n_boot, seed=seed, pred=pred)
    return files.to_jsonable({
        "schema": SCHEMA, "split": split, "rows": len(seqs), "max_rows": max_rows, "seed": seed,
        "bank": {"fingerprint": bank_fingerprint(bank), "path": str(bank.path) if bank.path else None,
                 "concepts": len(bank), "dim": bank.dim},
        "train_concepts": train_concepts, "mean_cosine": base["model"], "baselines": base,
        "lcm": lcm_metrics(pred, seqs, bank, ca_pool=ca_pool, seed=seed),
        "five_cat": five_cat(predict, bank, prepared={s: prepared[s] for s in five_cat_splits}, seed=seed,
                             foreign_every_slot=foreign_every_slot, batch_size=batch_size),
    }, where="evaluation")


def _mark(ok) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _num(x, fmt: str = ".4f") -> str:
    return "—" if x is None else format(x, fmt)


def _ci(d: dict) -> str:
    return f"{_num(d['mean'])}  [{_num(d['ci_low'])}, {_num(d['ci_high'])}]"


def format_table(result: dict) -> str:
    """A readable report of an evaluate() document, with PASS/FAIL marks on every 5CAT gate."""
    bank = result.get("bank", {})
    lines = [f"lvm eval  split={result.get('split')}  rows={result.get('rows')}  "
             f"bank={bank.get('fingerprint')} ({bank.get('concepts')} concepts, D={bank.get('dim')})"]
    if "checkpoint" in result:
        lines.append(f"checkpoint {result['checkpoint'].get('path')}")
    if "baselines" in result:
        b = result["baselines"]
        lines += ["", f"{'mean cosine [95% CI over articles]':<54}model − baseline [paired 95% CI, p]",
                  f"  {'model':<20}{_ci(b['model']):<32}"]
        lines += [f"  {name:<20}{_ci(b[name]):<32}{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], "
                  f"p {d['p']:.3f}"
                  for name, d in b["model_minus"].items()]
        fitted = b.get("fitted", {})
        if "residual_ridge" in fitted:
            f = fitted["residual_ridge"]
            lines.append(f"  (fitted on TRAIN: slot weights {' '.join(f'{w:+.3f}' for w in f['weights'])}; "
                         f"ridge λ {f['lam']:g})")
    if "lcm" in result:
        m = result["lcm"]
        lines += ["", f"LCM peer metrics: l2 {_num(m['l2'])}   CA {_num(m['ca'])} (pool {m['ca_pool']}, "
                      f"~{_num(m['ca_mean_candidates'], '.0f')} candidates)   PAR mean {_num(m['par_mean'])} "
                      f"median {_num(m['par_median'])} over every earlier concept "
                      f"({m['par_undefined_rows']} rows undefined); over the 5 context concepts: median "
                      f"{_num(m['par_ctx5_median'])}"]
    fc = result.get("five_cat", result if "splits" in result else None)
    if fc:
        lines += ["", *_five_cat_lines(fc)]
    return "\n".join(lines)


def _five_cat_lines(fc: dict) -> list[str]:
    def cell(res: dict, test: str, what) -> str:
        """`what` of res[test]: a gate by name (value, threshold, PASS/FAIL), or a function of res[test]."""
        if callable(what):
            return what(res[test] if test else res)
        g = res[test]["gates"][what]
        return f"{_num(g['value'])} {g['op']}{g['threshold']:g} {_mark(g['pass'])}"

    rows = [("A offset sweep   c0", "A", "c0"),
            ("                 margin", "A", "margin"),
            ("                 peak offset", "A", lambda a: f"{a['peak_offset']:+d}"),
            ("                 c-3 .. c+3", "A", lambda a: " ".join(_num(a["c"][str(k)], "+.2f") for k in OFFSETS)),
            ("B in-article     R@1", "B", "r1"),
            ("                 R@5", "B", "r5"),
            ("                 MRR", "B", "mrr"),
            ("                 chance R@1 / R@5", "B", lambda b: f"{b['chance']['r1']:.3f} / {b['chance']['r5']:.3f}"),
            ("C ablations Δcos shuffle", "C", "shuffle"),
            ("                 reverse", "C", "reverse"),
            ("                 leave-out last", "C", "leave_one_out_last"),
            ("                 leave-out 0..3", "C",
             lambda c: " ".join(f"{c['leave_one_out'][str(i)]['delta']:+.2f}" for i in range(CONTEXT - 1))),
            ("                 repeat-pad", "C", "repeat_pad"),
            ("                 foreign last", "C", "foreign_last"),
            ("D rollout        mean", "D", "mean"),
            ("                 per step h=0..4", "D", lambda d: " ".join(_num(v, "+.2f") for v in d["per_step"])),
            ("tests A B C D", None, lambda r: " ".join(_mark(r[t]["pass"]) for t in "ABCD"))]
    splits = list(fc["splits"])
    table = [[label] + [cell(fc["splits"][s], test, what) for s in splits] for label, test, what in rows]
    header = ["5CAT"] + [f"{s.upper()} ({fc['splits'][s]['rows']} rows)" for s in splits]
    widths = [max(len(r[i]) for r in table + [header]) + 2 for i in range(len(header))]
    fmt = lambda cells: "".join(f"{c:<{w}}" for c, w in zip(cells, widths)).rstrip()
    lines = [fmt(header), "-" * sum(widths)] + [fmt(r) for r in table]
    e = fc.get("E", {})
    if "bins" in e:
        lines.append(f"E coherence bins, a sanity check, not a gate (edges: {e['edge_rule']}; checked where both "
                     f"splits have >= {e['min_rows']} rows)")
        for b in e["bins"]:
            lines.append(f"    [{b['lo']:+.3f}, {b['hi']:+.3f})  VAL {_num(b['val_cos'])} ({b['val_rows']})  OOD "
                         f"{_num(b['ood_cos'])} ({b['ood_rows']})  Δ {_num(b['delta'], '+.4f')}  {_mark(b['pass'])}")
        g = e["gates"]["max_abs_delta"]
        lines.append(f"  E: max |Δ| {_num(g['value'])} <= {g['threshold']:g} over {e['gated_bins']} gated bins  "
                     f"{_mark(e['pass'])}")
    else:
        lines.append(f"E: {e.get('skipped', 'not run')}")
    sm = fc.get("summary", {})
    lines.append(f"5CAT gates passed: {sm.get('passed')}/{sm.get('total')} (A-D on each split)")
    return lines
