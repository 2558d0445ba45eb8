"""A catalogue of faults a user can make, each run through the real `lvm` command in a subprocess.

For every fault: exit code 2 (bad input, lvmlib.errors), a message on stderr naming the culprit
(the file, key or line), no traceback, and nothing left behind: no file, folder or `.lock` it did
not have before is created (lvmlib.files.undone_on_bad_input takes them back), no file it had is
changed.

The subprocesses run a few at a time (most of their time is importing torch), so the whole
catalogue takes well under a minute on 2 cores. The last test kills a bank build and a training
run with SIGKILL and checks that resuming gives bit-identical results.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from lvmlib.files import LOCK_NAME, folder_lock
from tests.conftest import tiny_articles, write_corpus

REPO = Path(__file__).resolve().parents[2]
ENV = {**{k: v for k, v in os.environ.items() if k not in ("LVM_BANK", "LVM_CORPUS")},
       "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}
TIMEOUT = 90          # per command; each takes 1-6 s alone (most of it importing torch)
PARALLEL = 3
SYNTH = {"n_articles": 24, "length": 12, "dim": 8, "noise": 0.05}
ROOT = os.geteuid() == 0          # root writes into read-only folders: that fault cannot be staged


def lvm(*args, timeout=TIMEOUT, **kw):
    return subprocess.run([sys.executable, "-m", "lvmlib.cli", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout, check=False, **kw)


def run_spec(tmp: Path, **over) -> dict:
    spec = {"seed": 0, "data": {"synthetic": SYNTH}, "model": {"name": "lstm", "options": {"hidden": 8}},
            "train": {"epochs": 1, "batch_size": 16, "device": "cpu"}, "out": str(tmp / "run")}
    spec.update(over)
    return spec


def yaml_file(path: Path, value) -> Path:
    path.write_text(value if isinstance(value, str) else yaml.safe_dump(value))
    return path


def tiny_bank(folder: Path) -> Path:
    from lvmlib.data import save_bank, synthetic_bank
    save_bank(synthetic_bank(**SYNTH)[0], folder, {"kind": "synthetic"})
    return folder


def tiny_checkpoint(path: Path, tmp: Path | None = None) -> Path:
    """An (untrained) checkpoint; with `tmp`, one `lvm eval` accepts: it records a run spec on
    synthetic data and that data's fingerprint, as `lvm train` does."""
    from lvmlib.config import run_spec as validated
    from lvmlib.data import synthetic_bank
    from lvmlib.models import build_model
    from lvmlib.training import save_checkpoint
    record = {}
    if tmp is not None:
        record = {"spec": validated(run_spec(tmp)).to_dict(),
                  "data": {"fingerprint": synthetic_bank(**SYNTH)[0].manifest["fingerprint"]}}
    return save_checkpoint(path, build_model("lstm", dim=8, hidden=8), **record)


@dataclass
class Case:
    args: list                     # after `lvm`
    culprits: list                 # every one must appear in the error line
    hold: list = field(default_factory=list)   # folders whose lock the test process holds meanwhile
    absent: list = field(default_factory=list)  # paths the command must not create (besides the snapshot)


# --------------------------------------------------------------------------- the faults
# Each takes an empty folder and stages its fault there.

def corpus_case(tmp: Path, corpus: Path, *culprits) -> Case:
    return Case(["data", "build", "--corpus", corpus, "--out", tmp / "bank", "--max-articles", 0,
                 "--shard-size", 8], [str(corpus), *culprits])


def corpus_missing(tmp):
    return corpus_case(tmp, tmp / "nope.jsonl")


def corpus_empty(tmp):
    (tmp / "empty.jsonl").write_text("")
    return corpus_case(tmp, tmp / "empty.jsonl", "no concepts")


def corpus_truncated_gz(tmp):
    corpus = write_corpus(tmp / "c.jsonl.gz", tiny_articles(30), gz=True)
    corpus.write_bytes(corpus.read_bytes()[:corpus.stat().st_size * 6 // 10])
    return corpus_case(tmp, corpus, "truncated or corrupt", "--skip-bad")


def corpus_malformed_line(tmp):
    corpus = write_corpus(tmp / "bad.jsonl", tiny_articles(2), extra_lines=["{oops"])
    return corpus_case(tmp, corpus, "bad.jsonl:3", "not valid JSON")


def corpus_paragraphs_not_a_list(tmp):
    wrong = {"id": "7", "title": "T", "paragraphs": "one long string"}
    corpus = write_corpus(tmp / "typed.jsonl", [tiny_articles(1)[0], wrong])
    return corpus_case(tmp, corpus, "typed.jsonl:2", "paragraphs")


def build_case(tmp: Path, params: Path, *culprits) -> Case:
    corpus = write_corpus(tmp / "c.jsonl", tiny_articles(2))
    return Case(["data", "build", "--params", params, "--corpus", corpus, "--out", tmp / "bank"],
                [str(params), *culprits], absent=[tmp / "bank"])


def build_params_missing(tmp):
    return build_case(tmp, tmp / "absent.yaml", "cannot read")


def build_params_malformed(tmp):
    return build_case(tmp, yaml_file(tmp / "build.yaml", "max_articles: [4,\n"), "not valid YAML")


def build_params_unknown_key(tmp):
    return build_case(tmp, yaml_file(tmp / "build.yaml", {"max_artciles": 4}), "max_artciles")


def build_params_wrong_type(tmp):
    return build_case(tmp, yaml_file(tmp / "build.yaml", {"max_articles": "lots"}), "max_articles")


def build_params_not_a_mapping(tmp):
    return build_case(tmp, yaml_file(tmp / "build.yaml", ["corpus", "out"]), "mapping")


def build_params_path_not_a_string(tmp):
    return build_case(tmp, yaml_file(tmp / "build.yaml", {"encoder": ["a", "b"]}), "encoder")


def build_settings_unusable(tmp):
    corpus = write_corpus(tmp / "c.jsonl", tiny_articles(2))
    return Case(["data", "build", "--corpus", corpus, "--out", tmp / "bank", "--shard-size", 0], ["--shard-size"],
                absent=[tmp / "bank"])


def train_case(tmp: Path, params: Path, *culprits) -> Case:
    return Case(["train", "--params", params, "--quiet"], [str(params), *culprits], absent=[tmp / "run"])


def train_params_missing(tmp):
    return train_case(tmp, tmp / "absent.yaml", "cannot read")


def train_params_malformed(tmp):
    return train_case(tmp, yaml_file(tmp / "run.yaml", "model: {name: lstm\nseed: 0\n"), "not valid YAML")


def train_params_unknown_key(tmp):
    return train_case(tmp, yaml_file(tmp / "run.yaml", run_spec(tmp, pos_scale=0.03)), "params.pos_scale")


def train_params_wrong_type(tmp):
    spec = run_spec(tmp, train={"epochs": "3", "device": "cpu"})
    return train_case(tmp, yaml_file(tmp / "run.yaml", spec), "params.train.epochs")


def train_params_no_model(tmp):
    spec = run_spec(tmp)
    del spec["model"]
    return train_case(tmp, yaml_file(tmp / "run.yaml", spec), "params.model")


def train_params_unknown_model_option(tmp):
    spec = run_spec(tmp, model={"name": "lstm", "options": {"hiden": 8}})
    return train_case(tmp, yaml_file(tmp / "run.yaml", spec), "params.model", "hiden")


def train_device_unknown(tmp):
    spec = run_spec(tmp, train={"epochs": 1, "device": "gpu0"})
    return Case(["train", "--params", yaml_file(tmp / "run.yaml", spec), "--quiet"],
                ["params.train.device", "gpu0"], absent=[tmp / "run"])


def train_device_absent(tmp):
    spec = run_spec(tmp, train={"epochs": 1, "device": "cuda:99"})
    return Case(["train", "--params", yaml_file(tmp / "run.yaml", spec), "--quiet"],
                ["params.train.device", "cuda:99"], absent=[tmp / "run"])


def train_bank_missing(tmp):
    spec = run_spec(tmp, data={"bank": str(tmp / "no-bank")})
    case = train_case(tmp, yaml_file(tmp / "run.yaml", spec), str(tmp / "no-bank"))
    case.culprits.remove(str(tmp / "run.yaml"))      # the bank is the culprit, not the params file
    return case


def card_case(tmp: Path, *culprits) -> Case:
    return Case(["data", "card", tmp / "bank"], [str(tmp / "bank"), *culprits])


def bank_without_vectors(tmp):
    (tiny_bank(tmp / "bank") / "vectors.npy").unlink()
    return card_case(tmp, "vectors.npy")


def bank_truncated_vectors(tmp):
    vectors = tiny_bank(tmp / "bank") / "vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:vectors.stat().st_size // 2])
    return card_case(tmp, "vectors.npy")


def bank_manifest_not_json(tmp):
    (tiny_bank(tmp / "bank") / "manifest.json").write_text('{"format": "lvm-bank/1", ')
    return card_case(tmp, "manifest.json", "not valid JSON")


def train_on_a_truncated_bank(tmp):
    vectors = tiny_bank(tmp / "bank") / "vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:vectors.stat().st_size // 2])
    spec = run_spec(tmp, data={"bank": str(tmp / "bank")})
    return Case(["train", "--params", yaml_file(tmp / "run.yaml", spec), "--quiet"],
                [str(tmp / "bank"), "vectors.npy", "unreadable"], absent=[tmp / "run"])


def eval_case(tmp: Path, checkpoint: Path, *culprits) -> Case:
    return Case(["eval", "--checkpoint", checkpoint, "--json", tmp / "eval.json"], [str(checkpoint), *culprits])


def checkpoint_missing(tmp):
    return eval_case(tmp, tmp / "absent.pt")


def checkpoint_truncated(tmp):
    ckpt = tiny_checkpoint(tmp / "best.pt")
    ckpt.write_bytes(ckpt.read_bytes()[:ckpt.stat().st_size // 2])
    return eval_case(tmp, ckpt, "truncated or corrupted")


def checkpoint_random_bytes(tmp):
    (tmp / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    return eval_case(tmp, tmp / "noise.pt")


def eval_json_under_a_file(tmp):
    ckpt = tiny_checkpoint(tmp / "best.pt", tmp)
    (tmp / "a-file").write_text("not a folder\n")
    return Case(["eval", "--checkpoint", ckpt, "--max-rows", 20, "--json", tmp / "a-file" / "eval.json"],
                [str(tmp / "a-file" / "eval.json")])


def report_notebook_missing(tmp):
    return Case(["report", tmp / "absent.ipynb", "--outputs", tmp / "outputs"], [str(tmp / "absent.ipynb")],
                absent=[tmp / "outputs"])


def report_unknown_parameter(tmp):
    # refused while reading the parameters: no kernel starts, no run folder is made
    params = yaml_file(tmp / "nb.yaml", {"n_pairs": 100, "n_pears": 3})
    return Case(["report", REPO / "notebooks" / "00_dataset.ipynb", "--params", params, "--outputs", tmp / "outputs"],
                [str(params), "n_pears", "00_dataset"], absent=[tmp / "outputs"])


def build_folder_in_use(tmp):
    corpus = write_corpus(tmp / "c.jsonl", tiny_articles(2))
    return Case(["data", "build", "--corpus", corpus, "--out", tmp / "bank"],
                [str(tmp / "bank"), f"pid {os.getpid()}", "in use"], hold=[tmp / "bank"])


def train_folder_in_use(tmp):
    params = yaml_file(tmp / "run.yaml", run_spec(tmp))
    return Case(["train", "--params", params, "--quiet"], [str(tmp / "run"), f"pid {os.getpid()}", "in use"],
                hold=[tmp / "run"])


def build_out_under_a_file(tmp):
    corpus = write_corpus(tmp / "c.jsonl", tiny_articles(2))
    (tmp / "a-file").write_text("not a folder\n")
    return Case(["data", "build", "--corpus", corpus, "--out", tmp / "a-file" / "bank"],
                [str(tmp / "a-file" / "bank"), "cannot create or write"])


def train_out_under_a_file(tmp):
    (tmp / "a-file").write_text("not a folder\n")
    params = yaml_file(tmp / "run.yaml", run_spec(tmp, out=str(tmp / "a-file" / "run")))
    return Case(["train", "--params", params, "--quiet"], [str(tmp / "a-file" / "run"), "params.out"])


def build_out_read_only(tmp):
    corpus = write_corpus(tmp / "c.jsonl", tiny_articles(2))
    (tmp / "bank").mkdir()
    (tmp / "bank").chmod(0o555)
    return Case(["data", "build", "--corpus", corpus, "--out", tmp / "bank"], [str(tmp / "bank"), "cannot create or write"])


def force_refuses_a_folder_that_is_not_a_bank(tmp):
    corpus = write_corpus(tmp / "c.jsonl", tiny_articles(2))
    (tmp / "bank").mkdir()
    (tmp / "bank" / "manifest.json").write_text('{"format": "something else"}')
    return Case(["data", "build", "--corpus", corpus, "--out", tmp / "bank", "--force"],
                [str(tmp / "bank"), "refuses to delete"])


FAULTS = {f.__name__: f for f in [
    corpus_missing, corpus_empty, corpus_truncated_gz, corpus_malformed_line, corpus_paragraphs_not_a_list,
    build_params_missing, build_params_malformed, build_params_unknown_key, build_params_wrong_type,
    build_params_not_a_mapping, build_params_path_not_a_string, build_settings_unusable,
    train_params_missing, train_params_malformed, train_params_unknown_key, train_params_wrong_type,
    train_params_no_model, train_params_unknown_model_option, train_device_unknown, train_device_absent,
    train_bank_missing, train_on_a_truncated_bank,
    bank_without_vectors, bank_truncated_vectors, bank_manifest_not_json,
    checkpoint_missing, checkpoint_truncated, checkpoint_random_bytes, eval_json_under_a_file,
    report_notebook_missing, report_unknown_parameter,
    build_folder_in_use, train_folder_in_use, build_out_under_a_file, train_out_under_a_file, build_out_read_only,
    force_refuses_a_folder_that_is_not_a_bank]}
NEEDS_NON_ROOT = {"build_out_read_only"}
# --------------------------------------------------------------------------- running them

def snapshot(folder: Path) -> dict:
    """Every path under `folder` -> its content hash (a file's; lock files and folders: their kind), so a
    failed command that leaves a new folder or lock behind changes it."""
    return {p.relative_to(folder): "folder" if p.is_dir() else "lock" if p.name == LOCK_NAME
            else hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))}


@dataclass
class Outcome:
    case: Case
    tmp: Path
    before: dict
    proc: subprocess.CompletedProcess
    seconds: float


def _selected(request) -> list[str]:
    """The faults this session runs (so `-k one_fault` runs only that subprocess)."""
    names = [item.callspec.params["fault"] for item in request.session.items
             if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
             and "fault" in item.callspec.params]
    return [n for n in dict.fromkeys(names) if not (ROOT and n in NEEDS_NON_ROOT)]


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome]:
    staged = {}
    for name in _selected(request):
        tmp = tmp_path_factory.mktemp(name)
        staged[name] = (FAULTS[name](tmp), tmp)

    def run(name):
        case, tmp, before = staged[name]
        t0 = time.perf_counter()
        proc = lvm(*case.args)
        return name, Outcome(case, tmp, before, proc, time.perf_counter() - t0)

    locks = [folder_lock(folder, "test_faults holds it") for case, _ in staged.values() for folder in case.hold]
    for lock in locks:
        lock.__enter__()
    staged = {name: (case, tmp, snapshot(tmp)) for name, (case, tmp) in staged.items()}   # the held locks included
    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            done = dict(pool.map(run, staged))
    finally:
        for lock in locks:
            lock.__exit__(None, None, None)
        for _, tmp, _ in staged.values():
            for p in [tmp, *tmp.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o755)      # so pytest can clean read-only folders up
    return done


def error_message(o: Outcome) -> str:
    """`lvm CMD: error: ...` to the end of stderr."""
    lines = o.proc.stderr.rstrip("\n").splitlines()
    prefix = f"lvm {o.case.args[0]}: error: "
    starts = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert starts, o.proc.stderr[-2000:]
    return "\n".join(lines[starts[-1]:])


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_a_clean_input_error(fault, outcomes):
    if ROOT and fault in NEEDS_NON_ROOT:
        pytest.skip("root can write into a read-only folder")
    o = outcomes[fault]
    err = o.proc.stderr
    assert "Traceback" not in err, err
    assert o.proc.returncode == 2, (o.proc.returncode, err[-2000:])
    message = error_message(o)
    for culprit in o.case.culprits:
        assert culprit in message, (culprit, message)
    assert "\n" not in message, message
    # nothing half-written and nothing left behind: every file as it was, no new file, folder or lock
    assert not [p for p in o.tmp.rglob("*.tmp")], list(o.tmp.rglob("*.tmp"))
    assert snapshot(o.tmp) == o.before
    for path in o.case.absent:
        assert not path.exists(), path


def test_report_parameter_fault_fails_before_any_kernel_starts(outcomes):
    if "report_unknown_parameter" not in outcomes:
        pytest.skip("not selected")
    # the run folder is made before the kernel starts: none was; and far quicker than a kernel start
    assert not (outcomes["report_unknown_parameter"].tmp / "outputs").exists()
    assert outcomes["report_unknown_parameter"].seconds < 20


# --------------------------------------------------------------------------- kill -9 and resume

def _kill_when(proc: subprocess.Popen, appeared, limit: float = 120) -> None:
    """SIGKILL `proc` as soon as appeared() is true; fail if it ends first."""
    deadline = time.monotonic() + limit
    while not appeared():
        assert proc.poll() is None, f"ended before it could be killed: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "nothing appeared in time"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _popen(*args):
    return subprocess.Popen([sys.executable, "-m", "lvmlib.cli", *map(str, args)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkilled_build_and_training_resume_bit_identical(tmp_path):
    # a bank build with the real encoder, killed once its first shard is on disk
    corpus = write_corpus(tmp_path / "c.jsonl", tiny_articles())
    build = ["data", "build", "--corpus", corpus, "--max-articles", 0, "--shard-size", 4, "--encoder-variant", "fp32"]
    killed = tmp_path / "killed-bank"
    proc = _popen(*build, "--out", killed)
    _kill_when(proc, lambda: any((killed / ".build" / "shards").glob("*.npy")))
    assert not (killed / "manifest.json").exists()
    for out in (killed, tmp_path / "straight-bank"):       # resume; the uninterrupted build
        done = lvm(*build, "--out", out, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed_without_encoding" not in json.loads((killed / "manifest.json").read_text())["encoder"]
    for name in ("vectors.npy", "concepts.npz", "texts.jsonl", "articles.jsonl"):
        assert (killed / name).read_bytes() == (tmp_path / "straight-bank" / name).read_bytes(), name
    assert not list(killed.rglob("*.tmp")) and not (killed / ".build").exists()

    # a training run, killed once its first last.pt is on disk, then --resume
    spec = run_spec(tmp_path, data={"synthetic": {"n_articles": 160, "length": 24, "dim": 16, "noise": 0.05}},
                    model={"name": "lstm", "options": {"hidden": 24}},
                    train={"epochs": 6, "batch_size": 16, "lr": 3.0e-3, "device": "cpu", "patience_steps": 0})
    runs = {}
    for name in ("killed", "straight"):
        runs[name] = yaml_file(tmp_path / f"{name}.yaml", {**spec, "out": str(tmp_path / name)})
    proc = _popen("train", "--params", runs["killed"], "--quiet")
    _kill_when(proc, lambda: (tmp_path / "killed" / "last.pt").exists())
    assert not (tmp_path / "killed" / "history.json").exists()
    for args in (["--params", runs["killed"], "--resume"], ["--params", runs["straight"]]):
        done = lvm("train", *args, "--quiet", timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    import torch

    from lvmlib.training import load_checkpoint

    def untimed(run):
        return [{k: v for k, v in h.items() if k != "seconds"}
                for h in json.loads((tmp_path / run / "history.json").read_text())]
    assert len(untimed("killed")) == 6 and untimed("killed") == untimed("straight")
    for name in ("last.pt", "best.pt"):
        a, _ = load_checkpoint(tmp_path / "killed" / name)
        b, _ = load_checkpoint(tmp_path / "straight" / name)
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb), ka
    assert not list((tmp_path / "killed").glob("*.tmp"))
