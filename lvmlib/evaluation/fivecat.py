"""5CAT: A offset sweep, B in-article rank, C ablations, D rollout on each split's windows, E coherence
bins across VAL and OOD, each with its gates (definitions: docs/architecture.md)."""
from __future__ import annotations

import math
import time

import numpy as np

from ..data.bank import CONTEXT, Bank, Sequences, neighbours
from .core import (BATCH, EvalError, Predict, _check_rows, _predictions, _rng, _split_of, predict_all, row_cosine,
                   split_rows)

# per gate set, the threshold each value must reach (">=") or stay under ("<=")
GATES = {
    "val": {"A": {"c0": (">=", 0.50), "margin": (">=", 0.12)},
            "B": {"r1": (">=", 0.60), "r5": (">=", 0.95), "mrr": (">=", 0.80)},
            "D": {"mean": (">=", 0.45)}},
    "ood": {"A": {"c0": (">=", 0.48), "margin": (">=", 0.10)},
            "B": {"r1": (">=", 0.55), "r5": (">=", 0.92), "mrr": (">=", 0.75)},
            "D": {"mean": (">=", 0.42)}},
}
# Ablation gates are the same on VAL and OOD: Δ = mean cos(ŷ_ablated, y) − mean cos(ŷ, y).
ABLATION_GATES = {"shuffle": ("<=", -0.15), "reverse": ("<=", -0.10), "leave_one_out_last": ("<=", -0.08),
                  "repeat_pad": ("<=", 0.05), "foreign_last": ("<=", 0.05)}
COHERENCE_MAX_DELTA = 0.05
OFFSETS = tuple(range(-3, 4))
HORIZON = 5


def _gated(result: dict, values: dict, spec: dict) -> dict:
    """Add result["gates"] ({value, op, threshold, pass} per spec entry, on values[name]) and result["pass"]."""
    result["gates"] = {}
    for name, (op, threshold) in spec.items():
        v = values[name]
        ok = v is not None and math.isfinite(v) and (v >= threshold if op == ">=" else v <= threshold)
        result["gates"][name] = {"value": None if v is None else float(v), "op": op, "threshold": threshold,
                                 "pass": bool(ok)}
    result["pass"] = all(g["pass"] for g in result["gates"].values())
    return result


def _gate_set(bank: Bank, seqs: Sequences, gate_set: str | None) -> str:
    # train rows are in-sample; they get the VAL thresholds, for reference only
    gate_set = gate_set or {"val": "val", "ood": "ood", "train": "val"}[_split_of(bank, seqs)]
    if gate_set not in GATES:
        raise EvalError(f"unknown gate set {gate_set!r}; expected one of {sorted(GATES)}")
    return gate_set


def offset_cosines(pred: np.ndarray, bank: Bank, seqs: Sequences, batch_size: int = BATCH):
    """(the rows holding v[t-3] and v[t+3] in their article, their (rows, len(OFFSETS)) cos(ŷ, v[t+k]))."""
    used, cos = [], []
    for start in range(0, len(seqs), batch_size):
        chunk = slice(start, start + batch_size)
        vecs, valid = neighbours(bank, seqs.index[chunk], OFFSETS)
        common = valid.all(axis=1)
        used.append(start + np.flatnonzero(common))
        cos.append(np.einsum("md,mkd->mk", pred[chunk][common], vecs[common]).astype(np.float64))
    return np.concatenate(used), np.concatenate(cos)


def margin_of(c: np.ndarray) -> np.ndarray:
    """5CAT A's margin c_0 − max_{k≠0} c_k from the offsets' mean cosines c (..., len(OFFSETS))."""
    zero = OFFSETS.index(0)
    return c[..., zero] - np.delete(c, zero, axis=-1).max(axis=-1)


def offset_sweep(predict: Predict, bank: Bank, seqs: Sequences, *, pred: np.ndarray | None = None,
                 gate_set: str | None = None, batch_size: int = BATCH) -> dict:
    """A: c_k = mean cos(ŷ, v[t+k]), k = -3..3, and margin = c_0 − max_{k≠0} c_k, all on the rows holding v[t+3]."""
    pred = _predictions(predict, bank, seqs, pred, batch_size)
    gate_set = _gate_set(bank, seqs, gate_set)
    used, cos = offset_cosines(pred, bank, seqs, batch_size)
    if len(used) == 0:
        raise EvalError("no rows with three concepts after the target in the same article (offset sweep)")
    means = cos.mean(axis=0)
    c = {k: float(means[i]) for i, k in enumerate(OFFSETS)}
    margin = float(margin_of(means))
    peak = max(OFFSETS, key=lambda k: c[k])
    return _gated({"c": {str(k): v for k, v in c.items()}, "rows": len(used), "rows_excluded": len(seqs) - len(used),
                   "c0": c[0], "margin": margin, "peak_offset": int(peak), "gate_set": gate_set},
                  {"c0": c[0], "margin": margin}, GATES[gate_set]["A"])


def article_ranks(pred: np.ndarray, bank: Bank, seqs: Sequences, min_article: int = 6,
                  exclude_context: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(the rows from articles with >= min_article concepts, grouped by article; the rank of each row's v[t] among
    its article's concepts: 1 + those scored strictly higher, its 5 context concepts left out if exclude_context)."""
    kept = np.flatnonzero(bank.article_length[seqs.article] >= min_article)
    kept = kept[np.argsort(seqs.article[kept], kind="stable")]  # group rows by article
    ranks = np.empty(len(kept), dtype=np.int64)
    bounds = np.flatnonzero(np.diff(seqs.article[kept])) + 1
    for group_pos in np.split(np.arange(len(kept)), bounds) if len(kept) else []:
        rows = kept[group_pos]
        a = seqs.article[rows[0]]
        start, n = bank.article_start[a], bank.article_length[a]
        scores = pred[rows] @ bank.vectors[start:start + n].T
        # the target's score is taken from the same matmul, so it ties with itself, never loses to rounding
        position = seqs.position[rows][:, None]
        higher = scores > scores[np.arange(len(rows)), position[:, 0]][:, None]
        if exclude_context:
            higher &= ~((np.arange(n)[None, :] < position) & (np.arange(n)[None, :] >= position - CONTEXT))
        ranks[group_pos] = 1 + higher.sum(axis=1)
    return kept, ranks


def in_article_rank(predict: Predict, bank: Bank, seqs: Sequences, *, pred: np.ndarray | None = None,
                    gate_set: str | None = None, min_article: int = 6, batch_size: int = BATCH,
                    exclude_context: bool = False) -> dict:
    """B: rank of v[t] among its article's concepts (article_ranks), with chance levels. exclude_context=True (a
    diagnosis, not 5CAT B) leaves the row's 5 context concepts out of the candidates."""
    pred = _predictions(predict, bank, seqs, pred, batch_size)
    gate_set = _gate_set(bank, seqs, gate_set)
    kept, ranks = article_ranks(pred, bank, seqs, min_article, exclude_context)
    if len(kept) == 0:
        raise EvalError(f"no rows from articles with >= {min_article} concepts")
    n_cand = bank.article_length[seqs.article[kept]].astype(np.float64) - (CONTEXT if exclude_context else 0)
    values = {"r1": float(np.mean(ranks == 1)), "r5": float(np.mean(ranks <= 5)), "mrr": float(np.mean(1.0 / ranks))}
    return _gated({**values, "rows": int(len(kept)), "articles": int(len(np.unique(seqs.article[kept]))),
                   "mean_candidates": float(n_cand.mean()), "median_rank": float(np.median(ranks)),
                   "chance": {"r1": float(np.mean(1 / n_cand)), "r5": float(np.mean(np.minimum(5, n_cand) / n_cand))},
                   "min_article": min_article, "gate_set": gate_set,
                   **({"exclude_context": True} if exclude_context else {})}, values, GATES[gate_set]["B"])


def shuffle_permutations(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 5) random slot orders, none of them the identity (a shuffle that changes nothing tests nothing)."""
    perms, same = np.empty((n, CONTEXT), dtype=np.intp), np.ones(n, dtype=bool)
    while same.any():
        perms[same] = np.argsort(rng.random((int(same.sum()), CONTEXT)), axis=1)
        same = (perms == np.arange(CONTEXT)).all(axis=1)
    return perms


def leave_one_out_slots(slot: int) -> np.ndarray:
    """Slot order without `slot`: the other four, the earliest repeated in front (4 -> [0, 0, 1, 2, 3])."""
    if not 0 <= slot < CONTEXT:
        raise EvalError(f"slot must be in 0..{CONTEXT - 1}, got {slot}")
    rest = [i for i in range(CONTEXT) if i != slot]
    return np.array([rest[0]] + rest)


def leave_one_out(contexts: np.ndarray, slot: int) -> np.ndarray:
    return np.asarray(contexts)[:, leave_one_out_slots(slot)]


def foreign_donors(bank: Bank, seqs: Sequences, rng: np.random.Generator) -> np.ndarray:
    """Per row, a random bank row from a DIFFERENT article of the same split (the replacement concept)."""
    split = _split_of(bank, seqs)
    pool = np.flatnonzero(np.isin(bank.article, bank.articles_in(split)))
    if len(np.unique(bank.article[pool])) < 2:
        raise EvalError(f"split {split!r} has a single article, so there is no foreign context to insert")
    donors, clash = np.empty(len(seqs), dtype=pool.dtype), np.ones(len(seqs), dtype=bool)
    while clash.any():  # redraw until every donor is from another article
        donors[clash] = pool[rng.integers(0, len(pool), int(clash.sum()))]
        clash = bank.article[donors] == seqs.article
    return donors


def ablations(predict: Predict, bank: Bank, seqs: Sequences, *, pred: np.ndarray | None = None, seed: int = 0,
              foreign_every_slot: bool = False, batch_size: int = BATCH) -> dict:
    """C: Δ = mean cos(ŷ_ablated, y) − mean cos(ŷ, y) and "agreement" mean cos(ŷ_ablated, ŷ) per ablation
    (ABLATION_GATES; the other slots' leave-one-out, and foreign context with foreign_every_slot, diagnose)."""
    pred = _predictions(predict, bank, seqs, pred, batch_size)
    y = seqs.targets
    base = row_cosine(pred, y).mean()
    perms = shuffle_permutations(len(seqs), _rng(seed, "shuffle"))
    variants = {"shuffle": lambda ctx, chunk: np.take_along_axis(ctx, perms[chunk][:, :, None], axis=1),
                "reverse": lambda ctx, chunk: ctx[:, ::-1],
                "repeat_pad": lambda ctx, chunk: np.repeat(ctx[:, -1:], CONTEXT, axis=1)}
    for slot in range(CONTEXT):
        variants[f"leave_one_out/{slot}"] = lambda ctx, chunk, s=slot: leave_one_out(ctx, s)
    donors = {slot: foreign_donors(bank, seqs, _rng(seed, f"foreign/{slot}"))
              for slot in (range(CONTEXT) if foreign_every_slot else [CONTEXT - 1])}
    for slot, d in donors.items():
        variants[f"foreign/{slot}"] = lambda ctx, chunk, s=slot, d=d: np.concatenate(
            [ctx[:, :s], bank.vectors[d[chunk]][:, None], ctx[:, s + 1:]], axis=1)
    result: dict = {"base_cos": float(base), "leave_one_out": {}, "foreign": {}}
    for name, transform in variants.items():
        ablated = predict_all(predict, seqs.contexts, batch_size, transform)
        cos = row_cosine(ablated, y).mean()
        entry = {"delta": float(cos - base), "cos": float(cos), "agreement": float(row_cosine(ablated, pred).mean())}
        kind, _, slot = name.partition("/")
        if kind == "foreign":
            # recorded so a reader (and a test) can see the replacement really came from elsewhere
            entry["same_article_rows"] = int(np.sum(bank.article[donors[int(slot)]] == seqs.article))
            entry["donor_articles"] = int(len(np.unique(bank.article[donors[int(slot)]])))
        (result[kind] if slot else result)[slot or kind] = entry   # "foreign/4" -> result["foreign"]["4"]
    values = {name: result[name]["delta"] for name in ("shuffle", "reverse", "repeat_pad")}
    for kind in ("leave_one_out", "foreign"):
        values[f"{kind}_last"] = result[kind][str(CONTEXT - 1)]["delta"]
    return _gated(result, values, ABLATION_GATES)


def rollout(predict: Predict, bank: Bank, seqs: Sequences, *, horizon: int = HORIZON, gate_set: str | None = None,
            batch_size: int = BATCH) -> dict:
    """D: feed each prediction back (ctx <- [ctx[1:], ŷ]); step h scores against the TRUE v[t+h] (h < horizon)."""
    _check_rows(bank, seqs)
    gate_set = _gate_set(bank, seqs, gate_set)
    if horizon < 1:
        raise EvalError(f"horizon must be >= 1, got {horizon}")
    rows = np.flatnonzero(seqs.position + horizon - 1 < bank.article_length[seqs.article])
    sums = np.zeros(horizon)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        truth = bank.vectors[seqs.index[chunk][:, None] + np.arange(horizon)]  # in the article: the row filter
        ctx = seqs.contexts[chunk]
        for h in range(horizon):
            y_hat = predict_all(predict, ctx, batch_size)
            sums[h] += np.einsum("md,md->", y_hat.astype(np.float64), truth[:, h])
            ctx = np.concatenate([ctx[:, 1:], y_hat[:, None]], axis=1)
    per_step = [float(s / len(rows)) if len(rows) else None for s in sums]
    mean = float(np.mean(per_step)) if len(rows) else None
    return _gated({"per_step": per_step, "mean": mean, "rows": int(len(rows)), "horizon": horizon,
                   "gate_set": gate_set}, {"mean": mean}, GATES[gate_set]["D"])


def context_coherence(contexts: np.ndarray) -> np.ndarray:
    """Mean cosine of the 4 adjacent context pairs, per row (contexts are unit bank vectors)."""
    c = np.asarray(contexts, dtype=np.float32)
    return np.einsum("mkd,mkd->mk", c[:, :-1], c[:, 1:]).mean(axis=1).astype(np.float64)


def coherence_bins(predict: Predict, bank: Bank, val: Sequences, ood: Sequences, *,
                   val_pred: np.ndarray | None = None, ood_pred: np.ndarray | None = None, n_bins: int = 5,
                   min_rows: int = 50, max_delta: float = COHERENCE_MAX_DELTA, batch_size: int = BATCH) -> dict:
    """E: mean cos(ŷ, y) per context-coherence bin (edges: VAL quantiles, outer edges ±1) on VAL and OOD;
    |OOD − VAL| <= max_delta in every bin where both splits have >= min_rows rows."""
    seqs, given = {"val": val, "ood": ood}, {"val": val_pred, "ood": ood_pred}
    pred = {s: _predictions(predict, bank, seqs[s], given[s], batch_size) for s in seqs}
    coh = {s: context_coherence(seqs[s].contexts) for s in seqs}
    cos = {s: row_cosine(pred[s], seqs[s].targets) for s in seqs}
    inner = np.unique(np.quantile(coh["val"], np.linspace(0, 1, n_bins + 1)[1:-1]))
    edges = [-1.0, *map(float, inner), 1.0]
    which = {s: np.digitize(coh[s], inner) for s in coh}
    bins = []
    for b in range(len(edges) - 1):
        entry = {"lo": edges[b], "hi": edges[b + 1]}
        for s in ("val", "ood"):
            in_bin = which[s] == b
            entry[f"{s}_rows"] = int(in_bin.sum())
            entry[f"{s}_cos"] = float(cos[s][in_bin].mean()) if in_bin.any() else None
        both = entry["val_cos"] is not None and entry["ood_cos"] is not None
        entry["delta"] = entry["ood_cos"] - entry["val_cos"] if both else None
        entry["gated"] = entry["val_rows"] >= min_rows and entry["ood_rows"] >= min_rows
        entry["pass"] = bool(abs(entry["delta"]) <= max_delta) if entry["gated"] else None
        bins.append(entry)
    gated_deltas = [abs(b["delta"]) for b in bins if b["gated"]]
    worst = max(gated_deltas) if gated_deltas else None  # no bin with enough rows: the gate fails
    return _gated({"bins": bins, "edges": edges, "edge_rule": f"VAL coherence quantiles ({n_bins} bins)",
                   "min_rows": min_rows, "gated_bins": len(gated_deltas)},
                  {"max_abs_delta": worst}, {"max_abs_delta": ("<=", max_delta)})


def _prepare(predict: Predict, bank: Bank, splits, max_rows: int | None, seed: int, batch_size: int = BATCH) -> dict:
    """{split: (rows, predictions)}: each split's (seeded subset of) windows, predicted once."""
    rows = {s: split_rows(bank, s, max_rows, seed) for s in splits}
    return {s: (r, predict_all(predict, r.contexts, batch_size)) for s, r in rows.items()}


def five_cat(predict: Predict, bank: Bank, *, splits=("val", "ood"), max_rows: int | None = None, seed: int = 0,
             foreign_every_slot: bool = False, batch_size: int = BATCH, prepared: dict | None = None) -> dict:
    """5CAT: A-D on each split's rows, E across VAL and OOD: {splits: {split: {rows, gate_set, A-D}}, E,
    summary, seconds}. `prepared` (from _prepare) replaces `splits`, `max_rows` and the predictions."""
    if prepared is None:
        prepared = _prepare(predict, bank, splits, max_rows, seed, batch_size)
    out: dict = {"splits": {}, "seconds": {}}
    summary: dict = {}
    for split, (seqs, pred) in prepared.items():
        gs, kw = _gate_set(bank, seqs, None), {"pred": pred, "batch_size": batch_size}
        tests = {"A": lambda: offset_sweep(predict, bank, seqs, gate_set=gs, **kw),
                 "B": lambda: in_article_rank(predict, bank, seqs, gate_set=gs, **kw),
                 "C": lambda: ablations(predict, bank, seqs, seed=seed, foreign_every_slot=foreign_every_slot, **kw),
                 "D": lambda: rollout(predict, bank, seqs, gate_set=gs, batch_size=batch_size)}
        res, secs = {"rows": len(seqs), "gate_set": gs}, {}
        for name, run in tests.items():
            t0 = time.perf_counter()
            res[name] = run()
            secs[name] = round(time.perf_counter() - t0, 4)
        out["splits"][split], out["seconds"][split] = res, secs
        summary[split] = {name: res[name]["pass"] for name in tests}
    if "val" in prepared and "ood" in prepared:
        t0 = time.perf_counter()
        (vs, vp), (os_, op) = prepared["val"], prepared["ood"]
        out["E"] = coherence_bins(predict, bank, vs, os_, val_pred=vp, ood_pred=op, batch_size=batch_size)
        out["seconds"]["E"] = round(time.perf_counter() - t0, 4)
        # E is a sanity check, not a gate: a constant predictor (the global mean) scores alike on
        # VAL and OOD and would pass it without predicting anything, so it is not counted
        summary["E_sanity"] = out["E"]["pass"]
    else:
        out["E"] = {"skipped": "E compares VAL with OOD; run both splits", "pass": None}
    flags = [v for s in prepared for v in summary[s].values()]
    summary["passed"], summary["total"] = int(sum(flags)), len(flags)
    out["summary"] = summary
    return out
