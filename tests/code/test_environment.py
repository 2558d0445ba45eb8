"""The set-up promises: pip and conda pins agree, and CI runs the README's test command."""
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def pins_from_requirements():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return sorted(l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#"))


def pins_from_environment_yml():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d][0]["pip"]
    return sorted(pip)


def test_conda_and_pip_pins_agree():
    assert pins_from_requirements() == pins_from_environment_yml()


def test_every_dependency_is_pinned_and_torch_is_the_cpu_wheel():
    pins = pins_from_requirements()
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.+]+", p) for p in pins), pins
    assert "torch==2.13.0" in pins      # unpinned torch pulls a multi-GB CUDA build


def test_pyproject_names_match_pins():
    text = (REPO / "pyproject.toml").read_text()
    names = re.findall(r'"([a-z0-9\-]+)"', text.split("dependencies = [")[1].split("]")[0])
    pinned = {p.split("==")[0].lower() for p in pins_from_requirements()}
    assert set(names) <= pinned


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert "make test" in commands and "make all" in commands
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


def test_kernels_make_setup_installs_set_passive_omp_wait_and_talk_over_ipc(tmp_path):
    import json

    from lvmlib.report import ensure_kernel
    assert "ensure_kernel(k, prefix='$(VENV)')) for k in ('lvm-lab', 'python3')" in (REPO / "Makefile").read_text()
    for name in ("lvm-lab", "python3"):
        spec = json.loads((ensure_kernel(name, prefix=tmp_path) / "kernel.json").read_text())
        assert spec["env"]["OMP_WAIT_POLICY"] == "PASSIVE", spec
        assert spec["metadata"]["kernel_provisioner"] == {"provisioner_name": "lvm-ipc-provisioner"}, spec


def test_example_train_params_are_valid():
    from lvmlib.config import read_run_spec
    spec = read_run_spec(REPO / "params" / "train" / "example.yaml")
    assert spec.model.name == "lstm" and spec.train.epochs == 30


def test_every_notebook_has_quick_and_full_params_that_match_its_parameters():
    import json
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        source = "".join(next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))["source"])
        names = set(re.findall(r"^([A-Za-z_]\w*)\s*=", source, flags=re.M))
        for profile in ("quick", "full"):
            path = REPO / "params" / nb.stem / f"{profile}.yaml"
            keys = set(yaml.safe_load(path.read_text()))
            assert keys <= names, f"{path}: {sorted(keys - names)} are not parameters of {nb.name}"
