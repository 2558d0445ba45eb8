"""The seed reports' own numbers ("theirs"), transcribed as printed into ``seeds.json`` beside this file (rules:
docs/architecture.md). A table is ``{"name", "source", "label", "caution", "rows"}`` (`caution`); a row may name its
own ``source`` (relative to the shared folder; `docs/...` sources quote peer numbers not in the shared folder)."""
from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

_DATA = json.loads(resources.files(__package__).joinpath("seeds.json").read_text(encoding="utf-8"))
S000, S001, S002, S003, S004, SPEC, PEERS = (_DATA["sources"][k]
                                             for k in ("S000", "S001", "S002", "S003", "S004", "SPEC", "PEERS"))
TABLES: dict[str, dict[str, Any]] = {t["name"]: t for t in _DATA["tables"]}


def rows(name: str) -> list[dict[str, Any]]:
    """A table's rows as fresh dicts, each with its ``source`` filled in."""
    if name not in TABLES:
        raise KeyError(f"no seed table {name!r}; known: {sorted(TABLES)}")
    return [{**copy.deepcopy(r), "source": r.get("source", TABLES[name]["source"])} for r in TABLES[name]["rows"]]


def caution(name: str) -> str:
    """The table's one-line caution: how its numbers were not measured the way ours are."""
    return TABLES[name]["caution"]


def frame(name: str, records: list[dict[str, Any]] | None = None):
    """A table (or `records` drawn from it) as a DataFrame (None -> NaN in numeric columns); attrs carry its source,
    label and caution."""
    import pandas as pd

    df = pd.DataFrame(rows(name) if records is None else records)
    df.attrs.update(source=TABLES[name]["source"], label=TABLES[name]["label"], name=name, caution=caution(name))
    return df


def scaling_long(name: str = "seed000_fair_232k_340k_367k"):
    """A ``val_cos_<N>k`` wide scaling table in long form (model, size_k, val_cos, source)."""
    out = [{"model": r["model"], "size_k": int(key[len("val_cos_"):-1]), "val_cos": value, "source": r["source"]}
           for r in rows(name) for key, value in r.items() if key.startswith("val_cos_") and key.endswith("k")]
    if not out:
        raise ValueError(f"seed table {name!r} has no val_cos_<N>k columns")
    return frame(name, out)
