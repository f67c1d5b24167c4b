"""Fixed, seeded train/validation splits and truncation.

Every choice here is drawn from a ``torch.Generator`` seeded with the caller's seed, so the same
seed gives the same indices on any machine with the same torch version (torch's CPU generator is
platform independent). Labeled data is split per class, so small validation sets still hold every
class in proportion instead of whatever a global shuffle happens to leave there.
"""
from __future__ import annotations

import torch


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def _quotas(sizes: list[int], total: int) -> list[int]:
    """Share `total` among groups in proportion to `sizes` (largest remainder), so the sum is exact."""
    n = sum(sizes)
    exact = [total * s / n for s in sizes]
    quotas = [int(e) for e in exact]
    # Ties go to the earlier class: sorting on (-remainder, index) is stable and machine independent.
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in order[: total - sum(quotas)]:
        quotas[i] += 1
    return quotas


def choose(n: int, k: int, seed: int, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick `k` of `n` indices (stratified by `labels` when given); return (picked, rest), both sorted."""
    gen = _generator(seed)
    if labels is None:
        perm = torch.randperm(n, generator=gen)
        return perm[:k].sort().values, perm[k:].sort().values
    classes = torch.unique(labels)  # sorted, so the draw order never depends on data order
    members = [torch.nonzero(labels == c, as_tuple=True)[0] for c in classes]
    picked, rest = [], []
    for idx, quota in zip(members, _quotas([len(m) for m in members], k)):
        perm = idx[torch.randperm(len(idx), generator=gen)]
        picked.append(perm[:quota])
        rest.append(perm[quota:])
    return torch.cat(picked).sort().values, torch.cat(rest).sort().values


def split_indices(
    n: int, val_fraction: float, seed: int, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (train, val) index tensors; the validation set holds round(n * val_fraction) samples."""
    n_val = min(max(round(n * val_fraction), 1), n - 1) if n >= 2 else 0
    val, train = choose(n, n_val, seed, labels)
    return train, val


def truncate_indices(n: int, keep: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of a seeded (stratified) subset of `keep` samples; data sorted by class stays balanced."""
    if keep >= n:
        return torch.arange(n)
    # A different stream from the split (seed + 1), so truncating never mirrors the split draw.
    return choose(n, keep, seed + 1, labels)[0]
