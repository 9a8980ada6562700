"""What a run measures on its fixed held-out images: the masked loss and reconstruction
snapshots."""
from __future__ import annotations

import torch

from ..models import MaskedAutoencoder, eval_mode
from ..core.pictures import compose_rows
from ..probes.reconstruction import reconstruct


@torch.no_grad()
def evaluate(model: MaskedAutoencoder, imgs: torch.Tensor, mask_ratio: float = 0.75,
             seed: int = 0, batch_size: int = 256) -> float:
    """Masked-reconstruction loss on ``imgs`` with fixed masks (chunk ``i`` uses ``seed + i``);
    eval mode, no grad, mode restored."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model):
        for i, chunk in enumerate(imgs.split(batch_size)):
            out = model(chunk.to(device), mask_ratio=mask_ratio, seed=seed + i)
            total += float(out.loss) * len(chunk)
            count += len(chunk)
    return total / max(1, count)


def finite_weights(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


SNAPSHOT_COLUMNS = ("original", "masked", "pasted")


@torch.no_grad()
def snapshot_picture(model: MaskedAutoencoder, imgs: torch.Tensor, seed: int = 0,
                     scale: int = 4):
    """A PIL image, one row per image: original | masked (black) | reconstruction with the
    visible patches pasted back, at the model's own mask ratio and strategy (the reconstruction
    is :func:`workbench.probes.reconstruct`'s, the picture :func:`workbench.core.pictures.compose_rows`'s,
    without gaps)."""
    from PIL import Image

    r = reconstruct(model, imgs, mask_ratio=model.cfg.mask_ratio,
                    mask_strategy=model.cfg.mask_strategy, seed=seed, fill=0.0)
    return Image.fromarray(compose_rows(r, range(imgs.shape[0]), scale=scale, pad=0,
                                        columns=SNAPSHOT_COLUMNS))
