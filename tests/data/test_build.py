import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lvmlib.data import BankError, BuildConfig, build_bank, load_bank, sequences
from lvmlib.data.store import atomic_write

SHARD = 16


def cfg_for(corpus, **kw):
    return BuildConfig(corpus=str(corpus), max_articles=None, shard_size=SHARD, **kw)


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
    build_bank(sys.argv[1], BuildConfig(corpus=sys.argv[2], max_articles=None, shard_size=%d), progress=False)
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


@pytest.mark.corpus
def test_real_corpus_bank(tmp_path, shared_corpus, encoder):
    bank = build_bank(tmp_path / "real", BuildConfig(corpus=str(shared_corpus), max_articles=4, shard_size=256),
                      progress=False, encoder=encoder)
    assert bank.articles[0]["title"] == "Anarchism" and len(bank) > 100
    train = sequences(bank, "train")
    rows = train.index[:, None] + np.arange(-5, 1)
    assert (bank.article[rows] == train.article[:, None]).all()
    # real text: consecutive concepts are more alike than concepts of different articles
    same = np.einsum("nd,nd->n", bank.vectors[:-1], bank.vectors[1:])[np.diff(bank.article) == 0].mean()
    assert same > 0.3
