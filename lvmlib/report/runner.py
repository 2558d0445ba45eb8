"""Run a notebook as a report: ``lvm report NOTEBOOK --params FILE`` writes one run folder ``<outputs>/<notebook
stem>/<UTC>-<git>-<params hash>/`` (RUN_FILES; docs/architecture.md). papermill and nbconvert load lazily."""
from __future__ import annotations

import ast
import contextlib
import copy
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
from typing import Any, Mapping

from .. import files
from ..files import REPO_ROOT, portable
from ..config import dump_yaml, read_yaml
from ..errors import InputError
from ..progress import duration_text
from .index import build_index, profile, scale_facts, tldr_items

REPORT_DIR_ENV = "LVM_REPORT_DIR"
DEFAULT_KERNEL = "lvm-lab"
# torch in a Jupyter kernel on 2 vCPUs spin-waits without this (TOOLING.md: 4-60x slower).
KERNEL_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
# run.json is written last: a folder without it never finished
RUN_FILES = ("report.html", "notebook.ipynb", "params.yaml", "metrics.json", "run.json")


class ReportError(InputError):
    """Bad input to the report runner (notebook, params file, artifact name): ``lvm`` exits 2."""


class ReportFailed(RuntimeError):
    """The notebook ran and failed; everything was still written to ``run_dir``."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


def save_metrics(metrics: Mapping[str, Any]) -> Mapping[str, Any]:
    """Merge a notebook's metrics into ``$LVM_REPORT_DIR/metrics.json`` (later calls win; nothing is written
    interactively); returns ``metrics``. The index shows ``banner`` and the first of ``tldr``."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"save_metrics expects a mapping, got {type(metrics).__name__}")
    clean = portable(files.to_jsonable(metrics, where="metrics"))  # validated even interactively
    report_dir = os.environ.get(REPORT_DIR_ENV)
    if report_dir:
        path = Path(report_dir) / "metrics.json"  # written atomically by an earlier call, if any
        merged = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        files.write_json(path, {**merged, **clean}, sort_keys=True)
    return metrics


def save_artifact(name: str, text: str) -> Path | None:
    """Save a small text file beside the report (``$LVM_REPORT_DIR/<name>``); None interactively."""
    if not name or Path(name).name != name or name in RUN_FILES:
        raise ReportError(f"artifact name {name!r} must be a plain file name other than {sorted(RUN_FILES)}")
    report_dir = os.environ.get(REPORT_DIR_ENV)
    return files.write_text(Path(report_dir) / name, text) if report_dir else None


def load_params(params_file: str | os.PathLike | None) -> dict[str, Any]:
    """A YAML mapping of notebook parameter names -> values (no file or an empty one -> {})."""
    if params_file is None:
        return {}
    data = read_yaml(params_file, what="params")
    if not isinstance(data, dict):
        raise ReportError(f"params file {params_file}: expected a mapping of parameter names to values, "
                          f"got {type(data).__name__}")

    def plain(v: Any) -> bool:  # papermill writes the values into Python source: only plain data survives
        if isinstance(v, list):
            return all(plain(x) for x in v)
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        return v is None or isinstance(v, (bool, int, float, str))

    for key, value in data.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ReportError(f"params file {params_file}: parameter name {key!r} is not a Python identifier")
        if not plain(value):
            raise ReportError(f"params file {params_file}: parameter {key!r} has a value of type "
                              f"{type(value).__name__}; use numbers, strings, booleans, null, lists or mappings")
    return data


def resolve_params(notebook: Path, overrides: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(resolved, unresolved): the notebook's defaults updated by ``overrides``; defaults that are not
    literals (``x = 2**3``) cannot go to params.yaml faithfully and come back as their source text."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))  # {} without a cell tagged "parameters"
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        declares = f"its parameters cell declares {sorted(declared)}" if declared else "it has no parameters cell"
        raise ReportError(f"{where}: unknown parameter(s) {unknown} for {notebook.name}; {declares}")
    resolved, unresolved = {}, {}
    for name, info in declared.items():
        try:
            resolved[name] = overrides[name] if name in overrides else ast.literal_eval(info["default"])
        except (ValueError, SyntaxError, TypeError):
            unresolved[name] = info["default"]
    return resolved, unresolved


def params_hash(params: Mapping[str, Any]) -> str:
    """8 hex digits of SHA-256 over the canonical JSON of the parameters."""
    canon = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:8]


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(where: Path, exclude: Path | None = None) -> dict[str, Any]:
    """Short sha and dirtiness of the repository holding ``where``; ``exclude`` (the outputs folder) is left
    out of the dirty check, so earlier reports do not make every later run "-dirty"."""
    found = _git(["rev-parse", "--show-toplevel", "--short", "HEAD"], where)   # no repository or no commit: None
    if not found:
        return {"sha": None, "dirty": None, "label": "nogit"}
    top, sha = found.splitlines()
    top, out = Path(top).resolve(), Path(exclude if exclude is not None else top).resolve()
    skip = [f":(exclude){out.relative_to(top).as_posix()}"] if out != top and out.is_relative_to(top) else []
    status = _git(["status", "--porcelain", "--", ".", *skip], top)
    dirty = bool(status) if status is not None else None
    return {"sha": sha, "dirty": dirty, "label": sha + ("-dirty" if dirty else "")}


def environment_facts() -> dict[str, Any]:
    """Versions (of what is installed) and a hostname-free description of the machine."""
    versions = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "papermill", "nbconvert", "lvmlib"):
        with contextlib.suppress(_metadata.PackageNotFoundError):
            versions[dist] = _metadata.version(dist)
    return {"versions": versions,
            "machine": {"platform": platform.platform(), "machine": platform.machine(),
                        "python_implementation": platform.python_implementation(), "cpu_count": os.cpu_count()}}


def ensure_kernel(name: str = DEFAULT_KERNEL, prefix: str | os.PathLike | None = None) -> Path:
    """Kernel ``name``'s folder, installed for this Python (into ``prefix``, default the venv) if it does not exist
    yet, then `_name_provisioner`-ed. `make setup` installs ``lvm-lab`` and the venv's ``python3`` (the notebooks')."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    folder = None
    if prefix is None:
        with contextlib.suppress(NoSuchKernel):
            folder = Path(KernelSpecManager().get_kernel_spec(name).resource_dir)
    elif (Path(prefix) / "share" / "jupyter" / "kernels" / name / "kernel.json").exists():
        folder = Path(prefix) / "share" / "jupyter" / "kernels" / name
    if folder is None:
        from ipykernel.kernelspec import install
        folder = Path(install(kernel_name=name, display_name=f"{name} (OMP passive)",
                              prefix=str(prefix if prefix is not None else sys.prefix), env=dict(KERNEL_ENV)))
    ours = Path(sys.prefix) in folder.parents or (prefix is not None and Path(prefix).resolve() in folder.resolve().parents)
    if ours and (folder / "kernel.json").is_file():     # a kernelspec file of this environment, never a user's
        _name_provisioner(folder / "kernel.json")
    return folder


def _name_provisioner(kernel_json: Path) -> None:
    """The kernelspec gets KERNEL_ENV and, once its entry point is installed (pip install -e .), the IPC provisioner."""
    from .kernel import NAME
    spec = json.loads(kernel_json.read_text(encoding="utf-8"))
    want = {**spec, "env": {**spec.get("env", {}), **KERNEL_ENV}}
    if any(ep.name == NAME for ep in _metadata.entry_points(group="jupyter_client.kernel_provisioners")):
        want["metadata"] = {**spec.get("metadata", {}), "kernel_provisioner": {"provisioner_name": NAME}}
    if want != spec:
        files.write_json(kernel_json, want)


def _execute(nb_path: Path, run_dir: Path, overrides: Mapping[str, Any], kernel: str,
             execution_timeout: int, start_timeout: int):
    """Run the notebook into ``run_dir/notebook.ipynb``; return (executed notebook, exception or None)."""
    from unittest import mock

    import nbformat
    import papermill
    from traitlets.config import Config

    partial = run_dir / ".notebook.partial.ipynb"  # papermill rewrites it after every cell
    error: BaseException | None = None
    # papermill starts the kernel from os.environ; it must import the runner's lvmlib (save_metrics)
    pythonpath = os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH"))))
    with mock.patch.dict(os.environ, {**KERNEL_ENV, REPORT_DIR_ENV: str(run_dir), "PYTHONPATH": pythonpath}):
        try:  # a local kernel over Unix sockets: over TCP ipykernel warns "... without encryption" every run
            papermill.execute_notebook(
                str(nb_path), str(partial), parameters=dict(overrides), kernel_name=kernel,
                cwd=str(nb_path.parent), execution_timeout=execution_timeout, start_timeout=start_timeout,
                progress_bar=False, log_output=False, config=Config({"KernelManager": {"transport": "ipc"}}))
        except Exception as exc:  # PapermillExecutionError, kernel death, timeouts, ...
            error = exc
    # no partial notebook: it failed before papermill wrote anything (e.g. the kernel would not start)
    executed = nbformat.read(partial if partial.exists() else nb_path, as_version=4)
    files.write_text(run_dir / "notebook.ipynb", nbformat.writes(executed))
    partial.unlink(missing_ok=True)
    return executed, error


# wide tables scroll inside the page instead of being clipped; tables read as tables
PAGE_STYLE = ("<style>.jp-OutputArea-output table, .jp-RenderedHTMLCommon table{display:block;overflow-x:auto;"
              "max-width:100%} .lvm-scale td{padding:2px 10px} .lvm-tldr li{margin:4px 0}</style>")


def _report_cells(info: dict[str, Any], metrics: Mapping[str, Any], params: Mapping[str, Any],
                  unresolved: Mapping[str, str]):
    """(top, end) cells of report.html: FAILED banner, the run, its scale (banner, profile, commit, wall time)
    and TL;DR at the top; the run's parameters, collapsed, at the end."""
    import nbformat

    e = html.escape
    parts = [PAGE_STYLE]
    if info["status"] != "ok":
        parts.append('<div style="background:#b00020;color:#fff;padding:12px 16px;font-size:1.3em;'
                     f'font-weight:bold;border-radius:4px">This run FAILED: {e(str(info["error"]))}</div>')
    parts.append(f"<p><b>lvm report</b> of <code>{e(info['notebook'])}</code> &middot; run "
                 f"<code>{e(info['run_id'])}</code> &middot; status <b>{e(info['status'])}</b> &middot; "
                 f"started {e(info['started_utc'])}</p>")
    scale = {**scale_facts(metrics.get("banner")), "profile": profile(info["params_file"]),
             "commit": info["git"]["label"], "wall time": duration_text(info["duration_s"])}
    parts.append('<table class="lvm-scale">' + "".join(f"<tr><td><b>{e(str(k))}</b></td><td>{e(str(v))}</td></tr>"
                                                       for k, v in scale.items()) + "</table>")
    tldr = tldr_items(metrics.get("tldr"))
    if tldr:
        parts.append('<p><b>TL;DR</b></p><ul class="lvm-tldr">' + "".join(f"<li>{e(t)}</li>" for t in tldr) + "</ul>")
    cells = [(k, json.dumps(v, default=str), "") for k, v in params.items()]
    rows = "".join(f"<tr><td><code>{e(k)}</code></td><td><code>{e(v)}</code>{note}</td></tr>" for k, v, note in
                   cells + [(k, v, " (notebook default)") for k, v in unresolved.items()])
    return (nbformat.v4.new_markdown_cell("\n".join(parts)), nbformat.v4.new_markdown_cell(
        f"<details><summary><b>Parameters</b> (params file <code>{e(str(info['params_file']))}</code>)</summary>"
        f"<table><tr><th>parameter</th><th>value</th></tr>{rows}</table></details>"))


def render_html(nb, title: str, header=None, footer=None) -> str:
    """HTML without code inputs or prompts; stream outputs coalesced so tqdm shows one bar."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    nb = copy.deepcopy(nb)
    nb.cells = [c for c in (header, *nb.cells, footer) if c is not None]
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(CoalesceStreamsPreprocessor(), enabled=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


def _make_run_dir(parent: Path, base: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        cand = parent / (base if i == 1 else f"{base}-{i}")  # same second + same params: suffix
        with contextlib.suppress(FileExistsError):
            cand.mkdir()
            return cand
    raise ReportError(f"{parent}: cannot create a fresh run folder for {base}")


def _describe_error(exc: BaseException) -> str:
    if getattr(exc, "ename", None) is not None:  # papermill.PapermillExecutionError
        return portable(f"{exc.ename}: {getattr(exc, 'evalue', '')} (at In [{getattr(exc, 'exec_count', '?')}])")
    return portable(f"{type(exc).__name__}: {exc}")


def run_report(notebook: str | os.PathLike, params_file: str | os.PathLike | None = None, *,
               outputs_root: str | os.PathLike = "outputs", kernel: str = DEFAULT_KERNEL,
               execution_timeout: int = 1800, start_timeout: int = 120) -> Path:
    """Execute ``notebook`` (``execution_timeout`` per cell), write its run folder, rebuild the index; return
    the folder. A failed run is still written (FAILED banner, run.json status "failed"), then ReportFailed."""
    nb_path = Path(notebook).resolve()
    if not nb_path.is_file():
        raise ReportError(f"notebook {notebook}: no such file")
    if nb_path.suffix != ".ipynb":
        raise ReportError(f"notebook {notebook}: expected an .ipynb file")
    outputs, overrides = Path(outputs_root).resolve(), load_params(params_file)
    resolved, unresolved = resolve_params(nb_path, overrides, "parameters" if params_file is None else
                                          f"params file {params_file}")
    resolved = portable(resolved)
    ensure_kernel(kernel)
    git = git_state(nb_path.parent, exclude=outputs)
    started = _dt.datetime.now(_dt.timezone.utc)
    p_hash = params_hash({"params": resolved, "unresolved": unresolved})
    run_dir = _make_run_dir(outputs / nb_path.stem, f"{started:%Y%m%dT%H%M%SZ}-{git['label']}-{p_hash}")
    files.write_text(run_dir / "params.yaml", dump_yaml(resolved) if resolved else "{}\n")
    executed, error = _execute(nb_path, run_dir, overrides, kernel, execution_timeout, start_timeout)
    finished = _dt.datetime.now(_dt.timezone.utc)
    metrics_saved = (run_dir / "metrics.json").exists()
    if not metrics_saved:
        files.write_json(run_dir / "metrics.json", {}, sort_keys=True)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    info = {
        "notebook": portable(str(nb_path)),
        "params_file": portable(str(Path(params_file).resolve())) if params_file is not None else None,
        "status": "ok" if error is None else "failed",
        "error": None if error is None else _describe_error(error),
        "run_id": run_dir.name, "params_hash": p_hash, "unresolved_defaults": unresolved,
        "started_utc": started.isoformat(timespec="seconds"), "finished_utc": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 3),
        "git": git, "kernel": kernel, "execution_timeout_s": execution_timeout, "start_timeout_s": start_timeout,
        "metrics_saved": metrics_saved, **environment_facts()}
    page = render_html(executed, f"{nb_path.stem} {run_dir.name}", *_report_cells(info, metrics, resolved, unresolved))
    files.write_text(run_dir / "report.html", page)
    files.write_json(run_dir / "run.json", info, sort_keys=True)  # last: its presence marks a finished run
    build_index(outputs)
    if error is not None:
        raise ReportFailed(f"notebook {info['notebook']} failed: {info['error']}; "
                           f"report written to {portable(str(run_dir / 'report.html'))}", run_dir) from error
    return run_dir
