"""`data.source: wordnet` (WordNet 3.0's glosses, shipped with dpm) and `english` (local-docs plus half as
many WordNet paragraphs): general English for calibration where the machine holds only documentation."""
from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import pytest

from dpm_cli.data import load_data
from dpm_cli.data.local_docs import local_docs_paragraphs
from dpm_cli.data.wordnet import english_paragraphs, wordnet_paragraphs
from dpm_cli.errors import DpmError
from dpm_cli.recipe import load_recipe

from hf_helpers import tokenizer


def test_the_shipped_glosses_are_6000_paragraphs_of_plain_english_with_wordnets_licence_beside_them():
    paragraphs = wordnet_paragraphs()
    assert len(paragraphs) == len(set(paragraphs)) == 6000
    assert paragraphs[0].startswith("Of or relating to the somatosenses. A formal proclamation issued by the pope")
    assert all(p.isascii() and 4 <= p.count(". ") + 1 and len(p) > 60 for p in paragraphs)
    assert wordnet_paragraphs(3) == paragraphs[:3]
    notice = resources.files("dpm_cli.data").joinpath("corpora", "WORDNET-LICENSE").read_text()
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in notice  # the licence asks for it on every copy
    raw = resources.files("dpm_cli.data").joinpath("corpora", "wordnet-glosses.txt.gz").read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0: scripts/build_wordnet_glosses.py rebuilds the same bytes
    assert gzip.decompress(raw).decode().splitlines()[5999] == paragraphs[-1]


def test_english_is_local_docs_then_half_as_many_wordnet_paragraphs():
    docs, english = local_docs_paragraphs(), english_paragraphs()
    assert english[:len(docs)] == docs
    assert english[len(docs):] == wordnet_paragraphs(len(docs) // 2)  # WordNet is a third of the whole
    assert english == english_paragraphs()


def test_load_data_and_recipes_take_both_sources(tmp_path):
    tok = tokenizer(tmp_path / "tok")
    for source, name in (("wordnet", "WordNet glosses"), ("english", "local documentation and WordNet glosses")):
        bundle = load_data(source, tokenizer=tok, seq_len=16, val_fraction=0.1, split_seed=0, num_samples=40)
        assert name in bundle.description and "40 train" in bundle.description
        assert bundle.train[0]["input_ids"].shape == (16,)
    shipped = Path(__file__).resolve().parents[1] / "recipes" / "minilm-distill.yaml"
    assert load_recipe(shipped, ["data.source=wordnet"]).data.source == "wordnet"


@pytest.mark.parametrize("damage", ["cut short", "not gzip", "missing"])
def test_a_damaged_install_of_the_corpus_is_one_line_that_says_reinstall(tmp_path, monkeypatch, damage):
    """A copy of dpm whose shipped corpus was cut short raised gzip's own EOFError from deep in the loader."""
    import types

    import dpm_cli.data.wordnet as wordnet

    good = resources.files("dpm_cli.data").joinpath("corpora", wordnet.CORPUS).read_bytes()
    (tmp_path / "corpora").mkdir()
    if damage != "missing":
        (tmp_path / "corpora" / wordnet.CORPUS).write_bytes(good[: len(good) // 2] if damage == "cut short"
                                                            else b"not a gzip file\n")
    monkeypatch.setattr(wordnet, "resources", types.SimpleNamespace(files=lambda _package: tmp_path))
    wordnet._paragraphs.cache_clear()
    try:
        with pytest.raises(DpmError, match=r"WordNet corpus .* is missing or damaged .*reinstall dpm") as err:
            wordnet_paragraphs(10)
    finally:
        wordnet._paragraphs.cache_clear()
    assert err.value.exit_code == 1 and "\n" not in str(err.value)
