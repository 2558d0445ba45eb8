"""lvmlib.report: two real notebook executions (one ok, one failing) plus cheap unit checks."""
from __future__ import annotations

import json
import os
import re
import threading
import time
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

from lvmlib import report
from lvmlib.errors import InputError

RUN_DIR_RE = re.compile(r"^\d{8}T\d{6}Z-(nogit|[0-9a-f]{4,40}(-dirty)?)-[0-9a-f]{8}(-\d+)?$")
CODE_MARKER = "SECRET_CODE_MARKER_7f3a"  # appears only in code, never in output


def _notebook(path: Path, body: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('n_steps = 5\nlabel = "default"\nscale = 2**3')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(src) for src in body]
    nbformat.write(nb, path)
    return path


OK_BODY = [
    # plain tqdm, mininterval=0: one stream message per step, all in the stored notebook
    "from tqdm import tqdm\nfor _ in tqdm(range(n_steps), mininterval=0):\n    pass",
    "import os\nimport numpy as np\nfrom lvmlib.report import save_metrics\n"
    f"{CODE_MARKER} = 1\n"
    "save_metrics({'headline': {'val_cos': np.float32(0.625)}, 'curve': np.arange(3),\n"
    "              'omp': os.environ.get('OMP_WAIT_POLICY'), 'cwd': os.getcwd(),\n"
    "              'banner': {'scale': 'tiny · ' + str(n_steps) + ' steps'},\n"
    "              'tldr': ['first-finding-' + label, 'second-finding']})\n"
    "print('output-marker-' + label, scale)",
]
FAIL_BODY = ["raise ValueError('boom-42')", "print('never-printed')"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Execute both notebooks once; the tests below inspect the results."""
    report.ensure_kernel("lvm-lab")
    base = tmp_path_factory.mktemp("report")
    nb_dir = base / "nbs"
    nb_dir.mkdir()
    outputs = base / "outputs"
    params = base / "p.yaml"
    params.write_text("n_steps: 37\nlabel: hello\n")
    ok_dir = report.run_report(_notebook(nb_dir / "tiny.ipynb", OK_BODY), params, outputs_root=outputs,
                               execution_timeout=120, start_timeout=60)
    with pytest.raises(report.ReportFailed) as failed:
        report.run_report(_notebook(nb_dir / "broken.ipynb", FAIL_BODY), params, outputs_root=outputs,
                          execution_timeout=120, start_timeout=60)
    return {"ok": ok_dir, "failed": failed.value, "outputs": outputs, "nb_dir": nb_dir, "params": params}


def test_ok_run_folder(runs):
    d = runs["ok"]
    assert d.parent == runs["outputs"] / "tiny"
    assert RUN_DIR_RE.match(d.name), d.name
    assert sorted(p.name for p in d.iterdir()) == sorted(report.RUN_FILES)  # no temp files left

    assert yaml.safe_load((d / "params.yaml").read_text()) == {"n_steps": 37, "label": "hello"}
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["headline"] == {"val_cos": 0.625}
    assert metrics["curve"] == [0, 1, 2]
    assert metrics["omp"] == "PASSIVE"  # the kernel's environment
    assert metrics["cwd"] == report.portable(str(runs["nb_dir"].resolve()))  # papermill cwd = notebook folder

    info = json.loads((d / "run.json").read_text())
    assert info["status"] == "ok" and info["error"] is None
    assert info["params_file"].endswith("p.yaml") and info["notebook"].endswith("tiny.ipynb")
    assert info["unresolved_defaults"] == {"scale": "2**3"}
    assert d.name.endswith(info["params_hash"]) and info["git"]["label"] in d.name
    assert info["duration_s"] > 0 and info["started_utc"] <= info["finished_utc"]
    assert info["versions"]["python"] and info["machine"]["cpu_count"] >= 1
    host = os.uname().nodename
    assert len(host) < 4 or host not in json.dumps(info)  # hostname-free


def test_ok_report_html(runs):
    d = runs["ok"]
    page = (d / "report.html").read_text()
    assert CODE_MARKER not in page  # no code inputs
    assert "output-marker-hello 8" in page  # outputs present, parameters applied
    assert "This run FAILED" not in page
    # the top of the page: the notebook's banner plus the runner's facts, then every TL;DR finding
    assert "<td><b>scale</b></td><td>tiny · 37 steps</td>" in page and "<td><b>profile</b></td><td>p</td>" in page
    assert page.index("TL;DR") < page.index("first-finding-hello") < page.index("second-finding")
    assert page.index("second-finding") < page.index("<summary><b>Parameters</b>")     # parameters last, collapsed
    # the stored notebook holds every tqdm update; the report shows only the final bar
    executed = nbformat.read(d / "notebook.ipynb", as_version=4)
    raw = "".join(o.get("text", "") for o in executed.cells[2].outputs)  # after injected params
    assert raw.count("/37") > 10
    assert page.count("37/37") == 1 and "36/37" not in page


def test_failed_run_is_rendered_and_marked(runs):
    exc = runs["failed"]
    assert "boom-42" in str(exc) and "report.html" in str(exc)
    d = exc.run_dir
    assert d.parent == runs["outputs"] / "broken" and RUN_DIR_RE.match(d.name)
    assert sorted(p.name for p in d.iterdir()) == sorted(report.RUN_FILES)
    info = json.loads((d / "run.json").read_text())
    assert info["status"] == "failed" and "ValueError: boom-42" in info["error"]
    assert json.loads((d / "metrics.json").read_text()) == {} and info["metrics_saved"] is False
    page = (d / "report.html").read_text()
    banner = page.find("This run FAILED: ValueError: boom-42")
    assert 0 <= banner < page.find("Traceback") and "never-printed" not in page


def test_index_lists_runs(runs):
    page = (runs["outputs"] / "index.html").read_text()
    ok, bad = runs["ok"], runs["failed"].run_dir
    assert f'href="tiny/{ok.name}/report.html"' in page and f'href="tiny/{ok.name}/params.yaml"' in page
    assert f'href="broken/{bad.name}/report.html"' in page
    assert page.count("<tr") == 3 and ">failed<" in page and ">ok<" in page  # one table: header + 2 runs
    assert page.index("<td>broken</td>") < page.index("<td>tiny</td>")
    assert "tiny · 37 steps" in page and "first-finding-hello" in page and "second-finding" not in page
    assert "<td>p</td>" in page  # profile: the params file's stem
    assert "val_cos" not in page  # no key=value headline dumps


def test_outputs_hold_no_machine_paths(runs):
    """Paths into the repository (or beside it, ../shared) are written repo-relative."""
    root = report.runner.REPO_ROOT
    assert report.portable(f"{root}/data/bank-tiny") == "data/bank-tiny" and report.portable(str(root)) == "."
    assert report.portable(f"bank {root.parent}/shared/c.gz, x") == "bank ../shared/c.gz, x"
    assert report.portable(f"/elsewhere{root}/x") == f"/elsewhere{root}/x"  # only whole paths
    assert report.portable({"a": [f"{root}/n.ipynb", 1]}) == {"a": ["n.ipynb", 1]}
    for path in [runs["outputs"] / "index.html"] + [d / f for d in (runs["ok"], runs["failed"].run_dir)
                                                  for f in ("run.json", "params.yaml", "metrics.json")]:
        assert str(root) not in path.read_text(), path


def test_no_tcp_encryption_warning(tmp_path, capfd):
    """The kernel talks over Unix sockets, so ipykernel never warns "Kernel is running over TCP without
    encryption" (it did on every lvm report while papermill's kernel used TCP on localhost)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('one-cell-' + 'marker')")]
    nbformat.write(nb, tmp_path / "one.ipynb")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = report.run_report(tmp_path / "one.ipynb", outputs_root=tmp_path / "out",
                                    execution_timeout=60, start_timeout=60)
    out, err = capfd.readouterr()
    assert "one-cell-marker" in (run_dir / "report.html").read_text()
    assert "without encryption" not in out + err + "".join(str(w.message) for w in caught)


# --------------------------------------------------------------------------- no kernel needed
def test_index_newest_first_and_broken_runs(tmp_path):
    for run_id, info, metrics in (
            ("20250101T000000Z-nogit-00000001", {"params_file": None, "duration_s": 750.0},
             {"cos": 0.5, "curve": [1, 2], "name": "a", "headline": {"r1": 0.25}}),
            ("20250102T000000Z-nogit-00000002", {"params_file": "params/nb/quick.yaml"},
             {"banner": {"models": 3, "epochs": 2.5, "ok": True}, "tldr": ["cos-up", "cos-down"]})):
        d = tmp_path / "nb" / run_id
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"status": "ok", "params_hash": run_id[-8:], **info}))
        (d / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "nb" / "20250103T000000Z-nogit-00000003").mkdir()  # never finished
    bad = tmp_path / "nb" / "20241231T000000Z-nogit-00000004"
    bad.mkdir()
    (bad / "run.json").write_text("{not json")
    (tmp_path / "a-nb" / "20250101T000000Z-nogit-00000005").mkdir(parents=True)  # sorts before "nb"
    for lock in (tmp_path / ".lock", tmp_path / "nb" / ".lock"):  # lvmlib.files.folder_lock's files
        lock.write_text("{}")
    (tmp_path / "nb" / ".hidden").mkdir()
    page = report.build_index(tmp_path).read_text()
    order = [page.index(f'title="{i}"') for i in ("20250101T000000Z-nogit-00000005",) + tuple(
        f"2025010{d}T000000Z-nogit-0000000{i}" for d, i in ((3, 3), (2, 2), (1, 1)))]
    assert order == sorted(order) and page.index('title="20241231T000000Z-nogit-00000004"') > order[-1]
    assert page.count("<tr") == 1 + 5 and ".lock" not in page and ".hidden" not in page
    assert "incomplete" in page and "unreadable run.json" in page
    assert "2025-01-02 00:00" in page and "models: 3 · epochs: 2.5<" in page and "cos-up" in page  # newest run's row
    assert "<td>quick</td>" in page and "<td>defaults</td>" in page and "12.5 min" in page
    assert "—" in page and "0.25" not in page and "r1" not in page and "curve" not in page  # no headline dumps


def test_index_waits_for_the_outputs_lock(tmp_path):
    """Two runs finishing together: each rebuilds the index under the outputs folder's lock, so the
    later rebuild sees both runs. A held lock is waited for (up to wait_s), then named."""
    from lvmlib import files

    (tmp_path / "nb" / "20250101T000000Z-nogit-00000001").mkdir(parents=True)
    held, release = threading.Event(), threading.Event()

    def hold():
        with files.folder_lock(tmp_path, "test holder"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    with pytest.raises(files.FolderInUse, match="test holder"):
        report.build_index(tmp_path, wait_s=0.3)
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    page = report.build_index(tmp_path).read_text()
    assert time.monotonic() - started >= 0.4 and 'title="20250101T000000Z-nogit-00000001"' in page
    holder.join()


def test_save_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv(report.REPORT_DIR_ENV, raising=False)
    m = {"a": np.float64(0.5)}
    assert report.save_metrics(m) is m and not (tmp_path / "metrics.json").exists()
    monkeypatch.setenv(report.REPORT_DIR_ENV, str(tmp_path))
    bank = report.runner.REPO_ROOT / "data" / "bank-tiny"
    report.save_metrics({"a": np.int64(2), "v": np.array([[1.5]]), "nan": float("nan"), "card": {"bank": bank}})
    report.save_metrics({"b": (True, None)})  # later calls merge
    assert json.loads((tmp_path / "metrics.json").read_text()) == {  # one JSON policy: non-finite -> null
        "a": 2, "v": [[1.5]], "nan": None, "b": [True, None], "card": {"bank": "data/bank-tiny"}}
    with pytest.raises(TypeError, match=r"metrics\.x: value of type object"):
        report.save_metrics({"x": object()})
    with pytest.raises(TypeError, match="key 1"):
        report.save_metrics({1: 2})


def test_bad_params_are_named(tmp_path):
    nb = _notebook(tmp_path / "t.ipynb", ["pass"])
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(report.ReportError, match=r"list\.yaml.*expected a mapping"):
        report.run_report(nb, listy, outputs_root=tmp_path / "out")
    typo = tmp_path / "typo.yaml"
    typo.write_text("n_stepz: 3\n")
    with pytest.raises(report.ReportError, match=r"typo\.yaml.*unknown parameter.*n_stepz"):
        report.run_report(nb, typo, outputs_root=tmp_path / "out")
    with pytest.raises(InputError, match=r"missing\.yaml.*cannot read"):  # lvmlib.config.read_yaml's ConfigError
        report.run_report(nb, tmp_path / "missing.yaml", outputs_root=tmp_path / "out")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a: [1\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*not valid YAML"):
        report.run_report(nb, bad_yaml, outputs_root=tmp_path / "out")
    assert issubclass(report.ReportError, InputError)
    with pytest.raises(report.ReportError, match="no such file"):
        report.run_report(tmp_path / "nope.ipynb")
    assert not (tmp_path / "out").exists()  # rejected before any run folder


def test_params_hash_and_resolution(tmp_path):
    nb = _notebook(tmp_path / "t.ipynb", ["pass"])
    resolved, unresolved = report.resolve_params(nb, {"label": "x"}, "test")
    assert resolved == {"n_steps": 5, "label": "x"} and unresolved == {"scale": "2**3"}
    assert report.params_hash({"a": 1, "b": 2}) == report.params_hash({"b": 2, "a": 1})
    assert report.params_hash({"a": 1}) != report.params_hash({"a": 2})
    assert re.fullmatch(r"[0-9a-f]{8}", report.params_hash({}))


def test_ensure_kernel_installs_with_passive_omp(tmp_path):
    spec_dir = report.ensure_kernel("lvm-lab-test", prefix=tmp_path)
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec_dir == tmp_path / "share" / "jupyter" / "kernels" / "lvm-lab-test"
    assert spec["env"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert report.ensure_kernel("lvm-lab-test", prefix=tmp_path) == spec_dir  # idempotent


def test_cli(tmp_path, monkeypatch, capsys):
    from lvmlib.cli import main

    assert main(["report", "--index", "--outputs", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "index.html").exists()
    assert main(["report", str(tmp_path / "nope.ipynb")]) == 2
    assert "no such file" in capsys.readouterr().err

    def fail(*a, **k):
        raise report.ReportFailed("notebook x failed: ValueError: y", tmp_path)

    monkeypatch.setattr(report, "run_report", fail)
    assert main(["report", "x.ipynb", "--params", "p.yaml"]) == 1
    assert "FAILED" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report"])  # neither a notebook nor --index


def test_save_artifact(tmp_path, monkeypatch):
    from lvmlib.report import ReportError, save_artifact
    monkeypatch.delenv("LVM_REPORT_DIR", raising=False)
    assert save_artifact("best_train.yaml", "seed: 0\n") is None          # interactive: nothing written
    monkeypatch.setenv("LVM_REPORT_DIR", str(tmp_path))
    path = save_artifact("best_train.yaml", "seed: 0\n")
    assert path == tmp_path / "best_train.yaml" and path.read_text() == "seed: 0\n"
    for bad in ("../x.yaml", "sub/x.yaml", "metrics.json", ""):
        with pytest.raises(ReportError):
            save_artifact(bad, "x")


def test_the_index_finding_is_the_answer_and_the_convergence_count_has_its_own_column():
    from lvmlib.report.index import finding_and_convergence
    count = "5 of 6 trained runs converged (flat ...); 1 stopped at the epoch or step cap ..."
    answer = "No configuration beats the residual ridge on VAL (best gain -0.004 [-0.005, -0.003])."
    assert finding_and_convergence({"tldr": [count, answer], "convergence": count}) == (answer, count)
    # reports written before metrics.json had "convergence": the count is recognised in the TL;DR
    assert finding_and_convergence({"tldr": [count, answer]}) == (answer, count)
    assert finding_and_convergence({"tldr": ["The bank holds 3,748 concepts."]}) == ("The bank holds 3,748 concepts.", None)
