"""``<outputs>/index.html``: one table, one row per run (newest first within each notebook)."""
from __future__ import annotations

import datetime as _dt
import html
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping

from .. import files
from ..files import portable
from ..progress import duration_text

COLUMNS = ("notebook", "date (UTC)", "commit", "profile", "status", "duration", "scale", "finding", "trained runs", "files")
LOCK_WAIT_S = 30.0   # how long build_index waits for another process rebuilding the same index
NONE = "—"
STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
         ".ok{color:#1b7f3b;font-weight:bold}.failed{color:#b00020;font-weight:bold}"
         ".other{color:#8a6d00;font-weight:bold}.text{max-width:32em;font-size:90%}")


def scale_facts(banner: Any) -> dict[str, Any]:
    """metrics["banner"] (what the report's scale is) as a mapping; a string is the scale itself."""
    return {"scale": banner} if isinstance(banner, str) else dict(banner) if isinstance(banner, Mapping) else {}


def tldr_items(tldr: Any) -> list[str]:
    """metrics["tldr"]: the report's findings, most important first (one string is one finding)."""
    return [t for t in ([tldr] if isinstance(tldr, str) else tldr if isinstance(tldr, list) else [])
            if isinstance(t, str) and t]


def profile(params_file: str | None) -> str:
    """A run's profile: its params file's stem (``quick``), or ``defaults`` without one."""
    return Path(params_file).stem if params_file else "defaults"


# reports written before metrics.json had its own "convergence" entry: their TL;DR's convergence line
_CONVERGENCE_LINE = re.compile(r"(\d+ of \d+ trained runs converged|No trained runs)")


def finding_and_convergence(metrics: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(the report's answer: its first TL;DR line that is not the convergence count, that count)."""
    items, count = tldr_items(metrics.get("tldr")), metrics.get("convergence")
    if not isinstance(count, str):
        count = next((t for t in items if _CONVERGENCE_LINE.match(t)), None)
    return next((t for t in items if t != count and not _CONVERGENCE_LINE.match(t)), None), count


def _read_json(path: Path, missing: tuple) -> tuple[dict | None, str | None]:
    """(a JSON object, None), `missing` if there is no file, or (None, why not) naming the file, not its path."""
    if not path.exists():
        return missing
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, f"unreadable {path.name}: {exc.strerror or type(exc).__name__}"
    except ValueError as exc:
        return None, f"unreadable {path.name}: {exc}"
    return (value, None) if isinstance(value, dict) else (None, f"unreadable {path.name}: not a JSON object")


def _date(run_id: str) -> str:
    """The run's start from its folder name (20261123T013328Z-...), so runs without run.json have one."""
    try:
        return f"{_dt.datetime.strptime(run_id[:16], '%Y%m%dT%H%M%SZ'):%Y-%m-%d %H:%M}"
    except ValueError:
        return NONE


def _run_summary(run_dir: Path) -> dict[str, Any]:
    """run.json's fields plus the index's cells as text; unreadable files are named, not hidden."""
    info, problem = _read_json(run_dir / "run.json", (None, "incomplete"))
    metrics, unreadable = _read_json(run_dir / "metrics.json", ({}, None))
    info, metrics = info or {}, metrics or {}
    git, seconds, facts = info.get("git"), info.get("duration_s"), scale_facts(metrics.get("banner"))
    finding, count = finding_and_convergence(metrics)
    # a run's scale: the banner's own "scale" entry, else all its entries on one line
    scale = facts["scale"] if isinstance(facts.get("scale"), str) else " · ".join(
        f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in facts.items()
        if isinstance(v, (str, int, float)) and not isinstance(v, bool))
    return {**info, "dir": run_dir, "run_id": run_dir.name, "status": str(info.get("status") or problem),
            "date": _date(run_dir.name), "commit": (git.get("label") if isinstance(git, dict) else None) or NONE,
            "profile": profile(info.get("params_file")) if info else NONE,
            "duration": duration_text(seconds) if isinstance(seconds, (int, float)) else NONE,
            "scale": portable(scale or NONE), "error": portable(str(info.get("error") or "")),
            "finding": portable(unreadable or finding or NONE), "trained runs": portable(count or NONE)}


def _folders(parent: Path) -> list[Path]:
    """Sub-folders but dot-folders, by name (run folders start with their UTC start: by time, even without run.json)."""
    return sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")) if parent.is_dir() else []


def collect_runs(outputs_root: str | os.PathLike = "outputs") -> dict[str, list[dict[str, Any]]]:
    """{notebook stem: [summaries of ``<root>/<stem>/<run>/``, newest first]}; no run.json: "incomplete"."""
    groups = {nb.name: [_run_summary(p) for p in reversed(_folders(nb))] for nb in _folders(Path(outputs_root))}
    return {stem: runs for stem, runs in groups.items() if runs}


def newest_metrics(stem: str, outputs_root: str | os.PathLike = "outputs") -> tuple[Path, dict] | None:
    """(folder, metrics.json) of notebook `stem`'s newest finished report, or None (a notebook reads another's)."""
    for run in collect_runs(outputs_root).get(stem, []):
        metrics, _ = _read_json(run["dir"] / "metrics.json", (None, None))
        if run["status"] == "ok" and metrics:
            return run["dir"], metrics
    return None


def _row(stem: str, r: dict[str, Any]) -> str:
    e = html.escape
    links = " ".join(f'<a href="{e(stem)}/{e(r["run_id"])}/{f}">{f.split(".")[0]}</a>'
                     for f in ("report.html", "params.yaml") if (r["dir"] / f).exists())
    css = r["status"] if r["status"] in ("ok", "failed") else "other"
    return (f'<tr title="{e(r["run_id"])}"><td>{e(stem)}</td><td>{r["date"]}</td><td><code>{e(r["commit"])}</code>'
            f'</td><td>{e(r["profile"])}</td><td class="{css}" title="{e(r["error"])}">{e(r["status"])}</td>'
            f'<td>{e(r["duration"])}</td><td class="text">{e(r["scale"])}</td><td class="text">{e(r["finding"])}</td>'
            f'<td class="text">{e(r["trained runs"])}</td><td>{links or NONE}</td></tr>')


def index_page(groups: dict[str, list[dict[str, Any]]]) -> str:
    """The index page for :func:`collect_runs`' result."""
    rows = "".join(_row(stem, r) for stem, runs in groups.items() for r in runs)
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>" if rows else "<p>No runs yet.</p>"
    return ('<!DOCTYPE html><html><head><meta charset="utf-8"><title>lvm-lab reports</title>'
            f"<style>{STYLE}</style></head><body><h1>lvm-lab reports</h1>"
            "<p>One row per run, newest first within each notebook. Profile: the params file; scale: the run's "
            "<code>banner</code>; finding: its first TL;DR line that answers the notebook's question; trained runs: "
            f"how many of its trained runs converged (metrics.json).</p>{body}"
            "</body></html>\n")


def build_index(outputs_root: str | os.PathLike = "outputs", *, wait_s: float = LOCK_WAIT_S) -> Path:
    """Write ``<outputs_root>/index.html`` atomically under the outputs folder's lock (so two runs finishing
    together both appear), waiting up to ``wait_s`` for another holder (then files.FolderInUse)."""
    root = Path(outputs_root)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with files.folder_lock(root, "lvm report: rebuilding index.html"):
                return files.write_text(root / "index.html", index_page(collect_runs(root)))
        except files.FolderInUse:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
