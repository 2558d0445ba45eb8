"""The committed reports, read as a reader would: every figure an embedded image that decodes,
no table truncated, no warning or traceback on the page, no machine paths, a scale banner and a
TL;DR at the top, and the parameters collapsed at the end."""
import base64
import re
import struct
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def latest_reports():
    out = []
    for nb_dir in sorted((REPO / "outputs").iterdir()) if (REPO / "outputs").is_dir() else []:
        runs = sorted(p for p in nb_dir.iterdir() if (p / "report.html").is_file()) if nb_dir.is_dir() else []
        if runs:
            out.append(runs[-1] / "report.html")
    return out


@pytest.mark.parametrize("page", latest_reports(), ids=lambda p: p.parent.parent.name)
def test_report_reads_cleanly(page):
    html = page.read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"', html)
    for data in images:
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n", "an embedded figure is not a PNG"
        width, height = struct.unpack(">II", raw[16:24])
        assert width > 100 and height > 100, (width, height)
    assert "<Figure size" not in html                         # a figure shown as its repr, not drawn
    text = re.sub(r"<style.*?</style>|<script.*?</script>", "", html, flags=re.S)
    for word in ("Traceback", "Warning", "warnings.warn"):
        assert word not in text, f"{page}: '{word}' on the page"
    assert not re.search(r"<td>\s*\.\.\.\s*</td>|<th>\s*\.\.\.\s*</th>", text), f"{page}: a truncated table"
    assert not re.search(r"(?<![\w.:/])/(?:work|home|root|tmp)/", text), f"{page}: an absolute machine path"
    assert "TL;DR" in text and "<b>profile</b>" in text and "<b>wall time</b>" in text
    assert text.index("TL;DR") < text.index("<summary><b>Parameters</b>")


def test_every_notebook_has_a_committed_report():
    names = {p.parent.parent.name for p in latest_reports()}
    assert names == {p.stem for p in (REPO / "notebooks").glob("*.ipynb")}
