"""Which patches the encoder sees: random (MAE), block-wise (BEiT) and grid masking.

Every strategy produces a score per patch; the ``len_keep = int(N * (1 - mask_ratio))`` patches
with the lowest scores are kept, exactly as MAE's ``random_masking`` keeps the lowest noise. So the
masked count is exact for every strategy and the same for every sample of a batch.

A strategy is a name in :data:`workbench.core.config.MASK_STRATEGIES` (the table of names, which
configs are checked against without torch) and one score function registered under that name in
:data:`MASK_SCORES`, with the signature ``scores(batch, grid, num_masked, generator) ->
[B, grid*grid]``; ``mask_patches``, the config check and ``model(imgs, mask_strategy=name)`` then
accept that name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..core.config import MASK_STRATEGIES, check_mask_ratio, check_mask_strategy
from ..core.registry import Registry

# strategy name -> its score function; only names of MASK_STRATEGIES
MASK_SCORES: Registry[Callable[..., torch.Tensor]] = Registry("mask score",
                                                               within=MASK_STRATEGIES)


@dataclass
class Masking:
    ids_keep: torch.Tensor  # [B, len_keep] indices of visible patches, ascending
    ids_restore: torch.Tensor  # [B, N] position of each patch in cat(kept, masked)
    mask: torch.Tensor  # [B, N] 1 = masked (removed), 0 = visible


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Visible patches at this ratio, the official MAE formula ``int(N * (1 - r))``."""
    return int(num_patches * (1 - check_mask_ratio(mask_ratio)))


@MASK_SCORES.register("random")
def random_scores(batch: int, grid: int, num_masked: int,
                  generator: torch.Generator | None) -> torch.Tensor:
    """MAE: per-sample uniform noise; keeping the smallest is a uniform random subset."""
    return torch.rand(batch, grid * grid, generator=generator)


@MASK_SCORES.register("block")
def block_scores(batch: int, grid: int, num_masked: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """BEiT-style block-wise masking: rectangles of random area (>= 4 patches, or the whole
    budget if smaller) and aspect ratio in [0.3, 1/0.3] are masked until ``num_masked`` patches
    are covered. Covered patches score in [1, 1.5), others in [0, 0.5): if the last block
    overshoots, a random few of its patches stay visible, so the count stays exact."""
    scores = torch.rand(batch, grid, grid, generator=generator) * 0.5
    log_lo, log_hi = math.log(0.3), math.log(1 / 0.3)
    for b in range(batch):
        covered = torch.zeros(grid, grid, dtype=torch.bool)
        for _ in range(100 * grid * grid):  # bounded: each try covers >= 0 new patches
            remaining = num_masked - int(covered.sum())
            if remaining <= 0:
                break
            u = torch.rand(3, generator=generator).tolist()
            lo = min(4, remaining)
            area = lo + u[0] * (remaining - lo)
            aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
            h = max(1, min(grid, round(math.sqrt(area * aspect))))
            w = max(1, min(grid, round(math.sqrt(area / aspect))))
            top = int(torch.randint(0, grid - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, grid - w + 1, (1,), generator=generator))
            covered[top:top + h, left:left + w] = True
        scores[b][covered] += 1.0
    return scores.reshape(batch, grid * grid)


def bayer_matrix(size: int) -> torch.Tensor:
    """Ordered-dither matrix of a power-of-two ``size``: its k lowest entries are spread as evenly
    as a regular lattice allows (the lowest quarter is every second row and column)."""
    m = torch.zeros(1, 1, dtype=torch.long)
    while m.shape[0] < size:
        m = torch.cat([torch.cat([4 * m, 4 * m + 2], 1), torch.cat([4 * m + 3, 4 * m + 1], 1)], 0)
    return m


@MASK_SCORES.register("grid")
def grid_scores(batch: int, grid: int, num_masked: int,
                generator: torch.Generator | None) -> torch.Tensor:
    """MAE's grid-wise sampling: a deterministic regular lattice. At ratio 0.75 it keeps one
    patch of every 2x2 (even rows, even columns), as in the paper's Figure 6; other ratios keep
    the lowest entries of an ordered-dither (Bayer) matrix, the most regular subset of that size."""
    size = 1 << max(0, (grid - 1).bit_length())
    ranks = bayer_matrix(size)[:grid, :grid].reshape(1, grid * grid).float()
    return ranks.expand(batch, -1).clone()


def masking_from_scores(scores: torch.Tensor, len_keep: int) -> Masking:
    """The ``len_keep`` patches of lowest score [B, N] stay visible; visible tokens (and then
    masked ones) in raster order: the same mask as MAE's shuffle, tidier tokens."""
    batch, n = scores.shape
    ids_shuffle = torch.argsort(scores, dim=1)  # ascending: kept first
    ids_keep = ids_shuffle[:, :len_keep].sort(dim=1).values
    ids_drop = ids_shuffle[:, len_keep:].sort(dim=1).values
    ids_restore = torch.argsort(torch.cat([ids_keep, ids_drop], dim=1), dim=1)
    mask = torch.ones(batch, n, device=scores.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # [B, N] back in patch order
    return Masking(ids_keep=ids_keep, ids_restore=ids_restore, mask=mask)


_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment


def _signed(x: int) -> int:
    """A 64-bit pattern as the int64 value with the same bits."""
    return x - (1 << 64) if x >= 1 << 63 else x


def _shift_right(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` keeps the sign)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's output function on int64 bit patterns, elementwise (wrapping arithmetic)."""
    x = (x ^ _shift_right(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _shift_right(x, 27)) * _signed(0x94D049BB133111EB)
    return x ^ _shift_right(x, 31)


def seeded_uniform(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """[B] int64 seeds -> [B, n] float64 in [0, 1): row b is the first ``n`` outputs of the
    splitmix64 stream seeded with ``seeds[b]`` (53 bits each). One batched call on the seeds'
    device, and each row depends on its own seed only (not on the batch it is drawn in)."""
    steps = (torch.arange(1, n + 1, device=seeds.device, dtype=torch.int64)
             * _signed(_GOLDEN))  # [n], wrapping
    bits = splitmix64(seeds.to(torch.int64)[:, None] + steps)  # [B, n]
    return _shift_right(bits, 11).to(torch.float64) * 2.0 ** -53


def seeded_masks(seeds: torch.Tensor | Sequence[int], grid: int, mask_ratio: float,
                 strategy: str = "random", device: torch.device | str | None = None) -> Masking:
    """One mask per sample, each a function of its own seed only, so a batch's masks do not
    depend on how it is split (micro-batches, ranks) or on any global generator. ``"random"``
    draws all scores in one batched call on ``device`` (:func:`seeded_uniform`); other strategies
    use one ``torch.Generator`` per sample on the host."""
    n = grid * grid
    if strategy == "random":
        seeds = host_to_device(torch.as_tensor(seeds, dtype=torch.int64), device)
        return masking_from_scores(seeded_uniform(seeds, n), num_kept(n, mask_ratio))
    parts = [mask_patches(1, grid, mask_ratio, strategy, torch.Generator().manual_seed(int(s)))
             for s in seeds]
    return Masking(*(torch.cat([getattr(m, f) for m in parts]).to(device)
                     for f in ("ids_keep", "ids_restore", "mask")))


def host_to_device(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """``t`` (on the host) on ``device`` without the host waiting for the device: a CUDA copy
    goes through pinned memory, asynchronously (a plain copy from pageable memory synchronises)."""
    device = torch.device(device) if device is not None else t.device
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def mask_patches(batch: int, grid: int, mask_ratio: float, strategy: str = "random",
                 generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Masking:
    """Choose the visible patches of a ``grid`` x ``grid`` image for each of ``batch`` samples."""
    score = MASK_SCORES.get(check_mask_strategy(strategy))  # unknown: ValueError with the names
    n = grid * grid
    len_keep = num_kept(n, mask_ratio)
    if len_keep == n:  # nothing masked (ratio 0: features, probes): every patch, no draw at all
        return masking_from_scores(torch.zeros(batch, n, device=device), n)
    scores = score(batch, grid, n - len_keep, generator)  # [B, N], the lowest len_keep are kept
    scores = scores.to(device) if device is not None else scores
    return masking_from_scores(scores, len_keep)
