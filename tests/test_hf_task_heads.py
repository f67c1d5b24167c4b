"""Task heads through `dpm prune` with the default label-free objective (`distill`, targets auto): each is
distilled on what it outputs and saved as a folder its Auto class reloads with the compact model's outputs.
A question-answering head has no `logits`, only start and end logits: `auto` fell back to the embedding
and stopped before training ("the model's output has no hidden states")."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import WORDS, no_warning_load, text_file, tokenizer, write_recipe  # noqa: E402

from dpm_cli.training.objective import Objective  # noqa: E402

T = transformers


def bert_task_folder(path, task: str, labels: int = 3):
    tok = tokenizer(path)
    torch.manual_seed(0)
    cfg = T.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=64, num_labels=labels)
    getattr(T, task).from_config(cfg).eval().save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path, tok


@pytest.mark.parametrize("task, fields", [
    ("AutoModelForQuestionAnswering", ("start_logits", "end_logits")),
    ("AutoModelForTokenClassification", ("logits",)),
    ("AutoModelForMaskedLM", ("logits",)),
])
def test_a_task_head_is_distilled_pruned_and_saved(tmp_path, capsys, task, fields):
    path, tok = bert_task_folder(tmp_path / "m", task, labels=2)
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), task=task, objective="{kind: distill}")
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    assert json.loads(out)["equivalence_error"] <= 1e-5
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", getattr(T, task))
    assert reloaded.config.intermediate_size < 64
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = dict(tok(["the data of this module", "pruning removes whole channels"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        got, want = reloaded(**x), compact(**x)
    for field in fields:
        assert torch.allclose(got[field], want[field], atol=1e-5)


def test_question_answering_distils_the_mean_of_the_start_and_end_kl(tmp_path):
    path, tok = bert_task_folder(tmp_path / "qa", "AutoModelForQuestionAnswering", labels=2)
    teacher = T.AutoModelForQuestionAnswering.from_pretrained(str(path)).eval()
    objective = Objective("distill", teacher=teacher, labeled=False)
    x = dict(tok(["the data of this module"], return_tensors="pt"))
    with torch.no_grad():
        same = objective(teacher(**x), None, x)
        student = teacher(**x)
        shifted = type(student)(start_logits=student.start_logits * 3.0, end_logits=student.end_logits)
        loss = objective(shifted, None, x)
    assert float(same) == pytest.approx(0.0, abs=1e-7)
    t = objective.temperature
    start_kl = torch.nn.functional.kl_div((student.start_logits * 3.0 / t).log_softmax(-1),
                                          (student.start_logits / t).log_softmax(-1), reduction="batchmean",
                                          log_target=True) * t * t
    assert float(loss) == pytest.approx(float(start_kl) / 2, rel=1e-5)  # the end logits match exactly


def test_a_recipe_naming_no_task_keeps_the_head_its_folder_was_saved_with(tmp_path, capsys):
    """model.hf.task left out loaded a classifier's folder as AutoModel: the pruned folder was a bare
    BertModel, its classifier gone, and nothing said so. The task now follows config.json's architectures."""
    path, tok = bert_task_folder(tmp_path / "cls", "AutoModelForSequenceClassification")
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), objective="{kind: distill}")
    recipe.write_text(recipe.read_text().replace(", task: AutoModel}", "}"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    assert "loaded as AutoModelForSequenceClassification" in err
    folder = tmp_path / "run" / "model-hf"
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    source = T.AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    reloaded = no_warning_load(folder, T.AutoModelForSequenceClassification)
    # the source's head, fine-tuned for 6 AdamW steps of 1e-3 (each moves a weight by about lr at most)
    assert (reloaded.classifier.weight - source.classifier.weight).abs().max() < 0.01


def test_a_task_that_leaves_weights_of_the_folder_out_says_which_and_how_to_keep_them(tmp_path, capsys):
    path, tok = bert_task_folder(tmp_path / "cls", "AutoModelForSequenceClassification")
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), task="AutoModel")
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    assert "2 weight(s) in cls are not part of AutoModel (classifier.bias, classifier.weight)" in err
    assert "model.hf.task: AutoModelForSequenceClassification keeps them" in err


@pytest.mark.parametrize("arch, task", [
    ("BertModel", "AutoModel"), ("LlamaForCausalLM", "AutoModelForCausalLM"), ("T5EncoderModel", "AutoModelForTextEncoding"),
    ("T5ForConditionalGeneration", "AutoModelForSeq2SeqLM"), ("BertForTokenClassification", "AutoModelForTokenClassification"),
    ("WhisperForConditionalGeneration", "AutoModelForSpeechSeq2Seq"), ("BertForPreTraining", None), (None, None),
])
def test_the_task_of_an_architecture_is_the_auto_class_that_maps_to_it(arch, task):
    from dpm_cli.hf.tasks import task_of

    assert task_of(T, arch) == task


def test_an_architecture_no_task_loads_is_loaded_as_automodel_with_a_note(tmp_path):
    from dpm_cli.hf.load import folder_config
    from dpm_cli.hf.tasks import resolve_task

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForPreTraining"]}))
    config = folder_config(tmp_path)
    task, note = resolve_task(T, config, "auto")
    assert task == "AutoModel" and note.startswith("config.json names BertForPreTraining") and "loaded as AutoModel" in note
    assert resolve_task(T, config, "AutoModelForMaskedLM") == ("AutoModelForMaskedLM", None)


NAMES = ["negative", "neutral", "positive"]


def named_label_folder(tmp_path):
    """A classifier whose config names its classes (label2id), and JSON lines labelled by those names."""
    tok = tokenizer(tmp_path / "cls")
    torch.manual_seed(0)
    cfg = T.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=64, id2label=dict(enumerate(NAMES)))
    T.BertForSequenceClassification(cfg).eval().save_pretrained(str(tmp_path / "cls"))
    tok.save_pretrained(str(tmp_path / "cls"))
    rows = [json.loads(line) for line in text_file(tmp_path / "i.jsonl", 48, labelled=True).read_text().splitlines()]
    data = tmp_path / "named.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"], "label": NAMES[r["label"]]}) + "\n" for r in rows))
    return tmp_path / "cls", data


def test_labels_written_as_the_models_label_names_are_its_class_indices(tmp_path, capsys):
    """Hugging Face datasets label by name ("positive") and a classifier's config.json names its classes
    (label2id); dpm refused any label but an integer ("label 'positive' is not a class index >= 0")."""
    folder, data = named_label_folder(tmp_path)
    recipe = write_recipe(tmp_path, folder, data, task="AutoModelForSequenceClassification",
                          objective="{kind: cross_entropy}")
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metric"] == "top1" and 0 <= summary["after"] <= 100  # evaluated on the named labels
    from dpm_cli.data.text import read_text

    _, labels = read_text(data, label_names={name: i for i, name in enumerate(NAMES)})
    _, indices = read_text(tmp_path / "i.jsonl")
    assert labels == indices
    code, out, err = run_cli(["check", tmp_path / "run" / "model-hf", "--baseline", folder, "--data", data,
                              "--max-accuracy-drop", "100", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["evaluation"]["labeled"] is True


def test_a_label_name_the_model_does_not_have_is_one_line_naming_its_labels(tmp_path, capsys):
    folder, data = named_label_folder(tmp_path)
    data.write_text(data.read_text().replace('"neutral"', '"mixed"', 1))
    recipe = write_recipe(tmp_path, folder, data, task="AutoModelForSequenceClassification",
                          objective="{kind: cross_entropy}")
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and "Traceback" not in err
    assert "label 'mixed' is not one of the model's labels (config.json label2id: negative, neutral, positive)" in err
    from dpm_cli.data.text import read_text
    from dpm_cli.errors import InputError

    with pytest.raises(InputError, match="has no label2id to map it to a class index"):
        read_text(data)


def test_one_label_per_example_for_a_token_classifier_is_one_line_before_training(tmp_path, capsys):
    """Labelled text (a label per line) with a token-classification head stopped with torch's
    "Expected target size [10, 3], got [10]"; it is now refused in one line that says what to do."""
    path, tok = bert_task_folder(tmp_path / "ner", "AutoModelForTokenClassification")
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.jsonl", 24, labelled=True),
                          task="AutoModelForTokenClassification", objective="{kind: cross_entropy}")
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and "Traceback" not in err and len([x for x in err.splitlines() if x.startswith("error:")]) == 1
    assert "gives a label per position (logits [1, 24, 3]" in err and "objective.kind: distill" in err
    assert not (tmp_path / "run" / "state.pt").exists()


def word_file(path, n=24, labels=True):
    """JSON lines as Hugging Face's token-classification datasets hold them: words, and a tag per word
    ("qzx" is no vocabulary word: it splits into pieces, q ##z ##x)."""
    rows = []
    for i in range(n):
        words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(3 + i % 5)] + ["qzx"]
        row = {"tokens": words}
        if labels:
            row["tags"] = [(i + k) % 3 for k in range(len(words))]
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_labels_per_word_go_to_each_words_first_piece(tmp_path):
    from dpm_cli.data.text import read_text, token_dataset
    from dpm_cli.data.words import IGNORE

    tok = tokenizer(tmp_path / "tok")
    texts, labels = read_text(word_file(tmp_path / "w.jsonl", 2), text_field="tokens", label_field="tags")
    assert texts[0] == ["the", "a", "of", "qzx"] and labels[0] == [0, 1, 2, 0]
    data = token_dataset(texts[:1], labels[:1], tok, 12)
    x, y = data[0]
    pieces = tok.convert_ids_to_tokens(x["input_ids"][:8].tolist())
    assert pieces == ["[CLS]", "the", "a", "of", "q", "##z", "##x", "[SEP]"]
    assert y[:8].tolist() == [IGNORE, 0, 1, 2, 0, IGNORE, IGNORE, IGNORE] and set(y[8:].tolist()) == {IGNORE}


def test_a_token_classifier_is_pruned_and_checked_on_labels_per_word(tmp_path, capsys):
    """Named-entity data (a list of words, a tag per word) was refused ("label [0, 1, 2] is not a class
    index"): a token classifier could only be distilled label-free. Now it trains and is scored per word."""
    path, tok = bert_task_folder(tmp_path / "ner", "AutoModelForTokenClassification")
    data = word_file(tmp_path / "w.jsonl", 40)
    recipe = write_recipe(tmp_path, path, data, task="AutoModelForTokenClassification",
                          objective="{kind: cross_entropy}")
    recipe.write_text(recipe.read_text().replace("  source: text\n", "  source: text\n  text_field: tokens\n"
                                                 "  label_field: tags\n"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metric"] == "top1" and summary["equivalence_error"] <= 1e-5
    code, out, err = run_cli(["check", tmp_path / "run" / "model-hf", "-r", recipe, "--baseline", path,
                              "--max-accuracy-drop", "100", "--json"], capsys)
    assert code == 0, err
    evaluation = json.loads(out)["evaluation"]
    # the compact model's accuracy per labelled word, computed here by hand, is what check reports
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    from dpm_cli.data import load_data
    from dpm_cli.data.words import IGNORE

    val = load_data("text", path=data, tokenizer=tok, seq_len=24, val_fraction=0.2, text_field="tokens",
                    label_field="tags").val
    x = {k: torch.stack([val[i][0][k] for i in range(len(val))]) for k in val[0][0]}
    y = torch.stack([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        guess = compact(**x).logits.argmax(-1)
    kept = y != IGNORE
    assert evaluation["model"]["top1"] == pytest.approx(100.0 * float((guess == y)[kept].float().mean()), abs=1e-4)


def test_word_labels_with_a_sequence_classifier_or_of_the_wrong_length_are_one_line(tmp_path, capsys):
    from dpm_cli.data.text import read_text
    from dpm_cli.errors import InputError

    path, tok = bert_task_folder(tmp_path / "cls", "AutoModelForSequenceClassification")
    recipe = write_recipe(tmp_path, path, word_file(tmp_path / "w.jsonl"), task="AutoModelForSequenceClassification",
                          objective="{kind: cross_entropy}")
    recipe.write_text(recipe.read_text().replace("  source: text\n", "  source: text\n  text_field: tokens\n"
                                                 "  label_field: tags\n"))
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and "the data has a label per word but the model gives one per example" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tokens": ["the", "data"], "tags": [1]}) + "\n")
    with pytest.raises(InputError, match="2 words but 1 labels; give one label per word"):
        read_text(bad, text_field="tokens", label_field="tags")


def test_a_distillation_loss_is_printed_to_four_decimals(tmp_path, capsys):
    """A classifier distilled on unlabelled text printed "val loss 0.00 / 0.00" (2 decimals, for top-1 %)."""
    import re

    path, tok = bert_task_folder(tmp_path / "cls", "AutoModelForSequenceClassification")
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), objective="{kind: distill}",
                          task="AutoModelForSequenceClassification")
    code, out, err = run_cli(["prune", "-r", recipe, "-q"], capsys)
    assert code == 0, err
    assert re.search(r"val loss\s+│\s+\d+\.\d{4}\s+│\s+\d+\.\d{4}\s+│\s+[+-]\d+\.\d{4}", out), out


CODE = "__import__('os').system('touch pwned')"


@pytest.mark.parametrize("name, content, says", [
    ("d.csv", 'text,label\n"' + "x" * 200_000 + '",1\n', "not CSV"),                      # a field past csv's limit
    ("d.csv", 'text,label\n"an open quote,1\n', "a train/validation split needs at least 2"),  # truncated quote
    ("d.csv", f"text,label\n{CODE},[1]\n", "is not one of the model's labels"),  # code is text
    ("d.csv", "body,label\nfine,1\n", "no field 'text' (the record has 'body', 'label'); set data.text_field"),
    # one JSON array: truncated, of the wrong types, code as a label, deeply nested
    ("d.json", '[{"text": "fine", "label": 1}, {"text": "cut', "d.json:1: not JSON"),
    ("d.json", "[1, 2, 3]", "d.json:item 1: a JSON number, not an object"),
    ("d.json", json.dumps([{"text": "a", "label": CODE}, {"text": "b", "label": 0}]), "is not one of the model's labels"),
    ("d.json", "[" * 100_000 + "]" * 100_000, "d.json: JSON nested too deep to be examples"),
    ("d.jsonl", '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "d.jsonl:1: JSON nested too deep"),
    ("d.jsonl", '{"text": "fine", "label": 1}\n{"text": true, "label": 0}\n', "field 'text' holds no text (True)"),
])
def test_a_hostile_data_file_is_one_line_before_anything_runs_or_is_written(tmp_path, capsys, monkeypatch, name,
                                                                            content, says):
    monkeypatch.chdir(tmp_path)
    path, tok = bert_task_folder(tmp_path / "cls", "AutoModelForSequenceClassification")
    data = tmp_path / name
    data.write_text(content)
    recipe = write_recipe(tmp_path, path, data, task="AutoModelForSequenceClassification",
                          objective="{kind: cross_entropy}")
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and says in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run" / "state.pt").exists()
    assert not any((tmp_path / "run").glob("model*"))
