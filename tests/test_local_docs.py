"""`data.source: local-docs`: pydoc's topics plus the prose of the installed distributions' descriptions."""
from __future__ import annotations

from dpm_cli.data import load_data
from dpm_cli.data.local_docs import distribution_descriptions, local_docs_paragraphs, prose_paragraphs
from dpm_cli.data.text import pydoc_paragraphs

from hf_helpers import tokenizer


def test_prose_paragraphs_leave_out_licences_tables_and_short_lines():
    text = ("A sentence encoder maps every paragraph of text to a vector of fixed size for search.\n\n"
            "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.\n\n"
            "| col | col | col | col | col | col | col | col | col | col | col | col | col |\n\n"
            "Too short.\n\n"
            "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING.\n\n"
            "It runs   offline:\nthe weights ship inside the wheel, and nothing is downloaded at run time.")
    assert prose_paragraphs(text) == [
        "A sentence encoder maps every paragraph of text to a vector of fixed size for search.",
        "It runs offline: the weights ship inside the wheel, and nothing is downloaded at run time."]


def test_local_docs_are_pydoc_plus_the_installed_descriptions_in_a_fixed_order():
    described = distribution_descriptions()
    assert len(described) > 100  # torch, typer, rich ... describe themselves at length
    assert described == distribution_descriptions()
    assert not any("licen" in p.lower() or "warrant" in p.lower() for p in described)
    everything, pydoc = local_docs_paragraphs(), list(dict.fromkeys(pydoc_paragraphs()))
    assert everything[:len(pydoc)] == pydoc  # pydoc first, then what the distributions add
    assert set(described) <= set(everything) and len(everything) == len(set(everything)) > len(pydoc)


def test_load_data_reads_local_docs_with_the_models_tokenizer(tmp_path):
    tok = tokenizer(tmp_path / "tok")
    bundle = load_data("local-docs", tokenizer=tok, seq_len=16, val_fraction=0.1, split_seed=0, num_samples=64)
    assert "local documentation" in bundle.description and "64 train" in bundle.description
    item = bundle.train[0]
    assert item["input_ids"].shape == (16,) and int(item["attention_mask"].sum()) > 1  # unlabeled: inputs only
