"""Δ log amplitude on token grids with known spectra, and per-layer frequency responses."""
from __future__ import annotations

import math

import pytest
import torch

from workbench import build_model
from workbench.checkpoints import load_checkpoint
from workbench.probes import delta_log_amplitude, diagonal_frequencies, frequency_response

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def tokens_from_field(field: torch.Tensor, cls_value: float = 0.0) -> torch.Tensor:
    """[B, C, h, h] -> [B, 1+h*h, C] tokens in raster order, cls token first."""
    b, c, h, _ = field.shape
    body = field.reshape(b, c, h * h).transpose(1, 2)
    return torch.cat([torch.full((b, 1, c), cls_value, dtype=field.dtype), body], dim=1)


def diagonal_cosine(h: int, omega: float, b=4, c=8, noise=1e-2, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(h, dtype=torch.float64)
    phase = torch.rand(b, c, 1, 1, generator=g, dtype=torch.float64) * 2 * math.pi
    wave = torch.cos(omega * (i.view(h, 1) + i.view(1, h)) + phase)  # energy at ±(ω, ω)
    return wave + noise * torch.randn(b, c, h, h, generator=g, dtype=torch.float64)


def test_frequency_points():
    assert diagonal_frequencies(14).tolist() == pytest.approx([2 * i / 14 for i in range(7)])
    assert diagonal_frequencies(14)[-1].item() == pytest.approx(6 / 7)  # Park & Kim's "π"
    assert diagonal_frequencies(8, "nyquist").tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert diagonal_frequencies(7).tolist() == diagonal_frequencies(7, "nyquist").tolist()
    assert diagonal_frequencies(7)[-1].item() == pytest.approx(6 / 7)


@pytest.mark.parametrize("h", [8, 7, 14])
def test_high_frequency_cosine_is_large_at_last_point(h):
    last = diagonal_frequencies(h)[-1].item() * math.pi
    curve = delta_log_amplitude(tokens_from_field(diagonal_cosine(h, last)))
    assert curve.shape == (len(diagonal_frequencies(h)),) and curve[0] == 0
    assert curve[-1] > 5.0  # wave amplitude vs noise at 0
    assert curve[-1] == curve.max()


def test_checkerboard_reaches_pi_only_with_nyquist_convention():
    board = diagonal_cosine(8, math.pi)  # (-1)^(i+j): the Nyquist frequency (π, π)
    tokens = tokens_from_field(board)
    nyq = delta_log_amplitude(tokens, convention="nyquist")
    assert nyq.shape == (5,) and nyq[-1] > 5.0 and nyq[-1] == nyq.max()
    pk = delta_log_amplitude(tokens)  # stops at 3π/4: sees only the noise
    assert pk.shape == (4,) and pk.abs().max() < 1.0
    # shared points agree (Hermitian symmetry of real inputs)
    rand = tokens_from_field(torch.randn(3, 5, 8, 8, dtype=torch.float64))
    assert torch.allclose(delta_log_amplitude(rand, convention="nyquist")[:4],
                          delta_log_amplitude(rand), atol=1e-10)


def test_constant_field_is_strongly_negative():
    g = torch.Generator().manual_seed(1)
    field = 1.0 + 1e-2 * torch.randn(4, 8, 8, 8, generator=g, dtype=torch.float64)
    curve = delta_log_amplitude(tokens_from_field(field))
    assert curve[-1] < -5.0 and (curve[1:] < -5.0).all()


def test_white_noise_is_flat():
    g = torch.Generator().manual_seed(2)
    curve = delta_log_amplitude(tokens_from_field(torch.randn(64, 32, 8, 8, generator=g)))
    # E log|·| differs by ~0.35 between the real zero-frequency coefficient and complex ones
    assert curve.abs().max() < 0.6
    assert (curve[1:].max() - curve[1:].min()) < 0.1


def test_cls_token_is_excluded_and_input_checked():
    field = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    a = delta_log_amplitude(tokens_from_field(field, cls_value=0.0))
    b = delta_log_amplitude(tokens_from_field(field, cls_value=1e6))
    assert torch.equal(a, b)
    no_cls = tokens_from_field(field)[:, 1:]
    assert torch.equal(delta_log_amplitude(no_cls, has_cls=False), a)
    with pytest.raises(ValueError, match="square"):
        delta_log_amplitude(torch.randn(2, 1 + 12, 4))
    with pytest.raises(ValueError, match="convention"):
        delta_log_amplitude(tokens_from_field(field), convention="other")


@pytest.mark.parametrize("kind", ["mae", "mff"])
def test_frequency_response_of_a_model(kind):
    torch.manual_seed(0)
    model = build_model(kind, **SMALL)
    imgs = torch.randn(6, 3, 16, 16)
    res = frequency_response(model, imgs, batch_size=4)  # two chunks, pooled
    names = ["block 0", "block 1"] + (["fused"] if kind == "mff" else [])
    assert res.names == names and res.curves.shape == (len(names), 2)
    assert res.freqs.tolist() == [0.0, 0.5] and (res.curves[:, 0] == 0).all()
    assert torch.equal(res.high_frequency, res.curves[:, -1])
    assert res.block_rows == [0, 1] and res.last_block_row == 1
    assert res.fused_row == (2 if kind == "mff" else None)
    with torch.no_grad():
        feats = model.eval().layer_features(imgs)
        if kind == "mff":
            feats = feats + [model.fusion(feats)]
    for row, f in zip(res.curves, feats):
        assert torch.allclose(row, delta_log_amplitude(f), atol=1e-6)
    sub = frequency_response(model, imgs, sublayers=True)
    assert sub.names[:4] == ["block 0 attn", "block 0 mlp", "block 1 attn", "block 1 mlp"]
    assert torch.allclose(sub.curves[1::2][:2], res.curves[:2], atol=1e-6)  # mlp = block output
    assert not torch.allclose(sub.curves[0], sub.curves[1])
    assert sub.block_rows == [0, 1, 2, 3] and sub.names[sub.last_block_row] == "block 1 mlp"


def test_frequency_response_on_official_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("mae", **SMALL)
    torch.save({"model": model.state_dict()}, tmp_path / "mae_pretrain.pth")
    loaded = load_checkpoint(tmp_path / "mae_pretrain.pth", num_heads=2, decoder_num_heads=2)
    imgs = torch.randn(4, 3, 16, 16)
    assert torch.allclose(frequency_response(loaded, imgs).curves,
                          frequency_response(model, imgs).curves, atol=1e-6)
