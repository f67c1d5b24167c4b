"""`data.augment`: some words of some training paragraphs replaced by vocabulary words; validation untouched."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dpm_cli.data import load_data
from dpm_cli.data.augment import replace_words, vocabulary_words
from dpm_cli.errors import ConfigError
from dpm_cli.recipe import load_recipe

from cli_helpers import run_cli
from hf_helpers import WORDS, tokenizer

ROOT = Path(__file__).resolve().parents[1]

TEXTS = [f"the value of pruning number {i} is that it removes whole channels of a trained network" for i in range(40)]


def test_vocabulary_words_are_whole_words_only(tmp_path):
    words = vocabulary_words(tokenizer(tmp_path / "tok"))
    assert words == sorted(w for w in set(WORDS) if len(w) > 1)  # no [PAD], no single letters, no ##pieces


@pytest.mark.parametrize("kind", ["byte-level BPE", "SentencePiece"])
def test_vocabulary_words_of_tokenizers_that_mark_word_starts(kind):
    """GPT-2/RoBERTa ('Ġword') and Llama/T5 ('▁word') mark a word's first piece; their unmarked alphabetic
    pieces continue a word ('ing'), and were taken for whole words, so augmentation spliced in fragments."""
    pytest.importorskip("tokenizers")
    from tokenizers import ByteLevelBPETokenizer, SentencePieceBPETokenizer

    trainer = ByteLevelBPETokenizer() if kind == "byte-level BPE" else SentencePieceBPETokenizer()
    corpus = [" ".join(WORDS)] * 20 + ["pruning pruned prunes removing removed"] * 20
    trainer.train_from_iterator(corpus, vocab_size=600, min_frequency=1, show_progress=False)

    class Wrapped:  # what dpm calls: a transformers tokenizer's get_vocab()
        get_vocab = trainer.get_vocab

    words = vocabulary_words(Wrapped())
    assert "pruning" in words and "removed" in words
    pieces = {w for w in trainer.get_vocab() if w.isascii() and w.isalpha() and len(w) > 1}  # unmarked
    starts = {w[1:] for w in trainer.get_vocab() if w[:1] in ("\u0120", "\u2581")}
    assert set(words) <= starts and set(words) != pieces


def test_replace_words_changes_exactly_the_share_and_keeps_word_counts():
    out = replace_words(TEXTS, ["zebra"], rate=1.0, share=0.25, seed=3)
    changed = [i for i, (a, b) in enumerate(zip(TEXTS, out)) if a != b]
    assert len(changed) == 10 and all(set(out[i].split()) == {"zebra"} for i in changed)
    assert [len(t.split()) for t in out] == [len(t.split()) for t in TEXTS]
    assert out == replace_words(TEXTS, ["zebra"], rate=1.0, share=0.25, seed=3)  # seeded
    assert out != replace_words(TEXTS, ["zebra"], rate=1.0, share=0.25, seed=4)
    half = replace_words(TEXTS, ["zebra"], rate=0.5, share=1.0, seed=0)
    replaced = sum(w == "zebra" for t in half for w in t.split()) / sum(len(t.split()) for t in TEXTS)
    assert 0.4 < replaced < 0.6
    assert replace_words(TEXTS, ["zebra"], rate=0.0, share=1.0, seed=0) == TEXTS


def test_text_data_augments_training_paragraphs_and_never_validation(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    tok = tokenizer(tmp_path / "tok")
    kw = {"tokenizer": tok, "seq_len": 24, "val_fraction": 0.25, "split_seed": 0}
    plain = load_data("text", path=str(path), **kw)
    noisy = load_data("text", path=str(path), augment=(0.5, 0.5), **kw)
    val = lambda b: torch.stack([b.val[i]["input_ids"] for i in range(len(b.val))])  # noqa: E731
    train = lambda b: torch.stack([b.train[i]["input_ids"] for i in range(len(b.train))])  # noqa: E731
    assert torch.equal(val(plain), val(noisy))
    differs = (train(plain) != train(noisy)).any(dim=1)
    assert int(differs.sum()) == 15  # half of the 30 training paragraphs (each has ~16 words at rate 0.5)
    assert "50% of the training paragraphs with 50% of words replaced" in noisy.description


def test_recipe_refuses_augmentation_of_data_that_is_not_text():
    with pytest.raises(ConfigError, match="data.augment.replace_words: replaces words of text data"):
        load_recipe(ROOT / "recipes" / "mnist-demo.yaml", ["data.augment.replace_words=0.3"])


@pytest.mark.parametrize("override, says", [
    ("data.augment.replace_words=abc", "expected a number"),
    ("data.augment.replace_words=[1]", "expected a number"),
    ("data.augment.replace_words=2", "out of range [0, 1]"),
    ("data.augment.share=-1", "out of range [0, 1]"),
])
def test_bad_augment_values_fail_validation_in_one_line(override, says, capsys):
    code, out, err = run_cli(["validate", ROOT / "recipes" / "minilm-distill.yaml", override], capsys)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err + out
