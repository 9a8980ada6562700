"""The one Lanczos iteration of the workbench, on a symmetric operator given as ``v ↦ H v``.

:class:`Lanczos` holds an orthonormal basis ``Q`` (rows) and the projected matrix
``M = Q H Qᵀ`` (float64, built column by column from the products). The basis is split into
``m`` *applied* vectors, whose products with H are known, and ``p`` *frontier* vectors, not yet
applied. Invariant: ``H Q[:m]`` lies in ``span Q[:m+p]``, so the Rayleigh-Ritz pairs
``(θ, Q[:m]ᵀs)`` of ``M[:m, :m]`` have the exact residual ``‖M[m:m+p, :m] s‖`` (no extra
products). With one frontier vector this is Lanczos and ``M`` is tridiagonal (up to rounding);
with ``b`` it is block Lanczos (Golub & Underwood), applied one vector at a time.

Full reorthogonalisation (classical Gram-Schmidt twice against every basis vector, "twice is
enough") keeps ``Q`` orthonormal in floating point. Without it (``reorthogonalize=False``: each
new vector is orthogonalised against the last two only, the three-term recurrence, ``O(n)``
memory instead of ``O(n·m)``) converged Ritz values reappear as spurious copies ("ghosts").

Two users: the top-k eigenvalue engine (:mod:`workbench.linalg.topk`: block start, thick restarts,
residual stopping rule) and stochastic Lanczos quadrature (:mod:`workbench.linalg.density`: a
fixed number of steps from one probe, no restart).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

# a new direction with norm below this many ulps of the largest entry of M seen is taken as
# nothing new: the basis spans an invariant subspace
BREAKDOWN_ULPS = 100


class Lanczos:
    """Basis ``Q`` [capacity, n] (or a ring of two rows without reorthogonalisation) and
    ``M`` [capacity, capacity]; see the module docstring for the invariant."""

    def __init__(self, n: int, capacity: int, dtype: torch.dtype, device,
                 reorthogonalize: bool = True):
        self.full = bool(reorthogonalize)
        self.Q = torch.empty(capacity if self.full else 2, n, dtype=dtype, device=device)
        self.M = np.zeros((capacity, capacity))
        self.m = self.p = 0
        self.scale = 0.0  # largest |entry| of M so far: the breakdown threshold's unit
        self.eps = torch.finfo(dtype).eps

    # -- basis bookkeeping
    def _row(self, i: int) -> int:
        return i if self.full else i % 2

    def _against(self) -> tuple[int, torch.Tensor]:
        """(index of the first row, rows [r, n]) that a new vector is orthogonalised against:
        every basis vector, or (three-term recurrence) the last two."""
        top = self.m + self.p
        if self.full:
            return 0, self.Q[:top]
        low = max(0, top - 2)
        return low, self.Q[[self._row(i) for i in range(low, top)]]

    def _orthogonalise(self, w: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
        """w [n] minus its projection on the basis (classical Gram-Schmidt twice) ->
        (w [n], first row, coefficients [r] on the rows from there)."""
        low, basis = self._against()
        h = basis @ w  # [r]
        w = torch.addmv(w, basis.T, h, alpha=-1)
        h2 = basis @ w
        return torch.addmv(w, basis.T, h2, alpha=-1), low, h + h2

    def _push(self, w: torch.Tensor, norm: float) -> None:
        top = self.m + self.p
        self.Q[self._row(top)] = w / norm
        self.M[top, :] = 0.0
        self.M[:, top] = 0.0
        self.p += 1

    # -- the iteration
    def add(self, v: torch.Tensor) -> bool:
        """Append ``v`` [n] (orthogonalised) to the frontier; False when it is in the span
        already. Without reorthogonalisation only a single start vector can be added."""
        if not self.full and self.m + self.p > 0:
            raise ValueError("without reorthogonalisation Lanczos takes one start vector")
        w, _, _ = self._orthogonalise(v)
        norm = float(w.norm())
        if not norm > 1e-8 * float(v.norm()):
            return False
        self._push(w, norm)
        return True

    def expand(self, op: Callable[[torch.Tensor], torch.Tensor], extend: bool = True) -> bool:
        """Apply H to the oldest frontier vector (one product); its new direction joins the
        frontier unless it is below the breakdown threshold (an invariant subspace: nothing
        new) or ``extend`` is False (a last step: ``M[:m, :m]`` is complete without it).
        Returns whether it joined."""
        j = self.m
        w, low, h = self._orthogonalise(op(self.Q[self._row(j)]).to(self.Q.dtype))
        col = h.double().cpu().numpy()  # [r] = row j of M, from row `low` on
        top = low + len(col)
        self.M[low:top, j] = col
        self.M[j, low:top] = col
        self.m, self.p = self.m + 1, self.p - 1
        beta = float(w.norm())
        self.scale = max(self.scale, float(np.abs(col).max(initial=0.0)), beta)
        if not (extend and beta > BREAKDOWN_ULPS * self.eps * self.scale):
            return False
        self._push(w, beta)
        self.M[self.m + self.p - 1, j] = self.M[j, self.m + self.p - 1] = beta
        return True

    # -- what it found
    def eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values [m] ascending and their coordinates ``S`` [m, m] (columns) in
        ``Q[:m]``: the eigendecomposition of ``M[:m, :m]``."""
        return np.linalg.eigh(self.M[:self.m, :self.m])

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values [m] (largest magnitude first), their coordinates ``S`` [m, m] and
        residual norms [m]."""
        m, p = self.m, self.p
        theta, S = self.eigh()
        order = np.argsort(-np.abs(theta), kind="stable")
        theta, S = theta[order], S[:, order]
        resid = np.linalg.norm(self.M[m:m + p, :m] @ S, axis=0) if p else np.zeros(m)
        return theta, S, resid

    def vectors(self, S: np.ndarray) -> torch.Tensor:
        """Ritz vectors [j, n] from coordinates ``S`` [m, j] (full reorthogonalisation only)."""
        if not self.full:
            raise ValueError("Ritz vectors need the whole basis (reorthogonalize=True)")
        coords = torch.as_tensor(S.T.copy(), dtype=self.Q.dtype, device=self.Q.device)  # [j, m]
        return coords @ self.Q[:self.m]

    def restart(self, theta: np.ndarray, S: np.ndarray, keep: int) -> None:
        """Thick restart (Wu & Simon): keep the first ``keep`` Ritz vectors (M becomes diagonal
        on them) and the frontier, with their couplings."""
        m, p = self.m, self.p
        ritz, front = self.vectors(S[:, :keep]), self.Q[m:m + p].clone()
        couple = self.M[m:m + p, :m] @ S[:, :keep]  # [p, keep]
        self.Q[:keep], self.Q[keep:keep + p] = ritz, front
        self.M[:] = 0.0
        self.M[np.arange(keep), np.arange(keep)] = theta[:keep]
        self.M[keep:keep + p, :keep] = couple
        self.M[:keep, keep:keep + p] = couple.T
        self.m = keep


def lanczos_run(op: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, steps: int,
                reorthogonalize: bool = True) -> Lanczos:
    """``steps`` Lanczos steps (products) on ``op`` from ``v`` [n], or fewer when the Krylov
    space closes (then its Ritz values are exact eigenvalues). ``steps`` is capped at ``n``."""
    n = v.numel()
    steps = min(int(steps), n)
    kry = Lanczos(n, steps, v.dtype, v.device, reorthogonalize)  # steps vectors of memory
    if not kry.add(v):
        raise ValueError("the start vector is zero")
    while kry.expand(op, extend=kry.m + 1 < steps):
        pass
    return kry


def lanczos_tridiagonal(op: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor,
                        steps: int, reorthogonalize: bool = True):
    """``steps`` Lanczos steps on the symmetric operator ``op`` from ``v`` [n] ->
    (alpha [j], beta [j-1]), the diagonal and off-diagonal of the tridiagonal ``T = QᵀHQ``,
    ``j <= steps`` (fewer when the Krylov space closes). See :func:`lanczos_run`."""
    kry = lanczos_run(op, v, steps, reorthogonalize)
    T = kry.M[:kry.m, :kry.m]  # [j, j]
    return np.diag(T).copy(), np.diag(T, 1).copy()
