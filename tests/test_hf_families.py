"""Model families beyond BERT and Llama, from tiny random configs: FFN width pruned exactly and saved as
a folder `from_pretrained` loads; heads where the family's attention has an adapter."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_helpers import cut_half  # noqa: E402
from dpm_cli.hf import load_hf, save_hf  # noqa: E402
from dpm_cli.hf.prunable import ffn_widths  # noqa: E402
from dpm_cli.hf.save import format_problem  # noqa: E402

FAMILIES = {
    "roberta": lambda: transformers.RobertaModel(transformers.RobertaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40)),
    "distilbert": lambda: transformers.DistilBertModel(transformers.DistilBertConfig(
        vocab_size=64, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=40)),
    "opt": lambda: transformers.OPTModel(transformers.OPTConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        max_position_embeddings=40, word_embed_proj_dim=32)),
    "electra": lambda: transformers.ElectraModel(transformers.ElectraConfig(
        vocab_size=64, hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=40)),
}


def _folder(tmp_path, family):
    torch.manual_seed(0)
    FAMILIES[family]().save_pretrained(str(tmp_path / family))
    return load_hf(tmp_path / family)


def _prune(model, x, head_ratio):
    return cut_half(model, x, head_ratio).compact()


def _inputs():
    return {"input_ids": torch.randint(3, 64, (1, 12)), "attention_mask": torch.ones(1, 12, dtype=torch.long)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_ffn_half_pruned_exactly_and_saved_as_a_folder(tmp_path, family):
    loaded = _folder(tmp_path, family)
    x = _inputs()
    assert format_problem(loaded.model, "layer", 0.0) is None
    result = _prune(loaded.model, x, 0.0)
    assert result.max_rel_error <= 1e-5
    assert ffn_widths(loaded.model) == [32, 32]
    folder = save_hf(loaded.model, None, tmp_path / "out", x)  # reloads it and compares every field
    reloaded = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, loaded.model(**x).last_hidden_state, atol=1e-6)


@pytest.mark.parametrize("family", ["roberta", "electra"])
def test_bert_style_families_lose_whole_heads_exactly(tmp_path, family):
    loaded = _folder(tmp_path, family)
    x = _inputs()
    result = _prune(loaded.model, x, 0.25)
    assert result.max_rel_error <= 1e-5
    assert [layer.attention.self.num_attention_heads for layer in loaded.model.encoder.layer] == [3, 3]
    assert "cannot record pruned attention heads" in format_problem(loaded.model, "layer", 0.25)
