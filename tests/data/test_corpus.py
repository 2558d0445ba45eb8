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
