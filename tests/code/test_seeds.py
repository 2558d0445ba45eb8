"""lvmlib.seeds: every transcribed number must be found in its source file; plots helpers."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from lvmlib import seeds

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
# Columns whose text is our own vocabulary, not quoted from the report.
OUR_VOCABULARY = {"name", "source", "metric"}


def _number_pattern(v: int | float) -> re.Pattern:
    """A number as printed: not part of a longer number, optional trailing zeros for floats.

    0.55 matches "0.550" but not "0.5502"; 232605 matches "232605" or "232,605"; a positive
    value must not be the tail of a negative one.
    """
    before = r"(?<![\d.,\-−])"
    if isinstance(v, int):
        alts = {str(v), f"{v:,}"}
        return re.compile(before + "(?:" + "|".join(re.escape(a) for a in alts) + r")(?!\d|[.,]\d)")
    text = repr(float(v))
    assert "e" not in text, f"unexpected exponent notation for {v}"
    return re.compile(before + re.escape(text) + r"0*(?!\d)")


def test_number_pattern_is_strict():
    # the check below is only as good as this matcher
    assert _number_pattern(0.55).search("| 0.550 |")
    assert not _number_pattern(0.55).search("0.5502")
    assert not _number_pattern(0.041).search("-0.041")
    assert _number_pattern(-0.041).search("| -0.041 |")
    assert _number_pattern(232605).search("232,605 concepts")
    assert not _number_pattern(232).search("0.232")
    assert not _number_pattern(4).search("4.5")


def test_tables_are_well_formed():
    assert len(seeds.TABLES) >= 15
    for name, t in seeds.TABLES.items():
        assert t["name"] == name
        assert t["source"] and t["label"] and t["rows"], name
        for r in seeds.rows(name):
            assert r["source"] in (seeds.S000, seeds.S001, seeds.S002, seeds.S003, seeds.S004, seeds.SPEC, seeds.PEERS)


@pytest.mark.parametrize("name", sorted(seeds.TABLES))
def test_transcribed_values_appear_in_source(name):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    texts: dict[str, str] = {}
    problems = []
    for i, row in enumerate(seeds.rows(name)):
        path = (REPO if row["source"].startswith("docs/") else SHARED) / row["source"]
        assert path.is_file(), f"{name}: source file {path} missing"
        text = texts.setdefault(row["source"], path.read_text(encoding="utf-8", errors="replace"))
        for key, v in row.items():
            if v is None or isinstance(v, bool) or key in OUR_VOCABULARY:
                continue
            if isinstance(v, (int, float)):
                if not _number_pattern(v).search(text):
                    problems.append(f"row {i} {key}={v!r}")
            elif isinstance(v, str) and v not in text:
                problems.append(f"row {i} {key}={v!r}")
    assert not problems, f"{name}: not found in its source: {problems}"


def test_key_numbers_from_the_brief():
    mse = {r["model"]: r for r in seeds.rows("seed003_mse")}
    assert mse["Transformer"]["val_cos"] == 0.5817 and mse["Transformer"]["params_m"] == 17.9
    base = {r["model"]: r for r in seeds.rows("baselines")}
    assert base["Linear Average"]["val_cos"] == 0.5462 and base["Linear Average"]["source"] == seeds.S003
    assert base["copy-last"]["val_cos"] == 0.4383 and base["copy-last"]["source"] == seeds.SPEC
    assert {r["loss"]: r["val_cos"] for r in seeds.rows("seed003_losses")}["InfoNCE"] == 0.3539
    lstm = [r["val_cos"] for r in seeds.rows("seed000_lstm_collapse")]
    assert lstm == [0.3921, 0.3140, 0.1102]
    p3 = next(r for r in seeds.rows("seed004_models") if r["model"] == "P3 Tiny Guards")
    assert p3["r1_pct"] is None and p3["gates_passed"] is None  # "?" stays unknown
    assert {r["model"] for r in seeds.rows("seed004_5cat")} == {"P1 Baseline", "P4 Rollout", "P5 Stage A"}


def test_frames_carry_source():
    df = seeds.frame("seed004_models")
    assert df.attrs["source"] == seeds.S004 and "label" in df.attrs
    assert (df["source"] == seeds.S004).all()
    assert math.isnan(df.loc[df.model == "P2 Residual", "r1_pct"].iloc[0])
    long = seeds.scaling_long("seed000_fair_232k_340k_367k")
    assert len(long) == 12 and sorted(long.size_k.unique()) == [232, 340, 367]
    assert long.query("model == 'LSTM' and size_k == 367").val_cos.iloc[0] == 0.1102
    assert sorted(seeds.scaling_long("seed002_scaling").size_k.unique()) == [80, 232]
    with pytest.raises(KeyError, match="no seed table"):
        seeds.frame("nope")
    with pytest.raises(ValueError, match="no val_cos"):
        seeds.scaling_long("seed003_mse")


def test_every_table_of_theirs_carries_a_caution_that_travels_with_it():
    for name, table in seeds.TABLES.items():
        assert isinstance(table.get("caution"), str) and 20 < len(table["caution"]) < 300, name
        assert seeds.frame(name).attrs["caution"] == table["caution"]
    assert "not comparable" in seeds.caution("peer_lcm_wikipedia_en")    # Meta's CA beside ours (issue 24)
