"""`lvm report` on a real notebook of this repository, end to end (needs data/bank-tiny)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "data" / "bank-tiny"


def _png_width(b64: str) -> int:
    import base64
    import struct
    return struct.unpack(">I", base64.b64decode(b64[:64])[16:20])[0]   # IHDR width


@pytest.mark.skipif(not (TINY / "manifest.json").exists(), reason="data/bank-tiny not built (make test builds it)")
def test_lvm_report_on_the_dataset_notebook(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"bank": "data/bank-tiny", "n_pairs": 2000, "show_concepts": 3}))
    outputs = tmp_path / "outputs"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}   # as `make` runs it
    proc = subprocess.run([sys.executable, "-m", "lvmlib.cli", "report", "notebooks/00_dataset.ipynb",
                           "--params", str(params), "--outputs", str(outputs)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = list((outputs / "00_dataset").iterdir())
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]+(-dirty)?-[0-9a-f]{8}(-\d+)?|\d{8}T\d{6}Z-nogit-[0-9a-f]{8}(-\d+)?",
                        run.name), run.name
    assert {"report.html", "notebook.ipynb", "params.yaml", "metrics.json", "run.json"} <= {p.name for p in run.iterdir()}
    metrics = json.loads((run / "metrics.json").read_text())
    card = json.loads((TINY / "manifest.json").read_text())["counts"]
    assert metrics["card"]["concepts"] == card["concepts"]              # measured from the bank, not typed in
    assert metrics["tldr"][0].startswith(f"The bank holds {card['concepts']:,} concepts")
    html = (run / "report.html").read_text()
    assert "from lvmlib import" not in html                           # no code cells in the report
    assert "Wikipedia" in html and "<Figure size" not in html     # figures render as images, not as their repr
    widths = [_png_width(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]
    assert max(widths, default=0) >= 400, widths                      # the dataset card's figure
    assert json.loads((run / "run.json").read_text())["status"] == "ok"
    index = (outputs / "index.html").read_text()
    assert run.name in index and "00_dataset" in index


@pytest.mark.skipif(not (TINY / "manifest.json").exists(), reason="data/bank-tiny not built (make test builds it)")
def test_papermill_cli_as_the_readme_runs_it(tmp_path):
    """`papermill notebooks/NN.ipynb out.ipynb -f params.yaml` from the repository root, as its users run it:
    the notebook runs in the lvm-lab kernel, whose provisioner talks over Unix sockets, so no TCP warning."""
    from lvmlib.report import ensure_kernel
    ensure_kernel()
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"bank": "data/bank-tiny", "n_pairs": 2000, "show_concepts": 3}))
    out = tmp_path / "00_dataset.ipynb"
    papermill = Path(sys.executable).with_name("papermill")
    proc = subprocess.run([str(papermill), "notebooks/00_dataset.ipynb", str(out), "-f", str(params)],
                          cwd=REPO, env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "without encryption" not in proc.stderr, proc.stderr[-3000:]
    executed = json.loads(out.read_text())
    assert executed["metadata"]["papermill"]["parameters"]["n_pairs"] == 2000
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "Traceback" not in text
