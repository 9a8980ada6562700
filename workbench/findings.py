"""The papers' claims, checked against probe results.

Each function takes probe outputs and returns a :class:`Claim` (as a dict in ``claims.json``):
the claim as the paper states it, what was measured here, and whether it held. Notebooks call
these and ``analysis/make_figures.py`` collects them into ``findings.md``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class Claim:
    source: str
    claim: str
    measured: str
    held: bool | None  # None: not measurable in this run

    def to_dict(self) -> dict:
        return asdict(self)


def _spearman(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def fusion_moves_shallow(history) -> Claim:
    """MFF finding 1: the weights move toward shallow layers during pretraining. Measured as the
    weight-averaged depth of the fused layers (0 = first block, 1 = last), first vs last log."""
    w = np.asarray(history.weights, dtype=float)
    layers = np.asarray(history.layers, dtype=float)
    depth = layers / max(1.0, layers.max())
    start, end = float(w[0] @ depth), float(w[-1] @ depth)
    last0, last1 = float(w[0, -1]), float(w[-1, -1])
    return Claim("MFF §3 (Fig. 1)", "during pretraining the fusion weights move toward shallow layers",
                 f"weighted mean depth {start:.3f} → {end:.3f}; last-layer weight {last0:.3f} → "
                 f"{last1:.3f} (steps {int(history.steps[0])}–{int(history.steps[-1])})",
                 end < start)


def shallow_layers_more_high_frequency(name: str, response) -> Claim:
    """MFF finding 2 / Park & Kim: shallow layers carry more high frequency, i.e. the
    highest-frequency Δ log amplitude falls with depth (Spearman correlation < 0)."""
    blocks = response.block_rows
    hf = response.high_frequency[blocks]
    rho = _spearman(np.asarray(response.depth)[blocks], np.asarray(hf))
    return Claim("MFF §3 (Fig. 2)", f"{name}: shallow layers carry more high-frequency signal",
                 f"Spearman ρ(depth, Δ log amp at {float(response.freqs[-1]):.2f}π) = {rho:+.2f}; "
                 f"first block {float(hf[0]):+.3f}, last {float(hf[-1]):+.3f}", rho < 0)


def mff_last_layer_less_high_frequency(mae, mff) -> Claim:
    """MFF finding 2: MFF's last layer has less high frequency than MAE's."""
    def last_hf(r):
        return float(r.high_frequency[r.last_block_row])
    a, b = last_hf(mae), last_hf(mff)
    return Claim("MFF §4.3 (Fig. 5)", "MFF's last layer carries less high frequency than MAE's",
                 f"Δ log amplitude at the highest frequency, last block: MAE {a:+.3f}, MFF {b:+.3f}",
                 b < a)


def mff_flatter_hessian(mae_eigs: torch.Tensor, mff_eigs: torch.Tensor) -> Claim:
    """MFF finding 3: the Hessian max-eigenvalue spectrum of MFF is smaller (flatter loss).
    Measured on the top eigenvalue of each minibatch (median over minibatches)."""
    a = float(torch.as_tensor(mae_eigs)[:, 0].abs().median())
    b = float(torch.as_tensor(mff_eigs)[:, 0].abs().median())
    return Claim("MFF §4.3 (Fig. 6)", "MFF's Hessian max eigenvalues are smaller than MAE's",
                 f"median top eigenvalue over {len(mae_eigs)} minibatches: MAE {a:.4g}, MFF {b:.4g}",
                 b < a)


def mff_better_linear_probe(mae_acc: float, mff_acc: float, what: str = "linear probe") -> Claim:
    """MFF's headline: +1.8 linear-probe points at 300 epochs (ViT-B)."""
    return Claim("MFF Table 1", f"MFF-MAE features beat MAE's on a {what}",
                 f"{what} accuracy: MAE {100 * mae_acc:.1f}%, MFF {100 * mff_acc:.1f}%",
                 mff_acc > mae_acc)


def high_mask_ratio_best(ratios, accuracies, losses=None) -> Claim:
    """MAE Fig. 5: a high ratio (~75%) is best for linear probing (accuracy peaks at 0.6–0.9)."""
    ratios = np.asarray(ratios, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    best = float(ratios[int(acc.argmax())])
    text = ", ".join(f"{r:.2f}: {100 * a:.1f}%" for r, a in zip(ratios, acc))
    return Claim("MAE §4.1 (Fig. 5)", "a high mask ratio (about 75%) gives the best linear probe",
                 f"accuracy by training mask ratio: {text}; best at {best:.2f}",
                 0.6 <= best <= 0.9)


def supervised_fusion_favors_last(history) -> Claim:
    """MFF finding 4: a supervised ViT with the same fusion puts most weight on the last layer."""
    w = np.asarray(history.weights, dtype=float)
    top = int(np.argmax(w[-1]))
    return Claim("MFF §3 (supervised ViT)",
                 "with a supervised objective the same fusion puts most weight on the last layer",
                 f"final weights {np.round(w[-1], 3).tolist()} over blocks {list(history.layers)}; "
                 f"largest on block {history.layers[top]}; last-layer weight {w[0, -1]:.3f} → "
                 f"{w[-1, -1]:.3f}", top == len(history.layers) - 1)
