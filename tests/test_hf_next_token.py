"""`dpm check`'s accuracy and loss gates on a language model, with the text it was pruned on.

Finding: a release gate on a pruned decoder's perplexity was refused: "--max-accuracy-drop, --min-accuracy
and --max-loss-increase need labels, but validation part of text t.txt ... has none: use --min-cosine".
Plain text labels a language model by itself (each position's next token), which is what perplexity is.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import exit_code, run_cli  # noqa: E402
from hf_helpers import text_file  # noqa: E402
from test_hf_llama import RECIPE, llama_folder  # noqa: E402

from dpm_cli.data.next_token import next_token_labels  # noqa: E402
from dpm_cli.data.words import IGNORE  # noqa: E402


def test_next_token_labels_skip_padding_on_either_side_and_the_last_position():
    ids = torch.tensor([[5, 6, 7, 0, 0], [0, 0, 8, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1]])
    x = IGNORE
    assert next_token_labels(ids, mask).tolist() == [[6, 7, x, x, x], [x, x, 9, 10, x]]
    assert next_token_labels(ids[:1]).tolist() == [[6, 7, 0, 0, x]]  # no mask: every position is real


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    folder = llama_folder(tmp / "llama", tied=True)
    recipe = tmp / "r.yaml"
    recipe.write_text(RECIPE.format(folder=folder, data=text_file(tmp / "t.txt", 24), run=tmp / "run",
                                    formats="module"))
    assert exit_code(["prune", "-r", recipe, "-q"]) == 0
    return {"folder": folder, "recipe": recipe, "pruned": tmp / "run" / "model-hf", "held_out": text_file(tmp / "h.txt", 9)}


def reference_loss(folder, texts_file) -> float:
    """transformers' own causal-LM loss (labels = the input ids, pads IGNORE; it shifts them itself), on
    one batch of every text, as dpm check tokenises them."""
    from dpm_cli.hf import load_hf

    loaded = load_hf(folder, "AutoModelForCausalLM")
    texts = [line for line in texts_file.read_text().splitlines() if line.strip()]
    enc = loaded.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE)
    with torch.no_grad():
        return float(loaded.model.eval()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                         labels=labels).loss)


def test_loss_gates_score_a_language_model_on_its_next_tokens(pruned, capsys):
    code, out, err = run_cli(["check", pruned["pruned"], "--baseline", pruned["folder"], "--data", pruned["held_out"],
                              "--max-loss-increase", "1.0", "--max-accuracy-drop", "50", "--json"], capsys)
    assert code == 0, err
    evaluation = json.loads(out)["evaluation"]
    assert evaluation["labeled"] is True and "labelled with their next tokens" in evaluation["data"]
    assert evaluation["baseline"]["loss"] == pytest.approx(reference_loss(pruned["folder"], pruned["held_out"]), rel=1e-5)
    assert evaluation["model"]["loss"] == pytest.approx(reference_loss(pruned["pruned"], pruned["held_out"]), rel=1e-5)
    assert evaluation["loss_increase"] == pytest.approx(evaluation["model"]["loss"] - evaluation["baseline"]["loss"])
    assert 0 <= evaluation["model"]["top1"] <= 100


def test_the_recipes_own_text_scores_it_too_and_a_failed_gate_exits_1(pruned, capsys):
    code, out, err = run_cli(["check", pruned["pruned"], "-r", pruned["recipe"], "--baseline", pruned["folder"],
                              "--max-loss-increase", "0", "--min-accuracy", "99.9", "--json"], capsys)
    assert code == 1 and "min-accuracy" in err
    assert json.loads(out)["evaluation"]["data"].startswith("validation part of text t.txt")


def test_an_encoder_on_unlabelled_text_still_needs_labels_for_those_gates(tmp_path, capsys):
    from hf_helpers import bert_folder

    folder = bert_folder(tmp_path / "bert")
    code, _, err = run_cli(["check", folder, "--baseline", folder, "--data", text_file(tmp_path / "t.txt", 6),
                            "--max-loss-increase", "0.1"], capsys)
    assert code == 2 and "need labels" in err


def test_a_missing_model_is_named_before_the_data_is_read(pruned, tmp_path, capsys):
    """It was "text data (text) is tokenised by a model folder's tokenizer, and neither ... is a folder
    with one": the data was resolved first, from folders that were not there."""
    code, _, err = run_cli(["check", tmp_path / "gone-hf", "--baseline", pruned["folder"], "--data", pruned["held_out"],
                            "--min-cosine", "0.5"], capsys)
    assert code == 2 and f"{tmp_path / 'gone-hf'}: no such checkpoint file or model folder" in err


def test_prune_trains_and_scores_a_language_model_on_its_next_tokens(tmp_path, capsys):
    """`objective.kind: cross_entropy` on a decoder with plain text was refused ("needs labels but the data
    has none; use objective.kind: distill"): it is language-model fine-tuning. Distilled runs reported only
    the distillation loss (0 before pruning, by definition); both now report next-token top-1 and
    cross-entropy before and after, which `dpm check` then measures the same way."""
    folder = llama_folder(tmp_path / "llama", tied=True)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(folder=folder, data=text_file(tmp_path / "t.txt", 24), run=tmp_path / "run",
                                    formats="module"))
    for objective in ("{kind: cross_entropy}", "{kind: distill, targets: [logits]}"):
        code, out, err = run_cli(["prune", "-r", recipe, f"objective={objective}", "--json", "-q", "--force"], capsys)
        assert code == 0, err
        summary = json.loads(out)
        assert summary["metric"] == "top1" and summary["ce_before"] > 0 and summary["ce_after"] > 0
        assert summary["perplexity_after"] == pytest.approx(math.exp(summary["ce_after"]))
        assert summary["perplexity_before"] == pytest.approx(math.exp(summary["ce_before"]))
    code, out, err = run_cli(["prune", "-r", recipe, "--force"], capsys)
    assert code == 0 and "val perplexity" in out + err, err  # a row of the before/after table
    code, out, err = run_cli(["check", tmp_path / "run" / "model-hf", "-r", recipe, "--baseline", folder,
                              "--max-loss-increase", "10", "--json"], capsys)
    assert code == 0, err
    evaluation = json.loads(out)["evaluation"]
    assert evaluation["model"]["loss"] == pytest.approx(summary["ce_after"], rel=1e-4)  # the same split, the same loss
    assert evaluation["baseline"]["loss"] == pytest.approx(summary["ce_before"], rel=1e-4)


def test_labels_per_text_given_to_check_a_language_model_are_replaced_by_its_next_tokens(pruned, tmp_path, capsys):
    labelled = text_file(tmp_path / "l.jsonl", 9, labelled=True)  # a classification set as a decoder's text
    code, out, err = run_cli(["check", pruned["pruned"], "--baseline", pruned["folder"], "--data", labelled,
                              "--max-loss-increase", "10", "--json"], capsys)
    assert code == 0, err
    evaluation = json.loads(out)["evaluation"]
    assert evaluation["data"].endswith("labelled with their next tokens (loss: mean cross-entropy per token; "
                                       "perplexity = exp(loss)) in place of its labels")
