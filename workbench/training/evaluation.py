"""What a run measures on its fixed held-out images: the masked loss and reconstruction
snapshots."""
from __future__ import annotations

import numpy as np
import torch

from ..models import MaskedAutoencoder, eval_mode
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


@torch.no_grad()
def snapshot_picture(model: MaskedAutoencoder, imgs: torch.Tensor, seed: int = 0,
                     scale: int = 4):
    """A PIL image, one row per image: original | masked (black) | reconstruction with the
    visible patches pasted back, at the model's own mask ratio and strategy (the reconstruction
    is :func:`workbench.probes.reconstruct`'s)."""
    from PIL import Image

    r = reconstruct(model, imgs, mask_ratio=model.cfg.mask_ratio,
                    mask_strategy=model.cfg.mask_strategy, seed=seed, fill=0.0)
    rows = [torch.cat([a, m, c], dim=2) for a, m, c in zip(r.original, r.masked, r.pasted)]
    grid = torch.cat(rows, dim=1).float().cpu()  # [3, B*S, 3S], each [3, S, 3S]
    arr = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    img = Image.fromarray(arr)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
