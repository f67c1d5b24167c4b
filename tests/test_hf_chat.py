"""Conversations as data: `{"messages": [{"role": ..., "content": ...}]}`, the chat format of
transformers' chat templates and TRL. Such a file was refused ("no field 'text'"), and with
`data.text_field: messages` as "a list of words must hold non-empty strings only". A decoder that serves
chat is now pruned and checked on its conversations as its chat template writes them, tokenised once:
the template's BOS is not doubled by the tokenizer's own."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import WORDS  # noqa: E402
from test_hf_llama import RECIPE, llama_folder  # noqa: E402

from dpm_cli.data.chat import Chat  # noqa: E402
from dpm_cli.data.text import read_text, token_dataset  # noqa: E402
from dpm_cli.errors import InputError  # noqa: E402

TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {{ eos_token }}{% endfor %}"


def chat_file(path, n: int = 24, **extra):
    rows = [{"messages": [{"role": "user", "content": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))},
                          {"role": "assistant", "content": [{"type": "text", "text": WORDS[i % len(WORDS)]}]}],
             **extra} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bos_tokenizer():
    """A word-level tokenizer that, like Llama's, puts BOS before every text it encodes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>", "user", "assistant", *dict.fromkeys(WORDS)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                               unk_token="<unk>", pad_token="<pad>")
    tok.chat_template = TEMPLATE
    return tok


def test_messages_are_read_as_conversations_with_their_text_parts(tmp_path):
    texts, labels = read_text(chat_file(tmp_path / "c.jsonl", 3))
    assert labels is None and all(isinstance(t, Chat) for t in texts)
    assert texts[0].messages == (("user", "the a of"), ("assistant", "the"))  # text parts of a content list
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": 3}]}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: message 1 needs a \"role\" and a text \"content\""):
        read_text(bad)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(chat_file(tmp_path / "one.jsonl", 1).read_text() + json.dumps({"text": "the a"}) + "\n")
    with pytest.raises(InputError, match="mixed.jsonl:2: some lines hold chat messages and some a text; use one form"):
        read_text(mixed)


def test_a_conversation_is_tokenised_as_its_template_writes_it_with_one_bos():
    tok = bos_tokenizer()
    chat = Chat((("user", "the python module"), ("assistant", "a list")))
    data = token_dataset([chat], None, tok, 16)
    ids = data.encoded["input_ids"][0][data.encoded["attention_mask"][0].bool()].tolist()
    messages = [{"role": r, "content": c} for r, c in chat.messages]
    assert ids == tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert ids[:2] == [1, tok.convert_tokens_to_ids("user")]  # one BOS: the template's, not the tokenizer's too
    tok.chat_template = None
    with pytest.raises(InputError, match="holds chat messages, and the model folder's tokenizer has no chat template"):
        token_dataset([chat], None, tok, 16)


def test_prune_and_check_a_causal_lm_on_conversations(tmp_path, capsys):
    folder = llama_folder(tmp_path / "llama", tied=False)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    tok.chat_template = TEMPLATE
    tok.save_pretrained(str(folder))
    data = chat_file(tmp_path / "chat.jsonl")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(folder=folder, data=data, run=tmp_path / "run", formats="module"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["perplexity_after"] is not None
    code, out, err = run_cli(["check", tmp_path / "run" / "model-hf", "--baseline", folder, "--data", data,
                              "--max-loss-increase", "100", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["evaluation"]["samples"] == 24
    code, out, err = run_cli(["prune", "-r", recipe, "data.augment.replace_words=0.5", "--force"], capsys)
    assert code == 2 and "data.augment replaces words in running text, not in chat messages" in err


def test_prompt_completion_records_are_read_as_trl_joins_them(tmp_path):
    path = tmp_path / "pc.jsonl"
    rows = [{"prompt": "the python", "completion": " module"},
            {"prompt": [{"role": "user", "content": "a list"}], "completion": [{"role": "assistant", "content": "the"}]}]
    path.write_text(json.dumps(rows[0]) + "\n")
    assert read_text(path) == (["the python module"], None)
    path.write_text(json.dumps(rows[1]) + "\n")
    assert read_text(path)[0] == [Chat((("user", "a list"), ("assistant", "the")))]
    path.write_text(json.dumps({"prompt": "the python", "answer": " module"}) + "\n")  # not that form: named
    with pytest.raises(InputError, match="no field 'text' \\(the record has 'prompt', 'answer'\\); set data.text_field"):
        read_text(path)
