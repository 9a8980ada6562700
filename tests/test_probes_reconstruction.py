"""Masked reconstructions: pasting, mask counts, seeds, and norm-pix un-normalisation."""
from __future__ import annotations

import math

import pytest
import torch

from workbench import build_model
from workbench.checkpoints import load_checkpoint
from workbench.models import EncoderOnlyError
from workbench.probes import reconstruct

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def photos(n=3, size=16, seed=0) -> torch.Tensor:
    """Smooth colourful images in [0, 1], ImageNet-normalised."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")
    img = (img + 0.05 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
    return (img - MEAN) / STD


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mae", **SMALL)


def test_shapes_display_space_and_pasting(model):
    imgs = photos()
    res = reconstruct(model, imgs, mask_ratio=0.75, seed=0)
    for t in (res.original, res.masked, res.reconstruction, res.pasted):
        assert t.shape == imgs.shape and t.min() >= 0 and t.max() <= 1
    assert res.mask.shape == (3, 16)
    assert torch.allclose(res.original, (imgs * STD + MEAN).clamp(0, 1), atol=1e-6)
    visible = ~res.patch_mask.bool().expand_as(imgs)
    assert torch.equal(res.pasted[visible], res.original[visible])
    assert torch.equal(res.pasted[~visible], res.reconstruction[~visible])
    assert torch.equal(res.masked[visible], res.original[visible])
    assert (res.masked[~visible] == 0.5).all()
    assert res.loss == pytest.approx(model(imgs, mask_ratio=0.75, seed=0).loss.item(), rel=1e-5)


@pytest.mark.parametrize("strategy", ["random", "block", "grid"])
@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.0])
def test_masked_count_matches_ratio(model, strategy, ratio):
    res = reconstruct(model, photos(), mask_ratio=ratio, mask_strategy=strategy, seed=3)
    expected = 16 - int(16 * (1 - ratio))
    assert res.mask.sum(dim=1).tolist() == [expected] * 3
    assert res.patch_mask.sum().item() == 3 * expected * 16  # 4x4 pixels per patch


def test_seed_determinism(model):
    imgs = photos()
    a, b = reconstruct(model, imgs, seed=7), reconstruct(model, imgs, seed=7)
    c = reconstruct(model, imgs, seed=8)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.reconstruction, b.reconstruction)
    assert not torch.equal(a.mask, c.mask)


def test_norm_pix_unnormalisation_by_hand(model):
    """The oracle option: each masked patch with its own true mean and variance."""
    assert model.cfg.norm_pix_loss
    imgs = photos(1)
    res = reconstruct(model, imgs, seed=0, stats="oracle")
    assert res.stats == "oracle"
    with torch.no_grad():
        pred = model.eval()(imgs, mask_ratio=0.75, seed=0).pred  # [1, 16, 48] normalised
    n = int(res.mask[0].nonzero()[0])  # a masked patch
    row, col = divmod(n, 4)
    true = imgs[0, :, row * 4:(row + 1) * 4, col * 4:(col + 1) * 4]  # [3, 4, 4]
    values = true.permute(1, 2, 0).reshape(-1)  # (row, col, channel) order, as patchify
    mean, var = values.mean(), values.var(unbiased=True)
    by_hand = pred[0, n] * torch.sqrt(var + 1e-6) + mean  # 48 values
    by_hand = by_hand.reshape(4, 4, 3).permute(2, 0, 1)  # [3, 4, 4]
    by_hand = (by_hand * STD[0] + MEAN[0]).clamp(0, 1)
    got = res.reconstruction[0, :, row * 4:(row + 1) * 4, col * 4:(col + 1) * 4]
    assert torch.allclose(got, by_hand, atol=1e-5)


def test_default_reconstruction_does_not_see_the_masked_pixels(model):
    """With the same mask, replacing the masked patches' pixels by anything else leaves the
    default reconstruction unchanged; the oracle view changes (it reads them)."""
    imgs = photos(3)
    res = reconstruct(model, imgs, seed=0)
    assert res.stats == "visible"
    noise = torch.randn(imgs.shape, generator=torch.Generator().manual_seed(1)) * 3
    swapped = torch.where(res.patch_mask.bool(), noise, imgs)
    again = reconstruct(model, swapped, seed=0)
    assert torch.equal(again.mask, res.mask)
    assert torch.allclose(again.reconstruction, res.reconstruction, atol=1e-6)
    oracle = [reconstruct(model, x, seed=0, stats="oracle").reconstruction for x in (imgs, swapped)]
    assert not torch.allclose(*oracle, atol=1e-3)


def test_visible_statistics_by_hand():
    """A masked patch gets the Gaussian-weighted mean of its visible neighbours' statistics."""
    from workbench.probes.reconstruction import visible_patch_stats

    target = torch.arange(4.0).repeat_interleave(3).reshape(1, 4, 3) * torch.tensor([1.0, 2, 3])
    mask = torch.tensor([[0, 1, 0, 0]])  # 2 x 2 grid, patch 1 masked
    mean, var = visible_patch_stats(target, mask, grid=2, sigma=1.0)
    means, vars_ = target.mean(-1), target.var(-1)
    w = torch.exp(-torch.tensor([1.0, 2.0, 1.0]) / 2)  # patch 1 to patches 0, 2, 3: d² = 1, 2, 1
    assert mean[0, 1, 0] == pytest.approx(float((w * means[0, [0, 2, 3]]).sum() / w.sum()))
    assert var[0, 1, 0] == pytest.approx(float((w * vars_[0, [0, 2, 3]]).sum() / w.sum()))
    assert torch.equal(mean[0, [0, 2, 3], 0], means[0, [0, 2, 3]])  # visible: their own
    with pytest.raises(ValueError, match="stats must be"):
        reconstruct(build_model("mae", **SMALL), photos(1), stats="truth")


def test_pixel_target_model_is_not_unnormalised():
    torch.manual_seed(0)
    model = build_model("mae", **SMALL, norm_pix_loss=False)
    imgs = photos()
    res = reconstruct(model, imgs, seed=0)
    with torch.no_grad():
        pred = model.eval()(imgs, mask_ratio=0.75, seed=0).pred
    assert torch.allclose(res.reconstruction, (model.unpatchify(pred) * STD + MEAN).clamp(0, 1),
                          atol=1e-6)
    assert res.stats == "pixels"
    assert not _inference_fields(res)  # usable like any tensor (in-place, autograd)


def test_bad_input_and_mode_restored(model):
    model.train()
    reconstruct(model, photos(), seed=0)
    assert model.training
    with pytest.raises(ValueError, match="mask_ratio"):
        reconstruct(model, photos(), mask_ratio=1.0)
    with pytest.raises(ValueError, match="mask_strategy"):
        reconstruct(model, photos(), mask_strategy="checker")
    with pytest.raises(ValueError, match="shape"):
        reconstruct(model, torch.randn(2, 3, 20, 20))


def test_official_checkpoints(tmp_path, model):
    torch.save({"model": model.state_dict()}, tmp_path / "mae_visualize.pth")
    # a file without ``args`` is read as a pixel-target model (like mae_visualize_*): say norm_pix
    loaded = load_checkpoint(tmp_path / "mae_visualize.pth", num_heads=2, decoder_num_heads=2,
                             norm_pix_loss=True)
    imgs = photos()
    a, b = reconstruct(model, imgs, seed=1), reconstruct(loaded, imgs, seed=1)
    assert torch.allclose(a.reconstruction, b.reconstruction, atol=1e-6)
    pixels = load_checkpoint(tmp_path / "mae_visualize.pth", num_heads=2, decoder_num_heads=2)
    assert not pixels.cfg.norm_pix_loss
    visible = ~a.patch_mask.bool().expand_as(imgs)
    assert torch.equal(reconstruct(pixels, imgs, seed=1).pasted[visible], a.original[visible])
    encoder_only = {k: v for k, v in model.state_dict().items()
                    if not k.startswith(("decoder", "mask_token"))}
    torch.save({"model": encoder_only}, tmp_path / "mae_pretrain.pth")
    enc = load_checkpoint(tmp_path / "mae_pretrain.pth", num_heads=2)
    with pytest.raises(EncoderOnlyError):
        reconstruct(enc, imgs)


def _inference_fields(res) -> list[str]:
    return [f for f, v in vars(res).items() if torch.is_tensor(v) and v.is_inference()]


def _modes(model) -> dict:
    return {name: m.training for name, m in model.named_modules()}


def test_every_submodule_mode_restored_and_eval_inside(model):
    """reconstruct runs every submodule in eval mode and gives each its own mode back afterwards
    (also a mixed one: a frozen part in eval inside a training model), even when it fails."""
    model.train()
    model.blocks[0].eval()  # mixed: one block frozen in eval
    before = _modes(model)
    seen = []
    hook = model.blocks[1].register_forward_pre_hook(
        lambda mod, _: seen.append(not any(m.training for m in model.modules())))
    try:
        reconstruct(model, photos(), seed=0)
        assert seen == [True] and _modes(model) == before
        with pytest.raises(ValueError, match="shape"):
            reconstruct(model, torch.randn(2, 3, 20, 20))
        assert _modes(model) == before
    finally:
        hook.remove()
        model.train()


def test_same_pixels_in_any_mode_and_with_a_cold_cache(model):
    """What reconstruct shows depends neither on the caller's mode nor on the cached neighbour
    weights; the cache holds exactly the Gaussian weights of the patch distances."""
    from workbench.probes.reconstruction import neighbour_weights

    imgs = photos()
    model.train()
    warm = reconstruct(model, imgs, 0.6, seed=4)
    model.eval()
    neighbour_weights.cache_clear()
    cold = reconstruct(model, imgs, 0.6, seed=4)
    model.train()
    for field in ("original", "masked", "reconstruction", "pasted", "mask"):
        assert torch.equal(getattr(warm, field), getattr(cold, field)), field
    assert not _inference_fields(warm)
    g, sigma = 3, 1.5
    pos = [(r, c) for r in range(g) for c in range(g)]
    by_hand = torch.tensor([[math.exp(-((a - c) ** 2 + (b - d) ** 2) / (2 * sigma ** 2))
                             for c, d in pos] for a, b in pos])
    w = neighbour_weights(g, sigma, torch.float32, torch.device("cpu"))
    assert torch.allclose(w, by_hand, rtol=1e-6, atol=0)
    assert neighbour_weights(g, sigma, torch.float32, torch.device("cpu")) is w
    with torch.inference_mode():  # a first call in inference mode still caches a plain tensor
        assert not neighbour_weights(5, sigma, torch.float32, torch.device("cpu")).is_inference()


def test_the_estimator_gives_back_the_true_colour_from_a_perfect_prediction():
    """The picture's un-normalisation, apart from the model: feeding each patch's true
    normalised pixels as the 'prediction' gives back the image -- exactly with oracle statistics;
    with the visible neighbours' statistics (the default) exactly on uniform grey and colour
    images, within a few hundredths of mean colour on a smooth gradient, and not on contrast the
    visible patches cannot show (a patch checkerboard: their brightness, not the hidden one's).
    So a colour cast on a grey image is the model's, not the estimator's."""
    from workbench.data import normalize, unnormalize
    from workbench.probes.reconstruction import unnormalize_patches

    model = build_model("mae", "tiny").eval()
    g, p = model.cfg.grid_size, model.cfg.patch_size
    ramp = torch.linspace(0, 1, 32)
    checker = ((torch.arange(g)[:, None] + torch.arange(g)) % 2).float()
    checker = checker.repeat_interleave(p, 0).repeat_interleave(p, 1)
    images = {"grey": torch.full((3, 32, 32), 0.286),
              "colour": torch.tensor([0.8, 0.3, 0.1])[:, None, None].expand(3, 32, 32),
              "gradient": torch.stack([ramp.expand(32, 32), ramp[:, None].expand(32, 32),
                                       1 - ramp.expand(32, 32)]),
              "checker": (0.1 + 0.8 * checker).expand(3, 32, 32)}
    mask = (torch.rand(1, g * g, generator=torch.Generator().manual_seed(0)) < 0.75).float()
    hidden = mask.reshape(g, g).repeat_interleave(p, 0).repeat_interleave(p, 1).bool()
    worst = {}
    for name, pixels in images.items():
        imgs = normalize(pixels[None] * 255)
        target = model.patchify(imgs)
        perfect = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True)
                                                               + 1e-6) ** 0.5
        truth = unnormalize(imgs)[0][:, hidden]  # [3, masked pixels]
        for stats in ("oracle", "visible"):
            got = unnormalize(model.unpatchify(unnormalize_patches(
                model, perfect, imgs, mask, stats)))[0][:, hidden]
            colour_error = (got.mean(1) - truth.mean(1)).abs().max().item()
            worst[name, stats] = colour_error
            if stats == "oracle":
                assert torch.allclose(got, truth, atol=1e-4), name
    assert worst["grey", "visible"] < 1e-4 and worst["colour", "visible"] < 1e-4
    assert worst["gradient", "visible"] < 0.06
    assert worst["checker", "visible"] > 0.1  # what visible statistics cannot know
