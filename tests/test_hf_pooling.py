"""Sentence encoders are distilled and gated on the embedding their sentence-transformers pipeline serves.

Every embedding was the attention-mask aware mean of the last hidden states, whatever the folder's
Pooling module said. BGE, mxbai and Arctic serve the first token (`cls`), decoder embedders the last
(`lasttoken`): `dpm prune` distilled, and `dpm check --min-cosine` gated, a vector their users never
see. The pooling is now read from modules.json and 1_Pooling/config.json, and computed as
sentence-transformers computes it.
"""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import WORDS, bert_folder, text_file, write_recipe  # noqa: E402

from dpm_cli.errors import CheckpointError  # noqa: E402
from dpm_cli.hf.load import load_hf  # noqa: E402
from dpm_cli.pooling import MODES, after_pooling, folder_pooling, folder_projections, pool, pooling_of  # noqa: E402

DISTILL = "{kind: distill, targets: [embedding], loss: cosine}"


def st_folder(folder, pooling, *, legacy: bool = False, seed: int = 0):
    """A tiny BERT folder with sentence-transformers' modules.json and a Pooling module's settings."""
    bert_folder(folder, seed=seed)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    config = ({f"pooling_mode_{k}": k == pooling for k in ("cls_token", "mean_tokens", "max_tokens")}
              if legacy else {"embedding_dimension": 32, "pooling_mode": pooling})
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    return folder


def test_every_mode_pools_as_sentence_transformers_does_on_padded_batches():
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.models import Pooling

    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 8)
    for side in ("right", "left"):
        mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
        mask = mask if side == "right" else mask.flip(1)
        for modes in [(m,) for m in MODES] + [("cls", "mean")]:
            theirs = Pooling(8, pooling_mode=modes[0] if len(modes) == 1 else modes)(
                {"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
            assert torch.allclose(pool(hidden, {"attention_mask": mask}, modes), theirs, atol=1e-6), (side, modes)


def test_the_folders_pooling_is_read_in_both_config_formats(tmp_path):
    assert folder_pooling(st_folder(tmp_path / "new", "cls")) == ("cls",)
    assert folder_pooling(st_folder(tmp_path / "old", "cls_token", legacy=True)) == ("cls",)
    assert folder_pooling(bert_folder(tmp_path / "plain")) is None  # no sentence-transformers pipeline
    odd = st_folder(tmp_path / "odd", "median")
    with pytest.raises(CheckpointError, match="pooling mode 'median' is not one of"):
        folder_pooling(odd)
    dense = st_folder(tmp_path / "labse", "cls")
    modules = json.loads((dense / "modules.json").read_text())
    modules += [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
                {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (dense / "modules.json").write_text(json.dumps(modules))
    # no 2_Dense folder: named in a note with why, and the embedding is compared before it
    assert after_pooling(dense) == ["2_Dense (no readable config.json)"]
    assert any("applies 2_Dense (no readable config.json) to the pooled embedding" in n for n in load_hf(dense).notes)
    loaded = load_hf(st_folder(tmp_path / "bge", "cls"))
    assert loaded.model._dpm_pooling == ("cls",)
    assert any("pooled as the folder's sentence-transformers pipeline pools them (cls" in n for n in loaded.notes)


@pytest.mark.parametrize("kind", ["bge", "labse"])
def test_prune_and_check_measure_the_embedding_the_pipeline_serves(tmp_path, capsys, kind):
    """BGE: the first token; LaBSE: that, through a tanh Dense projection (which dpm compared before)."""
    folder = st_folder(tmp_path / kind, "cls") if kind == "bge" else dense_folder(tmp_path / kind)
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt", 24), objective=DISTILL)
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    pruned = tmp_path / "run" / "model-hf"
    held = text_file(tmp_path / "held.txt", 11)
    code, out, err = run_cli(["check", pruned, "--baseline", folder, "--data", held, "--min-cosine", "0", "--json"],
                             capsys)
    assert code == 0, err
    measured = next(g for g in json.loads(out)["gates"] if g["name"] == "min-cosine")["measured"]
    # what a user of the two folders gets: sentence-transformers' own embeddings of the held-out text
    texts = held.read_text().splitlines()
    original, compact = (sentence_transformers.SentenceTransformer(str(f), device="cpu", local_files_only=True)
                         for f in (folder, pruned))
    assert compact[1].pooling_mode == "cls"  # the pruned folder keeps the pipeline
    a, b = (torch.as_tensor(m.encode(texts, batch_size=64, convert_to_numpy=True)) for m in (original, compact))
    served = float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())
    assert abs(measured - served) < 1e-5, (measured, served)  # a Dense ignored is 5e-5 off


def dense_folder(folder, *, activation=None, in_features: int = 32):
    """A sentence-transformers folder as LaBSE's: CLS pooling, a Dense projection (tanh, saved by
    sentence-transformers itself) and Normalize."""
    try:
        from sentence_transformers.sentence_transformer.modules import Dense
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.models import Dense
    st_folder(folder, "cls")
    torch.manual_seed(3)
    (folder / "2_Dense").mkdir()
    Dense(in_features, 16, activation_function=activation or torch.nn.Tanh()).save(str(folder / "2_Dense"))
    modules = json.loads((folder / "modules.json").read_text())
    modules += [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
                {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def test_a_dense_projection_after_the_pooling_is_applied_as_sentence_transformers_applies_it(tmp_path):
    folder = dense_folder(tmp_path / "labse")
    loaded = load_hf(folder)
    pooling = pooling_of(loaded.model)
    assert [p.path for p in pooling.projections] == ["2_Dense"] and after_pooling(folder) == []
    assert any("pass through 2_Dense as sentence-transformers serves them" in n for n in loaded.notes)
    texts = ["a short sentence", "another, somewhat longer sentence of words"]
    served = sentence_transformers.SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(
        texts, convert_to_tensor=True, normalize_embeddings=False)
    x = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        mine = pool(loaded.model(**x).last_hidden_state, x, pooling)
    assert mine.shape == (2, 16)  # the projection's width, not the hidden width
    assert torch.allclose(torch.nn.functional.normalize(mine, dim=-1), served, atol=1e-5)


def test_a_dense_dpm_cannot_apply_without_running_code_is_named_and_compared_before(tmp_path):
    """A pickled Dense (pytorch_model.bin only), an activation that is no torch.nn class (what
    sentence-transformers runs only with trust_remote_code) and weights unlike the config: not applied."""
    pickled = dense_folder(tmp_path / "pickled")
    weights = pickled / "2_Dense" / "model.safetensors"
    torch.save({"linear.weight": torch.zeros(16, 32)}, pickled / "2_Dense" / "pytorch_model.bin")
    weights.unlink()
    assert folder_projections(pickled) == ((), ["2_Dense (no model.safetensors; a pickled Dense is not loaded)"])
    custom = dense_folder(tmp_path / "custom")
    config = json.loads((custom / "2_Dense" / "config.json").read_text())
    (custom / "2_Dense" / "config.json").write_text(json.dumps(dict(config, activation_function="evil.Act")))
    assert folder_projections(custom)[1] == ["2_Dense (activation 'evil.Act' is no torch.nn activation)"]
    (custom / "2_Dense" / "config.json").write_text(json.dumps(dict(config, activation_function=
                                                                    "torch.nn.modules.module.Module")))
    assert folder_projections(custom)[1] == ["2_Dense (activation 'torch.nn.modules.module.Module' is no torch.nn activation)"]
    odd = dense_folder(tmp_path / "odd")
    (odd / "2_Dense" / "config.json").write_text(json.dumps(dict(config, in_features=8)))
    assert folder_projections(odd)[1] == ["2_Dense (linear.weight is not 16 x 8 as config.json says)"]


def test_a_dense_the_pooled_width_does_not_fit_is_one_line(tmp_path):
    folder = dense_folder(tmp_path / "wide", in_features=24)
    loaded = load_hf(folder)
    x = loaded.tokenizer(["a sentence"], return_tensors="pt")
    with torch.no_grad(), pytest.raises(CheckpointError, match="2_Dense takes 24 values but the pooled sentence "
                                                                "embedding has 32"):
        pool(loaded.model(**x).last_hidden_state, x, pooling_of(loaded.model))


def test_check_embeds_text_as_long_as_the_folder_serves_it(tmp_path, capsys):
    """Without a recipe, `dpm check --data` cut every text at 128 tokens; all-MiniLM-L6-v2 embeds 256
    (sentence_bert_config.json's max_seq_length), so the cosine of long texts was measured on a part of
    them. The folder's length is used now, and --seq-len sets another."""
    original, other = st_folder(tmp_path / "a", "mean"), st_folder(tmp_path / "b", "mean", seed=1)
    for f in (original, other):
        (f / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 9, "do_lower_case": False}))
    held = tmp_path / "long.txt"
    held.write_text("".join(" ".join(f"word{(i * 7 + j) % 40}" for j in range(30)) + "\n" for i in range(6)))
    gates = ["--baseline", original, "--data", held, "--min-cosine", "0", "--json"]
    code, out, err = run_cli(["check", other, *gates], capsys)
    assert code == 0, err
    evaluation = json.loads(out)["evaluation"]
    assert "up to 9 tokens" in evaluation["data"]
    texts = held.read_text().splitlines()
    a, b = (sentence_transformers.SentenceTransformer(str(f), device="cpu", local_files_only=True).encode(
        texts, convert_to_tensor=True) for f in (original, other))
    served = float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())
    assert abs(evaluation["cosine"] - served) < 1e-5, (evaluation["cosine"], served)
    code, out, err = run_cli(["check", other, *gates, "--seq-len", "5"], capsys)
    assert code == 0 and "up to 5 tokens" in json.loads(out)["evaluation"]["data"], err
    code, out, err = run_cli(["check", other, "--max-params", "1G", "--seq-len", "5"], capsys)
    assert code == 2 and "--seq-len sets the length of text data, but no gate evaluates on data" in err


def test_text_is_lowercased_where_the_folder_says_do_lower_case_and_its_tokenizer_is_kept(tmp_path, capsys):
    """sentence_bert_config.json's do_lower_case: sentence-transformers lowercases the text before a cased
    tokenizer sees it; dpm tokenised it as written, so `dpm check --min-cosine` (and the distillation)
    measured embeddings of words the served model never reads ([UNK] for 'The')."""
    from transformers import AutoTokenizer, BertTokenizer

    from dpm_cli.hf.load import load_tokenizer

    original, other = st_folder(tmp_path / "a", "mean"), st_folder(tmp_path / "b", "mean", seed=1)
    for f in (original, other):
        BertTokenizer(str(f / "vocab.txt"), do_lower_case=False).save_pretrained(str(f))  # a cased tokenizer
        (f / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16, "do_lower_case": True}))
    held = tmp_path / "cased.txt"
    words = [WORDS[(i * 7 + j) % len(WORDS)] for i in range(6) for j in range(8)]
    cased = [w.upper() if k % 3 == 0 else w.capitalize() if k % 3 == 1 else w for k, w in enumerate(words)]
    held.write_text("".join(" ".join(cased[i * 8:(i + 1) * 8]) + "\n" for i in range(6)))
    code, out, err = run_cli(["check", other, "--baseline", original, "--data", held, "--min-cosine=-1",
                              "--json"], capsys)
    assert code == 0, err
    texts = held.read_text().splitlines()
    a, b = (sentence_transformers.SentenceTransformer(str(f), device="cpu", local_files_only=True).encode(
        texts, convert_to_tensor=True) for f in (original, other))
    served = float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())
    assert abs(json.loads(out)["evaluation"]["cosine"] - served) < 1e-5, (json.loads(out)["evaluation"], served)
    # what dpm saves into a pruned folder is the tokenizer it read: cased, as transformers users load it
    load_tokenizer(original).save_pretrained(str(tmp_path / "saved"))
    ids = [AutoTokenizer.from_pretrained(str(f))("The AND the")["input_ids"] for f in (original, tmp_path / "saved")]
    assert ids[0] == ids[1] and ids[0][1:3] == [1, 1] and ids[0][3] != 1  # [UNK] (id 1) for the cased words


@pytest.mark.parametrize("content", [
    b"import os; os.system('touch PWNED')",              # code, not JSON: never run
    b"\x00\xff\xfe binary",                                # not UTF-8
    b'{"do_lower_case": tru',                              # cut short
    b'["do_lower_case", true]',                            # JSON, but not a mapping
    b'{"do_lower_case": "true", "max_seq_length": "9"}',  # wrong types
    b"[" * 100_000 + b"]" * 100_000,                       # nested past any data
    b'{"do_lower_case": true, "pad": "' + b"x" * (2 << 20) + b'"}',  # past the 1 MiB a settings file needs
])
def test_a_hostile_sentence_bert_config_is_ignored_and_runs_nothing(tmp_path, monkeypatch, content):
    """A folder's sentence_bert_config.json, read for do_lower_case and max_seq_length, is data: anything
    other than a small JSON mapping with the right types is ignored (sentence-transformers' defaults)."""
    from dpm_cli.pooling import served_length, served_lowercase

    (tmp_path / "sentence_bert_config.json").write_bytes(content)
    monkeypatch.chdir(tmp_path)
    assert served_lowercase(tmp_path) is False and served_length(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentence_bert_config.json"]  # nothing written
