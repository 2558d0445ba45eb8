import json
import os
import re
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from lvmlib.data import BankError, BuildConfig, build_bank, dataset_card, format_card, load_bank, sequences
from lvmlib.data import build as build_module
from lvmlib.data.encode import DEFAULT_ENCODER
from lvmlib.data.store import atomic_write
from lvmlib.files import FolderInUse, folder_lock
from tests.conftest import tiny_articles, write_corpus

SHARD = 16


def cfg_for(corpus, **kw):
    return BuildConfig(corpus=str(corpus), max_articles=None, shard_size=SHARD, **{"encoder_variant": "fp32", **kw})


@pytest.fixture
def built(tmp_path, tiny_corpus, encoder):
    return build_bank(tmp_path / "bank", cfg_for(tiny_corpus), progress=False, encoder=encoder)


def test_build_gives_a_valid_bank(built, tiny_corpus):
    bank = load_bank(built.path)
    assert bank.vectors.dtype == np.float32 and bank.dim == 384
    assert np.allclose(np.linalg.norm(bank.vectors, axis=1), 1, atol=1e-4)
    m = bank.manifest
    assert m["corpus"]["path"] == str(tiny_corpus) and len(m["corpus"]["sha256"]) == 64
    assert m["chunker"]["target_words"] == 60 and m["encoder"]["name"] == "all-MiniLM-L6-v2"
    assert m["counts"]["concepts"] == len(bank) and m["split"]["seed"] == 0
    assert {a["split"] for a in bank.articles} == {"train", "val", "ood"}
    assert not (built.path / ".build").exists()
    # text and vectors line up: a concept is nearest to its own encoding
    assert bank.text[0].startswith("A volcano is a rupture")


def test_rebuild_is_up_to_date_and_other_settings_are_refused(built, tiny_corpus, encoder, capsys):
    again = build_bank(built.path, cfg_for(tiny_corpus), progress=False, encoder=encoder)
    assert "up to date" in capsys.readouterr().out
    assert again.manifest["fingerprint"] == built.manifest["fingerprint"]
    with pytest.raises(BankError, match="other settings"):
        build_bank(built.path, cfg_for(tiny_corpus, split_seed=1), progress=False, encoder=encoder)


KILLER = textwrap.dedent("""
    import os, sys
    from lvmlib.data import encode
    from lvmlib.data.build import BuildConfig, build_bank
    real = encode.Encoder.encode
    calls = [0]
    def dies_on_third_shard(self, texts):
        calls[0] += 1
        if calls[0] == 3:
            os._exit(137)          # as abrupt as SIGKILL: no cleanup, no finally blocks
        return real(self, texts)
    encode.Encoder.encode = dies_on_third_shard
    build_bank(sys.argv[1], BuildConfig(corpus=sys.argv[2], max_articles=None, shard_size=%d, encoder_variant=\"fp32\"), progress=False)
""" % SHARD)


def test_killed_then_resumed_build_equals_uninterrupted(tmp_path, tiny_corpus, built, encoder):
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(out), str(tiny_corpus)], capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    shards = sorted((out / ".build" / "shards").glob("*.npy"))
    assert len(shards) == 2 and not (out / "manifest.json").exists()
    with pytest.raises(BankError, match="unfinished build"):
        load_bank(out)
    resumed = build_bank(out, cfg_for(tiny_corpus), progress=False, encoder=encoder)
    assert np.array_equal(resumed.vectors, built.vectors)
    assert resumed.text == built.text and resumed.articles == built.articles
    assert resumed.manifest["fingerprint"] == built.manifest["fingerprint"]


def test_tampered_bank_is_refused(built):
    v = np.load(built.path / "vectors.npy")
    v[[0, 1]] = v[[1, 0]]                       # same shape, norms and dtype; different content
    atomic_write(built.path / "vectors.npy", lambda f: np.save(f, v))
    with pytest.raises(BankError, match="fingerprint"):
        load_bank(built.path)


def test_wrong_shape_in_manifest_is_refused(built):
    m = json.loads((built.path / "manifest.json").read_text())
    m["shape"][1] = 768
    (built.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BankError, match="manifest says"):
        load_bank(built.path)


def test_truncated_vectors_file_is_refused(built):
    raw = (built.path / "vectors.npy").read_bytes()
    (built.path / "vectors.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BankError, match="unreadable"):
        load_bank(built.path)


def test_missing_file_is_refused(built):
    (built.path / "texts.jsonl").unlink()
    with pytest.raises(BankError, match="missing texts.jsonl"):
        load_bank(built.path)


def test_build_into_a_locked_folder_fails_at_once(tmp_path, tiny_corpus):
    out = tmp_path / "bank"
    with folder_lock(out, "another build"):
        with pytest.raises(FolderInUse, match=rf"{out} is in use by pid {os.getpid()} .*stop it"):
            build_bank(out, cfg_for(tiny_corpus), progress=False)
    assert not (out / ".build").exists()


def test_lock_file_does_not_break_load_or_force_removal(built):
    assert (built.path / ".lock").exists()      # kept after the build
    assert len(load_bank(built.path)) == len(built)
    with folder_lock(built.path, "lvm data build --force"):     # as build_bank(force=True) removes it
        build_module.remove_bank(built.path)
    assert [p.name for p in built.path.iterdir()] == [".lock"]


def test_truncated_corpus_with_skip_bad_is_recorded(tmp_path, encoder):
    corpus = write_corpus(tmp_path / "c.jsonl.gz", tiny_articles(20), gz=True)
    raw = corpus.read_bytes()
    corpus.write_bytes(raw[:len(raw) * 6 // 10])
    bank = build_bank(tmp_path / "bank", cfg_for(corpus, skip_bad=True), progress=False, encoder=encoder)
    read = bank.manifest["corpus"]["articles_read"]
    assert bank.manifest["corpus"]["truncated"] is True and 0 < read < 20 and len(bank.articles) == read
    card = dataset_card(bank)
    assert card["corpus_truncated"] == f"{read} articles read"
    assert f"corpus truncated: {read} articles read" in format_card(card)


class FakeEncoder:
    """Instant random unit vectors; `load` seconds to construct, `fail_on` makes that call raise."""
    def __init__(self, name=DEFAULT_ENCODER, device=None, batch_size=32, load=0.0, fail_on=None, **_):
        time.sleep(load)
        self.name, self.batch_size, self.fail_on, self.calls = name, batch_size, fail_on, 0

    def encode(self, texts):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("killed")
        v = np.random.default_rng(sum(map(len, texts))).standard_normal((len(texts), 8)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def settings(self):
        return {"name": self.name, "batch_size": self.batch_size, "dim": 8}


def test_resumed_build_shows_this_runs_rate(tmp_path, tiny_corpus, monkeypatch, capsys):
    out = tmp_path / "bank"
    with pytest.raises(RuntimeError, match="killed"):
        build_bank(out, cfg_for(tiny_corpus), progress=False, encoder=FakeEncoder(fail_on=3))
    load = 2.0
    monkeypatch.setattr(build_module, "Encoder", lambda *a, **kw: FakeEncoder(*a, load=load, **kw))
    bank = build_bank(out, cfg_for(tiny_corpus), progress=True)
    this_run = len(bank) - 2 * SHARD
    rate = float(re.findall(r"([\d.]+) concepts/s", capsys.readouterr().err)[-1])
    # counted from when encoding began: neither the resumed shards nor the model load are in it
    assert rate > 3 * this_run / load


@pytest.mark.corpus
def test_real_corpus_bank(tmp_path, shared_corpus, encoder):
    bank = build_bank(tmp_path / "real", BuildConfig(corpus=str(shared_corpus), max_articles=4, shard_size=256, encoder_variant="fp32"),
                      progress=False, encoder=encoder)
    assert bank.articles[0]["title"] == "Anarchism" and len(bank) > 100
    train = sequences(bank, "train")
    rows = train.index[:, None] + np.arange(-5, 1)
    assert (bank.article[rows] == train.article[:, None]).all()
    # real text: consecutive concepts are more alike than concepts of different articles
    same = np.einsum("nd,nd->n", bank.vectors[:-1], bank.vectors[1:])[np.diff(bank.article) == 0].mean()
    assert same > 0.3
