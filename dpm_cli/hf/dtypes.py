"""The dtypes a model folder stored its weights in. dpm trains and compacts in float32 (`load_hf`), and
writes the folder back in the dtypes it read: a bfloat16 checkpoint (most published decoders) stays
bfloat16 on disk, where float32 would make the pruned folder larger than the original."""
from __future__ import annotations

import json
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

ATTRIBUTE = "_dpm_stored_dtypes"  # {state_dict key: dtype} for every floating tensor not stored as float32


def record_dtypes(model: nn.Module) -> None:
    """Remember the dtype of each floating tensor of a just-loaded model that is not float32."""
    setattr(model, ATTRIBUTE, {name: t.dtype for name, t in model.state_dict().items()
                               if t.is_floating_point() and t.dtype != torch.float32})


def stored_dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    return dict(getattr(model, ATTRIBUTE, None) or {})


def stored_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The state dict cast back to the dtypes the folder held, or None when it held float32 only.
    Names survive pruning (only shapes change), so each tensor finds its dtype by name."""
    dtypes = stored_dtypes(model)
    if not dtypes:
        return None
    cast: dict[tuple, torch.Tensor] = {}  # one copy per storage: tied weights stay one tensor, saved once
    state = {}
    for name, t in model.state_dict().items():
        if name in dtypes:
            t = cast.setdefault((t.data_ptr(), t.shape, t.stride()), t.to(dtypes[name]))
        state[name] = t
    return state


def write_config_dtype(model: nn.Module, folder: Path) -> None:
    """Set config.json's dtype to the stored one: save_pretrained writes the float32 model's own."""
    dtypes = stored_dtypes(model)
    if not dtypes:
        return
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    most = Counter(dtypes.values()).most_common(1)[0][0]
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = str(most).removeprefix("torch.")
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@contextmanager
def as_stored(model: nn.Module) -> Iterator[None]:
    """The model's weights rounded to the stored dtypes for the duration (restored afterwards): the
    function the saved folder holds, to compare a float32 reload of it with."""
    dtypes = stored_dtypes(model)
    tensors = {name: t for name, t in model.state_dict(keep_vars=True).items() if name in dtypes}
    saved = {name: t.data.clone() for name, t in tensors.items()}
    try:
        with torch.no_grad():
            for name, t in tensors.items():
                t.data.copy_(t.data.to(dtypes[name]))
        yield
    finally:
        with torch.no_grad():
            for name, t in tensors.items():
                t.data.copy_(saved[name])
