"""Attention is pruned by whole heads: q, k, v rows and the output projection's columns of one head
decay on one ramp, are removed together, and the module's head bookkeeping follows.

Found on timm deit_tiny: `attn.qkv` was treated as 576 independent channels and compaction removed
all of them (`shape '[1, 197, 3, 3, 64]' is invalid`); torchvision's ViT and HF BERT were pruned per
hidden index.
"""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.engine.heads import FUSED_QKV_NAMES, find_head_groups
from dpm_cli.engine.mha import PrunedMultiheadAttention
from dpm_cli.engine.state import DECAYING, PRUNED
from dpm_cli.models.transformer import vit_tiny

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")


class Hidden(nn.Module):
    """A Hugging Face encoder as a tensor -> tensor model (its last hidden state)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).last_hidden_state


def tiny_timm_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, mlp_ratio=2,
                             num_classes=10, qkv_bias=True)


def tiny_torchvision_vit() -> nn.Module:
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                 hidden_dim=32, mlp_dim=64, num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision zero-initialises it: outputs all 0
    return model


def tiny_bert() -> nn.Module:
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, vocab_size=100, max_position_embeddings=32)
    return Hidden(transformers.BertModel(config))


def _attention(model: nn.Module) -> list[nn.Module]:
    return [g.root for g in find_head_groups(model, [])[0]]


def _prune(model: nn.Module, x, budget: float = 0.6, steps: int = 2, **options):
    torch.manual_seed(0)
    model.eval()
    reference = None
    pruner = DecayPruner(model, x, DPMConfig(budget=budget, decay_steps=steps, rectify={"enabled": False}, **options))
    for _ in range(steps + 1):
        pruner.step()
    reference = model(x).detach()
    projected = pruner.progress().macs_kept
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    assert torch.allclose(model(x), reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))
    assert result.macs_kept == pytest.approx(projected, abs=1e-6)  # the cost model counts heads exactly
    assert result.macs_kept <= budget + 1e-9 and result.macs_kept >= budget - 0.02
    return pruner, result


def _heads_pruned(pruner) -> dict[str, int]:
    return {g.name: int(st.mask(PRUNED).sum()) for g, st in zip(pruner.groups, pruner.states) if g.remove}


def _round_trip(model: nn.Module, x) -> None:
    """state_dict survives save/load into the compact model, train-mode forward and backward run."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    model.load_state_dict(torch.load(buffer))
    model.train()
    model(x).float().sum().backward()


def test_timm_fused_qkv_is_pruned_by_heads_never_as_plain_channels():
    model = tiny_timm_vit()
    x = torch.randn(2, 3, 32, 32)
    pruner, result = _prune(model, x)
    # no group but the head groups touches qkv's rows (the finding: 576 independent channels)
    for g in pruner.groups:
        for s in g.slices:
            if s.name.split(":")[0].endswith("qkv") or ".qkv." in s.name:
                assert g.remove is not None, f"{g.name} prunes {s.name} as plain channels"
    assert any("qkv" in name for name in pruner.skipped)
    removed = _heads_pruned(pruner)
    assert sum(removed.values()) > 0
    for i, block in enumerate(model.blocks):
        attn = block.attn
        heads = 4 - removed[f"blocks.{i}.attn"]
        assert attn.num_heads == heads and attn.attn_dim == heads * 12
        assert attn.qkv.weight.shape == (3 * heads * 12, 48) and attn.proj.weight.shape == (48, heads * 12)
        assert attn.head_dim == 12
    _round_trip(model, x)


def test_unrecognised_fused_qkv_is_refused_not_cut():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24)
            self.out = nn.Linear(8, 8)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return self.fc(self.out(torch.softmax(q @ k.transpose(-2, -1), -1) @ v).mean(1))

    pruner = DecayPruner(Odd(), torch.randn(2, 5, 8), DPMConfig(budget=0.9, decay_steps=2))
    assert all(not s.name.startswith("qkv.") or s.dim != 0 for g in pruner.groups for s in g.slices)
    assert "fused q/k/v" in " ".join(pruner.skipped.values())
    assert "qkv" in FUSED_QKV_NAMES


def test_head_unit_decays_on_one_exact_ramp_to_exact_zero():
    torch.manual_seed(0)
    model = vit_tiny()
    x = torch.randn(2, 3, 32, 32)
    n_steps = 4
    pruner = DecayPruner(model, x, DPMConfig(budget=0.7, decay_steps=n_steps, rectify={"enabled": False},
                                             ignore=["blocks.*.mlp.*"]))
    heads = [i for i, g in enumerate(pruner.groups) if g.remove is not None]
    assert [pruner.groups[i].n_units for i in heads] == [4, 4]
    assert all(pruner.groups[i].channels == 64 for i in heads)
    pruner.step()  # selection
    gi = next(i for i in heads if pruner.states[i].mask(DECAYING).any())
    g, st = pruner.groups[gi], pruner.states[gi]
    head = int(torch.nonzero(st.mask(DECAYING))[0])
    channels = g.channels_of([head])
    assert channels == list(range(head * 16, head * 16 + 16))
    attn = g.root

    def head_norm() -> float:  # q, k, v rows of the head and the out-projection's columns, jointly
        rows = [r for off in (0, 64, 128) for r in range(off + head * 16, off + head * 16 + 16)]
        parts = [attn.in_proj_weight[rows], attn.in_proj_bias[rows], attn.out_proj.weight[:, channels]]
        return float(torch.sqrt(sum(p.detach().double().square().sum() for p in parts)))

    l_init = float(st.l_init[head])
    assert head_norm() == pytest.approx(l_init, rel=1e-6)
    for n in range(1, n_steps):
        pruner.step()
        assert head_norm() == pytest.approx(l_init * (n_steps - n) / n_steps, rel=1e-5)
    pruner.step()
    assert st.status[head] == PRUNED and head_norm() == 0.0
    before = model(x).detach()
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    assert torch.allclose(model(x), before, atol=1e-5)
    assert type(attn) is PrunedMultiheadAttention and isinstance(attn, nn.MultiheadAttention)
    gone = torch.nonzero(st.mask(PRUNED)).flatten().tolist()
    assert head in gone and len(gone) < 4
    kept = 4 - len(gone)
    assert attn.num_heads == kept and attn.in_proj_weight.shape == (3 * 16 * kept, 64)
    assert attn.out_proj.in_features == 16 * kept
    assert attn.pruned_heads == set(gone) and attn.dpm_head_ids == [h for h in range(4) if h not in gone]
    assert result.pruned_heads[g.name] == gone


def test_dpm_vit_tiny_heads_and_mlp_under_one_budget():
    model = vit_tiny()
    x = torch.randn(2, 3, 32, 32)
    pruner, result = _prune(model, x, budget=0.5)
    kinds = {("heads" if g.remove else "mlp"): 0 for g in pruner.groups}
    assert kinds == {"heads": 0, "mlp": 0}  # both kinds are candidates under the one budget
    removed = _heads_pruned(pruner)
    for i, block in enumerate(model.blocks):
        assert block.attn.num_heads == 4 - removed[f"blocks.{i}.attn"]
    # attention with masks and need_weights still runs on the pruned module
    attn = model.blocks[0].attn
    y = torch.randn(2, 5, 64)
    out, weights = attn(y, y, y, need_weights=True, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    assert out.shape == (2, 5, 64) and weights.shape == (2, 5, 5)
    _round_trip(model, x)


def test_pruned_mha_matches_torch_mha_on_all_heads():
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
        ours = PrunedMultiheadAttention(16, 4, batch_first=batch_first).eval()
        ours.load_state_dict(mha.state_dict())
        q = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)  # (batch 2, length 5)
        mask = torch.rand(5, 5) > 0.7
        mask.fill_diagonal_(False)
        padding = torch.zeros(2, 5, dtype=torch.bool)
        padding[1, -1] = True
        for kwargs in ({"need_weights": False}, {"need_weights": True, "attn_mask": mask},
                       {"need_weights": False, "key_padding_mask": padding},
                       {"need_weights": True, "key_padding_mask": padding, "average_attn_weights": False}):
            a, wa = mha(q, q, q, **kwargs)
            b, wb = ours(q, q, q, **kwargs)
            assert torch.allclose(a, b, atol=1e-5), kwargs
            assert (wa is None) == (wb is None) and (wa is None or torch.allclose(wa, wb, atol=1e-5))


def test_torchvision_vit_heads():
    model = tiny_torchvision_vit()
    x = torch.randn(2, 3, 32, 32)
    pruner, result = _prune(model, x)
    removed = _heads_pruned(pruner)
    assert sum(removed.values()) > 0
    for name, n in removed.items():
        attn = model.get_submodule(name)
        assert attn.num_heads == 4 - n and attn.in_proj_weight.shape[0] == 3 * 8 * (4 - n)
    _round_trip(model, x)


def test_hugging_face_bert_heads_and_bookkeeping():
    model = tiny_bert()
    x = torch.randint(0, 100, (2, 12))
    pruner, result = _prune(model, x)
    removed = _heads_pruned(pruner)
    assert sum(removed.values()) > 0
    for i, layer in enumerate(model.model.encoder.layer):
        name = f"model.encoder.layer.{i}.attention"
        kept = 4 - removed[name]
        s = layer.attention.self
        assert s.num_attention_heads == kept and s.all_head_size == kept * 8 and s.attention_head_size == 8
        assert s.query.out_features == s.key.out_features == s.value.out_features == kept * 8
        assert layer.attention.output.dense.in_features == kept * 8
        assert sorted(layer.attention.pruned_heads) == result.pruned_heads.get(name, [])
    assert model(torch.randint(0, 100, (1, 7))).shape == (1, 7, 32)  # another sequence length
    _round_trip(model, x)


def test_llama_adapter_keeps_query_heads_with_their_key_value_head():
    """Grouped-query attention: the structure is a key/value head with the query heads that read it.
    (At the adapter; the whole model through DecayPruner and the CLI is tests/test_hf_llama.py.)"""
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=50)
    model = Hidden(transformers.LlamaModel(config)).eval()
    groups, skipped = find_head_groups(model, [])
    assert not skipped and len(groups) == 1
    g = groups[0]
    assert g.channels == 32 and g.n_units == 2 and g.channels_of([1]) == list(range(16, 32))
    attn = g.root
    ids = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        attn.q_proj.weight[16:] = 0
        attn.k_proj.weight[8:] = 0
        attn.v_proj.weight[8:] = 0
        attn.o_proj.weight[:, 16:] = 0
        before = model(ids)
        assert g.remove(list(range(16, 32))) == [2, 3]
        after = model(ids)
    assert attn.q_proj.out_features == 16 and attn.k_proj.out_features == 8 and attn.o_proj.in_features == 16
    assert torch.allclose(before, after, atol=1e-5)


def test_artifact_replays_head_removal(tmp_path):
    """The pickle-free artifact rebuilds the compact model from the factory: head removals are in its
    pruning history beside torch-pruning's steps, and survive torch.load(weights_only=True)."""
    from dpm_cli.artifact import Provenance, make_artifact, rebuild_artifact

    torch.manual_seed(0)
    model = vit_tiny()
    x = torch.randn(2, 3, 32, 32)
    pruner, result = _prune(model, x, budget=0.5)
    assert any(step[0] == "dpm:heads" for step in result.history)
    prov = Provenance("dpm_cli.models:vit_tiny", {}, [1, 3, 32, 32]).with_stage(result.history)
    path = tmp_path / "m.dpm.pt"
    torch.save(make_artifact(model, prov), path)
    rebuilt = rebuild_artifact(torch.load(path, weights_only=True))
    model.eval(), rebuilt.eval()
    assert torch.allclose(rebuilt(x), model(x), atol=1e-6)
    for a, b in zip(model.blocks, rebuilt.blocks):
        assert a.attn.num_heads == b.attn.num_heads and type(b.attn) is PrunedMultiheadAttention


def test_head_ratio_on_a_model_without_heads_is_refused_not_ignored():
    from dpm_cli.errors import ConfigError

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="head_ratio 0.25 asks for attention heads"):
        DecayPruner(model, torch.zeros(1, 4), DPMConfig(budget=0.5, budget_kind="channels", head_ratio=0.25))
    DecayPruner(model, torch.zeros(1, 4), DPMConfig(budget=0.5, budget_kind="channels", head_ratio=0.0))


def test_parameters_torch_pruning_has_no_pruner_for_raise_no_warning():
    """vit_tiny's class token and position embedding belong to no layer: torch-pruning warned "Unwrapped
    parameters detected" on stderr on every run of such a model (ViT, T5's norm weights)."""
    import warnings

    from dpm_cli.engine.groups import discover_groups

    from dpm_cli.artifact import Provenance, make_artifact, rebuild_artifact

    model, x = vit_tiny(), torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = discover_groups(model, x)
        _, result = _prune(model, x, budget=0.5)  # and when an artifact is replayed
        prov = Provenance("dpm_cli.models:vit_tiny", {}, [1, 3, 32, 32]).with_stage(result.history)
        rebuild_artifact(make_artifact(model, prov))
    assert groups.groups and not [w for w in caught if "Unwrapped parameters" in str(w.message)]
