"""Deterministic, disjoint calibration / evaluation split of a corpus.

The text is cut into paragraphs, paragraphs are grouped into chunks of about
``chunk_chars`` characters, and each chunk goes to calibration or evaluation by a hash of
its own content. The assignment therefore depends only on the chunk's text (not on file
order or Python's hash seed), the two parts never share a chunk, and both parts sample
the whole corpus rather than one end of it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_PARA = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Split:
    calibration: list[str]
    evaluation: list[str]


def paragraphs(text: str) -> tuple[list[str], str]:
    """Units of text and the separator that rejoins them.

    With blank-line paragraphs: paragraphs with their line wraps joined (separator: blank
    line). Texts whose blank lines were stripped (some packaged copies are) can only be
    cut at line ends; their wrapped lines are rejoined with spaces into flowing prose.
    """
    paras = [" ".join(p.split()) for p in _PARA.split(text)]
    paras = [p for p in paras if p]
    if len(paras) > 1 or not paras:
        return paras, "\n\n"
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return [line for line in lines if line], " "


def chunk(paras: list[str], chunk_chars: int, sep: str = "\n\n") -> list[str]:
    chunks: list[str] = []
    cur: list[str] = []
    size = 0
    for p in paras:
        cur.append(p)
        size += len(p)
        if size >= chunk_chars:
            chunks.append(sep.join(cur))
            cur, size = [], 0
    if cur:
        chunks.append(sep.join(cur))
    return chunks


def assign(chunk_text: str, calibration_fraction: float, salt: str) -> bool:
    """True if the chunk belongs to calibration."""
    h = hashlib.sha256((salt + "\0" + chunk_text).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < calibration_fraction


def split_documents(
    documents: list[str], calibration_fraction: float = 0.3, chunk_chars: int = 4000, salt: str = "sparsebench-v1"
) -> Split:
    if not 0.0 < calibration_fraction < 1.0:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    cal: list[str] = []
    ev: list[str] = []
    for doc in documents:
        units, sep = paragraphs(doc)
        for c in chunk(units, chunk_chars, sep):
            (cal if assign(c, calibration_fraction, salt) else ev).append(c)
    return Split(cal, ev)
