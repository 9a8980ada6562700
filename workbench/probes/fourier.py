"""Fourier analysis of token features: Park & Kim's Δ log amplitude (ICLR 2022, "How do vision
transformers work?"), used by MFF to show that shallow layers carry more high frequency.

Definition, for tokens [B, 1+N, C] with N = h*h patches in raster order:
    1. drop the cls token and reshape to a B x C x h x h feature map,
    2. A = log(|FFT2(x)| + eps) per map, shifted so the zero frequency is at the centre
       (``fftshift``: for even h the centre is index h//2, for odd h index (h-1)//2),
    3. average A over batch and channels -> [h, h],
    4. read the half-diagonal from the centre towards the corner, and subtract its first value
       (frequency 0), so the curve starts at 0.

Frequency convention (``freqs``, in units of π, the per-axis angular frequency ω of the point
(ω, ω) on the diagonal; ω = π is the Nyquist frequency, a checkerboard):
    * ``convention="park-kim"`` (default; the authors' reference code reads indices c..h-1 towards
      the bottom-right corner): points ω_i = 2π·i/h for i = 0 .. h-1-c. For even h that is h/2
      points, 0, 2/h, ..., (h-2)/h (in units of π) -- the last point of a 14x14 grid is 6/7·π and
      of an 8x8 grid 3/4·π, *not* π, although the paper's axis labels it π. For odd h it is
      (h+1)/2 points up to (h-1)/h·π. Values are comparable with the published curves.
    * ``convention="nyquist"`` reads the other half-diagonal (indices c..0, frequencies -ω_i,
      which by the Hermitian symmetry of real inputs have the same amplitude as +ω_i): for even h
      it has h/2 + 1 points and ends exactly at π (the checkerboard); for odd h it equals
      ``park-kim``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models import eval_mode

CONVENTIONS = ("park-kim", "nyquist")
EPS = 1e-6  # Park & Kim's epsilon inside the log


def token_grid(tokens: torch.Tensor, has_cls: bool = True) -> torch.Tensor:
    """[B, (1+)N, C] tokens -> [B, C, h, h] maps (raster order); raises on a non-square N."""
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens [B, N, C], got shape {list(tokens.shape)}")
    x = tokens[:, 1:, :] if has_cls else tokens
    b, n, c = x.shape
    h = math.isqrt(n)
    if h * h != n or n == 0:
        raise ValueError(f"{n} patch tokens do not form a square grid (has_cls={has_cls}); the "
                         f"Fourier probe needs all N = h*h tokens, i.e. features at mask ratio 0")
    return x.transpose(1, 2).reshape(b, c, h, h)


def diagonal_frequencies(h: int, convention: str = "park-kim") -> torch.Tensor:
    """[F] per-axis frequencies (units of π) of the half-diagonal points of an h x h grid."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    c = h // 2
    count = c + 1 if convention == "nyquist" else h - c
    return torch.arange(count, dtype=torch.float64) * 2.0 / h


def image_log_amplitude(maps: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """[B, C, h, w] -> [B, h, w]: log(|FFT2| + eps), zero frequency centred, mean over C."""
    amp = torch.fft.fft2(maps.double()).abs()
    return torch.fft.fftshift(torch.log(amp + eps), dim=(-2, -1)).mean(dim=1)


def mean_log_amplitude(maps: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """[B, C, h, w] -> [h, w]: log(|FFT2| + eps), zero frequency centred, mean over B and C."""
    return image_log_amplitude(maps, eps).mean(dim=0)


def half_diagonal(spectrum: torch.Tensor, convention: str = "park-kim") -> torch.Tensor:
    """[..., h, h] centred spectra -> [..., F] values from the centre along the diagonal."""
    h = spectrum.shape[-1]
    c = h // 2
    diag = torch.diagonal(spectrum, dim1=-2, dim2=-1)
    return diag[..., c:] if convention == "park-kim" else diag[..., :c + 1].flip(-1)


def delta_curves(spectrum: torch.Tensor, convention: str = "park-kim") -> torch.Tensor:
    """[..., h, h] centred spectra -> [..., F] half-diagonals minus their value at frequency 0."""
    curve = half_diagonal(spectrum, convention)
    return curve - curve[..., :1]


def delta_log_amplitude(tokens: torch.Tensor, has_cls: bool = True, eps: float = EPS,
                        convention: str = "park-kim") -> torch.Tensor:
    """Δ log amplitude [F] (float64) of tokens [B, (1+)N, C]: the mean log amplitude along the
    half-diagonal minus its value at frequency 0 (so the first value is 0). Positive values mean
    more amplitude than the zero frequency. Frequencies: :func:`diagonal_frequencies`."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return delta_curves(mean_log_amplitude(token_grid(tokens, has_cls), eps), convention)


@dataclass
class FrequencyResponse:
    curves: torch.Tensor  # [L, F] Δ log amplitude per layer (blocks, then "fused" for MFF)
    freqs: torch.Tensor  # [F] per-axis frequency of each point, in units of π
    names: list[str]  # [L] "block 0", ... (or "block 0 attn", "block 0 mlp"), then "fused"
    depth: torch.Tensor  # [L] normalised depth in (0, 1] of each curve's layer (fused: nan)
    image_curves: torch.Tensor | None = None  # [B, L, F] per image (their mean is ``curves``)

    @property
    def high_frequency(self) -> torch.Tensor:
        """[L] the value at the highest frequency read (the last point, ``freqs[-1]``·π)."""
        return self.curves[:, -1]

    @property
    def image_high_frequency(self) -> torch.Tensor | None:
        """[B, L] each image's value at the highest frequency, or None without per-image curves."""
        return None if self.image_curves is None else self.image_curves[:, :, -1]

    @property
    def block_rows(self) -> list[int]:
        """Indices of the encoder-block rows (every row but MFF's ``"fused"``), shallow first."""
        return [i for i, n in enumerate(self.names) if n != "fused"]

    @property
    def last_block_row(self) -> int:
        """Index of the deepest encoder-block row (the last one that is not the fused tensor)."""
        return self.block_rows[-1]

    @property
    def fused_row(self) -> int | None:
        """Index of MFF's ``"fused"`` row, or None for a model without fusion."""
        return self.names.index("fused") if "fused" in self.names else None

    def to_dict(self) -> dict:
        """JSON-ready: {"freqs_pi": [F], "names": [L], "curves": [L][F], "depth": [L]}, and
        "image_curves" [B][L][F] when kept (the fused row's depth is NaN, which ``json.dumps``
        writes as ``NaN``)."""
        d = {"freqs_pi": self.freqs.tolist(), "names": list(self.names),
             "curves": self.curves.tolist(), "depth": self.depth.tolist()}
        if self.image_curves is not None:
            d["image_curves"] = self.image_curves.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FrequencyResponse":
        return cls(curves=torch.tensor(d["curves"], dtype=torch.float64),
                   freqs=torch.tensor(d["freqs_pi"], dtype=torch.float64),
                   names=list(d["names"]), depth=torch.tensor(d["depth"], dtype=torch.float64),
                   image_curves=(torch.tensor(d["image_curves"], dtype=torch.float64)
                                 if "image_curves" in d else None))


def _sublayer_features(model, imgs: torch.Tensor) -> tuple[list[torch.Tensor], list[str]]:
    """Residual stream after every attention and every MLP sub-block (Park & Kim's points):
    after attention = block input + attention branch; after MLP = block output."""
    store: dict[int, dict[str, torch.Tensor]] = {}
    handles = []
    for i, blk in enumerate(model.blocks):
        def pre(_m, args, i=i):
            store.setdefault(i, {})["in"] = args[0]

        def attn_out(_m, _args, out, i=i):
            store[i]["attn"] = out

        handles.append(blk.register_forward_pre_hook(pre))
        handles.append(blk.ls1.register_forward_hook(attn_out))
    try:
        outs = model.layer_features(imgs, mask_ratio=0.0)
    finally:
        for h in handles:
            h.remove()
    feats, names = [], []
    for i, out in enumerate(outs):  # eval mode: drop_path is the identity
        feats += [store[i]["in"] + store[i]["attn"], out]
        names += [f"block {i} attn", f"block {i} mlp"]
    return feats, names


@torch.no_grad()
def frequency_response(model, imgs: torch.Tensor, batch_size: int = 64,
                       sublayers: bool = False, convention: str = "park-kim",
                       eps: float = EPS, per_image: bool = False) -> FrequencyResponse:
    """Δ log amplitude of every encoder block output (before the final norm; for MFF also of the
    fused tensor before its norm, named ``"fused"``), at mask ratio 0, in eval mode, no grad.

    ``imgs`` [B, C, H, W] (ImageNet-normalised) are processed ``batch_size`` at a time; log
    amplitudes are averaged over all images and channels before the diagonal is read.
    ``sublayers=True`` gives Park & Kim's two points per block (after the attention residual and
    after the MLP residual). ``convention``: see the module docstring. ``per_image=True`` also
    keeps each image's curves (``image_curves`` [B, L, F], averaged over channels only; their
    mean over images is ``curves``), for intervals over images.
    """
    if imgs.ndim != 4 or imgs.shape[0] == 0:
        raise ValueError(f"expected images [B, C, H, W] with B >= 1, got {list(imgs.shape)}")
    device = next(model.parameters()).device
    total, names, images = None, None, []
    with eval_mode(model):
        for start in range(0, imgs.shape[0], batch_size):
            x = imgs[start:start + batch_size].to(device)
            if sublayers:
                feats, names = _sublayer_features(model, x)
            else:
                feats = model.layer_features(x, mask_ratio=0.0)
                names = [f"block {i}" for i in range(len(feats))]
            if model.has_fusion:
                fused = model.fusion(model.layer_features(x, mask_ratio=0.0) if sublayers
                                     else feats)
                feats, names = feats + [fused], names + ["fused"]
            spectra = torch.stack([image_log_amplitude(token_grid(f), eps) for f in feats], 1)
            # sum of log amplitudes over images (channels averaged), per layer: [L, h, h]
            total = spectra.sum(0) if total is None else total + spectra.sum(0)
            if per_image:  # [b, L, F]
                images.append(delta_curves(spectra, convention))
    mean = total / imgs.shape[0]
    curves = delta_curves(mean, convention)
    n_blocks = len(model.blocks)
    per_block = 2 if sublayers else 1
    depth = [(j + 1) / (n_blocks * per_block) for j in range(n_blocks * per_block)]
    depth += [float("nan")] * (len(names) - len(depth))
    return FrequencyResponse(curves=curves, freqs=diagonal_frequencies(mean.shape[-1], convention),
                             names=names, depth=torch.tensor(depth, dtype=torch.float64),
                             image_curves=torch.cat(images) if per_image else None)

