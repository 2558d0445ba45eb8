import pytest

from lvmlib import cli
from lvmlib.data import load_bank
from tests.conftest import tiny_articles, write_corpus


def test_data_build_takes_params_and_flags_win(tmp_path, capsys, monkeypatch):
    corpus = write_corpus(tmp_path / "c.jsonl", tiny_articles(6))
    params = tmp_path / "build.yaml"
    params.write_text(f"corpus: {corpus}\nmax_articles: 4\nsplit_seed: 3\nshard-size: 64\n")
    out = tmp_path / "bank"
    assert cli.main(["data", "build", "--params", str(params), "--out", str(out), "--max-articles", "5"]) == 0
    bank = load_bank(out)
    assert len(bank.articles) == 5                                  # the flag beat the file's 4
    assert bank.manifest["split"]["seed"] == 3 and bank.manifest["plan"]["shard_size"] == 64
    assert "5 articles" in capsys.readouterr().out                  # the dataset card is printed


def test_data_build_params_unknown_key_names_file_and_key(tmp_path, capsys):
    params = tmp_path / "build.yaml"
    params.write_text("max_artciles: 4\n")
    assert cli.main(["data", "build", "--params", str(params), "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "build.yaml" in err and "max_artciles" in err


def test_bad_corpus_line_is_a_clean_cli_error(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "bad.jsonl", tiny_articles(2), extra_lines=["{oops"])
    assert cli.main(["data", "build", "--corpus", str(corpus), "--out", str(tmp_path / "b")]) == 1
    assert "bad.jsonl:3" in capsys.readouterr().err
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_data_build_params_values_are_type_checked(tmp_path, capsys):
    params = tmp_path / "build.yaml"
    params.write_text("max_articles: lots\n")
    assert cli.main(["data", "build", "--params", str(params), "--out", str(tmp_path / "b")]) == 1
    assert "max_articles" in capsys.readouterr().err


def test_force_deletes_only_a_bank(tmp_path, capsys):
    folder = tmp_path / "not-a-bank"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"format": "something else"}')
    assert cli.main(["data", "build", "--out", str(folder), "--force", "--corpus", str(tmp_path / "x")]) == 1
    assert "refuses to delete" in capsys.readouterr().err and (folder / "manifest.json").exists()
