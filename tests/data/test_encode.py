"""Encoder variants: fp32 unchanged, fast variants deterministic, faithful to fp32, in input order."""
import numpy as np
import pytest

from lvmlib import cli
from lvmlib.data import BankError, BuildConfig, build_bank, chunk_article, ChunkerConfig, load_bank
from lvmlib.data import build as build_module
from lvmlib.data.encode import VARIANTS, Encoder, EncoderError
from lvmlib.errors import InputError
from tests.conftest import tiny_articles, write_corpus
from tests.data.test_cli import FakeEncoder

FAST = [v for v in VARIANTS if v != "fp32"]


@pytest.fixture(scope="session")
def texts():
    """~100 concepts chunked as the build does, from short to long, plus a few odd ones."""
    arts = tiny_articles(9)
    concepts = [c for a in arts for c in chunk_article(a.get("paragraphs"), ChunkerConfig())[0]]
    extra = ["Yes.", "1 2 3 4 5 6 7 8 9 10", "Ünïcödé, ñ and 中文 text (with brackets) and a URL: https://example.org/x?y=1",
             " ".join(concepts[:12])]                                     # longer than the model's 256 tokens
    return concepts + extra


@pytest.fixture(scope="session")
def fast_encoders(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LVM_CACHE", str(tmp_path_factory.mktemp("encoder-cache")))
        yield {v: Encoder(variant=v) for v in FAST}


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(EncoderError, match=r"'fp8'.*fp32, bf16, int8") as e:
        Encoder(variant="fp8")
    assert isinstance(e.value, InputError)
    with pytest.raises(BankError, match="encoder_variant.*'fp8'"):
        BuildConfig(encoder_variant="fp8")
    with pytest.raises(EncoderError, match="CPU only"):
        Encoder(variant="int8", device="cuda")


def test_fp32_is_the_sentence_transformers_path(encoder, texts):
    assert encoder.settings()["variant"] == "fp32"
    direct = encoder.model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    assert np.array_equal(encoder.encode(texts), direct)


@pytest.mark.parametrize("variant", FAST)
def test_fast_variant_is_deterministic_faithful_and_in_order(fast_encoders, encoder, texts, variant):
    enc = fast_encoders[variant]
    v = enc.encode(texts)
    assert v.dtype == np.float32 and v.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert np.array_equal(v, enc.encode(texts))                           # bit-identical on a second run
    cos = (v * encoder.encode(texts)).sum(1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())
    # length sorting inside encode(): each row is its own text's vector, whatever the input order
    alone = np.concatenate([enc.encode([t]) for t in texts[::7]])
    assert ((v[::7] * alone).sum(1) > 0.999).all()           # (padding moves bf16/int8 a little)
    perm = np.random.default_rng(0).permutation(len(texts))
    assert ((enc.encode([texts[i] for i in perm]) * v[perm]).sum(1) > 0.999).all()
    s = enc.settings()
    assert s["variant"] == variant and s["openvino"] and s["model_cache"]


def test_fast_variant_export_is_cached_and_reproducible(fast_encoders, tmp_path, monkeypatch, texts):
    from lvmlib.data.encode import cache_root
    monkeypatch.setenv("LVM_CACHE", str(tmp_path))
    again = Encoder(variant="int8")                                      # converted afresh into an empty cache
    assert again.settings() == fast_encoders["int8"].settings()
    assert np.array_equal(again.encode(texts), fast_encoders["int8"].encode(texts))
    folder = cache_root() / "encoders" / again.settings()["model_cache"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.bin", "model.xml"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]


def test_build_records_the_variant_and_keeps_fp32_plans(tmp_path, monkeypatch, fast_encoders):
    corpus = write_corpus(tmp_path / "c.jsonl", tiny_articles(6))
    cfg = BuildConfig(corpus=str(corpus), max_articles=None, shard_size=32, encoder_variant="int8")
    with pytest.raises(BankError, match="int8"):                          # an encoder of another variant
        build_bank(tmp_path / "wrong", cfg, progress=False, encoder=FakeEncoder())
    bank = build_bank(tmp_path / "int8", cfg, progress=False, encoder=fast_encoders["int8"])
    assert bank.manifest["plan"]["encoder"]["variant"] == "int8"
    assert bank.manifest["encoder"]["variant"] == "int8" and "openvino" in bank.manifest["encoder"]
    monkeypatch.setattr(build_module, "Encoder", FakeEncoder)
    assert cli.main(["data", "build", "--corpus", str(corpus), "--out", str(tmp_path / "fp32"),
                     "--encoder-variant", "fp32"]) == 0
    assert load_bank(tmp_path / "fp32").manifest["plan"]["encoder"] == {"name": "all-MiniLM-L6-v2", "batch_size": 32}
    assert cli.main(["data", "build", "--corpus", str(corpus), "--out", str(tmp_path / "bf16"),
                     "--encoder-variant", "bf16"]) == 0
    assert load_bank(tmp_path / "bf16").manifest["plan"]["encoder"]["variant"] == "bf16"
    with pytest.raises(SystemExit):
        cli.main(["data", "build", "--corpus", str(corpus), "--encoder-variant", "fp8"])
