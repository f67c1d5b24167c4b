"""Everything a job needs from a recipe: device, data, loaders, the model and its example input."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..artifact import Provenance
from ..batch import call_model, describe, first_rows, logits_of, move
from ..checkpoint import load_checkpoint
from ..data import DataBundle, check_labels_fit, load_data, make_loaders
from ..data.labels import scorable
from ..data.next_token import LANGUAGE_MODEL_TASKS, labelled_by_next_tokens
from ..report.forward import max_positions
from ..data.records import label_names
from ..engine import DPMConfig, RectifyConfig
from ..errors import ConfigError, InputError
from ..limits import steps_problem
from ..recipe import Recipe
from ..recipe.schema import describe_decay, resolve_decay_steps
from ..training.distributed import SINGLE, DistContext, per_rank_batch
from ..training.objective import need_logits, split_batch


@dataclass
class RunContext:
    recipe: Recipe
    device: torch.device
    data: DataBundle
    train_loader: Any
    val_loader: Any
    model: nn.Module
    example_inputs: Any  # a tensor, a tuple, or a dict of keyword inputs (token models)
    provenance: Provenance | None
    model_path: Path | None
    notes: list[str]
    tokenizer: Any = None  # Hugging Face models: the tokenizer from the model's folder
    protect: list[str] = field(default_factory=list)  # modules never pruned, added to pruning.ignore


def resolve_device(name: str, dist: DistContext = SINGLE) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device is cuda but no CUDA device is available; use cpu or auto")
    return torch.device(f"cuda:{dist.local_rank}") if name == "cuda" else torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def load_context(recipe: Recipe, model_path: str | Path | None = None, *, trust: bool = False,
                 dist: DistContext = SINGLE, dense_model: Callable[[RunContext], nn.Module] | None = None,
                 log: Callable[[str], None] | None = None) -> RunContext:
    """Load data and model as the recipe says. `dense_model` builds a model when there is no checkpoint;
    `log` hears of slow parts before they start (tokenising a large text file)."""
    seed_everything(recipe.training.seed)
    device = resolve_device(recipe.training.device, dist)
    if recipe.model.hf.path is not None:
        return _load_hf_context(recipe, device, dist, model_path, log)
    d = recipe.data
    data = load_data(d.source, path=d.path, factory=d.factory, kwargs=dict(d.kwargs), val_fraction=d.val_fraction,
                     split_seed=d.split_seed, num_samples=d.num_samples, val_samples=d.val_samples)
    train_loader, val_loader = make_loaders(data, batch_size=per_rank_batch(d.batch_size, dist),
                                            eval_batch_size=d.eval_batch_size,
                                            seed=recipe.training.seed,
                                            distributed=(dist.rank, dist.world_size) if dist.enabled else None)
    notes = ["data is RANDOM (synthetic): this is a smoke run, accuracy means nothing"] if data.synthetic else []
    shape = list(recipe.model.input_shape) if recipe.model.input_shape else [1, *data.input_shape]
    problem = shape_mismatch(shape, list(data.input_shape))
    if problem:
        raise InputError(problem)
    example = torch.zeros(shape)
    path = model_path or recipe.model.checkpoint
    ctx = RunContext(recipe, device, data, train_loader, val_loader, None, example, None,  # type: ignore[arg-type]
                     Path(path) if path else None, notes)
    if path:
        m = recipe.model
        loaded = load_checkpoint(path, factory=m.factory, factory_kwargs=dict(m.kwargs), trust=trust,
                                 input_shape=shape)
        ctx.model, ctx.provenance = loaded.model, loaded.provenance
        ctx.notes += [loaded.note] if loaded.note else []
        if ctx.provenance is not None and ctx.provenance.input_shape is None:
            ctx.provenance.input_shape = shape
    elif dense_model is not None and recipe.model.factory:
        ctx.provenance = Provenance(recipe.model.factory, dict(recipe.model.kwargs), shape)
        ctx.model = dense_model(ctx)
    else:
        raise InputError("no model: give a checkpoint (dpm prune MODEL or model.checkpoint), or set "
                         "model.factory with pretrain.enabled: true to train a dense model first")
    ctx.model.to(device)
    _check_outputs(ctx)
    return ctx


def check_model_input(recipe: Recipe, model_path: str | Path | None) -> None:
    """What can be told of MODEL from its path and first bytes, before it is hashed, the outputs are
    checked or any data is read: a file where the recipe prunes a Hugging Face folder, another framework's
    model, a folder's weights file, a folder that cannot load (check_folder). (It was said after the data
    loaded, after "BASE exists", or after hashing the folder.)"""
    from ..trust import check_file

    path = model_path or recipe.model.checkpoint or recipe.model.hf.path
    if path is None or not Path(path).exists():
        return  # none (pre-training) or missing: provenance.record names it, with a Hub id's hint
    if recipe.model.hf.path is not None:
        if model_path is not None and not Path(model_path).is_dir():
            raise InputError(_not_a_folder(Path(model_path)))
        from ..hf.load import check_folder

        check_folder(Path(path))  # LFS pointers, a file cut short, quantized: before minutes of hashing
    elif not Path(path).is_dir():
        check_file(Path(path))


def _not_a_folder(path: Path) -> str:
    """MODEL a file where the recipe prunes a Hugging Face model: pruning a pruned model again starts from
    the folder dpm wrote beside its artifact (it was "model.hf.path X is not a folder")."""
    from ..foreign import folder_of_weights, foreign_format

    if path.is_file() and (other := foreign_format(path)) is not None:
        return f"MODEL {path} is {other}"
    base = path.name.removesuffix(".dpm.pt").removesuffix(".pt2").removesuffix(".pt")
    written, folder = path.with_name(f"{base}-hf"), folder_of_weights(path)
    hint = (f" (dpm wrote {written} beside it)" if (written / "config.json").is_file() else
            f" ({path.name} is the weights of the folder {folder}: give {folder})" if folder is not None else "")
    return (f"MODEL {path}: the recipe prunes a Hugging Face model, which dpm loads from its folder; give a "
            f"model folder as MODEL{hint}")


def _load_hf_context(recipe: Recipe, device: torch.device, dist: DistContext,
                     model_path: str | Path | None = None, log: Callable[[str], None] | None = None) -> RunContext:
    """A Hugging Face folder (the MODEL argument, else model.hf.path): model and tokenizer first (text
    data is tokenised by it), then the data."""
    from ..hf import load_hf, protected_modules, token_example, with_decoder_data, with_decoder_inputs
    from ..hf.artifact import hf_provenance
    from ..hf.inputs import reads_tokens
    from ..hf.prunable import head_problem
    from ..hf.save import format_problem

    if model_path is not None and not Path(model_path).is_dir():
        raise InputError(_not_a_folder(Path(model_path)))
    folder = Path(model_path or recipe.model.hf.path)
    loaded = load_hf(folder, recipe.model.hf.task)
    protected = protected_modules(loaded.model)  # refuses a family whose FFN dpm cannot prune
    problem = head_problem(loaded.model, recipe.pruning.head_ratio)
    if not problem and recipe.output.hf:  # before data and training: a folder that cannot be written is known now
        problem = format_problem(loaded.model, recipe.pruning.ranking, recipe.pruning.head_ratio)
    if problem:
        raise ConfigError(problem)
    d, seq_len = recipe.data, recipe.model.seq_len
    data = load_data(d.source, path=d.path, factory=d.factory, kwargs=dict(d.kwargs), val_fraction=d.val_fraction,
                     split_seed=d.split_seed, num_samples=d.num_samples, val_samples=d.val_samples,
                     tokenizer=loaded.tokenizer, log=log,
                     seq_len=seq_len, text_field=d.text_field, label_field=d.label_field, pair_field=d.pair_field,
                     augment=(d.augment.replace_words, d.augment.share),
                     label_names=label_names(getattr(loaded.model.config, "label2id", None),  # labels may be names
                                             getattr(loaded.model.config, "id2label", None)))
    data = with_decoder_data(loaded.model, data)  # an encoder-decoder's decoder reads the text, shifted
    relabelled = False
    if getattr(loaded.model, "_dpm_task", None) in LANGUAGE_MODEL_TASKS:  # scored on its next tokens
        data, relabelled = labelled_by_next_tokens(data)
    train_loader, val_loader = make_loaders(data, batch_size=per_rank_batch(d.batch_size, dist),
                                            eval_batch_size=d.eval_batch_size, seed=recipe.training.seed,
                                            distributed=(dist.rank, dist.world_size) if dist.enabled else None)
    notes = list(loaded.notes) + _cut_note(data, seq_len)
    if relabelled:
        notes.append("the data's labels are not used: a language model is trained and scored on each text's "
                     "next tokens")
    if data.synthetic:
        notes.append("data is RANDOM (synthetic): this is a smoke run, accuracy means nothing")
    if loaded.tokenizer is not None and reads_tokens(loaded.model):
        example = with_decoder_inputs(loaded.model, token_example(loaded.tokenizer, seq_len))
        notes.append(f"MACs are counted on one sequence of {seq_len} tokens (model.seq_len)")
    else:  # no tokenizer: the first validation sample is the example
        example = first_rows(split_batch(next(iter(val_loader)))[0], 1)
    provenance, why = hf_provenance(loaded.model, example)  # the config before pruning: what the artifact rebuilds
    if why and "artifact" in recipe.output.formats:
        notes.append(f"no .dpm.pt artifact will be written: {why}")
    notes += _module_note(recipe, loaded.model)
    ctx = RunContext(recipe, device, data, train_loader, val_loader, loaded.model.to(device), example, provenance,
                     folder, notes, loaded.tokenizer, protected)
    _check_outputs(ctx)
    return ctx


def _module_note(recipe: Recipe, model: nn.Module) -> list[str]:
    """Said before training: the pickled module format will be skipped for a model torch cannot pickle."""
    from ..outputs import MODULE_SKIPPED, unpicklable

    name = unpicklable(model) if "module" in recipe.output.formats else None
    return [MODULE_SKIPPED.format(name=name)] if name else []


def _check_outputs(ctx: RunContext) -> None:
    """Run the model once on the example: it must run, and give logits that fit the labels when classifying."""
    _check_vocabulary(ctx)
    model, example = ctx.model, move(ctx.example_inputs, ctx.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = call_model(model, example)
    except Exception as err:
        raise InputError(f"the model does not run on the example input ({describe(example)}) "
                         f"({type(err).__name__}: {str(err)[:160]}); {_input_fix(ctx)}") from err
    finally:
        model.train(was_training)
    if ctx.data.labeled and ctx.recipe.objective.kind == "cross_entropy":
        _check_labels(ctx, need_logits(out))
    elif ctx.data.labeled and not _labels_score(logits_of(out), _label_sample(ctx.data)):
        ctx.notes.append("the data's labels are not used: they do not score the model's outputs (no logits, "
                         "or a logit per token against a label per text), and label-free distillation needs none")


def _check_labels(ctx: RunContext, logits: torch.Tensor) -> None:
    """The data's labels fit the logits: per example or per word, classes or scores, how many classes."""
    if logits.dim() < 2:
        raise InputError("the model must return logits shaped (batch, classes) to train with labels")
    sample = _label_sample(ctx.data)
    if sample is not None and sample.dim() == 1 and sample.is_floating_point():  # several classes per example
        if logits.dim() != 2 or logits.shape[-1] < sample.shape[0]:
            raise InputError(f"the data has lists of labels over {sample.shape[0]} classes but the model gives "
                             f"logits {list(logits.shape)}: use a classifier with that many labels "
                             "(num_labels; problem_type: multi_label_classification)")
        return
    per_example = None if sample is None else sample.dim() == 0  # else one label per position (words.py)
    if logits.dim() > 2 and per_example:
        head = " (model.hf.task: AutoModelForSequenceClassification)" if ctx.tokenizer is not None else ""
        raise InputError(f"the model gives a label per position (logits {list(logits.shape)}: token "
                         "classification or a language model) but the data has one label per example: give "
                         'labels per word (JSON lines {"tokens": [words], "label": [one per word]}, with '
                         "data.text_field and data.label_field naming them), train label-free with "
                         f"objective.kind: distill, or use a head with one label per example{head}")
    if logits.shape[-1] == 1 and per_example:  # a score per example (regression): no classes to fit
        return
    if per_example and sample.is_floating_point():  # scores
        raise InputError(f"the data's labels are scores (numbers with a fraction) but the model outputs "
                         f"{logits.shape[-1]} logits: give class indices, or a model with one output "
                         "(num_labels: 1), which is fitted by squared error")
    if logits.dim() == 2 and per_example is False:
        raise InputError(f"the data has a label per word but the model gives one per example (logits "
                         f"{list(logits.shape)}): use a token-classification head (model.hf.task: "
                         "AutoModelForTokenClassification), or one label per example")
    check_labels_fit(ctx.data, int(logits.shape[-1]), hf=ctx.recipe.model.hf is not None)


def _labels_score(logits: torch.Tensor | None, sample: torch.Tensor | None) -> bool:
    return logits is not None and sample is not None and scorable(logits, sample.unsqueeze(0))


def _label_sample(data: DataBundle) -> torch.Tensor | None:
    """The first training example's label (a class, a score, a multi-hot row, or one per position)."""
    sample = data.train[0] if len(data.train) else None
    return torch.as_tensor(sample[1]) if isinstance(sample, (tuple, list)) and len(sample) > 1 else None


def _cut_note(data: DataBundle, seq_len: int) -> list[str]:
    """A note when many training texts fill model.seq_len: the tokenizer cut them there, silently."""
    mask = getattr(data.train, "encoded", {}).get("attention_mask")
    if not torch.is_tensor(mask) or mask.dim() != 2 or not len(mask):
        return []
    full = float((mask.sum(dim=1) >= seq_len).float().mean())
    if full < 0.5:
        return []
    return [f"{full:.0%} of the training texts fill model.seq_len ({seq_len} tokens) and are cut there; raise "
            "model.seq_len (up to the model's max_position_embeddings) to train on more of each"]


def _input_fix(ctx: RunContext) -> str:
    """What to change when the model does not run on its example input."""
    positions = max_positions(getattr(ctx.model, "config", None))
    if ctx.tokenizer is not None and positions is not None and positions < ctx.recipe.model.seq_len:
        return (f"model.seq_len {ctx.recipe.model.seq_len} is longer than the model's {positions} positions "
                f"(max_position_embeddings): set model.seq_len to {positions} or less")
    return "fix model.input_shape or the data"


def _check_vocabulary(ctx: RunContext) -> None:
    """Every token id of the example and the tokenised data must have a row in the model's embedding: a
    pad token added to the tokenizer without resize_token_embeddings failed mid-run ("IndexError: index
    out of range in self")."""
    if ctx.tokenizer is None or not hasattr(ctx.model, "get_input_embeddings"):
        return
    try:
        rows = getattr(ctx.model.get_input_embeddings(), "num_embeddings", None)
    except NotImplementedError:  # a model that reads no tokens (ResNet, Wav2Vec2)
        return
    if not isinstance(rows, int):
        return
    parts = [ctx.example_inputs] + [getattr(p, "encoded", None) for p in (ctx.data.train, ctx.data.val)]
    ids = [p["input_ids"] for p in parts if isinstance(p, dict) and torch.is_tensor(p.get("input_ids"))]
    top = max((int(t.max()) for t in ids if t.numel()), default=-1)
    if top >= rows:
        raise InputError(f"the tokenizer gives token id {top} but the model's embedding has {rows} rows "
                         f"(vocab_size): the folder's tokenizer has {len(ctx.tokenizer)} tokens, more than the model "
                         "(a token added without model.resize_token_embeddings?); save the tokenizer the model was "
                         "trained with, or resize and save the model")


def decay_overrun(recipe: Recipe, decay_phase_end: int, steps: int) -> str | None:
    """Why a run of `steps` steps is too short for its decay phase (`dpm prune` refuses it), or None."""
    if decay_phase_end <= steps:
        return None
    return (f"the decay phase ends at step {decay_phase_end} but training has only {steps} steps, with "
            f"{describe_decay(recipe.pruning, steps)}; raise training.epochs/steps or lower "
            "pruning.decay_steps (or decay_fraction), rounds or start_step")


def schedule_problem(recipe: Recipe) -> str | None:
    """`decay_overrun` from the recipe alone, when training.steps fixes the length (with training.epochs
    it depends on the data): `dpm validate` and `dpm prune` say it before loading anything."""
    steps = recipe.training.steps
    return decay_overrun(recipe, dpm_config(recipe, steps).decay_phase_end, steps) if steps else None


def folder_groups_problem(recipe: Recipe, model: nn.Module, groups: list) -> str | None:
    """Why the shapes these groups leave cannot be written in the model's folder, or None: an FFN or an
    attention left unpruned beside pruned ones that share its config key, or heads of a composite's part
    that cannot record them. Asked once the groups are known (`dpm prune` refuses before training)."""
    from ..hf import is_hf_model
    from ..hf.head_config import pruned_head_problem, unpruned_heads_problem
    from ..hf.save import unpruned_ffn_problem

    if not recipe.output.hf or not is_hf_model(model):
        return None
    ratio = recipe.pruning.head_ratio
    return (unpruned_ffn_problem(model, groups) or unpruned_heads_problem(model, groups, ratio)
            or pruned_head_problem(model, groups, ratio))


def dpm_config(recipe: Recipe, steps: int, protect: list[str] = ()) -> DPMConfig:
    """The engine's options for a run of `steps` optimizer steps; `protect` adds module names to ignore."""
    p = recipe.pruning
    r = p.rectify
    n = resolve_decay_steps(p, steps)
    if p.round_interval is not None and p.round_interval < n:
        # The loader checks this only against a written decay_steps; a fraction is known only now.
        raise ConfigError(f"pruning.round_interval ({p.round_interval}) is shorter than the decay, "
                          f"{describe_decay(p, steps)}, so rounds would overlap; set it >= {n} "
                          "or lower pruning.decay_fraction")
    return DPMConfig(
        budget=p.budget.keep, budget_kind=p.budget.kind, criterion=p.criterion, ranking=p.ranking,
        max_layer_ratio=p.max_layer_ratio, min_channels=p.min_channels, round_to=p.round_to,
        ignore=list(p.ignore) + [n for n in protect if n not in p.ignore], ignore_classifier=p.ignore_classifier,
        decay_steps=n, decay_shape=p.decay_shape,
        rounds=p.rounds, round_interval=p.round_interval, start_step=p.start_step,
        rectify=RectifyConfig(enabled=r.enabled and p.mode == "smooth", rate_quantile=r.rate_quantile, rate_threshold=r.rate_threshold,
                              len_threshold=r.len_threshold, patience=r.patience),
        max_equivalence_error=p.max_equivalence_error, seed=recipe.training.seed, preflight=p.preflight,
        graph_timeout_s=p.graph_timeout_s, prune_through_norm=p.prune_through_norm, head_ratio=p.head_ratio)


def shape_mismatch(shape: list[int], sample: list[int]) -> str | None:
    """Why model.input_shape (batch first) does not fit the data's samples, saying what differs; or None."""
    if shape[1:] == sample:
        return None
    if shape == sample:  # the commonest slip: the sample shape, without the batch dimension
        return (f"model.input_shape {shape} has no batch dimension: it is batch first, so for samples of shape "
                f"{sample} write [1, {', '.join(map(str, sample))}]")
    if len(shape) - 1 != len(sample):
        return (f"model.input_shape {shape} (batch first) describes samples with {len(shape) - 1} dimension(s) "
                f"{shape[1:]}, but the data's samples have {len(sample)}: {sample}; fix model.input_shape or the data")
    differ = ", ".join(f"dimension {i + 1}: {a} vs {b}" for i, (a, b) in enumerate(zip(shape[1:], sample)) if a != b)
    return (f"model.input_shape {shape} (batch first) does not match the data's sample shape {sample} "
            f"({differ}); fix model.input_shape or the data")


def total_steps(recipe: Recipe, train_loader: Any) -> int:
    t = recipe.training
    steps = t.steps if t.steps else t.epochs * len(train_loader)
    problem = steps_problem(steps)
    if problem:  # training.epochs x the batches per epoch: refused before any training
        raise ConfigError(f"training.epochs {t.epochs} x {len(train_loader)} batches per epoch: {problem}")
    return steps
