import numpy as np
import pytest

import lvmlib.data
from lvmlib import cli
from lvmlib.data import BankError, load_bank, open_bank, resolve_bank, save_bank, synthetic_bank
from lvmlib.data import build as build_module
from lvmlib.data.encode import DEFAULT_ENCODER
from lvmlib.errors import EXIT_INPUT
from lvmlib.files import folder_lock
from tests.conftest import tiny_articles, write_corpus


class FakeEncoder:
    """Instant unit vectors, a function of the text: a bank build in well under a second."""
    def __init__(self, name=DEFAULT_ENCODER, device=None, batch_size=32, **_):
        self.name, self.batch_size = name, batch_size

    def encode(self, texts):
        v = np.stack([np.random.default_rng(len(t)).standard_normal(8) for t in texts]).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def settings(self):
        return {"name": self.name, "batch_size": self.batch_size, "dim": 8}


def test_data_build_takes_params_and_flags_win(tmp_path, capsys, monkeypatch):
    corpus = write_corpus(tmp_path / "c.jsonl", tiny_articles(6))
    params = tmp_path / "build.yaml"
    params.write_text(f"corpus: {corpus}\nmax_articles: 4\nsplit_seed: 3\nshard-size: 64\n")
    out = tmp_path / "bank"
    assert cli.main(["data", "build", "--params", str(params), "--out", str(out), "--max-articles", "5", "--encoder-variant", "fp32"]) == 0
    bank = load_bank(out)
    assert len(bank.articles) == 5                                  # the flag beat the file's 4
    assert bank.manifest["split"]["seed"] == 3 and bank.manifest["plan"]["shard_size"] == 64
    assert "5 articles" in capsys.readouterr().out                  # the dataset card is printed


def test_data_build_params_unknown_key_names_file_and_key(tmp_path, capsys):
    params = tmp_path / "build.yaml"
    params.write_text("max_artciles: 4\n")
    assert cli.main(["data", "build", "--params", str(params), "--out", str(tmp_path / "b")]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "build.yaml" in err and "max_artciles" in err


def test_bad_corpus_line_is_a_clean_cli_error(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "bad.jsonl", tiny_articles(2), extra_lines=["{oops"])
    assert cli.main(["data", "build", "--corpus", str(corpus), "--out", str(tmp_path / "b")]) == EXIT_INPUT
    assert "bad.jsonl:3" in capsys.readouterr().err
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_data_build_params_values_are_type_checked(tmp_path, capsys):
    params = tmp_path / "build.yaml"
    params.write_text("max_articles: lots\n")
    assert cli.main(["data", "build", "--params", str(params), "--out", str(tmp_path / "b")]) == EXIT_INPUT
    assert "max_articles" in capsys.readouterr().err


@pytest.mark.parametrize("flags, named", [(["--shard-size", "0"], "--shard-size"), (["--batch-size", "0"], "--batch-size"),
                                          (["--max-articles", "-2"], "--max-articles"),
                                          (["--min-words", "100"], "--min-words 100"),
                                          (["--val-fraction", "0.6", "--ood-fraction", "0.5"], "--val-fraction")])
def test_unusable_build_settings_are_refused_before_any_work(tmp_path, capsys, flags, named):
    corpus = write_corpus(tmp_path / "c.jsonl", tiny_articles(2))
    out = tmp_path / "b"
    assert cli.main(["data", "build", "--corpus", str(corpus), "--out", str(out), *flags]) == EXIT_INPUT
    assert named in capsys.readouterr().err and not out.exists()


def test_force_deletes_only_a_bank(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.jsonl", tiny_articles(2))
    folder = tmp_path / "not-a-bank"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"format": "something else"}')
    assert cli.main(["data", "build", "--out", str(folder), "--force", "--corpus", str(corpus)]) == EXIT_INPUT
    assert "refuses to delete" in capsys.readouterr().err and (folder / "manifest.json").exists()


def test_force_replaces_a_bank_under_the_lock(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(build_module, "Encoder", FakeEncoder)
    corpus = write_corpus(tmp_path / "c.jsonl", tiny_articles(4))
    out = tmp_path / "bank"
    build = ["data", "build", "--corpus", str(corpus), "--out", str(out), "--max-articles", "0"]
    assert cli.main(build) == 0
    assert cli.main([*build, "--split-seed", "1"]) == EXIT_INPUT           # other settings, no --force
    assert "other settings" in capsys.readouterr().err
    with folder_lock(out, "someone else's build"):                          # --force waits for no one:
        assert cli.main([*build, "--split-seed", "1", "--force"]) == EXIT_INPUT
        assert "in use" in capsys.readouterr().err
    assert load_bank(out).manifest["split"]["seed"] == 0                     # and deleted nothing
    (out / ".vectors.npy.stale.tmp").write_bytes(b"left by a killed build")
    assert cli.main([*build, "--split-seed", "1", "--force"]) == 0
    assert load_bank(out).manifest["split"]["seed"] == 1
    assert (out / ".lock").exists() and not list(out.glob("*.tmp")) and not (out / ".build").exists()


# ----------------------------------------------------------------------------------------
# The first hour: which bank a notebook uses when its `bank` parameter is None

@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository root with no bank built, $LVM_BANK unset, and the current folder elsewhere."""
    monkeypatch.setattr(lvmlib.data, "repo_root", lambda: tmp_path)
    monkeypatch.delenv("LVM_BANK", raising=False)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    return tmp_path


def built(folder):
    save_bank(synthetic_bank(n_articles=12, length=8, dim=4)[0], folder, {"kind": "synthetic"})
    return folder


def test_resolve_bank_prefers_the_default_bank_then_the_tiny_one(repo):
    with pytest.raises(BankError, match=r"`make bank` .*`make bank-tiny`"):
        resolve_bank()
    built(repo / "data" / "bank-tiny")
    assert resolve_bank() == repo / "data" / "bank-tiny"
    (repo / "data" / "bank-default" / ".build").mkdir(parents=True)   # a default bank still being built
    assert resolve_bank() == repo / "data" / "bank-tiny"
    built(repo / "data" / "bank-default")
    assert resolve_bank() == repo / "data" / "bank-default"
    assert len(open_bank(None)) == 12 * 8


def test_resolve_bank_takes_lvm_bank_and_a_given_name_first(repo, monkeypatch):
    built(repo / "data" / "bank-default")
    built(repo / "data" / "bank-tiny")
    monkeypatch.setenv("LVM_BANK", "data/bank-tiny")                 # relative to the root, as in the Makefile
    assert resolve_bank() == repo / "data" / "bank-tiny"
    assert resolve_bank("data/bank-default") == repo / "data" / "bank-default"
    monkeypatch.setenv("LVM_BANK", str(repo / "nowhere"))
    with pytest.raises(BankError, match=r"\$LVM_BANK=.*nowhere: no bank folder"):
        resolve_bank()


def test_piped_output_has_one_line_per_epoch_or_shard_and_no_bar_frames(tmp_path):
    """Off a terminal (a pipe, CI, a log file): no carriage-return frames, one line per epoch and per shard."""
    import os
    import subprocess
    import sys

    import yaml
    spec = {"seed": 0, "data": {"synthetic": {"n_articles": 24, "length": 12, "dim": 8}},
            "model": {"name": "lstm", "options": {"hidden": 8}},
            "train": {"epochs": 3, "batch_size": 16, "device": "cpu", "patience_steps": 0}, "out": str(tmp_path / "run")}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    train = subprocess.run([sys.executable, "-m", "lvmlib.cli", "train", "--params", str(tmp_path / "spec.yaml")],
                           capture_output=True, text=True, env=env, timeout=120)
    assert train.returncode == 0, train.stderr[-2000:]
    assert "\r" not in train.stderr + train.stdout
    epochs = [line for line in train.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 3 and all("steps/s" in line and "ETA" in line for line in epochs), train.stderr


def test_a_progress_line_has_its_count_rate_and_eta(capsys):
    from lvmlib.progress import Lines
    lines = Lines("encoding", 4, " concepts")
    lines.enabled = True                      # as off a terminal, whatever runs the tests
    lines.update(2)
    err = capsys.readouterr().err
    assert err.startswith("encoding: 2/4 concepts (50 %), ") and " concepts/s, ETA " in err and "\r" not in err
