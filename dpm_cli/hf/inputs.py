"""Example inputs for token models: a sample sentence from the model's own tokenizer, padded to a stated length."""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..limits import check_example_shape
from ..pooling import as_served

# Costs are measured on this sentence padded to model.seq_len: MACs grow with the sequence length,
# so every report states the length it counted at.
SAMPLE_TEXT = "Pruning removes whole channels from a trained network while it keeps learning."


def is_hf_model(model: nn.Module) -> bool:
    """A transformers `PreTrainedModel` (checked by duck type: transformers is imported lazily)."""
    return hasattr(model, "config") and hasattr(model, "save_pretrained") and hasattr(model.config, "to_dict")


def token_example(tokenizer: Any, seq_len: int, batch: int = 1) -> dict[str, torch.Tensor]:
    """The tokenizer's encoding of SAMPLE_TEXT, padded (or truncated) to `seq_len` tokens."""
    if tokenizer is None:
        raise ConfigError("the model folder has no tokenizer, so dpm cannot build token inputs; "
                          "save the tokenizer into the folder (tokenizer.save_pretrained)")
    enc = tokenizer(as_served([SAMPLE_TEXT], tokenizer) * batch, padding="max_length", truncation=True,
                    max_length=seq_len, return_tensors="pt")
    return {k: v for k, v in enc.items() if torch.is_tensor(v)}


def derived_example(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """One input for a model without a tokenizer, shaped from its config and named by its
    `main_input_name` (as its processor would name it): an image of `image_size` for vision encoders
    (ViT, DeiT, DINOv2, CLIP's vision tower), one second of 16 kHz audio for speech encoders
    (Wav2Vec2, HuBERT), Whisper's log-mel frames, Wav2Vec2-BERT's stacked mel frames; None when the config does not say. A convolutional
    network's config has no image size (ResNet, ConvNeXt): its image processor's, saved beside it in
    preprocessor_config.json, is used."""
    config, name = getattr(model, "config", None), getattr(model, "main_input_name", None)
    shape: tuple[int, ...] | None = None
    size = (getattr(config, "image_size", None) or _processor_size(config)) if name == "pixel_values" else None
    if size:
        height, width = size[:2] if isinstance(size, (list, tuple)) and len(size) >= 2 else (size, size)
        shape = (1, _size(getattr(config, "num_channels", 3)), _size(height), _size(width))
    elif name == "input_values":  # raw waveform: the feature encoder's convolutions need some length
        shape = (1, 16000)
    elif name == "input_features" and getattr(config, "num_mel_bins", None) and getattr(config, "max_source_positions", None):
        shape = (1, _size(config.num_mel_bins), 2 * _size(config.max_source_positions))  # Whisper's stride-2 conv
    elif name == "input_features" and getattr(config, "feature_projection_input_dim", None):
        # Wav2Vec2-BERT: one second of its feature extractor's frames (80 mel bins, two 10 ms frames stacked)
        shape = (1, 50, _size(config.feature_projection_input_dim))
    if shape is None:
        return None
    # the sizes come from a file: checked like a typed --input-shape before anything is allocated
    check_example_shape(shape, f"the input {name} shaped from {type(config).__name__}")
    return {name: torch.randn(shape, generator=torch.Generator().manual_seed(0))}


def folder_example(model: nn.Module, tokenizer: Any, seq_len: int) -> dict[str, torch.Tensor] | None:
    """A folder's example input: its tokenizer's sample sentence when it has one (with the decoder's
    inputs for an encoder-decoder), else `derived_example`."""
    if tokenizer is None or not reads_tokens(model):
        example = derived_example(model)
        return None if example is None else with_decoder_inputs(model, example)
    return with_decoder_inputs(model, token_example(tokenizer, seq_len))


def reads_tokens(model: nn.Module) -> bool:
    """The model's main input is token ids. A speech folder may hold a tokenizer too (Whisper's, a CTC
    model's vocab.json), for its outputs: its example is shaped from the config, not tokenised."""
    return getattr(model, "main_input_name", "input_ids") == "input_ids"


def takes_decoder_inputs(model: nn.Module) -> bool:
    """An encoder-decoder whose forward takes decoder inputs (T5, BART, Marian as AutoModel or
    AutoModelForSeq2SeqLM), not T5's encoder alone (AutoModelForTextEncoding), whose config says
    is_encoder_decoder too."""
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return False
    try:
        return "decoder_input_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def with_decoder_inputs(model: nn.Module, encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`encoded` plus the decoder's teacher-forced input for an encoder-decoder: the same tokens shifted
    right by one behind the decoder start token, as transformers' `shift_tokens_right` makes them from
    labels. Label-free distillation then runs the encoder, cross-attention and the decoder on the text
    itself, and the decoder's output at position i (predicting token i) counts where the attention mask
    keeps token i. Speech (no input_ids): the model's own greedy transcription (`transcripts`). Other
    models, and inputs that already hold decoder inputs, are returned as they are."""
    if not takes_decoder_inputs(model) or "decoder_input_ids" in encoded:
        return encoded
    ids, start = encoded.get("input_ids"), decoder_start_token(model.config)
    if not torch.is_tensor(ids):  # speech (Whisper): no text to shift, the model's own transcription
        from .transcripts import transcribe

        main = encoded.get(getattr(model, "main_input_name", ""))
        return {**encoded, "decoder_input_ids": transcribe(model, encoded, start)} if torch.is_tensor(main) else encoded
    decoder = torch.full_like(ids, start)
    decoder[..., 1:] = ids[..., :-1]
    return {**encoded, "decoder_input_ids": decoder}


def decoder_start_token(config: Any) -> int:
    """The token the decoder starts from: config.decoder_start_token_id, else its pad token (T5, Marian)."""
    for key in ("decoder_start_token_id", "pad_token_id"):
        value = getattr(config, key, None)
        if value is not None:
            vocab = getattr(config, "decoder_vocab_size", None) or getattr(config, "vocab_size", None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"the model's config gives {key} {value!r}, not a token id; fix config.json")
            if isinstance(vocab, int) and value >= vocab:
                raise ConfigError(f"the model's config gives {key} {value}, outside its vocabulary of {vocab} "
                                  "tokens, so the decoder cannot start from it; fix config.json")
            return value
    raise ConfigError("the encoder-decoder's config sets neither decoder_start_token_id nor pad_token_id, so dpm "
                      "cannot build the decoder's inputs; set decoder_start_token_id in config.json")


def _processor_size(config: Any) -> tuple[Any, Any] | None:
    """(height, width) of the images the folder's image processor makes (its crop, else its resize:
    {"height", "width"}, {"shortest_edge"} or one number), read from preprocessor_config.json; None
    without one. The values are checked by `_size` like any other size from a file."""
    path = Path(str(getattr(config, "_name_or_path", "") or "")) / "preprocessor_config.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return None
    for key in ("crop_size", "size"):
        value = settings.get(key) if isinstance(settings, dict) else None
        if isinstance(value, dict) and "height" in value and "width" in value:
            return value["height"], value["width"]
        if isinstance(value, dict) and "shortest_edge" in value:
            return value["shortest_edge"], value["shortest_edge"]
        if value is not None and not isinstance(value, dict):
            return value, value
    return None


def _size(value: Any) -> int:
    """A positive integer size from a config, or one line saying which value is not one."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"the model's config gives the input size {value!r}, not a positive integer; "
                          "fix config.json or pass --input-shape")
    return value


def with_decoder_data(model: nn.Module, data: Any) -> Any:
    """A DataBundle whose token examples carry the decoder's inputs too (`with_decoder_inputs`) when the
    model is an encoder-decoder; other models and other data are returned as they are."""
    import dataclasses

    if not takes_decoder_inputs(model):
        return data
    return dataclasses.replace(data, train=with_decoder_dataset(model, data.train),
                               val=with_decoder_dataset(model, data.val))


def with_decoder_dataset(model: nn.Module, dataset: Any) -> Any:
    """A token dataset with the decoder's inputs added for an encoder-decoder; anything else as it is."""
    from ..data.text import TokenDataset
    from .transcripts import audio_dataset

    if not takes_decoder_inputs(model):
        return dataset
    if isinstance(dataset, TokenDataset):
        return TokenDataset(with_decoder_inputs(model, dataset.encoded), dataset.labels)
    audio = audio_dataset(model, dataset, decoder_start_token(model.config))  # tensors: Whisper's features
    return dataset if audio is None else audio
