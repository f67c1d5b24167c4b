"""Text pairs and single-score heads: a cross-encoder (reranker) reads a query and a passage as one
pair, and outputs one relevance score (num_labels 1). Text data read one text per line only, and the
default distillation, a KL between softmaxes, is 0 for a single output whatever the student does, so
such a model was pruned with no training signal at all."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import WORDS, no_warning_load, tokenizer, write_recipe  # noqa: E402

from dpm_cli.data.text import read_text, token_dataset  # noqa: E402
from dpm_cli.errors import InputError  # noqa: E402
from dpm_cli.training.objective import Objective  # noqa: E402

T = transformers


def cross_encoder(path):
    tok = tokenizer(path)
    torch.manual_seed(0)
    cfg = T.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=64, num_labels=1)
    T.BertForSequenceClassification(cfg).eval().save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path, tok


def pairs_file(path, n=32):
    rows = []
    for i in range(n):
        query = " ".join(WORDS[(i * 3 + k) % len(WORDS)] for k in range(3 + i % 3))
        passage = " ".join(WORDS[(i * 5 + k) % len(WORDS)] for k in range(6 + i % 7))
        rows.append(json.dumps({"query": query, "passage": passage}))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_pairs_are_read_and_tokenised_together(tmp_path):
    _, tok = cross_encoder(tmp_path / "ce")
    texts, labels = read_text(pairs_file(tmp_path / "p.jsonl", 4), text_field="query", pair_field="passage")
    assert labels is None and all(isinstance(t, tuple) and len(t) == 2 for t in texts)
    data = token_dataset(texts, None, tok, 24)
    first = data[0]
    want = tok(texts[0][0], texts[0][1], padding="max_length", truncation=True, max_length=24, return_tensors="pt")
    assert torch.equal(first["input_ids"], want["input_ids"][0])
    assert int(first["token_type_ids"].max()) == 1  # the passage is the second segment
    with pytest.raises(InputError, match=r"no field 'answer' \(the record has 'query', 'passage'.*\); set data.pair_field"):
        read_text(tmp_path / "p.jsonl", text_field="query", pair_field="answer")
    plain = tmp_path / "plain.txt"
    plain.write_text("one line\nanother line\n")
    with pytest.raises(InputError, match="data.pair_field 'passage' reads JSON lines"):
        read_text(plain, pair_field="passage")


def test_a_single_output_is_distilled_by_squared_error_not_a_kl_that_is_always_zero(tmp_path):
    path, tok = cross_encoder(tmp_path / "ce")
    teacher = T.AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    objective = Objective("distill", teacher=teacher, labeled=False)
    x = dict(tok(["a query"], ["a passage to score"], return_tensors="pt"))
    with torch.no_grad():
        same = objective(teacher(**x), None, x)
        student = teacher(**x)
        student.logits += 0.5
        moved = objective(student, None, x)
    assert float(same) == 0.0 and float(moved) == pytest.approx(0.25, rel=1e-5)


def test_a_cross_encoder_is_pruned_on_query_passage_pairs_and_saved(tmp_path, capsys):
    path, tok = cross_encoder(tmp_path / "ce")
    recipe = write_recipe(tmp_path, path, pairs_file(tmp_path / "pairs.jsonl"),
                          task="AutoModelForSequenceClassification", objective="{kind: distill}")
    recipe.write_text(recipe.read_text().replace("  source: text\n",
                                                 "  source: text\n  text_field: query\n  pair_field: passage\n"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5 and summary["metric"] == "loss" and summary["before"] == 0.0
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModelForSequenceClassification)
    assert reloaded.config.num_labels == 1 and reloaded.config.intermediate_size < 64
    code, out, err = run_cli(["check", tmp_path / "run" / "model-hf", "-r", recipe, "--baseline", path,
                              "--min-cosine", "0", "--json"], capsys)
    assert code == 0, err
    # one score per pair: compared as the vector of scores over the held-out pairs (a per-sample cosine of
    # one number is its sign, 1.0 whenever the signs agree)
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    original = T.AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    from dpm_cli.data import load_data

    val = load_data("text", path=tmp_path / "pairs.jsonl", tokenizer=tok, seq_len=24, val_fraction=0.2,
                    text_field="query", pair_field="passage").val
    x = {k: torch.stack([val[i][k] for i in range(len(val))]) for k in val[0]}
    with torch.no_grad():
        a, b = compact(**x).logits[:, 0], original(**x).logits[:, 0]
    want = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    assert json.loads(out)["evaluation"]["cosine"] == pytest.approx(want, abs=1e-5) and want < 0.9999


def scored_pairs(path, n=32):
    """Pairs with a similarity score (STS-B style, 0 to 5 with a fraction)."""
    rows = [json.loads(line) for line in pairs_file(path.with_suffix(".raw"), n).read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "score": round((i * 0.37) % 5, 2)}) + "\n" for i, r in enumerate(rows)))
    return path


def test_a_cross_encoder_is_fine_tuned_on_scores_by_squared_error(tmp_path, capsys):
    """Labels with a fraction (STS similarity) were refused ("label 0.37 is not a class index"); a model
    with one output is fitted to them by squared error, as transformers does for num_labels 1, and the
    check's loss gate compares mean squared errors."""
    path, tok = cross_encoder(tmp_path / "ce")
    data = scored_pairs(tmp_path / "sts.jsonl")
    recipe = write_recipe(tmp_path, path, data, task="AutoModelForSequenceClassification",
                          objective="{kind: cross_entropy}")
    recipe.write_text(recipe.read_text().replace(
        "  source: text\n", "  source: text\n  text_field: query\n  pair_field: passage\n  label_field: score\n"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metric"] == "loss" and summary["after"] > 0 and summary["ce_after"] is None
    code, out, err = run_cli(["check", tmp_path / "run" / "model-hf", "-r", recipe, "--baseline", path,
                              "--max-loss-increase", "100", "--json"], capsys)
    assert code == 0, err
    evaluation = json.loads(out)["evaluation"]
    assert evaluation["model"]["top1"] is None and "scores" in evaluation["data"]
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    from dpm_cli.data import load_data

    val = load_data("text", path=data, tokenizer=tok, seq_len=24, val_fraction=0.2, text_field="query",
                    pair_field="passage", label_field="score").val
    x = {k: torch.stack([val[i][0][k] for i in range(len(val))]) for k in val[0][0]}
    y = torch.stack([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        want = float(((compact(**x).logits[:, 0] - y) ** 2).mean())
    assert evaluation["model"]["loss"] == pytest.approx(want, rel=1e-4)


def test_scores_for_a_model_with_classes_are_one_line(tmp_path, capsys):
    from hf_helpers import bert_folder

    folder = bert_folder(tmp_path / "cls", "AutoModelForSequenceClassification", labels=3)
    recipe = write_recipe(tmp_path, folder, scored_pairs(tmp_path / "sts.jsonl"),
                          task="AutoModelForSequenceClassification", objective="{kind: cross_entropy}")
    recipe.write_text(recipe.read_text().replace(
        "  source: text\n", "  source: text\n  text_field: query\n  pair_field: passage\n  label_field: score\n"))
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and "the data's labels are scores (numbers with a fraction) but the model outputs 3 logits" in err


def test_a_multi_label_head_is_distilled_on_its_logits_not_a_softmax_that_ignores_a_shift(tmp_path):
    """problem_type multi_label_classification decides each class by its own sigmoid: adding the same
    amount to every logit flips decisions, yet a softmax KL is 0 for it. Such logits are matched directly."""
    tok = tokenizer(tmp_path / "ml")
    cfg = T.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=64, num_labels=4, problem_type="multi_label_classification")
    torch.manual_seed(0)
    teacher = T.BertForSequenceClassification(cfg).eval()
    objective = Objective("distill", teacher=teacher, labeled=False)
    x = dict(tok(["the data of this module"], return_tensors="pt"))
    with torch.no_grad():
        student = teacher(**x)
        student.logits += 2.0
        assert float(objective(student, None, x)) == pytest.approx(4.0, rel=1e-5)
    single = Objective("distill", teacher=T.BertForSequenceClassification(
        T.BertConfig(**{**cfg.to_dict(), "problem_type": "single_label_classification"})).eval(), labeled=False)
    with torch.no_grad():
        shifted = single.teacher(**x)
        shifted.logits += 2.0
        assert float(single(shifted, None, x)) == pytest.approx(0.0, abs=1e-6)  # a softmax cannot see it


TOPICS = ["python", "data", "error", "network"]


def test_a_multi_label_classifier_is_fine_tuned_on_lists_of_labels(tmp_path, capsys):
    """Several classes per example ({"text": ..., "labels": ["data", "error"]}) were refused ("label [...]
    is not a class index"). They become multi-hot rows, fitted by binary cross-entropy as transformers does
    for multi_label_classification, and accuracy counts each class decision."""
    from hf_helpers import text_file

    tok = tokenizer(tmp_path / "ml")
    cfg = T.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=64, problem_type="multi_label_classification",
                       id2label=dict(enumerate(TOPICS)))
    torch.manual_seed(0)
    T.BertForSequenceClassification(cfg).eval().save_pretrained(str(tmp_path / "ml"))
    tok.save_pretrained(str(tmp_path / "ml"))
    lines = text_file(tmp_path / "t.txt", 40).read_text().splitlines()
    data = tmp_path / "topics.jsonl"
    data.write_text("".join(json.dumps({"text": t, "labels": [w for w in TOPICS if w in t.split()] or ["data"]}) + "\n"
                            for t in lines))
    texts, labels = read_text(data, label_field="labels", label_names={w: i for i, w in enumerate(TOPICS)})
    assert all(isinstance(x, tuple) for x in labels)
    recipe = write_recipe(tmp_path, tmp_path / "ml", data, task="AutoModelForSequenceClassification",
                          objective="{kind: cross_entropy}")
    recipe.write_text(recipe.read_text().replace("  source: text\n", "  source: text\n  label_field: labels\n"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    assert json.loads(out)["metric"] == "top1"
    code, out, err = run_cli(["check", tmp_path / "run" / "model-hf", "-r", recipe, "--baseline", tmp_path / "ml",
                              "--max-accuracy-drop", "100", "--json"], capsys)
    assert code == 0, err
    evaluation = json.loads(out)["evaluation"]
    assert "4 classes, several per example" in evaluation["data"]
    from dpm_cli.data import load_data

    val = load_data("text", path=data, tokenizer=tok, seq_len=24, val_fraction=0.2, label_field="labels",
                    label_names={w: i for i, w in enumerate(TOPICS)}).val
    x = {k: torch.stack([val[i][0][k] for i in range(len(val))]) for k in val[0][0]}
    y = torch.stack([val[i][1] for i in range(len(val))])
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    with torch.no_grad():
        decisions = compact(**x).logits > 0
    want = 100.0 * float((decisions == (y > 0.5)).float().mean())
    assert y.shape == (len(val), 4) and evaluation["model"]["top1"] == pytest.approx(want, abs=1e-4)
