"""Loss functions with known Hessians, shared by the Hessian tests."""
from __future__ import annotations

import torch
import torch.nn as nn


def quadratic(spectrum, seed=0):
    """x ↦ 0.5 xᵀAx with A = Q diag(spectrum) Qᵀ (its Hessian is A) -> (loss_fn, x, A)."""
    g = torch.Generator().manual_seed(seed)
    n = len(spectrum)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.as_tensor(spectrum, dtype=torch.float64)) @ q.T
    x = nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))
    return (lambda: 0.5 * x @ a @ x), x, a
