import pytest

from lvmlib.data.chunk import ChunkerConfig, chunk_article, chunk_paragraph, split_sentences
from tests.conftest import tiny_articles

CFG = ChunkerConfig(target_words=60, min_words=10, max_words=400)


def words(s):
    return len(s.split())


def test_sentences_are_split():
    assert split_sentences("One sentence here. Another one there! A third?") == \
        ["One sentence here.", "Another one there!", "A third?"]


def test_chunking_is_deterministic():
    arts = tiny_articles()
    first = [chunk_article(a["paragraphs"], CFG) for a in arts]
    second = [chunk_article(a["paragraphs"], CFG) for a in arts]
    assert first == second


def test_concepts_respect_bounds_and_keep_all_words():
    para = " ".join(f"Sentence number {i} has exactly seven words." for i in range(40))  # 280 words
    concepts, dropped = chunk_paragraph(para, CFG)
    assert dropped == 0
    assert all(CFG.min_words <= words(c) <= CFG.max_words for c in concepts)
    assert " ".join(concepts) == " ".join(para.split())           # nothing lost or reordered
    # merging aims at the target: every concept is within one sentence of it
    assert all(abs(words(c) - 60) <= 7 for c in concepts[:-1])


def test_long_sentence_is_cut_at_max_words():
    cfg = ChunkerConfig(target_words=20, min_words=5, max_words=30)
    para = " ".join(["word"] * 95) + "."
    concepts, _ = chunk_paragraph(para, cfg)
    assert [words(c) for c in concepts] == [30, 30, 30, 5]


def test_short_tail_joins_previous_concept_and_short_paragraph_is_counted():
    cfg = ChunkerConfig(target_words=10, min_words=4, max_words=40)
    concepts, dropped = chunk_paragraph("One two three four five six seven eight nine ten. Tail here.", cfg)
    assert concepts == ["One two three four five six seven eight nine ten. Tail here."]
    concepts, dropped = chunk_paragraph("Too short.", cfg)
    assert concepts == [] and dropped == 2


def test_never_across_paragraphs():
    paras = ["Alpha beta gamma delta epsilon zeta eta theta iota kappa.",
             "Lambda mu nu xi omicron pi rho sigma tau upsilon."]
    concepts, _ = chunk_article(paras, ChunkerConfig(target_words=60, min_words=5, max_words=400))
    assert concepts == paras


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="min_words"):
        ChunkerConfig(target_words=5, min_words=10, max_words=400)


@pytest.mark.corpus
def test_real_corpus_chunks_within_bounds(shared_corpus):
    from lvmlib.data.corpus import CorpusReader
    lengths = []
    for art in CorpusReader(shared_corpus, max_articles=30):
        concepts, _ = chunk_article(art.paragraphs, CFG)
        lengths += [words(c) for c in concepts]
    assert min(lengths) >= CFG.min_words and max(lengths) <= CFG.max_words
    assert 35 <= sum(lengths) / len(lengths) <= 75        # ~60-word concepts, as in the original
