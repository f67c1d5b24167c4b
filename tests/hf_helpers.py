"""Tiny random BERT folders (config + safetensors + a word-piece tokenizer) built in tmp dirs."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

WORDS = ("the a of and to in is it that for on with as was by this are be from or an at which not "
         "python module function class value list string file return import object type error data "
         "pruning removes whole channels trained network while keeps learning").split()


def tokenizer(folder: Path):
    from transformers import BertTokenizer

    # unique: a line repeated ("a", a word and a letter) gives the tokenizer fewer tokens than ids, and
    # the last pieces ids beyond a vocab_size of len(tokenizer)
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS,
                                *"abcdefghijklmnopqrstuvwxyz.,", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizer(str(folder / "vocab.txt"))


def decoder_tokenizer(specials: list[str], bos: str, eos: str, unk: str):
    """A word-level fast tokenizer over WORDS that, like a decoder's own, has bos/eos but no pad token and
    returns no token_type_ids."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate([*specials, *dict.fromkeys(WORDS)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos,
                                               unk_token=unk, model_input_names=["input_ids", "attention_mask"])
    assert tok.pad_token is None
    return tok

def bert_folder(folder: Path, task: str = "AutoModel", *, labels: int = 3, seed: int = 0,
                intermediate: int = 64) -> Path:
    """A 2-layer BERT (hidden 32, 4 heads, FFN 64) saved with save_pretrained, with its tokenizer."""
    import transformers

    tok = tokenizer(folder)
    cfg = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=intermediate, max_position_embeddings=64, num_labels=labels)
    torch.manual_seed(seed)
    cls = {"AutoModel": transformers.BertModel,
           "AutoModelForSequenceClassification": transformers.BertForSequenceClassification}[task]
    model = cls(cfg).eval()
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def text_file(path: Path, n: int = 48, labelled: bool = False) -> Path:
    rows = []
    for i in range(n):
        words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(5 + i % 9))
        rows.append(json.dumps({"text": words, "label": i % 3}) if labelled else words)
    path.write_text("\n".join(rows) + "\n")
    return path


RECIPE = """\
version: 1
model:
  hf: {{path: {folder}, task: {task}}}
  seq_len: 24
data:
  source: text
  path: {data}
  batch_size: 8
  eval_batch_size: 16
objective: {objective}
pruning:
  budget: {{kind: macs, keep: 0.85}}
  ranking: {ranking}
  head_ratio: {head_ratio}
  decay_steps: 2
training:
  steps: 6
  log_every: 3
  optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}
output:
  dir: {run}
  hf: true
"""


def write_recipe(tmp: Path, folder: Path, data: Path, *, task: str = "AutoModel", ranking: str = "layer",
                 objective: str = "{kind: distill, targets: [embedding, hidden], loss: both}",
                 head_ratio: float | None = 0.0) -> Path:
    """A 6-step recipe writing an HF folder; head_ratio 0 by default (BertConfig cannot record heads)."""
    path = tmp / "r.yaml"
    path.write_text(RECIPE.format(folder=folder, task=task, data=data, objective=objective, ranking=ranking,
                                  run=tmp / "run", head_ratio="null" if head_ratio is None else head_ratio))
    return path


def no_warning_load(folder: Path, auto):
    """`auto.from_pretrained(folder)` offline, asserting that transformers logged no warning."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        model = auto.from_pretrained(str(folder), local_files_only=True)
    finally:
        logger.removeHandler(handler)
    assert records == [], records
    return model.eval()


def cut_half(model, x, head_ratio: float = 0.0, ignore: list[str] | None = None):
    """Half the channels of every layer (and `head_ratio` of its heads) cut at once by magnitude, as
    single-step pruning does; `ignore` defaults to what the Hugging Face path protects. The pruner."""
    from dpm_cli import DecayPruner, DPMConfig
    from dpm_cli.engine.selection import score_groups, select
    from dpm_cli.hf import protected_modules

    cfg = DPMConfig(budget=0.5, budget_kind="channels", decay_steps=1, ranking="layer", head_ratio=head_ratio,
                    ignore=protected_modules(model) if ignore is None else ignore)
    pruner = DecayPruner(model, x, cfg)
    pruner.prune_now(select(pruner.groups, pruner.cost, cfg, cfg.budget, set(), set(),
                            score_groups(pruner.groups, "magnitude", 0)))
    return pruner
