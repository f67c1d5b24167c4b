"""The recipe schema, version 1: one frozen dataclass per section, one line per key.

To add a key, add one `opt(...)` line to its section; the loader, overrides, `dump_recipe` and
`describe_schema` pick it up. Lists are stored as tuples so a built `Recipe` cannot be changed by
accident (use `dataclasses.replace`); free-form `kwargs` mappings stay plain dicts.

Paths: `model.checkpoint` and `data.path` written in a recipe file are resolved against the
folder of that file, and paths given as command-line overrides against the current working
directory; a built `Recipe` holds them as absolute paths. `output.dir` is *not* resolved: it is
relative to the working directory at run time.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from ..escaping import printable
from ..limits import example_bytes_problem, steps_problem
from .spec import Spec, default_of, fields_of, opt, section

SUPPORTED_VERSIONS = (1,)

# N when a recipe sets neither pruning.decay_steps nor pruning.decay_fraction: in the benchmarks
# (docs/BENCHMARKS.md) 25% of the fine-tuning steps was the only N never beaten.
DEFAULT_DECAY_FRACTION = 0.25

_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _factory_form(value: str) -> str | None:
    # Only the form is checked here; importing the callable is the model/data layer's job.
    if _FACTORY.fullmatch(value):
        return None
    return f"'{printable(value, 60)}' is not of the form 'package.module:callable'; write e.g. 'dpm_cli.models:resnet56'"


def _base_name(value: str) -> str | None:
    if "/" in value or "\\" in value:
        return f"'{printable(value, 60)}' is a path; give a plain base name here and put the folder in output.dir"
    return None


_POSITIVE_INT = Spec("int", "dimension size", ge=1, fix="every dimension of the shape must be positive")
_UNIT = Spec("float", "beta coefficient", ge=0, lt=1)
_PATTERN = Spec("str", "module-name glob pattern, e.g. 'layer1.*'")
_FORMAT = Spec("str", "output format", choices=("module", "artifact", "export"))


# The transformers Auto classes model.hf.task may name (dpm_cli.hf.TASKS); each maps a folder to a model
# with that head. AutoModelForTextEncoding is the encoder alone of an encoder-decoder (T5's T5EncoderModel);
# AutoModelForSeq2SeqLM the whole of one with its LM head (T5, BART, Marian), its decoder fed the text shifted;
# AutoModelForSpeechSeq2Seq Whisper, its decoder fed the original model's transcription of the audio;
# AutoModelForImageTextToText a vision-language model with its LM head (LLaVA, PaliGemma), pruned on text.
HF_TASKS = ("AutoModel", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
            "AutoModelForQuestionAnswering", "AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoModelForSeq2SeqLM",
            "AutoModelForMultipleChoice", "AutoModelForTextEncoding", "AutoModelForImageClassification",
            "AutoModelForAudioClassification", "AutoModelForCTC", "AutoModelForSpeechSeq2Seq",
            "AutoModelForImageTextToText")
_TARGET = Spec("str", "distillation target", choices=("auto", "logits", "embedding", "hidden", "layers"))


@dataclass(frozen=True)
class HFSection:
    path: str | None = opt(None, "path", "a Hugging Face model folder (config.json, model.safetensors, tokenizer), relative to the recipe's folder, or package:NAME/dir inside an installed package; loaded offline, no code run from it")
    task: str = opt("auto", "str", "the Auto class that loads it (the task head); auto: the one its config.json's architectures belongs to", choices=("auto", *HF_TASKS))


@dataclass(frozen=True)
class ModelSection:
    factory: str | None = opt(None, "str", "'package.module:callable' building the architecture (needed for state_dict checkpoints)", check=_factory_form)
    kwargs: dict = opt({}, "mapping", "keyword arguments for model.factory")
    checkpoint: str | None = opt(None, "path", "checkpoint file, relative to the recipe's folder; the CLI's MODEL argument overrides it")
    input_shape: tuple | None = opt(None, "list", "example input shape for tracing, batch first, e.g. [1, 3, 32, 32]", item=_POSITIVE_INT, min_len=1, check=example_bytes_problem)
    hf: HFSection = section(HFSection)
    seq_len: int = opt(128, "int", "token models: sequence length of the example input and of text data (MACs are counted at it)", ge=1)


@dataclass(frozen=True)
class AugmentSection:
    replace_words: float = opt(0.0, "float", "text data: in the augmented paragraphs, the fraction of words replaced by whole words drawn from the tokenizer's vocabulary (0: off); broadens what calibration and distillation see", ge=0, le=1)
    share: float = opt(0.5, "float", "text data: the fraction of the training paragraphs augmented (validation text is never changed)", ge=0, le=1)


@dataclass(frozen=True)
class DataSection:
    source: str = opt("mnist", "str", "where the data comes from", choices=("mnist", "digits", "tensors", "factory", "random", "text", "pydoc", "local-docs", "wordnet", "english"))
    path: str | None = opt(None, "path", "a .pt or .npz file with inputs and labels (source tensors), or a text file (source text: one example per line, JSON lines, or a .csv/.tsv with a header), relative to the recipe's folder")
    text_field: str = opt("text", "str", "source text, JSON lines: the key holding the text, or a list of words labelled one by one (token classification)")
    pair_field: str | None = opt(None, "str", "source text, JSON lines: the key holding a second text, tokenised with the first as a pair (a cross-encoder's query and passage, NLI's premise and hypothesis)")
    label_field: str = opt("label", "str", "source text, JSON lines: the key holding an optional label, a class index or one of the model's label names (config.json label2id); a list of them, one per word, with a list of words")
    factory: str | None = opt(None, "str", "'package.module:callable' returning (train_loader, val_loader) (required when source is factory)", check=_factory_form)
    kwargs: dict = opt({}, "mapping", "keyword arguments for data.factory")
    val_fraction: float = opt(0.2, "float", "fraction of the samples held out for validation", gt=0, lt=1)
    batch_size: int = opt(64, "int", "training batch size", ge=1)
    eval_batch_size: int = opt(256, "int", "evaluation batch size", ge=1)
    num_samples: int | None = opt(None, "int", "use only the first N training samples, for quick runs", ge=1)
    val_samples: int | None = opt(None, "int", "evaluate on only N validation samples, a fixed seeded part (class-balanced), for large data: every evaluation reads the same ones", ge=1)
    split_seed: int = opt(0, "int", "seed of the train/validation split")
    augment: AugmentSection = section(AugmentSection)


@dataclass(frozen=True)
class ObjectiveSection:
    kind: str = opt("cross_entropy", "str", "training loss; distill needs no labels", choices=("cross_entropy", "distill"))
    temperature: float = opt(4.0, "float", "distillation temperature", gt=0)
    distill_weight: float = opt(0.0, "float", "with cross_entropy, weight of distillation from the original model", ge=0, le=1)
    targets: tuple = opt(["auto"], "list", "what distillation matches: logits (KL at temperature; a question-answering head: its start and end logits), embedding (pooled as the folder's sentence-transformers pipeline pools: mean over the attention mask without one), hidden (last hidden states), layers (every transformer block's output); auto: logits if the model has them, else embedding", item=_TARGET, min_len=1, unique=True)
    loss: str = opt("cosine", "str", "loss on embedding and hidden targets", choices=("cosine", "mse", "both"))


@dataclass(frozen=True)
class BudgetSection:
    kind: str = opt("macs", "str", "what the budget counts", choices=("macs", "params", "channels"))
    keep: float = opt(0.5, "float", "fraction of the ORIGINAL model kept", gt=0, le=1, fix="give the fraction of the original model to keep, e.g. 0.5")


@dataclass(frozen=True)
class RectifySection:
    enabled: bool = opt(True, "bool", "release channels whose decay hurts too much (self-rectification)")
    rate_quantile: float | None = opt(0.99, "float", "T_rate as this quantile of the current C_rate values (null: floor only)", gt=0, lt=1, nullable=True)
    rate_threshold: float = opt(0.0, "float", "absolute floor for C_rate; a release needs C_rate > max(floor, quantile value)")
    len_threshold: float = opt(1.0, "float", "C_len threshold for a release", gt=0)
    patience: int = opt(3, "int", "checks in a row a channel must qualify before it is released", ge=1)


@dataclass(frozen=True)
class RecalibrateSection:
    enabled: bool = opt(True, "bool", "re-estimate BatchNorm statistics after pruning")
    batches: int = opt(20, "int", "training batches used to re-estimate them", ge=1)
    at_zero: bool = opt(False, "bool", "also re-estimate them during training, right after structures reach zero, so the running statistics (and a state saved then) are never stale")


@dataclass(frozen=True)
class PruningSection:
    budget: BudgetSection = section(BudgetSection)
    reconstruct: bool = opt(False, "bool", "when structures reach zero, refit the linear layers that read them (an FFN's down projection) by least squares to the original model's outputs on the calibration batches (pruning.recalibrate_bn.batches)")
    criterion: str = opt("magnitude", "str", "channel importance criterion (activation: weight column norm x RMS input on the calibration batches, Wanda-style; obs: the output error removing a channel leaves after least-squares compensation, Optimal Brain Surgeon, pairs with reconstruct)", choices=("magnitude", "taylor", "bn_scale", "lamp", "random", "activation", "obs"))
    ranking: str = opt("global", "str", "rank channels across the model or within each layer", choices=("global", "layer"))
    max_layer_ratio: float = opt(0.9, "float", "at most this fraction of one group's channels is pruned", gt=0, lt=1)
    min_channels: int = opt(1, "int", "channels every group keeps", ge=1)
    round_to: int = opt(1, "int", "kept channel counts are multiples of this", ge=1)
    ignore: tuple = opt([], "list", "module-name glob patterns never pruned", item=_PATTERN)
    ignore_classifier: bool = opt(True, "bool", "never prune a structure that feeds the model's outputs (the classifier's classes, a returned hidden size)")
    mode: str = opt("smooth", "str", "smooth: DPM's decay over N steps; single_step: cut at once (N = 1; decay_steps, decay_fraction and rectify are ignored)", choices=("smooth", "single_step"))
    rounds: int = opt(1, "int", "number of pruning rounds", ge=1)
    decay_steps: int | None = opt(None, "int", "N: optimizer steps over which channels decay to zero (1 = single-step pruning); or set decay_fraction", ge=1, nullable=True)
    decay_fraction: float | None = opt(None, "float", "N as a fraction of the fine-tuning steps, rounded, at least 1; 0.25 when neither this nor decay_steps is set", gt=0, le=1, nullable=True)
    decay_shape: str = opt("linear", "str", "the norm's path to zero: linear (the paper) or cosine (gentle start and end)", choices=("linear", "cosine"))
    round_interval: int | None = opt(None, "int", "optimizer steps between round starts, >= N (default N)", ge=1)
    start_step: int = opt(0, "int", "optimizer step at which the first round starts", ge=0)
    rectify: RectifySection = section(RectifySection)
    recalibrate_bn: RecalibrateSection = section(RecalibrateSection)
    max_equivalence_error: float = opt(1.0e-4, "float", "largest output difference allowed between the decayed and the compact model", gt=0)
    preflight: bool = opt(True, "bool", "before training, zero and remove what the run would prune (then undo it), so a model torch-pruning cannot shrink fails in seconds")
    graph_timeout_s: float = opt(300.0, "float", "stop building torch-pruning's dependency graph after this many seconds", gt=0)
    head_ratio: float | None = opt(None, "float", "fraction of the heads removed from every attention module pruned by heads (0 keeps them; like torch-pruning's head_pruning_ratio); the rest of the budget comes from the other structures. null: heads compete in the one budget", ge=0, lt=1, nullable=True)
    prune_through_norm: bool = opt(False, "bool", "also prune channels coupled through LayerNorm/GroupNorm (residual width of ConvNeXt, ViT, BERT); not exact: the drift is reported and the compact model is fine-tuned after removal")
    post_removal_steps: int | None = opt(None, "int", "with prune_through_norm: optimizer steps of fine-tuning after removal (default 10% of training.steps, at least 1)", ge=1, nullable=True)


@dataclass(frozen=True)
class OptimizerSection:
    name: str = opt("sgd", "str", "optimizer", choices=("sgd", "adamw"))
    lr: float = opt(0.05, "float", "learning rate (about half the dense model's peak learning rate works well)", gt=0, fix="give a positive learning rate, e.g. 0.05")
    momentum: float = opt(0.9, "float", "SGD momentum", ge=0, lt=1)
    nesterov: bool = opt(False, "bool", "Nesterov momentum for SGD")
    weight_decay: float = opt(5.0e-4, "float", "weight decay", ge=0)
    betas: tuple = opt([0.9, 0.999], "list", "AdamW betas", item=_UNIT, length=2)


@dataclass(frozen=True)
class ScheduleSection:
    name: str = opt("cosine", "str", "learning-rate schedule", choices=("cosine", "step", "constant"))
    warmup_steps: int = opt(0, "int", "linear warm-up steps", ge=0)
    step_size: int = opt(1000, "int", "steps between decays, for step", ge=1)
    gamma: float = opt(0.1, "float", "decay factor, for step", gt=0, le=1)
    min_lr: float = opt(0.0, "float", "lowest learning rate, for cosine", ge=0)
    decay_lr_scale: float = opt(1.0, "float", "multiplies the learning rate from the first selection to the end of the decay phase", gt=0)


@dataclass(frozen=True)
class TrainingSection:
    epochs: int | None = opt(3, "int", "fine-tuning epochs, decay phase included (or set steps instead)", ge=1, nullable=True)
    steps: int | None = opt(None, "int", "fine-tuning optimizer steps; overrides epochs when set", ge=1, check=steps_problem)
    optimizer: OptimizerSection = section(OptimizerSection)
    schedule: ScheduleSection = section(ScheduleSection)
    eval_every: int | None = opt(None, "int", "steps between evaluations (null: once per epoch)", ge=1)
    eval_every_decay: int | None = opt(None, "int", "steps between evaluations while structures decay and for eval_after_decay steps after they reach zero, plus one on the step they reach zero (the anytime accuracy's cadence); null: only eval_every", ge=1)
    eval_after_decay: int = opt(10, "int", "steps after the decay (all structures zero) that eval_every_decay still covers", ge=0)
    log_every: int = opt(10, "int", "steps between log lines", ge=1)
    checkpoint_every: int = opt(100, "int", "steps between resumable state saves", ge=1)
    device: str = opt("cpu", "str", "device to train on", choices=("cpu", "cuda", "auto"))
    bf16: bool = opt(False, "bool", "train in bfloat16 autocast")
    seed: int = opt(0, "int", "random seed")
    grad_clip: float | None = opt(None, "float", "clip the gradient norm to this value", gt=0)


@dataclass(frozen=True)
class PretrainSection:
    enabled: bool = opt(False, "bool", "for demos: train a dense model first when no checkpoint is given")
    epochs: int = opt(3, "int", "pre-training epochs", ge=1)
    lr: float = opt(0.05, "float", "pre-training learning rate", gt=0)
    batch_size: int | None = opt(None, "int", "pre-training batch size (null: data.batch_size)", ge=1)


@dataclass(frozen=True)
class OutputSection:
    dir: str = opt("runs/dpm", "str", "run directory, relative to the working directory (not the recipe)")
    name: str = opt("model", "str", "base name of the output files", check=_base_name)
    formats: tuple = opt(["module", "artifact", "export"], "list", "files to write", item=_FORMAT, min_len=1, unique=True)
    hf: bool = opt(False, "bool", "Hugging Face models: also write BASE-hf/ with save_pretrained (config rewritten to the pruned shapes) and the tokenizer")


@dataclass(frozen=True)
class Recipe:
    """A fully validated recipe. Build it with `load_recipe`/`parse_recipe`, not directly."""

    version: int = opt(1, "int", "recipe format version (required)")
    notes: str | None = opt(None, "str", "free-form notes, ignored")
    model: ModelSection = section(ModelSection)
    data: DataSection = section(DataSection)
    objective: ObjectiveSection = section(ObjectiveSection)
    pruning: PruningSection = section(PruningSection)
    training: TrainingSection = section(TrainingSection)
    pretrain: PretrainSection = section(PretrainSection)
    output: OutputSection = section(OutputSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, every key present, ready for `yaml.safe_dump`."""
        return to_dict(self)


def resolve_decay_steps(pruning: PruningSection, total_steps: int) -> int:
    """N in optimizer steps: 1 in single_step mode, decay_steps as written, else the decay fraction of
    `total_steps`, at least 1."""
    if pruning.mode == "single_step":
        return 1
    if pruning.decay_steps is not None:
        return pruning.decay_steps
    fraction = pruning.decay_fraction if pruning.decay_fraction is not None else DEFAULT_DECAY_FRACTION
    return max(1, round(fraction * total_steps))


def describe_decay(pruning: PruningSection, total_steps: int | None) -> str:
    """N for people, e.g. 'N = 46 steps (decay_fraction 0.25, of 186 fine-tuning steps)'.

    `total_steps` None (training.epochs, before the data is loaded) gives the rule instead of a number."""
    if pruning.mode == "single_step":
        return "N = 1 step (pruning.mode single_step)"
    if pruning.decay_steps is not None:
        return f"N = {pruning.decay_steps} steps (pruning.decay_steps)"
    written = pruning.decay_fraction is not None
    fraction = pruning.decay_fraction if written else DEFAULT_DECAY_FRACTION
    what = f"decay_fraction {fraction:g}" + ("" if written else ", the default")
    if total_steps is None:
        return f"N = {fraction:g} x the fine-tuning steps ({what}; they depend on the data: dpm plan shows N)"
    return f"N = {resolve_decay_steps(pruning, total_steps)} steps ({what}, of {total_steps} fine-tuning steps)"


def to_dict(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def describe_schema() -> list[tuple[str, str, str]]:
    """(key path, default as YAML, help with constraints) for every leaf key, in schema order."""
    rows: list[tuple[str, str, str]] = []
    _describe(Recipe, "", rows)
    return rows


def _describe(cls: type, prefix: str, rows: list[tuple[str, str, str]]) -> None:
    for name, f in fields_of(cls).items():
        path = f"{prefix}{name}"
        if "section" in f.metadata:
            _describe(f.metadata["section"], f"{path}.", rows)
            continue
        spec: Spec = f.metadata["spec"]
        rule = spec.expected() + (", or null" if spec.nullable else "")
        rows.append((path, _flow(default_of(f)), f"{spec.help} [{rule}]"))


def _flow(value: Any) -> str:
    """A default rendered as YAML flow text: null, true, 0.5, [module, artifact], {}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return str(value)
