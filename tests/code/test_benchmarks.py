"""The benchmark scripts still run (tiny sizes, nothing timed): speed targets live in the scripts."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(script, *args, tmp_path):
    out = tmp_path / f"{Path(script).stem}.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_bench_eval_runs(tmp_path):
    result = run("bench_eval.py", "--concepts", "2000", "--sequences", "200", "--dim", "16", "--queries", "20",
                 tmp_path=tmp_path)
    assert result["five_cat"]["total_seconds"] > 0


def test_bench_models_runs(tmp_path):
    result = run("bench_models.py", "--dim", "32", "--batch", "16", "--steps", "1", "--models", "amn,lstm",
                 "--ceiling-seconds", "0.2", tmp_path=tmp_path)
    assert {r["model"] for r in result["results"]} == {"amn", "lstm"}


def test_bench_memory_runs(tmp_path):
    result = run("bench_memory.py", "--tiny", tmp_path=tmp_path)
    stages = result["stages"]
    assert set(stages) == {"baseline", "load", "old", "new"} and result["vectors_bytes"] == 2000 * 16 * 4
    assert stages["new"]["steps"] > 0 and stages["old"]["contexts_bytes"] == 5 * stages["old"]["targets_bytes"]
    assert all(s["peak_rss"] > 0 for s in stages.values())


def test_bench_encode_runs(tmp_path, shared_corpus):
    result = run("bench_encode.py", "--tiny", "--corpus", str(shared_corpus), tmp_path=tmp_path)
    rows = {r["variant"]: r for r in result["results"]}
    assert set(rows) == {"fp32", "bf16", "int8"} and result["concepts"] == 48
    assert rows["fp32"]["speedup_vs_fp32"] == 1 and all(r["deterministic"] for r in rows.values())
    assert all(r["concepts_per_s"] > 0 and r["settings"]["variant"] == v for v, r in rows.items())


def test_bench_precision_runs(tmp_path):
    result = run("bench_precision.py", "--tiny", "--models", "AMN,LSTM", tmp_path=tmp_path)
    assert [r["model"] for r in result["results"]] == ["AMN", "LSTM"]
    assert all(r["fp32"]["samples_per_s"] > 0 and r["bf16"]["samples_per_s"] > 0 for r in result["results"])
    assert isinstance(result["native_bf16"], bool)
