import pytest

from lvmlib.data.corpus import CorpusError, CorpusReader, default_corpus
from tests.conftest import tiny_articles, write_corpus


@pytest.mark.parametrize("gz", [False, True])
def test_reads_plain_and_gzip(tmp_path, gz):
    path = write_corpus(tmp_path / ("c.jsonl.gz" if gz else "c.jsonl"), tiny_articles(3), gz=gz)
    arts = list(CorpusReader(path))
    assert [a.title for a in arts] == ["Volcano 0", "Violin 1", "Bread 2"]
    assert list(CorpusReader(path, max_articles=2))[-1].id == "101"


@pytest.mark.parametrize("line, message", [
    ('{"id": "1", "title": "x", "paragraphs": ["a"]', "not valid JSON"),
    ('["not", "an", "object"]', "expected a JSON object"),
    ('{"id": "1", "paragraphs": ["a"]}', "missing key 'title'"),
    ('{"id": "1", "title": "x", "paragraphs": "a"}', "'paragraphs' must be a list of strings"),
])
def test_bad_line_names_file_and_line(tmp_path, line, message):
    path = write_corpus(tmp_path / "bad.jsonl", tiny_articles(2), extra_lines=[line])
    with pytest.raises(CorpusError, match=rf"bad\.jsonl:3: {message}"):
        list(CorpusReader(path))


def test_skip_bad_counts_lines(tmp_path):
    path = write_corpus(tmp_path / "bad.jsonl", tiny_articles(2), extra_lines=["{oops", "[]"])
    reader = CorpusReader(path, skip_bad=True)
    assert len(list(reader)) == 2
    assert reader.bad_lines == [3, 4]


def test_missing_corpus(tmp_path):
    with pytest.raises(CorpusError, match="corpus not found"):
        CorpusReader(tmp_path / "nope.jsonl")


def test_env_var_overrides_default(monkeypatch, tmp_path):
    monkeypatch.setenv("LVM_CORPUS", str(tmp_path / "mine.jsonl"))
    assert default_corpus() == tmp_path / "mine.jsonl"


def _truncated_gzip(tmp_path, n=40, frac=0.5):
    path = write_corpus(tmp_path / "t.jsonl.gz", tiny_articles(n), gz=True)
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * frac)])      # a partial download
    return path


def test_truncated_gzip_names_file_and_articles_read(tmp_path):
    path = _truncated_gzip(tmp_path)
    skipping = CorpusReader(path, skip_bad=True)
    arts = list(skipping)
    k = len(arts)
    assert 0 < k < 40 and skipping.truncated and skipping.articles_read == k
    assert [a.title for a in arts] == [a["title"] for a in tiny_articles(k)]   # the articles before the fault
    with pytest.raises(CorpusError, match=rf"t\.jsonl\.gz: truncated or corrupt after line {k} .* {k} article"
                                          r"\(s\) were read before the fault.*--skip-bad"):
        list(CorpusReader(path))
    assert len(list(CorpusReader(path, max_articles=k))) == k     # enough read before the fault: no error
    whole = CorpusReader(write_corpus(tmp_path / "w.jsonl.gz", tiny_articles(3), gz=True), skip_bad=True)
    assert len(list(whole)) == 3 and not whole.truncated


def test_corrupt_gzip_and_truncated_plain_file_are_corpus_errors(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b\x07 not a deflate stream")
    with pytest.raises(CorpusError, match=r"bad\.gz: truncated or corrupt at the start \(BadGzipFile"):
        list(CorpusReader(bad))
    plain = write_corpus(tmp_path / "p.jsonl", tiny_articles(2),
                         extra_lines=['{"id": "9", "title": "café", "paragraphs": []}'])
    raw = plain.read_bytes()
    plain.write_bytes(raw[:raw.index("é".encode()) + 1])   # cut inside a UTF-8 character
    with pytest.raises(CorpusError, match=r"p\.jsonl: truncated or corrupt after line 2 \(UnicodeDecodeError"):
        list(CorpusReader(plain))
    plain.write_bytes(raw[:raw.index("é".encode())])       # cut between characters: a malformed last line
    with pytest.raises(CorpusError, match=r"p\.jsonl:3: not valid JSON"):
        list(CorpusReader(plain))
