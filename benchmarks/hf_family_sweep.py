"""Every transformers `AutoModel` type through dpm's Hugging Face path, on tiny random configs.

    python benchmarks/hf_family_sweep.py --out /tmp/sweep.jsonl               # all types (about 1 h, 1 core)
    python benchmarks/hf_family_sweep.py --out /tmp/sweep.jsonl llama vit t5  # some
    python benchmarks/hf_family_sweep.py --summary /tmp/sweep.jsonl           # counts by outcome
    python benchmarks/hf_family_sweep.py --out /tmp/cls.jsonl --task AutoModelForSequenceClassification
    python benchmarks/hf_family_sweep.py --out /tmp/vlm.jsonl --task AutoModelForImageTextToText --composite

Each type's config class is built with small sizes (hidden 32, 2 layers, 4 heads, vocab 64; the keys
it has), saved with `save_pretrained` and loaded the way dpm loads a folder (`hf.load_hf`). Then half
of every FFN, and in a second pass also half of every attention module's heads, is cut at once and
removed (`DecayPruner`, magnitude, per layer), and the compact model is saved with `hf.save_hf`, which
reloads it and compares every output. One JSON line per type and pass: `{"type", "pass", "outcome",
"message"}`. Outcomes: `saved` (exact, folder reloads with no warning and the same outputs), `exact`
(exact; a folder refused before training by `format_problem`, with its reason), `refused` (one line
before any training: a family or head rule dpm does not have, the preflight's rehearsal, the budget),
`refused-at-save` (save_hf's check: in `dpm prune` that is after training, so each is a bug in the
checks before it), `error` (torch-pruning cannot trace it, or the compact model is not equivalent),
`crash` (any other exception: a bug), `skip` (the tiny config cannot be built or does not run on
token or derived inputs: not dpm's). Resumable: types already in
OUT are skipped; run it again after a crash of the interpreter.
"""
from __future__ import annotations

import argparse
import collections
import json
import signal
import sys
import tempfile
import types
import warnings
from pathlib import Path

# The registry torchvision is a CUDA build beside a CPU torch (see tests/conftest.py): stubbed here,
# in a benchmark, never in the package.
for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # dpm_cli from this checkout

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=64, d_model=32, d_ff=64, num_layers=2,
             num_heads=4, n_embd=32, n_layer=2, n_head=4, n_inner=64, encoder_layers=1, decoder_layers=1,
             encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
             d_kv=8, ffn_dim=64, num_experts=4, num_local_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
             image_size=32, patch_size=8, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
             n_routed_experts=4, n_shared_experts=1, first_k_dense_replace=1)
TYPE_SECONDS = 120  # per type and pass: a trace that does not finish is an `error` (graph_timeout_s 30)


def cut_half(model: torch.nn.Module, x: dict, head_ratio: float):
    """Half the channels of every FFN (and `head_ratio` of the heads) cut at once (not yet removed:
    `pruner.compact()`): the pruner, whose groups the checks before training read."""
    from dpm_cli import DecayPruner, DPMConfig
    from dpm_cli.engine.selection import score_groups, select
    from dpm_cli.hf import protected_modules

    cfg = DPMConfig(budget=0.5, budget_kind="channels", decay_steps=1, ranking="layer", head_ratio=head_ratio,
                    ignore=protected_modules(model), graph_timeout_s=30)
    pruner = DecayPruner(model, x, cfg)
    pruner.prune_now(select(pruner.groups, pruner.cost, cfg, cfg.budget, set(), set(),
                            score_groups(pruner.groups, "magnitude", 0)))
    return pruner


def _shrunk(config):
    """`config` with SMALL's sizes, in each part's config too (a composite: text_config, vision_config)."""
    for key, value in SMALL.items():
        if key in config.to_dict():
            setattr(config, key, value)
    for name in getattr(config, "sub_configs", None) or {}:
        part = getattr(config, name, None)
        if part is not None and hasattr(part, "to_dict"):
            _shrunk(part)
    return config


def build(model_type: str, folder: Path, task: str = "AutoModel", composite: bool = False) -> str | None:
    """Save a tiny model of `model_type` (with the head `task`) to `folder`; why not, or None."""
    import transformers as T

    config = T.AutoConfig.for_model(model_type)
    if model_type not in getattr(T, task)._model_mapping._model_mapping:
        return f"no {task} for this type"
    if getattr(config, "sub_configs", None) and not composite:
        return "a composite config (--composite shrinks its parts too; tests/test_hf_composite.py)"
    torch.manual_seed(0)
    if getattr(config, "sub_configs", None):
        model = getattr(T, task).from_config(_shrunk(config)).eval()
    else:
        small = {k: v for k, v in SMALL.items() if k in config.to_dict()}
        model = getattr(T, task).from_config(T.AutoConfig.for_model(model_type, **small)).eval()
    model.save_pretrained(str(folder))
    if model.main_input_name == "pixel_values" and not getattr(model.config, "image_size", None):
        # a convolutional network's size is its image processor's, as a pretrained folder has it
        (folder / "preprocessor_config.json").write_text(json.dumps({"size": 32}))
    return None


def example(model: torch.nn.Module) -> dict:
    from dpm_cli.hf import derived_example

    x = derived_example(model)
    if x is None:
        g = torch.Generator().manual_seed(1)
        x = {"input_ids": torch.randint(3, 60, (1, 12), generator=g), "attention_mask": torch.ones(1, 12, dtype=torch.long)}
        if getattr(model.config, "is_encoder_decoder", False):
            x["decoder_input_ids"] = torch.randint(3, 60, (1, 6), generator=g)
    return x


def one_pass(folder: Path, head_ratio: float, out: Path) -> tuple[str, str]:
    from dpm_cli.errors import CompactionError, DpmError, EquivalenceError, TraceError
    from dpm_cli.hf import HFFormatError, load_hf, save_hf
    from dpm_cli.hf.prunable import head_problem
    from dpm_cli.hf.head_config import pruned_head_problem, unpruned_heads_problem
    from dpm_cli.hf.save import format_problem, unpruned_ffn_problem

    try:
        model = load_hf(folder).model
        x = example(model)
        with torch.no_grad():
            model(**x)
    except DpmError as err:
        return "refused", str(err)
    except Exception as err:
        return "skip", f"{type(err).__name__}: {err}"
    try:
        problem = head_problem(model, head_ratio)
        if problem:
            return "refused", problem
        why = format_problem(model, "layer", head_ratio)
        pruner = cut_half(model, x, head_ratio)
        groups = pruner.groups
        # what `dpm prune` asks once the groups are known, before training (and so before compaction:
        # asked of the compacted model, a composite part's head size looked fixed)
        why = (why or unpruned_ffn_problem(model, groups) or unpruned_heads_problem(model, groups, head_ratio)
               or pruned_head_problem(model, groups, head_ratio))
        result = pruner.compact()
        if why:
            return ("exact" if result.max_rel_error <= 1e-4 else "error"), why
        save_hf(model, None, out, x)
        return "saved", ""
    except HFFormatError as err:  # in `dpm prune` this comes after training: the worst kind of refusal
        return "refused-at-save", f"{type(err).__name__}: {err}"
    except (TraceError, EquivalenceError, CompactionError) as err:
        return "error", f"{type(err).__name__}: {err}"
    except DpmError as err:  # a rule dpm has, or the preflight's rehearsal: before any training
        return "refused", f"{type(err).__name__}: {err}"
    except Exception as err:
        return "crash", f"{type(err).__name__}: {err}"


def sweep(model_types: list[str], out: Path, task: str = "AutoModel", composite: bool = False) -> None:
    done = {json.loads(line)["type"] for line in out.read_text().splitlines()} if out.exists() else set()
    started = out.with_suffix(".started")  # the type in progress: if the interpreter dies, it is a crash
    if started.exists() and started.read_text() and started.read_text() not in done:
        with out.open("a") as f:
            f.write("".join(json.dumps({"type": started.read_text(), "pass": p, "outcome": "crash",
                                        "message": "the Python process died"}) + "\n" for p in ("ffn", "ffn+heads")))
        done.add(started.read_text())

    def timeout(*_):
        raise TimeoutError(f"over {TYPE_SECONDS} s")

    signal.signal(signal.SIGALRM, timeout)
    for model_type in model_types:
        if model_type in done:
            continue
        started.write_text(model_type)
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            try:
                why = build(model_type, Path(tmp) / "in", task, composite)
            except Exception as err:
                why = f"{type(err).__name__}: {err}"
            for head_ratio in (0.0, 0.5):
                if why:
                    outcome, message = "skip", why
                else:
                    signal.alarm(TYPE_SECONDS)
                    try:
                        outcome, message = one_pass(Path(tmp) / "in", head_ratio, Path(tmp) / f"out{head_ratio}")
                    except TimeoutError as err:
                        outcome, message = "error", str(err)
                    finally:
                        signal.alarm(0)
                rows.append({"type": model_type, "pass": "ffn" if head_ratio == 0 else "ffn+heads",
                             "outcome": outcome, "message": message.splitlines()[0][:300] if message else ""})
            with out.open("a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))
    started.unlink(missing_ok=True)  # a finished sweep leaves nothing to report as a crash next time


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for name in ("ffn", "ffn+heads"):
        counts = collections.Counter(r["outcome"] for r in rows if r["pass"] == name)
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    for r in rows:
        if r["outcome"] in ("crash", "error", "refused-at-save"):
            print(f"  {r['type']} ({r['pass']}): {r['outcome']}: {r['message'][:160]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("types", nargs="*", help="model types (default: every AutoModel type)")
    parser.add_argument("--out", type=Path, help="JSON lines, appended (resumable)")
    parser.add_argument("--summary", type=Path, help="print counts by outcome from a finished OUT and stop")
    parser.add_argument("--task", default="AutoModel", help="the Auto class (head) to build and load each type "
                        "with, e.g. AutoModelForSequenceClassification; types without one are skipped")
    parser.add_argument("--composite", action="store_true", help="also composite configs (vision-language, "
                        "CLIP), every part shrunk; token inputs only, so a part that needs images is skipped")
    args = parser.parse_args()
    if args.summary:
        return summary(args.summary)
    if not args.out:
        parser.error("--out is required")
    warnings.filterwarnings("ignore")
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    transformers.logging.set_verbosity_error()
    mapping = getattr(transformers, args.task)._model_mapping._model_mapping
    sweep(args.types or list(mapping if args.task != "AutoModel" else MODEL_MAPPING_NAMES), args.out, args.task,
          args.composite)


if __name__ == "__main__":
    main()
