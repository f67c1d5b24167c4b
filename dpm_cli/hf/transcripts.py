"""Decoder inputs for a speech encoder-decoder (Whisper, as AutoModelForSpeechSeq2Seq) trained on audio
alone: the original model's own greedy transcription of each input, start token first, as distil-whisper
distils on pseudo-labels. Teacher-forced on it, the decoder and cross-attention see what the model says
about that audio, where the decoder start token alone would distil one position only."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset, TensorDataset

from ..data.bundle import InputsDataset

DECODER_TOKENS = 32  # transcription tokens per input: a sentence of speech; bounded, generation is sequential
CHUNK = 16  # inputs per generate() call


@torch.no_grad()
def transcribe(model: nn.Module, inputs: dict[str, torch.Tensor], start: int,
               max_tokens: int = DECODER_TOKENS) -> torch.Tensor:
    """(n, up to max_tokens) decoder inputs: `start`, then what greedy generation produced, padded. A
    model with no LM head to generate with (WhisperModel, as AutoModel) gets the start token alone."""
    from .load import captured_warnings

    n = len(next(v for v in inputs.values() if torch.is_tensor(v)))
    can_generate = getattr(model, "can_generate", None)
    if not hasattr(model, "generate") or not (can_generate() if callable(can_generate) else False):
        return torch.full((n, 1), start, dtype=torch.long)
    rows: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with captured_warnings():  # generation's notes on its own defaults are not the user's business
            for i in range(0, n, CHUNK):
                part = {k: v[i:i + CHUNK] for k, v in inputs.items() if torch.is_tensor(v)}
                out = model.generate(**part, max_new_tokens=max_tokens - 1, do_sample=False, num_beams=1)
                seq = out if torch.is_tensor(out) else out.sequences
                if not bool((seq[:, 0] == start).all()):  # Whisper's generate leaves the start token out
                    seq = torch.cat([seq.new_full((len(seq), 1), start), seq], dim=1)
                rows.append(seq[:, :max_tokens])
    finally:
        model.train(was_training)
    pad = getattr(model.config, "pad_token_id", None)
    pad = pad if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else start  # a value from a file
    width = max(r.shape[1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=pad) for r in rows])


def audio_dataset(model: nn.Module, dataset: Dataset, start: int) -> Any:
    """A tensors dataset (audio features, with or without labels) as a dict dataset under the model's
    input name, with each input's transcription as its decoder input; None for any other dataset."""
    from ..data.text import TokenDataset

    if isinstance(dataset, InputsDataset):
        inputs, labels = dataset.inputs, None
    elif isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        inputs, labels = dataset.tensors
    else:
        return None
    encoded = {model.main_input_name: inputs}
    return TokenDataset({**encoded, "decoder_input_ids": transcribe(model, encoded, start)}, labels)
