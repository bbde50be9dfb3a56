"""Evaluation and calibration text: real prose from registry packages, split deterministically."""

from .corpus import Corpus, CorpusText, resolve_corpus

__all__ = ["Corpus", "CorpusText", "resolve_corpus"]
