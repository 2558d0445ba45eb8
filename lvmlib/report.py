"""Run a notebook as a report: ``lvm report NOTEBOOK --params FILE``.

One run = one folder ``<outputs>/<notebook stem>/<UTC>-<git>-<params hash>/`` holding

- ``report.html``   the executed notebook rendered without code (a failed run too),
- ``notebook.ipynb``  the executed notebook (git-ignored),
- ``params.yaml``   the resolved parameters (notebook defaults + overrides; can be fed
                      back with ``--params`` to repeat the run),
- ``metrics.json``  what the notebook passed to :func:`save_metrics` (``{}`` if nothing),
- ``run.json``      status, error, times, git, versions, machine; written last, so a folder
                      without it is a run that never finished.

``<outputs>/index.html`` lists every run (see :func:`build_index`).

The notebook side of the protocol is :func:`save_metrics`: the runner sets
``LVM_REPORT_DIR`` in the kernel's environment and ``save_metrics`` writes there. This module
imports papermill/nbconvert lazily so that ``from lvmlib.report import save_metrics`` inside a
kernel costs nothing.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as _dt
import hashlib
import html
import json
import os
import platform
import subprocess
import sys
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from . import files

REPORT_DIR_ENV = "LVM_REPORT_DIR"
DEFAULT_KERNEL = "lvm-lab"
# torch in a Jupyter kernel on 2 vCPUs spin-waits without this (TOOLING.md: 4-60x slower).
KERNEL_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
RUN_FILES = ("report.html", "notebook.ipynb", "params.yaml", "metrics.json", "run.json")


class ReportError(RuntimeError):
    """Bad input to the report runner (notebook, params file, outputs folder)."""


class ReportFailed(RuntimeError):
    """The notebook ran and failed; everything was still written to ``run_dir``."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


# --------------------------------------------------------------------------- atomic files
# --------------------------------------------------------------------------- metrics
def to_jsonable(obj: Any, _where: str = "metrics") -> Any:
    """Plain JSON values; non-finite floats become "nan"/"inf"/"-inf" (a collapsed metric stays
    visible in metrics.json rather than turning into null). See files.to_jsonable."""
    return files.to_jsonable(obj, nonfinite="string", where=_where)


def save_metrics(metrics: Mapping[str, Any]) -> Mapping[str, Any]:
    """Record a notebook's metrics for the report runner; returns ``metrics`` unchanged.

    Under ``lvm report`` (env ``LVM_REPORT_DIR`` set) the metrics are merged into
    ``$LVM_REPORT_DIR/metrics.json`` (top-level keys of later calls win), written atomically.
    Interactively (variable unset) nothing is written.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"save_metrics expects a mapping, got {type(metrics).__name__}")
    clean = to_jsonable(metrics)  # validate even interactively, so errors show up early
    report_dir = os.environ.get(REPORT_DIR_ENV)
    if report_dir:
        path = Path(report_dir) / "metrics.json"
        merged = {}
        if path.exists():
            try:
                merged = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ReportError(f"{path}: cannot read existing metrics ({exc})") from exc
        merged.update(clean)
        files.write_json(path, merged, sort_keys=True)
    return metrics


def save_artifact(name: str, text: str) -> Path | None:
    """Save a small text file (e.g. the params of the best run) beside the report.

    Under ``lvm report`` it is written atomically to ``$LVM_REPORT_DIR/<name>`` and its path is
    returned; interactively (variable unset) nothing is written and None is returned."""
    if not name or Path(name).name != name or name in RUN_FILES:
        raise ReportError(f"artifact name {name!r} must be a plain file name other than {sorted(RUN_FILES)}")
    report_dir = os.environ.get(REPORT_DIR_ENV)
    if not report_dir:
        return None
    path = Path(report_dir) / name
    files.write_text(path, text)
    return path


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The entries under ``metrics["headline"]`` if it is a mapping, else the scalar top-level ones."""
    head = metrics.get("headline")
    src = head if isinstance(head, Mapping) else metrics
    return {k: v for k, v in src.items() if v is None or isinstance(v, (bool, int, float, str))}


# --------------------------------------------------------------------------- parameters
def load_params(params_file: str | os.PathLike | None) -> dict[str, Any]:
    """Read a YAML mapping of notebook parameter names -> values (empty file -> {})."""
    if params_file is None:
        return {}
    path = Path(params_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"params file {path}: cannot read ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ReportError(f"params file {path}: invalid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ReportError(f"params file {path}: expected a mapping of parameter names to values, "
                          f"got {type(data).__name__}")
    _check_param_values(data, str(path))
    return data


def _check_param_values(params: Mapping[str, Any], where: str) -> None:
    # papermill writes the values into Python source: only plain data survives that.
    def ok(v: Any) -> bool:
        if v is None or isinstance(v, (bool, int, float, str)):
            return True
        if isinstance(v, list):
            return all(ok(x) for x in v)
        if isinstance(v, dict):
            return all(isinstance(k, str) and ok(x) for k, x in v.items())
        return False

    for key, value in params.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ReportError(f"{where}: parameter name {key!r} is not a Python identifier")
        if not ok(value):
            raise ReportError(f"{where}: parameter {key!r} has a value of type {type(value).__name__}; "
                              "use numbers, strings, booleans, null, lists or mappings")


def _has_parameters_cell(nb) -> bool:
    return any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells)


def resolve_params(notebook: Path, overrides: Mapping[str, Any], where: str
                   ) -> tuple[dict[str, Any], dict[str, str]]:
    """Return (resolved, unresolved): notebook defaults updated by ``overrides``.

    Defaults that are not literals (``x = 2**3``) cannot be written to params.yaml faithfully;
    unless overridden they are returned separately as their source text.
    """
    import nbformat
    import papermill

    nb = nbformat.read(notebook, as_version=4)
    if not _has_parameters_cell(nb):
        if overrides:
            raise ReportError(f"{notebook}: no cell tagged 'parameters', so {where} cannot be applied")
        return {}, {}
    declared = papermill.inspect_notebook(str(notebook))
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ReportError(f"{where}: unknown parameter(s) {unknown} for {notebook.name}; "
                          f"its parameters cell declares {sorted(declared)}")
    resolved: dict[str, Any] = {}
    unresolved: dict[str, str] = {}
    for name, info in declared.items():
        if name in overrides:
            resolved[name] = overrides[name]
            continue
        try:
            resolved[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError, TypeError):
            unresolved[name] = info["default"]
    return resolved, unresolved


def params_hash(params: Mapping[str, Any]) -> str:
    """8 hex digits of SHA-256 over the canonical JSON of the parameters."""
    canon = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:8]


# --------------------------------------------------------------------------- environment facts
def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", *args], cwd=cwd, capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(where: Path, exclude: Path | None = None) -> dict[str, Any]:
    """Short sha and dirtiness of the repository holding ``where`` (read-only git calls).

    ``exclude`` (the outputs folder) is left out of the dirty check: reports written by
    earlier runs must not make every later run "-dirty".
    """
    top = _git(["rev-parse", "--show-toplevel"], where)
    sha = _git(["rev-parse", "--short", "HEAD"], where) if top else None
    if not top or not sha:
        return {"sha": None, "dirty": None, "label": "nogit", "toplevel": None}
    pathspec = ["."]
    if exclude is not None:
        with contextlib.suppress(ValueError):
            rel = Path(exclude).resolve().relative_to(Path(top).resolve())
            if str(rel) != ".":
                pathspec.append(f":(exclude){rel.as_posix()}")
    status = _git(["status", "--porcelain", "--", *pathspec], Path(top))
    dirty = bool(status) if status is not None else None
    return {"sha": sha, "dirty": dirty, "label": sha + ("-dirty" if dirty else ""), "toplevel": top}


def _version(dist: str) -> str | None:
    try:
        return _metadata.version(dist)
    except _metadata.PackageNotFoundError:
        return None


def environment_facts() -> dict[str, Any]:
    """Versions and a hostname-free description of the machine."""
    return {
        "versions": {"python": platform.python_version(),
                     **{d: _version(d) for d in ("torch", "numpy", "papermill", "nbconvert", "lvmlib")}},
        "machine": {"platform": platform.platform(), "machine": platform.machine(),
                    "python_implementation": platform.python_implementation(),
                    "cpu_count": os.cpu_count()},
    }


def _display_path(p: Path, top: str | None) -> str:
    """Path relative to the repo (or cwd) when possible: run.json should not leak home dirs."""
    for base in (top, os.getcwd()):
        if base:
            with contextlib.suppress(ValueError):
                return Path(p).resolve().relative_to(Path(base).resolve()).as_posix()
    return str(p)


# --------------------------------------------------------------------------- kernel
def ensure_kernel(name: str = DEFAULT_KERNEL, prefix: str | os.PathLike | None = None) -> Path:
    """Make sure kernel ``name`` exists; install it for this Python if it does not.

    Installed with env OMP_WAIT_POLICY=PASSIVE into ``prefix`` (default ``sys.prefix``, i.e.
    the venv). Returns the kernelspec folder.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    if prefix is None:
        try:
            return Path(KernelSpecManager().get_kernel_spec(name).resource_dir)
        except NoSuchKernel:
            pass
    else:
        existing = Path(prefix) / "share" / "jupyter" / "kernels" / name
        if (existing / "kernel.json").exists():
            return existing
    from ipykernel.kernelspec import install

    where = install(kernel_name=name, display_name=f"{name} (OMP passive)",
                    prefix=str(prefix if prefix is not None else sys.prefix), env=dict(KERNEL_ENV))
    return Path(where)


@contextlib.contextmanager
def _kernel_environment(report_dir: Path) -> Iterator[None]:
    """Temporarily set the variables the kernel inherits (papermill starts it from os.environ)."""
    import lvmlib

    pkg_root = str(Path(lvmlib.__file__).resolve().parent.parent)
    old_pp = os.environ.get("PYTHONPATH")
    new = {**KERNEL_ENV, REPORT_DIR_ENV: str(report_dir),
           # the kernel must import the same lvmlib as the runner (save_metrics protocol)
           "PYTHONPATH": pkg_root + (os.pathsep + old_pp if old_pp else "")}
    saved = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------- rendering
def _header_cell(info: dict[str, Any], params: Mapping[str, Any], unresolved: Mapping[str, str]):
    import nbformat

    e = html.escape
    parts = []
    if info["status"] != "ok":
        parts.append('<div style="background:#b00020;color:#fff;padding:12px 16px;font-size:1.3em;'
                     f'font-weight:bold;border-radius:4px">This run FAILED: {e(str(info["error"]))}</div>')
    git = info["git"]["label"]
    parts.append(
        f"<p><b>lvm report</b> of <code>{e(info['notebook'])}</code> &middot; run "
        f"<code>{e(info['run_id'])}</code> &middot; status <b>{e(info['status'])}</b> &middot; "
        f"started {e(info['started_utc'])} &middot; {info['duration_s']:.1f} s &middot; "
        f"git <code>{e(git)}</code> &middot; params file "
        f"<code>{e(str(info['params_file']))}</code></p>")
    rows = "".join(f"<tr><td><code>{e(k)}</code></td><td><code>{e(json.dumps(v, default=str))}</code></td></tr>"
                   for k, v in params.items())
    rows += "".join(f"<tr><td><code>{e(k)}</code></td><td><code>{e(v)}</code> (notebook default)</td></tr>"
                    for k, v in unresolved.items())
    if rows:
        parts.append(f"<table><tr><th>parameter</th><th>value</th></tr>{rows}</table>")
    return nbformat.v4.new_markdown_cell("\n".join(parts))


def render_html(nb, title: str, header=None) -> str:
    """HTML without code inputs or prompts; stream outputs coalesced so tqdm shows one bar."""
    import copy

    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    nb = copy.deepcopy(nb)
    if header is not None:
        nb.cells.insert(0, header)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(CoalesceStreamsPreprocessor(), enabled=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


# --------------------------------------------------------------------------- the runner
def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _make_run_dir(parent: Path, base: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        cand = parent / (base if i == 1 else f"{base}-{i}")  # same second + same params: suffix
        try:
            cand.mkdir()
            return cand
        except FileExistsError:
            continue
    raise ReportError(f"{parent}: cannot create a fresh run folder for {base}")


def _describe_error(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    if ename is not None:  # papermill.PapermillExecutionError
        evalue = getattr(exc, "evalue", "")
        return f"{ename}: {evalue} (at In [{getattr(exc, 'exec_count', '?')}])"
    return f"{type(exc).__name__}: {exc}"


def run_report(notebook: str | os.PathLike, params_file: str | os.PathLike | None = None, *,
               outputs_root: str | os.PathLike = "outputs", kernel: str = DEFAULT_KERNEL,
               execution_timeout: int = 1800, start_timeout: int = 120,
               extra_params: Mapping[str, Any] | None = None) -> Path:
    """Execute ``notebook`` with papermill and write a run folder; return its path.

    ``extra_params`` override the params file. On a failed run everything is still written
    (report.html with a FAILED banner, run.json status "failed") and ReportFailed is raised.
    ``execution_timeout`` is per cell, in seconds.
    """
    import nbformat
    import papermill

    nb_path = Path(notebook).resolve()
    if not nb_path.is_file():
        raise ReportError(f"notebook {notebook}: no such file")
    if nb_path.suffix != ".ipynb":
        raise ReportError(f"notebook {notebook}: expected an .ipynb file")
    outputs = Path(outputs_root).resolve()

    overrides = load_params(params_file)
    where = f"params file {params_file}" if params_file is not None else "parameters"
    if extra_params:
        _check_param_values(extra_params, "extra_params")
        overrides.update(extra_params)
        where = f"{where} + extra_params" if params_file is not None else "extra_params"
    resolved, unresolved = resolve_params(nb_path, overrides, where)
    ensure_kernel(kernel)

    git = git_state(nb_path.parent, exclude=outputs)
    started = _utc_now()
    p_hash = params_hash({"params": resolved, "unresolved": unresolved})
    run_dir = _make_run_dir(outputs / nb_path.stem,
                            f"{started:%Y%m%dT%H%M%SZ}-{git['label']}-{p_hash}")
    files.write_text(run_dir / "params.yaml",
                       yaml.safe_dump(resolved, sort_keys=True, allow_unicode=True) if resolved else "{}\n")

    partial = run_dir / ".notebook.partial.ipynb"  # papermill rewrites it after every cell
    error: BaseException | None = None
    with _kernel_environment(run_dir):
        try:
            papermill.execute_notebook(
                str(nb_path), str(partial), parameters=dict(overrides), kernel_name=kernel,
                cwd=str(nb_path.parent), execution_timeout=execution_timeout,
                start_timeout=start_timeout, progress_bar=False, log_output=False)
        except Exception as exc:  # PapermillExecutionError, kernel death, timeouts, ...
            error = exc
    finished = _utc_now()

    if partial.exists():
        executed = nbformat.read(partial, as_version=4)
        os.replace(partial, run_dir / "notebook.ipynb")
    else:  # failed before papermill wrote anything (e.g. kernel would not start)
        executed = nbformat.read(nb_path, as_version=4)
        files.write_text(run_dir / "notebook.ipynb", nbformat.writes(executed))
    metrics_saved = (run_dir / "metrics.json").exists()
    if not metrics_saved:
        files.write_json(run_dir / "metrics.json", {}, sort_keys=True)

    info = {
        "notebook": _display_path(nb_path, git["toplevel"]),
        "params_file": _display_path(Path(params_file), git["toplevel"]) if params_file is not None else None,
        "extra_params": to_jsonable(dict(extra_params)) if extra_params else None,
        "status": "ok" if error is None else "failed",
        "error": None if error is None else _describe_error(error),
        "run_id": run_dir.name, "params_hash": p_hash, "unresolved_defaults": unresolved,
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 3),
        "git": {k: git[k] for k in ("sha", "dirty", "label")},
        "kernel": kernel, "execution_timeout_s": execution_timeout, "start_timeout_s": start_timeout,
        "metrics_saved": metrics_saved,
        **environment_facts(),
    }
    page = render_html(executed, f"{nb_path.stem} {run_dir.name}", _header_cell(info, resolved, unresolved))
    files.write_text(run_dir / "report.html", page)
    files.write_json(run_dir / "run.json", info, sort_keys=True)  # last: its presence marks a finished run
    build_index(outputs)
    if error is not None:
        raise ReportFailed(f"notebook {_display_path(nb_path, git['toplevel'])} failed: {info['error']}; "
                           f"report written to {run_dir / 'report.html'}", run_dir) from error
    return run_dir


# --------------------------------------------------------------------------- index
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "null" if v is None else str(v)


def collect_runs(outputs_root: str | os.PathLike = "outputs") -> dict[str, list[dict[str, Any]]]:
    """{notebook stem: [run summaries, newest first]} from ``<root>/<stem>/<run>/``.

    A run folder without run.json is listed as "incomplete"; an unreadable run.json or
    metrics.json is listed with the error rather than hiding the run.
    """
    root = Path(outputs_root)
    groups: dict[str, list[dict[str, Any]]] = {}
    if not root.is_dir():
        return groups
    for nb_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        runs = []
        for run_dir in (p for p in nb_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            entry: dict[str, Any] = {"dir": run_dir, "run_id": run_dir.name, "headline": {}}
            run_json = run_dir / "run.json"
            if not run_json.exists():
                entry["status"] = "incomplete"
            else:
                try:
                    info = json.loads(run_json.read_text(encoding="utf-8"))
                    if not isinstance(info, dict):
                        raise ValueError("not a JSON object")
                    entry.update(info)
                except (OSError, ValueError) as exc:
                    entry["status"] = f"unreadable run.json: {exc}"
            metrics_path = run_dir / "metrics.json"
            if metrics_path.exists():
                try:
                    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
                    entry["headline"] = headline_metrics(metrics) if isinstance(metrics, dict) else {}
                except (OSError, ValueError) as exc:
                    entry["headline"] = {"metrics.json": f"unreadable ({exc})"}
            runs.append(entry)
        # folder names start with the UTC start time, so they sort by time even for runs
        # that never wrote run.json
        runs.sort(key=lambda r: r["run_id"], reverse=True)
        if runs:
            groups[nb_dir.name] = runs
    return groups


def build_index(outputs_root: str | os.PathLike = "outputs") -> Path:
    """Write ``<outputs_root>/index.html`` listing every run; return its path."""
    root = Path(outputs_root)
    root.mkdir(parents=True, exist_ok=True)
    e = html.escape
    sections = []
    for stem, runs in collect_runs(root).items():
        rows = []
        for r in runs:
            rel = f"{stem}/{r['run_id']}"
            status = str(r.get("status"))
            colour = {"ok": "#1b7f3b", "failed": "#b00020"}.get(status, "#8a6d00")
            git = (r.get("git") or {}).get("label") if isinstance(r.get("git"), dict) else None
            dur = r.get("duration_s")
            links = " ".join(f'<a href="{e(rel)}/{f}">{f}</a>' for f in ("report.html", "params.yaml")
                             if (r["dir"] / f).exists())
            head = ", ".join(f"{e(k)}={e(_fmt(v))}" for k, v in r["headline"].items())
            rows.append(
                f'<tr><td style="color:{colour};font-weight:bold">{e(status)}</td>'
                f"<td>{e(str(r.get('started_utc') or ''))}</td><td><code>{e(str(git or ''))}</code></td>"
                f"<td><code>{e(str(r.get('params_hash') or ''))}</code></td>"
                f"<td>{'' if dur is None else e(f'{dur:.1f} s')}</td><td>{links}</td>"
                f"<td>{head}</td><td><small>{e(r['run_id'])}</small></td></tr>")
        sections.append(
            f"<h2>{e(stem)}</h2><table><tr><th>status</th><th>started (UTC)</th><th>git</th>"
            f"<th>params</th><th>duration</th><th>files</th><th>headline metrics</th><th>run</th></tr>"
            + "".join(rows) + "</table>")
    body = "".join(sections) or "<p>No runs yet.</p>"
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>lvm-lab reports</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}</style>"
            f"</head><body><h1>lvm-lab reports</h1><p>Newest first within each notebook.</p>{body}"
            "</body></html>\n")
    out = root / "index.html"
    files.write_text(out, page)
    return out


# --------------------------------------------------------------------------- CLI
def cli_main(argv: list[str]) -> int:
    """``lvm report NOTEBOOK [--params FILE] [--outputs DIR] [--timeout S]`` or ``lvm report --index``."""
    ap = argparse.ArgumentParser(prog="lvm report", description="Run a notebook as an HTML report.")
    ap.add_argument("notebook", nargs="?", help="the .ipynb to execute")
    ap.add_argument("--params", metavar="FILE", help="YAML mapping of notebook parameters")
    ap.add_argument("--outputs", metavar="DIR", default="outputs", help="outputs root (default: outputs)")
    ap.add_argument("--timeout", metavar="S", type=int, default=1800, help="per-cell timeout in seconds")
    ap.add_argument("--index", action="store_true", help="only rebuild <outputs>/index.html")
    args = ap.parse_args(argv)
    if args.index:
        if args.notebook or args.params:
            ap.error("--index takes no notebook or --params")
        print(build_index(args.outputs))
        return 0
    if not args.notebook:
        ap.error("a NOTEBOOK is required (or --index)")
    try:
        run_dir = run_report(args.notebook, args.params, outputs_root=args.outputs,
                             execution_timeout=args.timeout)
    except ReportError as exc:
        print(f"lvm report: error: {exc}", file=sys.stderr)
        return 2
    except ReportFailed as exc:
        print(f"lvm report: FAILED: {exc}", file=sys.stderr)
        return 1
    print(run_dir / "report.html")
    return 0
