"""Attention maps read from the model's own timm blocks, and their distance / entropy / NMI
summaries against maps with known answers and brute-force computations."""
from __future__ import annotations

import math

import pytest
import torch

from workbench import build_model
from workbench.data import fixed_batch
from workbench.probes import (attention_distance, attention_entropy, attention_maps,
                              attention_nmi)

G, P = 4, 8  # a 4 x 4 grid of 8-pixel patches
N = G * G


def with_cls(patch_rows: torch.Tensor, cls_weight: float = 0.3) -> torch.Tensor:
    """[..., N, N] rows over patches -> [..., 1+N, 1+N] maps whose patch queries put
    ``cls_weight`` on the cls key (dropped and renormalised away by the summaries)."""
    *lead, n, _ = patch_rows.shape
    out = torch.zeros(*lead, n + 1, n + 1, dtype=torch.float64)
    out[..., 0, :] = 1.0 / (n + 1)
    out[..., 1:, 0] = cls_weight
    out[..., 1:, 1:] = (1 - cls_weight) * patch_rows
    return out


def brute_mean_pair_distance(g: int, p: float) -> float:
    """Mean over all ordered pairs of patches, self-pairs included, of the centre distance."""
    cells = [(r, c) for r in range(g) for c in range(g)]
    total = sum(p * math.hypot(r1 - r2, c1 - c2) for r1, c1 in cells for r2, c2 in cells)
    return total / len(cells) ** 2


def brute_nmi(rows: torch.Tensor) -> float:
    """[N, N] p(k|q) -> I(Q;K) / sqrt(H(Q) H(K)) from the joint p(q, k) = p(k|q) / N, with
    I = H(Q) + H(K) - H(Q, K)."""
    n = rows.shape[0]
    joint = [[rows[q, k].item() / n for k in range(n)] for q in range(n)]
    h = lambda ps: -sum(x * math.log(x) for x in ps if x > 0)  # noqa: E731
    hq = h([sum(r) for r in joint])
    hk = h([sum(joint[q][k] for q in range(n)) for k in range(n)])
    hqk = h([x for r in joint for x in r])
    return (hq + hk - hqk) / math.sqrt(hq * hk)


def test_identity_attention():
    attn = with_cls(torch.eye(N).expand(2, 3, N, N))  # [B=2, H=3, 17, 17]
    assert attention_distance(attn, G, P).tolist() == [0.0] * 3
    assert attention_entropy(attn).abs().max().item() < 1e-12
    torch.testing.assert_close(attention_nmi(attn), torch.ones(3, dtype=torch.float64))


def test_uniform_attention():
    attn = with_cls(torch.full((2, 3, N, N), 1.0 / N))
    torch.testing.assert_close(attention_entropy(attn), torch.full((3,), math.log(N),
                                                                    dtype=torch.float64))
    torch.testing.assert_close(attention_distance(attn, G, P),
                               torch.full((3,), brute_mean_pair_distance(G, P),
                                          dtype=torch.float64))
    assert attention_nmi(attn).abs().max().item() < 1e-12


def test_random_attention_against_brute_force():
    g = torch.Generator().manual_seed(0)
    rows = torch.softmax(3 * torch.randn(2, 2, N, N, generator=g, dtype=torch.float64), -1)
    attn = with_cls(rows, cls_weight=0.5)  # [2, 2, 17, 17]
    cells = [(r, c) for r in range(G) for c in range(G)]
    for b in range(2):
        for h in range(2):
            r = rows[b, h]
            dist = sum(r[q, k].item() * P * math.hypot(cells[q][0] - cells[k][0],
                                                       cells[q][1] - cells[k][1])
                       for q in range(N) for k in range(N)) / N
            ent = -sum(r[q, k].item() * math.log(r[q, k].item())
                       for q in range(N) for k in range(N)) / N
            assert attention_distance(attn, G, P, per_image=True)[b, h].item() == \
                pytest.approx(dist, rel=1e-10)
            assert attention_entropy(attn, per_image=True)[b, h].item() == \
                pytest.approx(ent, rel=1e-10)
            assert attention_nmi(attn, per_image=True)[b, h].item() == \
                pytest.approx(brute_nmi(r), rel=1e-9)
    torch.testing.assert_close(attention_nmi(attn), attention_nmi(attn, per_image=True).mean(0))


def test_heads_are_separate_and_errors_named():
    rows = torch.stack([torch.eye(N), torch.full((N, N), 1.0 / N)])  # [H=2, N, N]
    attn = with_cls(rows).unsqueeze(0)
    d = attention_distance(attn, G, P)
    assert d[0].item() == 0.0 and d[1].item() == pytest.approx(brute_mean_pair_distance(G, P))
    with pytest.raises(ValueError, match="grid"):
        attention_distance(attn, 5, P)
    with pytest.raises(ValueError, match="T, T"):
        attention_entropy(torch.ones(2, 3, 4, 5))
    with pytest.raises(ValueError, match="renormalise"):
        attention_entropy(with_cls(torch.zeros(1, 1, N, N), cls_weight=1.0))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("mae", "tiny", depth=3), fixed_batch("builtin", 32, 16, "heldout", 0)[0]


def test_maps_shape_rows_and_restored_state(tiny):
    model, imgs = tiny
    model.train()
    flags = [blk.attn.fused_attn for blk in model.blocks]
    with torch.no_grad():
        before = model.eval().layer_features(imgs[:4], mask_ratio=0.0)[-1]
    model.train()
    maps = attention_maps(model, imgs, batch_size=6)
    assert model.training
    assert len(maps) == 3
    for m in maps:
        assert m.shape == (16, 3, 65, 65)
        torch.testing.assert_close(m.sum(-1), torch.ones(16, 3, 65), atol=1e-5, rtol=0)
        assert (m >= 0).all()
    assert [blk.attn.fused_attn for blk in model.blocks] == flags
    assert all(not blk.attn.attn_drop._forward_pre_hooks for blk in model.blocks)
    with torch.no_grad():
        after = model.eval().layer_features(imgs[:4], mask_ratio=0.0)[-1]
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    d = attention_distance(maps[0], model.cfg.grid_size, model.cfg.patch_size)
    assert d.shape == (3,) and (d > 0).all()


def test_maps_reproduce_the_attention_output(tiny):
    """With block 1's own qkv and proj: proj(merge(attn @ v)) = the attention module's output,
    both captured in an ordinary (fused, if timm chose it) forward."""
    model, imgs = tiny
    model.eval()
    blk = model.blocks[1]
    seen = {}
    h1 = blk.attn.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    h2 = blk.attn.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out))
    try:
        with torch.no_grad():
            model.layer_features(imgs[:5], mask_ratio=0.0)
    finally:
        h1.remove()
        h2.remove()
    attn = attention_maps(model, imgs[:5])[1]  # [5, 3, 65, 65]
    x = seen["x"]  # [5, 65, 192] the normed block input
    b, t, c = x.shape
    heads = blk.attn.num_heads
    with torch.no_grad():
        v = blk.attn.qkv(x).reshape(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)[2]
        out = blk.attn.proj((attn @ v).transpose(1, 2).reshape(b, t, c))  # [5, 65, 192]
    torch.testing.assert_close(out, seen["out"], atol=1e-5, rtol=0)
