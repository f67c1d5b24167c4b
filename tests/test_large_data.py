"""Text files as large as users bring them (a 70 MB JSON lines file: 400,000 short texts).

Measured before: `dpm prune` on it held 8 GB (the tokenizer's Python lists of every text at once) and
evaluated all 40,000 validation texts before, during and after training, each time for minutes with
nothing on the log. Texts are now tokenised in chunks, `data.val_samples` evaluates a fixed part, and a
large validation split is said before its first evaluation.
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_helpers import WORDS, tokenizer  # noqa: E402

from dpm_cli.data import text as text_module  # noqa: E402
from dpm_cli.data.text import token_dataset  # noqa: E402


def _texts(n: int) -> list[str]:
    return [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(3 + i % 9)) for i in range(n)]


@pytest.mark.parametrize("kind", ["plain", "pairs", "words"])
def test_texts_tokenised_in_chunks_are_what_one_call_gives(tmp_path, monkeypatch, kind):
    tok = tokenizer(tmp_path / "tok")
    texts = _texts(10)
    labels = None
    if kind == "pairs":
        texts = [(a, b) for a, b in zip(texts, reversed(texts))]
    elif kind == "words":
        texts = [t.split() for t in texts]
        labels = [[(i + j) % 3 for j in range(len(t))] for i, t in enumerate(texts)]
    whole = token_dataset(texts, labels, tok, 12)
    monkeypatch.setattr(text_module, "TOKENISED_AT_ONCE", 3)  # 4 chunks, the last of 1 text
    chunked = token_dataset(texts, labels, tok, 12)
    assert whole.encoded.keys() == chunked.encoded.keys() and len(chunked) == 10
    for key, value in whole.encoded.items():
        assert torch.equal(value, chunked.encoded[key]), key
    assert (whole.labels is None and chunked.labels is None) or torch.equal(whole.labels, chunked.labels)


def test_val_samples_evaluates_a_fixed_balanced_part_of_the_validation_split():
    from dpm_cli.data import load_data

    full = load_data("digits", val_fraction=0.2, split_seed=3)
    capped = load_data("digits", val_fraction=0.2, split_seed=3, val_samples=50)
    again = load_data("digits", val_fraction=0.2, split_seed=3, val_samples=50)
    assert len(full.val) == 359 and len(capped.val) == 50 and len(capped.train) == len(full.train)
    assert "/ 50 val (of 359)" in capped.description
    labels = capped.val.tensors[1]
    assert torch.equal(labels, again.val.tensors[1]) and torch.equal(capped.val.tensors[0], again.val.tensors[0])
    assert torch.bincount(labels, minlength=10).min() >= 4  # every class, in proportion (5 each)
    rows = {tuple(x.flatten().tolist()) for x in full.val.tensors[0]}
    assert all(tuple(x.flatten().tolist()) in rows for x in capped.val.tensors[0])  # a part of the same split
    assert len(load_data("digits", val_samples=5000).val) == 359  # more than there are: all of them
    with pytest.raises(Exception, match="val_samples must be a positive integer"):
        load_data("digits", val_samples=0)


def test_prune_and_check_evaluate_the_same_val_samples(tmp_path, capsys):
    """The val cosine `dpm prune` reports and `dpm check -r` measures on the recipe's data are of the
    same part of the split; token texts stay token texts (a decoder's next-token labels are made of them)."""
    import json

    from cli_helpers import run_cli
    from hf_helpers import bert_folder, text_file, write_recipe

    folder = bert_folder(tmp_path / "enc")
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt", 60))
    code, out, err = run_cli(["prune", "-r", recipe, "data.val_samples=5", "--json", "-q"], capsys)
    assert code == 0, err
    after = json.loads(out)["after"]
    assert not any("validation holds" in n for n in json.loads(out)["notes"])
    code, out, err = run_cli(["check", tmp_path / "run" / "model-hf", "--baseline", folder, "-r", recipe,
                              "data.val_samples=5", "--min-cosine", "0", "--json"], capsys)
    assert code == 0, err
    evaluation = json.loads(out)["evaluation"]
    assert evaluation["samples"] == 5 and "/ 5 val (of 12)" in evaluation["data"]
    assert abs(evaluation["cosine"] - after) < 1e-5


def test_the_note_on_a_large_validation_split_is_in_the_summary(tmp_path, capsys, monkeypatch):
    import json

    from cli_helpers import run_cli
    from hf_helpers import bert_folder, text_file, write_recipe

    from dpm_cli.pipeline import data_size

    monkeypatch.setattr(data_size, "LARGE_VALIDATION", 10)  # 12 held out of 60
    recipe = write_recipe(tmp_path, bert_folder(tmp_path / "enc"), text_file(tmp_path / "t.txt", 60))
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    note = "validation holds 12 samples and every evaluation reads all of them"
    assert any(note in n for n in json.loads(out)["notes"]) and f"note: {note}" in err
    code, out, err = run_cli(["plan", "-r", recipe, "--json"], capsys)  # the dry run says it too
    assert code == 0 and any(note in n for n in json.loads(out)["notes"]), err


def test_a_large_validation_split_and_unread_training_data_are_said_before_the_first_evaluation():
    from types import SimpleNamespace

    from dpm_cli.pipeline.data_size import data_size_notes

    def recipe(val_samples=None, num_samples=None):
        return SimpleNamespace(data=SimpleNamespace(val_samples=val_samples, num_samples=num_samples, batch_size=32))

    big = SimpleNamespace(train=range(360_000), val=range(40_000))
    notes = data_size_notes(recipe(), big, 600)
    assert notes == [
        "validation holds 40,000 samples and every evaluation reads all of them (before training, every "
        "training.eval_every steps, after): set data.val_samples (e.g. 2000) to evaluate a fixed part",
        "training reads at most 19,200 of the 360,000 training samples (600 steps x 32); data.num_samples: 19200 "
        "would prepare only as many"]
    assert data_size_notes(recipe(val_samples=2000, num_samples=19200), big, 600) == []
    assert data_size_notes(recipe(), SimpleNamespace(train=range(3000), val=range(300)), 600) == []


def test_tokenising_a_large_text_file_is_said_before_it_starts(tmp_path, monkeypatch):
    from hf_helpers import text_file

    from dpm_cli.data import load_data

    heard: list[str] = []
    tok = tokenizer(tmp_path / "tok")
    monkeypatch.setattr(text_module, "LARGE_TEXT", 40)
    monkeypatch.setattr(text_module, "token_dataset", lambda *a: heard.append("tokenised") or token_dataset(*a))
    path = text_file(tmp_path / "t.txt", 50)
    load_data("text", path=path, tokenizer=tok, seq_len=12, log=heard.append)
    assert heard[0] == "tokenising 50 texts (up to 12 tokens each)" and heard[1:] == ["tokenised"] * 2
    heard.clear()
    load_data("text", path=path, tokenizer=tok, seq_len=12, num_samples=20, log=heard.append)  # 20 + 10 val
    assert heard == ["tokenised"] * 2


def test_the_evaluation_before_pruning_runs_the_original_once_per_batch():
    """Before pruning the model is its own teacher: its outputs were computed twice per batch."""
    from dpm_cli.training import Objective
    from dpm_cli.training.evaluate import evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    objective = Objective("distill", teacher=model, labeled=False)
    calls = []
    objective.teacher.register_forward_hook(lambda *a: calls.append(1))
    batches = [(torch.randn(5, 4), torch.zeros(5, dtype=torch.long)) for _ in range(3)]
    same = evaluate(model, batches, objective, torch.device("cpu"), is_teacher=True)
    assert calls == [] and same["loss"] == 0.0
    assert evaluate(model, batches, objective, torch.device("cpu")) == same and len(calls) == 3


def test_a_long_check_evaluation_says_how_far_it_is_in_a_ci_log(tmp_path, capsys, monkeypatch):
    """`dpm check --data FILE` evaluates every example; with no terminal (a CI log) it printed nothing
    until the end. Every half minute it now prints a line on stderr (here every batch)."""
    import json

    from cli_helpers import run_cli
    from hf_helpers import bert_folder, text_file

    from dpm_cli.report import progress

    folder = bert_folder(tmp_path / "enc")
    data = text_file(tmp_path / "t.txt", 300)  # two batches of check's 256
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    code, out, err = run_cli(["check", folder, "--baseline", folder, "--data", data, "--min-cosine", "0.9", "--json"],
                             capsys)
    assert code == 0 and json.loads(out)["passed"]  # stdout stays JSON
    lines = [line for line in err.splitlines() if "samples (" in line]
    assert lines and "evaluating model and baseline: 256 of 300 samples (" in lines[0]
    monkeypatch.setattr(progress, "LINE_EVERY_S", 30.0)  # a short evaluation prints none
    code, out, err = run_cli(["check", folder, "--baseline", folder, "--data", data, "--min-cosine", "0.9"], capsys)
    assert code == 0 and "samples (" not in err


@pytest.mark.parametrize("side", ["right", "left"])
def test_batches_lose_the_padding_columns_no_text_needs_on_either_side(tmp_path, side):
    """A tokenizer that pads on the left (Phi-3's, Mistral's) kept every batch at the full model.seq_len:
    only columns after the last real token were dropped. Now the columns every text pads go on both
    sides, and every real token stays, in order, with its mask and labels."""
    from dpm_cli.data.text import collate_tokens

    tok = tokenizer(tmp_path / "tok")
    tok.padding_side = side
    data = token_dataset(["the python module", "a list", "the value of it"], torch.tensor([0, 1, 2]), tok, 16)
    inputs, labels = collate_tokens([data[i] for i in range(3)])
    mask = data.encoded["attention_mask"]
    assert inputs["attention_mask"].shape == (3, int(mask.sum(dim=1).max()))
    assert torch.equal(labels, torch.tensor([0, 1, 2]))
    kept = inputs["attention_mask"].bool()
    for i in range(3):  # every real token is kept, in order
        assert inputs["input_ids"][i][kept[i]].tolist() == data.encoded["input_ids"][i][mask[i].bool()].tolist()
    assert bool(kept[:, 0].any()) and bool(kept[:, -1].any())  # no column that every text pads


def test_check_max_samples_evaluates_a_fixed_balanced_part_of_a_text_file(tmp_path, capsys, monkeypatch):
    """`dpm check --data FILE` evaluated (and first tokenised) every example of the file: minutes for a
    large held-out file in a CI gate. `--max-samples N` chooses N before tokenising, the same N on every
    run, each class in proportion, and the figure is the one those N give."""
    import json

    from cli_helpers import run_cli
    from hf_helpers import bert_folder

    from dpm_cli.report import evaldata

    original, other = bert_folder(tmp_path / "a"), bert_folder(tmp_path / "b", seed=1)
    held = tmp_path / "held.jsonl"
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(_texts(40))]
    held.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenised = []
    real = text_module.token_dataset  # how many texts reach the tokenizer
    monkeypatch.setattr(text_module, "token_dataset", lambda texts, *a: tokenised.append(len(texts)) or real(texts, *a))
    gates = ["--baseline", original, "--data", held, "--min-cosine", "-1", "--json"]
    runs = [json.loads(run_cli(["check", other, *gates, "--max-samples", "10"], capsys)[1]) for _ in range(2)]
    assert tokenised == [10, 10]
    evaluation = runs[0]["evaluation"]
    assert evaluation["samples"] == 10 and "10 of 40 examples, seeded" in evaluation["data"]
    assert runs[1]["evaluation"]["cosine"] == evaluation["cosine"]
    # the same figure as a file that holds exactly the texts it chose
    chosen = [rows[i] for i in evaldata._chosen(40, 10, torch.tensor([r["label"] for r in rows])).tolist()]
    assert sum(r["label"] for r in chosen) == 5  # both classes, in proportion
    part = tmp_path / "part.jsonl"
    part.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    code, out, err = run_cli(["check", other, *gates[:2], "--data", part, *gates[4:]], capsys)
    assert code == 0 and abs(json.loads(out)["evaluation"]["cosine"] - evaluation["cosine"]) < 1e-6, err
    code, out, err = run_cli(["check", other, *gates, "--max-samples", "500"], capsys)  # more than there are
    assert code == 0 and json.loads(out)["evaluation"]["samples"] == 40, err


def test_check_max_samples_caps_every_kind_of_data_and_needs_a_data_gate(tmp_path, capsys):
    import json

    from cli_helpers import run_cli

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.save(net, tmp_path / "m.pt")
    args = ["check", tmp_path / "m.pt", "--input-shape", "1,1,8,8", "--trust-checkpoint", "--json"]
    code, out, err = run_cli([*args, "--data", "digits", "--min-accuracy", "0", "--max-samples", "30"], capsys)
    assert code == 0, err
    evaluation = json.loads(out)["evaluation"]
    assert evaluation["samples"] == 30 and "30 of its 359 samples" in evaluation["data"]
    code, out, err = run_cli([*args, "--max-params", "1G", "--max-samples", "30"], capsys)
    assert code == 2 and "--max-samples sets how many samples are evaluated, but no gate evaluates on data" in err
    code, out, err = run_cli([*args, "--data", "digits", "--min-accuracy", "0", "--max-samples", "0"], capsys)
    assert code == 2 and "Traceback" not in err
