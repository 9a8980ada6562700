"""MAE / MFF-MAE models against hand computations and published facts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench import build_model, model_config
from workbench.core.config import MASK_STRATEGIES, MODEL_KINDS, default_fuse_layers
from workbench.models import (MASK_SCORES, MODEL_CLASSES, MaskedAutoencoder, MFFMaskedAutoencoder,
                              mask_patches, model_class, num_kept)
from workbench.models.masking import bayer_matrix, seeded_masks, seeded_uniform
from workbench.models.pos_embed import sincos_2d
from workbench.core.registry import Registry

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def images(b=3, size=16, seed=0):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- masking
@pytest.mark.parametrize("strategy", ["random", "block", "grid"])
@pytest.mark.parametrize("grid,ratio", [(8, 0.75), (14, 0.75), (8, 0.5), (7, 0.9), (4, 0.0),
                                        (14, 0.6)])
def test_masked_count_is_exact(strategy, grid, ratio):
    m = mask_patches(5, grid, ratio, strategy, torch.Generator().manual_seed(1))
    n = grid * grid
    keep = int(n * (1 - ratio))
    assert m.mask.shape == (5, n)
    assert torch.all(m.mask.sum(1) == n - keep)
    assert set(m.mask.unique().tolist()) <= {0.0, 1.0}
    # ids_keep are exactly the visible patches, ascending
    for b in range(5):
        visible = torch.nonzero(m.mask[b] == 0).flatten()
        assert torch.equal(m.ids_keep[b], visible)
    # ids_restore inverts cat(kept, masked): gathering the shuffled mask restores it
    shuffled = torch.cat([torch.zeros(5, keep), torch.ones(5, n - keep)], 1)
    assert torch.equal(torch.gather(shuffled, 1, m.ids_restore), m.mask)


def test_num_kept_uses_official_floor():
    assert num_kept(196, 0.75) == 49
    assert num_kept(64, 0.1) == 57  # int(57.6)
    assert num_kept(64, 0.0) == 64


def test_random_masking_is_seeded_and_varies_per_sample():
    a = mask_patches(4, 8, 0.75, "random", torch.Generator().manual_seed(3)).mask
    b = mask_patches(4, 8, 0.75, "random", torch.Generator().manual_seed(3)).mask
    c = mask_patches(4, 8, 0.75, "random", torch.Generator().manual_seed(4)).mask
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


def splitmix64_stream(seed: int, n: int) -> list[float]:
    """The reference: splitmix64 (Steele, Lea & Flood 2014) in Python integers, 53-bit floats."""
    full, out, x = (1 << 64) - 1, [], seed & ((1 << 64) - 1)
    for _ in range(n):
        x = (x + 0x9E3779B97F4A7C15) & full
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & full
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & full
        out.append(((z ^ (z >> 31)) >> 11) / 2.0 ** 53)
    return out


def test_seeded_uniform_is_splitmix64_per_row():
    seeds = [0, 1, 12345, 2**62 + 7, 2**63 - 1]
    u = seeded_uniform(torch.tensor(seeds), 70)
    assert u.dtype == torch.float64 and u.shape == (5, 70)
    for row, seed in zip(u, seeds):
        assert row.tolist() == splitmix64_stream(seed, 70)


@pytest.mark.parametrize("strategy", ["random", "block", "grid"])
def test_seeded_masks_depend_on_each_sample_seed_only(strategy):
    seeds = [5, 17, 2**40 + 3, 9, 5]
    whole = seeded_masks(seeds, 8, 0.75, strategy)
    parts = [seeded_masks(seeds[i:j], 8, 0.75, strategy) for i, j in ((0, 2), (2, 3), (3, 5))]
    for f in ("ids_keep", "ids_restore", "mask"):
        assert torch.equal(getattr(whole, f), torch.cat([getattr(m, f) for m in parts]))
    assert torch.all(whole.mask.sum(1) == 48)
    assert torch.equal(whole.mask[0], whole.mask[4])  # same seed, same mask
    if strategy != "grid":
        assert not torch.equal(whole.mask[0], whole.mask[1])
    if strategy == "random":  # the kept patches are the 16 lowest of the seed's stream
        for b, seed in enumerate(seeds):
            lowest = np.argsort(splitmix64_stream(seed, 64))[:16]
            assert whole.ids_keep[b].tolist() == sorted(lowest.tolist())
    assert torch.all(seeded_masks(seeds, 8, 0.0, strategy).mask == 0)


def test_grid_masking_at_75_keeps_one_patch_per_2x2():
    m = mask_patches(2, 14, 0.75, "grid").mask.reshape(2, 14, 14)
    expected = torch.ones(14, 14)
    expected[::2, ::2] = 0
    assert torch.equal(m[0], expected) and torch.equal(m[1], expected)


def test_bayer_matrix_is_a_permutation():
    m = bayer_matrix(8)
    assert sorted(m.flatten().tolist()) == list(range(64))


def test_block_masking_masks_contiguous_regions():
    # blocks, unlike random masks, leave masked patches mostly next to other masked ones
    def neighbour_agreement(mask):
        g = mask.reshape(-1, 14, 14)
        return ((g[:, 1:, :] == g[:, :-1, :]).float().mean() +
                (g[:, :, 1:] == g[:, :, :-1]).float().mean()) / 2
    gen = torch.Generator().manual_seed(0)
    block = mask_patches(16, 14, 0.5, "block", gen).mask
    rand = mask_patches(16, 14, 0.5, "random", gen).mask
    assert neighbour_agreement(block) > neighbour_agreement(rand) + 0.2


@pytest.fixture
def top_rows_strategy():
    """A throwaway masking strategy, registered for one test: mask patches in raster order. Its
    name goes into the table configs are checked against, its score function beside it."""
    MASK_STRATEGIES.register("top-rows")("the top rows, in raster order")

    @MASK_SCORES.register("top-rows")
    def top_rows_scores(batch, grid, num_masked, generator):
        return torch.arange(grid * grid, 0, -1).float().expand(batch, -1)  # first = highest
    yield "top-rows"
    MASK_SCORES.unregister("top-rows")
    MASK_STRATEGIES.unregister("top-rows")


def test_a_registered_strategy_is_usable_by_name(top_rows_strategy):
    expected = torch.tensor([1.0] * 8 + [0.0] * 8).expand(3, -1)  # 4x4 grid: top 2 rows masked
    model = build_model("mae", **SMALL)
    out = model(images(), mask_ratio=0.5, mask_strategy=top_rows_strategy)
    assert torch.equal(out.mask, expected)
    configured = build_model("mff", mask_strategy=top_rows_strategy, mask_ratio=0.5, **SMALL)
    assert torch.equal(configured(images()).mask, expected)
    assert top_rows_strategy in list(MASK_STRATEGIES)
    drawn = model.draw_masking(3, 0.5, top_rows_strategy)
    assert torch.equal(drawn.mask, expected)
    assert torch.equal(drawn.ids_keep[0], torch.arange(8, 16))


def test_unknown_kind_and_strategy_errors_list_the_registered_names():
    kinds = r"model kind must be one of \('mae', 'mff'\), got 'simmim'"
    with pytest.raises(ValueError, match=kinds):
        build_model("simmim")
    model = build_model("mae", **SMALL)
    listed = r"mask_strategy must be one of \('random', 'block', 'grid'\), got 'checker'"
    with pytest.raises(ValueError, match=listed):
        model(images(), mask_strategy="checker")
    with pytest.raises(ValueError, match=listed):
        mask_patches(2, 4, 0.5, "checker")


def test_registries_hold_the_models_and_strategies():
    assert MODEL_CLASSES.get("mae") is MaskedAutoencoder
    assert MODEL_CLASSES.get("mff") is MFFMaskedAutoencoder and "mff" in MODEL_CLASSES
    assert sorted(MODEL_KINDS) == ["mae", "mff"] and [] not in MODEL_KINDS
    assert list(MASK_STRATEGIES) == ["random", "block", "grid"] and "grid" in MASK_STRATEGIES
    # the tables (plain data, read without torch) and the code registered under their names agree
    assert MODEL_CLASSES.names() == MODEL_KINDS.names()
    assert MASK_SCORES.names() == MASK_STRATEGIES.names()
    for kind in MODEL_KINDS:
        assert MODEL_CLASSES.get(kind).has_fusion == MODEL_KINDS.get(kind).has_fusion
        assert model_config(kind).has_fusion == MODEL_KINDS.get(kind).has_fusion


def test_code_registers_only_under_names_of_the_tables():
    """A class or score function for a kind or strategy the tables do not name is refused, and so
    is a class whose has_fusion contradicts its kind's entry."""
    with pytest.raises(ValueError, match=r"model class 'simmim' is not a model kind \(one of "
                                         r"\('mae', 'mff'\)\)"):
        model_class("simmim")
    with pytest.raises(ValueError, match="mask score 'checker' is not a mask_strategy"):
        MASK_SCORES.register("checker")
    MODEL_CLASSES.unregister("mff")
    try:
        with pytest.raises(ValueError, match="MODEL_KINDS says model kind 'mff' has has_fusion"):
            model_class("mff")(MaskedAutoencoder)  # has_fusion False: not an MFF model
    finally:
        MODEL_CLASSES.register("mff")(MFFMaskedAutoencoder)
    assert MODEL_CLASSES.get("mff") is MFFMaskedAutoencoder


def test_registry_basics():
    reg: Registry[int] = Registry("colour")
    reg.register("red")(1)
    assert reg.register("blue")(2) == 2  # the decorator returns what it registers
    assert reg.names() == ("red", "blue") and list(reg) == ["red", "blue"] and len(reg) == 2
    assert reg.get("blue") == 2 and "red" in reg and "green" not in reg
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        reg.register("red")(3)
    with pytest.raises(ValueError, match=r"colour must be one of \('red', 'blue'\), got 'green'"):
        reg.get("green")
    assert reg.unregister("red") == 1 and reg.names() == ("blue",)
    table = Registry("shade", {"dark": 0, "light": 1})  # a table written in one place
    assert table.names() == ("dark", "light") and table.get("light") == 1
    keyed: Registry[str] = Registry("swatch", within=table)
    keyed.register("dark")("#000")
    with pytest.raises(ValueError, match=r"swatch 'grey' is not a shade \(one of \('dark', "
                                         r"'light'\)\)"):
        keyed.register("grey")


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_mask_ratio_out_of_range_is_an_error(ratio):
    model = build_model("mae", **SMALL)
    with pytest.raises(ValueError, match="mask_ratio"):
        model(images(), mask_ratio=ratio)


# ----------------------------------------------------------------------------- patches
def test_patchify_matches_slicing_and_inverts():
    model = build_model("mae", **SMALL)
    x = images()
    patches = model.patchify(x)
    assert patches.shape == (3, 16, 4 * 4 * 3)
    # patch (i, j) flattened as (row, col, channel)
    i, j = 2, 1
    manual = x[1, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[1, i * 4 + j], manual)
    assert torch.equal(model.unpatchify(patches), x)


# ----------------------------------------------------------------------------- loss
@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_is_masked_mse_by_hand(norm_pix):
    model = build_model("mae", norm_pix_loss=norm_pix, **SMALL)
    x = images()
    out = model(x, mask_ratio=0.75, seed=0)
    pred, mask = out.pred.detach().numpy(), out.mask.numpy()
    xs = x.numpy()
    total, count = 0.0, 0
    for b in range(3):
        for n in range(16):
            if mask[b, n] == 0:
                continue
            i, j = divmod(n, 4)
            target = xs[b, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4].transpose(1, 2, 0).reshape(-1)
            if norm_pix:
                target = (target - target.mean()) / math.sqrt(target.var(ddof=1) + 1e-6)
            total += float(np.mean((pred[b, n] - target) ** 2))
            count += 1
    assert count == 3 * 12
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)


def test_loss_ignores_visible_patches():
    model = build_model("mae", **SMALL)
    x = images()
    out = model(x, seed=5)
    out.pred.retain_grad() if out.pred.requires_grad else None
    grad = torch.autograd.grad(out.loss, out.pred)[0]
    visible = out.mask == 0
    assert torch.all(grad[visible] == 0)
    assert torch.all(grad[~visible].abs().sum(-1) > 0)


def test_forward_shapes_and_seed():
    model = build_model("mae", **SMALL)
    a = model(images(), seed=7)
    b = model(images(), seed=7)
    assert a.pred.shape == (3, 16, 48) and a.mask.shape == (3, 16)
    assert torch.equal(a.mask, b.mask) and torch.allclose(a.loss, b.loss)


def test_mask_token_in_encoder_ablation_sees_all_positions():
    model = build_model("mae", mask_token_in_encoder=True, **SMALL)
    out = model(images(), mask_ratio=0.75, seed=0, return_features=True)
    assert out.features[-1].shape == (3, 1 + 16, 32)  # every position, masked ones as tokens
    assert out.pred.shape == (3, 16, 48)
    out.loss.backward()
    assert model.encoder_mask_token.grad.abs().sum() > 0


def test_encode_and_layer_features_shapes():
    model = build_model("mae", **SMALL)
    feats = model.layer_features(images())
    assert len(feats) == 3 and all(f.shape == (3, 17, 32) for f in feats)
    enc = model.encode(images())
    assert torch.allclose(enc, model.norm(feats[-1]))
    assert model.encode(images(), mask_ratio=0.75).shape == (3, 1 + 4, 32)


def test_bf16_autocast_forward_is_finite_with_fp32_loss():
    model = build_model("mff", **SMALL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(), seed=0)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(model.fusion.logits.grad).all()


# ----------------------------------------------------------------------------- position embedding
def test_sincos_matches_published_formula():
    dim, g = 16, 3
    emb = sincos_2d(dim, g)[0].numpy()
    assert emb.shape == (1 + g * g, dim)
    assert np.all(emb[0] == 0)  # cls position
    quarter = dim // 4
    for t in range(g * g):
        row, col = divmod(t, g)
        for k in range(quarter):
            omega = 1.0 / 10000 ** (k / quarter)
            # first half: column coordinate (sin, then cos); second half: row coordinate
            assert emb[1 + t, k] == pytest.approx(math.sin(col * omega), abs=1e-6)
            assert emb[1 + t, quarter + k] == pytest.approx(math.cos(col * omega), abs=1e-6)
            assert emb[1 + t, 2 * quarter + k] == pytest.approx(math.sin(row * omega), abs=1e-6)
            assert emb[1 + t, 3 * quarter + k] == pytest.approx(math.cos(row * omega), abs=1e-6)


def test_position_embeddings_are_fixed():
    model = build_model("mae", **SMALL)
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    assert torch.allclose(model.pos_embed, sincos_2d(32, 4))


# ----------------------------------------------------------------------------- MFF
def test_default_fuse_layers_rule():
    assert default_fuse_layers(12) == [0, 2, 4, 6, 8, 11]  # MFF's released ViT-B setting
    assert default_fuse_layers(24) == [0, 4, 8, 12, 16, 23]
    assert default_fuse_layers(6) == [0, 1, 2, 3, 4, 5]
    assert default_fuse_layers(1) == [0]
    for d in range(1, 40):
        layers = default_fuse_layers(d)
        assert layers[-1] == d - 1 and len(layers) <= 6 and layers == sorted(set(layers))


def test_mff_weights_start_uniform_sum_to_one_and_learn():
    model = build_model("mff", **SMALL)
    w = model.fusion_weights()
    assert model.fuse_layers == [0, 1, 2]
    assert torch.allclose(w, torch.full((3,), 1 / 3)) and w.sum().item() == pytest.approx(1.0)
    model(images(), seed=0).loss.backward()
    grad = model.fusion.logits.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.weight.grad.abs().sum() > 0 for p in model.fusion.projections)


def test_mff_projection_init_and_choices():
    model = build_model("mff", "vit-b", depth=12, embed_dim=64, num_heads=2, img_size=32,
                        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    assert model.fuse_layers == [0, 2, 4, 6, 8, 11]
    assert len(model.fusion.projections) == 5
    for p in model.fusion.projections:
        assert torch.all(p.bias == 0)
        bound = math.sqrt(6 / (64 + 64))  # Xavier-uniform
        assert p.weight.abs().max() <= bound and p.weight.std() > bound / 3
    ident = build_model("mff", fusion_proj="identity", **SMALL)
    assert all(isinstance(p, torch.nn.Identity) for p in ident.fusion.projections)
    mlp = build_model("mff", fusion_proj="mlp", fuse_layers=[0, 2], **SMALL)
    assert len(mlp.fusion.projections) == 1 and len(mlp.fusion.projections[0]) == 3
    mlp(images(), seed=0).loss.backward()


def test_mff_with_one_hot_last_layer_equals_mae():
    mae = build_model("mae", **SMALL)
    mff = build_model("mff", **SMALL)
    missing, unexpected = mff.load_state_dict(mae.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("fusion.") for k in missing)
    with torch.no_grad():
        mff.fusion.logits.copy_(torch.tensor([-1e4, -1e4, 0.0]))
    x = images()
    a, b = mae(x, seed=3), mff(x, seed=3)
    assert torch.allclose(a.latent, b.latent, atol=1e-6)
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    assert torch.allclose(mae.encode(x), mff.encode(x))


def test_mff_fused_tensor_is_weighted_sum_by_hand():
    mff = build_model("mff", fuse_layers=[0, 2], **SMALL)
    with torch.no_grad():
        mff.fusion.logits.copy_(torch.tensor([0.3, -0.2]))
    feats = mff.layer_features(images())
    w = torch.softmax(torch.tensor([0.3, -0.2]), 0)
    proj = mff.fusion.projections[0]
    expected = w[0] * (feats[0] @ proj.weight.T + proj.bias) + w[1] * feats[2]
    assert torch.allclose(mff.fusion(feats), expected, atol=1e-6)
    assert torch.allclose(mff.decoder_input(feats), mff.norm(expected), atol=1e-5)


# ----------------------------------------------------------------------------- config
def test_presets_have_paper_dimensions():
    expect = {"vit-s": (384, 12, 6), "vit-b": (768, 12, 12), "vit-l": (1024, 24, 16),
              "vit-h": (1280, 32, 16)}
    for name, (dim, depth, heads) in expect.items():
        c = model_config("mae", name)
        assert (c.embed_dim, c.depth, c.num_heads) == (dim, depth, heads)
        assert (c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads) == (512, 8, 16)
        assert c.img_size == 224 and c.mask_ratio == 0.75
    assert model_config("mae", "vit-b").patch_size == 16


def test_vit_b_parameter_count_matches_architecture():
    # ViT-B/16 encoder: 85.8 M trainable weights (patch embed + cls + 12 blocks + norm)
    c = model_config("mae", "vit-b")
    d, n = 768, 196
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    expected = (3 * 16 * 16 * d + d) + d + 12 * block + 2 * d
    with torch.device("meta"):
        model = build_model("mae", "vit-b")
    enc = sum(p.numel() for k, p in model.named_parameters()
              if k.startswith(("patch_embed", "cls_token", "blocks", "norm.")))
    assert enc == expected
    assert model.pos_embed.shape == (1, n + 1, d) and c.num_patches == n


@pytest.mark.parametrize("overrides,match", [
    (dict(img_size=30), "not divisible by patch_size"),
    (dict(mask_ratio=1.0), "mask_ratio"),
    (dict(fuse_layers=[0, 9]), "out of range"),
    (dict(fuse_layers=[0, 1]), "last block"),
    (dict(mask_strategy="checker"), "mask_strategy"),
    (dict(fusion_proj="conv"), "fusion_proj"),
    (dict(embed_dim=33), "num_heads"),
])
def test_bad_settings_are_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_model("mff", **{**SMALL, **overrides})


def test_unknown_setting_and_preset_are_named():
    with pytest.raises(TypeError, match="embed_dims"):
        build_model("mae", embed_dims=64)
    with pytest.raises(ValueError, match="vit-xl"):
        build_model("mae", "vit-xl")
    with pytest.raises(ValueError, match="kind"):
        build_model("simmim")


def test_wrong_image_shape_is_a_clear_error():
    model = build_model("mae", **SMALL)
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\]"):
        model(torch.randn(2, 3, 20, 20))
