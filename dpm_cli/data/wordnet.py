"""General English that ships with dpm: glosses of Princeton WordNet 3.0 (`data.source: wordnet`, and
a third of `data.source: english`).

Everything else a machine holds offline is documentation (pydoc topics, READMEs), and a sentence
encoder pruned and distilled on documentation alone keeps its embeddings on documentation but not on
other English: on all-MiniLM-L6-v2 with half its FFN removed and 600 steps of distillation, pydoc and
READMEs gave a cosine of 0.83 to the original on news paragraphs, and with WordNet's glosses as a third
of the text 0.91 (docs/BENCHMARKS.md, "Judged on news"). A gloss is a synset's definition and its first usage example: every
sense of the language's words, in short sentences. The 6,000 paragraphs of four glosses each were
drawn once by scripts/build_wordnet_glosses.py; WordNet's licence notice is corpora/WORDNET-LICENSE.
"""
from __future__ import annotations

import gzip
import zlib
from functools import lru_cache
from importlib import resources

from ..errors import DpmError

CORPUS = "wordnet-glosses.txt.gz"


@lru_cache(maxsize=1)
def _paragraphs() -> tuple[str, ...]:
    corpus = resources.files("dpm_cli.data").joinpath("corpora", CORPUS)
    try:
        text = gzip.decompress(corpus.read_bytes()).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:  # missing, cut short or corrupt
        # Not the user's input but dpm's own install (a copy cut short, a packaging mistake): exit 1.
        raise DpmError(f"dpm's WordNet corpus {corpus} is missing or damaged ({type(err).__name__}: {err}); "
                       "reinstall dpm (pip install --force-reinstall --no-deps dpm-cli)") from err
    return tuple(line for line in text.splitlines() if line)


def wordnet_paragraphs(limit: int | None = None) -> list[str]:
    """The shipped paragraphs of WordNet glosses, in their fixed order (the first `limit` of them)."""
    return list(_paragraphs()[:limit])


def english_paragraphs() -> list[str]:
    """`data.source: english`: local-docs (pydoc topics and the installed distributions' READMEs) and
    WordNet glosses, half as many as those (a third of the whole), as many as ship at most."""
    from .local_docs import local_docs_paragraphs

    docs = local_docs_paragraphs()
    return list(dict.fromkeys(docs + wordnet_paragraphs(len(docs) // 2)))
