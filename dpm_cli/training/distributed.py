"""Data-parallel training on PyTorch's own engine: torchrun + DistributedDataParallel.

A single process is a world of size one. Under `torchrun` (RANK, WORLD_SIZE, LOCAL_RANK in the
environment) `init_from_env` joins the process group: NCCL when training on CUDA, gloo on the CPU.
`DistContext` answers: which rank am I, is this the main rank (the one that writes files and draws
progress), how do I average a metric across ranks, and how do I reach the bare model inside the
DistributedDataParallel wrapper.

DPM decisions need no communication of their own: DDP all-reduces the gradients, so after every
optimizer step all ranks hold the same weights and gradients, and selection (seeded), decay and
Self-Rectifying compute the same thing everywhere. `agree` checks that at the end.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import ConfigError, TrainingError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return value
        out = value.detach().clone().float()
        dist.all_reduce(out)
        return out / self.world_size

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DistributedDataParallel around the model in a multi-process run; the model itself otherwise."""
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        # A Hugging Face model often has parameters the loss never reaches (BERT's pooler when distilling
        # hidden states, experts no token of a batch is routed to): DDP must look for them, or its
        # second step fails ("Expected to have finished reduction in the prior iteration").
        unused = hasattr(model, "config") and hasattr(model, "save_pretrained")
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)

    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

    def agree(self, model: nn.Module, events: list[dict[str, Any]]) -> None:
        """Raise unless every rank holds identical parameters and the same DPM event log."""
        if not self.enabled:
            return
        mine = fingerprint(model, events)
        every: list[str | None] = [None] * self.world_size
        dist.all_gather_object(every, mine)
        if len(set(every)) != 1:
            raise TrainingError(f"ranks diverged: parameter/event fingerprints differ across the {self.world_size} "
                                "ranks; report this with the recipe")

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def fingerprint(model: nn.Module, events: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(events, sort_keys=True, default=float).encode())
    return digest.hexdigest()


SINGLE = DistContext()


def init_from_env(device: str = "cpu") -> DistContext:
    """Join the torchrun process group if this process was started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("training.device is cuda but no CUDA device is available; use cpu")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank, world, local)


def per_rank_batch(global_batch: int, ctx: DistContext) -> int:
    """`data.batch_size` is the global batch: each rank takes an equal share."""
    if global_batch % ctx.world_size:
        raise ConfigError(f"data.batch_size {global_batch} is not divisible by the {ctx.world_size} ranks; "
                          "the recipe's batch size is global, so make it a multiple of the number of processes")
    return global_batch // ctx.world_size
