"""Checkpoint import / export. The fakes are written in the published layouts, with encoder
weights that come from timm's own VisionTransformer, so "same outputs as timm" is independent."""
from __future__ import annotations

import argparse
import os
import pickle

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from workbench import build_model
from workbench.checkpoints import (LAYOUTS, CheckpointError, checkpoint_dict, detect_layout,
                                   export_timm, load_checkpoint, read_checkpoint, save_checkpoint)
from workbench.core.io import atomic_save
from workbench.models import EncoderOnlyError

DIMS = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2)
DEC = dict(decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2)
# width 32 is not a published width, so the head counts cannot be inferred: say them
HEADS = dict(num_heads=2, decoder_num_heads=2)


def timm_vit(seed=0, **kw) -> VisionTransformer:
    torch.manual_seed(seed)
    dims = {**DIMS, **kw}
    vit = VisionTransformer(num_classes=10, **dims).eval()
    with torch.no_grad():  # timm zero-inits some tensors; make every weight informative
        for p in vit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return vit


def decoder_weights(seed=1, kind="mae", **kw) -> dict:
    torch.manual_seed(seed)
    model = build_model(kind, **DIMS, **DEC, **kw)
    return {k: v for k, v in model.state_dict().items()
            if k.startswith(("decoder", "mask_token", "fusion."))}


def imgs(b=2):
    return torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def official_sd(vit) -> dict:
    return {k: v for k, v in vit.state_dict().items() if not k.startswith("head.")}


# ----------------------------------------------------------------------------- mmpretrain fakes
# The tensors of mmpretrain's MAE / MFF pretraining files under the names those files store:
# the MAEViT / MFFViT backbone (mmpretrain/models/backbones/vision_transformer.py and
# models/selfsup/mff.py) and the MAEPretrainDecoder neck (models/necks/mae_neck.py). Each is paired
# by hand with the official MAE name of the same tensor, so a wrong rename in the importer fails.
MM_LAYER = [  # mmpretrain TransformerEncoderLayer -> official MAE (timm Block)
    ("ln1.weight", "norm1.weight"), ("ln1.bias", "norm1.bias"),
    ("attn.qkv.weight", "attn.qkv.weight"), ("attn.qkv.bias", "attn.qkv.bias"),
    ("attn.proj.weight", "attn.proj.weight"), ("attn.proj.bias", "attn.proj.bias"),
    ("ln2.weight", "norm2.weight"), ("ln2.bias", "norm2.bias"),
    ("ffn.layers.0.0.weight", "mlp.fc1.weight"), ("ffn.layers.0.0.bias", "mlp.fc1.bias"),
    ("ffn.layers.1.weight", "mlp.fc2.weight"), ("ffn.layers.1.bias", "mlp.fc2.bias"),
]


def mmpretrain_names(depth: int, decoder_depth: int, num_proj: int | None) -> list[tuple]:
    """(mmpretrain key, official MAE key) for every tensor; ``num_proj=None``: MAE, no fusion."""
    names = [("backbone.cls_token", "cls_token"), ("backbone.pos_embed", "pos_embed"),
             ("backbone.patch_embed.projection.weight", "patch_embed.proj.weight"),
             ("backbone.patch_embed.projection.bias", "patch_embed.proj.bias")]
    names += [(f"backbone.layers.{n}.{mm}", f"blocks.{n}.{ours}")
              for n in range(depth) for mm, ours in MM_LAYER]
    names += [("backbone.ln1.weight", "norm.weight"), ("backbone.ln1.bias", "norm.bias")]
    if num_proj is not None:
        names += [(f"backbone.proj_layers.{k}.{p}", f"fusion.projections.{k}.{p}")
                  for k in range(num_proj) for p in ("weight", "bias")]
        names += [("backbone.proj_weights", "fusion.logits")]  # stored as [L, 1, 1, 1]
    names += [("neck.mask_token", "mask_token"), ("neck.decoder_pos_embed", "decoder_pos_embed"),
              ("neck.decoder_embed.weight", "decoder_embed.weight"),
              ("neck.decoder_embed.bias", "decoder_embed.bias")]
    names += [(f"neck.decoder_blocks.{n}.{mm}", f"decoder_blocks.{n}.{ours}")
              for n in range(decoder_depth) for mm, ours in MM_LAYER]
    names += [("neck.ln1.weight", "decoder_norm.weight"), ("neck.ln1.bias", "decoder_norm.bias"),
              ("neck.decoder_pred.weight", "decoder_pred.weight"),
              ("neck.decoder_pred.bias", "decoder_pred.bias")]
    return names


def to_mmpretrain(model) -> dict:
    """``model``'s tensors under mmpretrain's names (the list above must name every one)."""
    ours = model.state_dict()
    fused = len(model.fusion.projections) if model.has_fusion else None
    names = mmpretrain_names(model.cfg.depth, model.cfg.decoder_depth, fused)
    assert sorted(o for _, o in names) == sorted(ours)
    sd = {mm: ours[o].clone() for mm, o in names}
    if model.has_fusion:
        sd["backbone.proj_weights"] = sd["backbone.proj_weights"].reshape(-1, 1, 1, 1)
    return sd


def assert_same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k, v in sa.items():
        assert torch.equal(v, sb[k]), k


# ----------------------------------------------------------------------------- published layouts
def test_official_mae_with_decoder_and_args(tmp_path):
    vit = timm_vit()
    sd = {**official_sd(vit), **decoder_weights()}
    args = argparse.Namespace(norm_pix_loss=True, mask_ratio=0.75, model="mae_vit_tiny")
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": sd, "epoch": 799, "args": args}, path)
    model = load_checkpoint(path, **HEADS)
    info = model.checkpoint_info
    assert info.layout == "mae-official" and info.has_decoder and info.step == 799
    c = model.cfg
    assert (c.img_size, c.patch_size, c.embed_dim, c.depth, c.num_heads) == (16, 4, 32, 3, 2)
    assert (c.decoder_embed_dim, c.decoder_depth) == (32, 2) and c.norm_pix_loss
    x = imgs()
    with torch.no_grad():
        assert torch.allclose(model.encode(x), vit.forward_features(x), atol=1e-5)
        out = model(x, seed=0)
    assert out.pred.shape == (2, 16, 48) and torch.isfinite(out.loss)


def test_official_visualize_layout_defaults_to_plain_pixels(tmp_path):
    path = tmp_path / "mae_visualize.pth"
    torch.save({"model": {**official_sd(timm_vit()), **decoder_weights()}}, path)
    assert load_checkpoint(path, **HEADS).cfg.norm_pix_loss is False
    assert load_checkpoint(path, norm_pix_loss=True, **HEADS).cfg.norm_pix_loss is True


def test_official_pretrain_only_file_is_encoder_only(tmp_path):
    vit = timm_vit()
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": official_sd(vit)}, path)
    model = load_checkpoint(path, **HEADS)
    assert not model.has_decoder and not model.checkpoint_info.has_decoder
    x = imgs()
    with torch.no_grad():
        assert torch.allclose(model.encode(x), vit.forward_features(x), atol=1e-5)
        with pytest.raises(EncoderOnlyError, match="encoder-only"):
            model(x)


def test_published_widths_get_published_head_counts(tmp_path):
    vit = timm_vit(embed_dim=64, num_heads=4)  # unpublished width: heads = width // 64 = 1
    path = tmp_path / "w64.pth"
    torch.save({"model": official_sd(vit)}, path)
    assert load_checkpoint(path).cfg.num_heads == 1
    model = load_checkpoint(path, num_heads=4)  # the override makes it match timm
    x = imgs()
    with torch.no_grad():
        assert torch.allclose(model.encode(x), vit.forward_features(x), atol=1e-5)
    vit = timm_vit(embed_dim=192, num_heads=3)  # ViT-Ti width: 3 heads as published
    torch.save({"model": official_sd(vit)}, path)
    assert load_checkpoint(path).cfg.num_heads == 3


def test_mmpretrain_mff_layout(tmp_path):
    vit = timm_vit()
    ours = build_model("mff", **DIMS, **DEC)  # depth 3 -> fuses [0, 1, 2]
    ours.load_state_dict({**official_sd(vit), **decoder_weights(kind="mff")})
    with torch.no_grad():
        ours.fusion.logits.copy_(torch.tensor([0.5, -0.3, 0.1]))
    sd = to_mmpretrain(ours)
    assert sd["backbone.proj_weights"].shape == (3, 1, 1, 1)
    # mmpretrain's preprocessor mean / std are non-persistent buffers, absent from its files; a
    # state dict that has them anyway loads (they are not model weights)
    sd["data_preprocessor.mean"] = torch.zeros(3)
    path = tmp_path / "mff_vit-b.pth"
    torch.save({"meta": {"epoch": 300}, "state_dict": sd}, path)
    model = load_checkpoint(path, norm_pix_loss=True, **HEADS)
    assert model.checkpoint_info.layout == "mmpretrain" and model.cfg.kind == "mff"
    assert_same_tensors(model, ours)
    assert model.fuse_layers == [0, 1, 2]
    assert torch.allclose(model.fusion_weights(), torch.softmax(torch.tensor([0.5, -0.3, 0.1]), 0))
    x = imgs()
    with torch.no_grad():
        assert torch.allclose(model.encode(x), vit.forward_features(x), atol=1e-5)
        a, b = model(x, seed=1), ours.eval()(x, seed=1)
    assert torch.allclose(a.pred, b.pred, atol=1e-6)
    assert model.checkpoint_info.summary()["fuse_layers"] == [0, 1, 2]
    assert model.checkpoint_info.summary()["fusion_weights"] == [
        round(float(w), 4) for w in model.fusion_weights()]


def test_each_detected_layout_has_one_converter():
    # Hugging Face directories: the fifth, detected and tested in test_hf.py
    assert list(LAYOUTS) == ["workbench", "mmpretrain", "mae-official", "timm", "huggingface"]
    vit = official_sd(timm_vit())
    ours = build_model("mae", **DIMS, **DEC)
    found = [detect_layout(checkpoint_dict(ours)),
             detect_layout({"meta": {}, "state_dict": to_mmpretrain(ours)}),
             detect_layout({"model": vit}), detect_layout(vit)]
    assert found == list(LAYOUTS)[:4]
    with pytest.raises(ValueError, match="checkpoint layout must be one of .*'timm'"):
        LAYOUTS.get("hf")


def test_mmpretrain_mae_layout(tmp_path):
    ours = build_model("mae", **DIMS, **DEC)
    ours.load_state_dict({**official_sd(timm_vit()), **decoder_weights()})
    path = tmp_path / "mae_vit-b.pth"
    torch.save({"meta": {"epoch": 300}, "state_dict": to_mmpretrain(ours)}, path)
    model = load_checkpoint(path, norm_pix_loss=True, **HEADS)
    assert model.checkpoint_info.layout == "mmpretrain" and model.cfg.kind == "mae"
    assert model.has_decoder and model.cfg == ours.cfg
    assert_same_tensors(model, ours)
    x = imgs()
    with torch.no_grad():
        assert torch.equal(model(x, seed=1).pred, ours.eval()(x, seed=1).pred)


def test_mmpretrain_with_unexpected_number_of_fused_layers_asks_for_them(tmp_path):
    ours = build_model("mff", fuse_layers=[0, 2], **DIMS, **DEC)
    path = tmp_path / "mff.pth"
    torch.save({"meta": {}, "state_dict": to_mmpretrain(ours)}, path)
    with pytest.raises(CheckpointError, match="fuse_layers"):
        load_checkpoint(path, **HEADS)
    model = load_checkpoint(path, fuse_layers=[0, 2], **HEADS)
    assert model.fuse_layers == [0, 2]


def test_timm_state_dict_loads_encoder_only(tmp_path):
    vit = timm_vit()
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)  # includes the classifier head, which is dropped
    model = load_checkpoint(path, num_heads=2)
    assert model.checkpoint_info.layout == "timm" and not model.has_decoder
    x = imgs()
    with torch.no_grad():
        assert torch.allclose(model.encode(x), vit.forward_features(x), atol=1e-5)


def test_export_timm_round_trip():
    model = build_model("mff", **DIMS, **DEC).eval()
    vit = VisionTransformer(num_classes=0, **DIMS).eval()
    vit.load_state_dict(export_timm(model), strict=True)
    x = imgs()
    with torch.no_grad():
        assert torch.allclose(vit.forward_features(x), model.encode(x), atol=1e-6)


# ----------------------------------------------------------------------------- our own layout
def test_own_checkpoint_round_trip(tmp_path):
    model = build_model("mff", fuse_layers=[0, 2], fusion_proj="mlp", **DIMS, **DEC)
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(model, path, step=42)
    loaded = load_checkpoint(path)
    assert loaded.cfg == model.cfg and loaded.checkpoint_info.step == 42
    assert loaded.checkpoint_info.layout == "workbench"
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # no temp files left


def test_run_directory_loads_its_checkpoint(tmp_path):
    model = build_model("mae", **DIMS, **DEC)
    save_checkpoint(model, tmp_path / "run" / "checkpoint.pt", step=7)
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.checkpoint_info.path == str(tmp_path / "run" / "checkpoint.pt")
    assert loaded.checkpoint_info.step == 7
    assert_same_tensors(loaded, model)


def test_loaded_model_carries_its_source_from_construction(tmp_path):
    fresh = build_model("mae", **DIMS, **DEC)
    assert fresh.checkpoint_info is None and fresh.source is None and fresh.has_decoder
    with pytest.raises(AttributeError):
        fresh.has_decoder = False  # set by the constructor only
    path = tmp_path / "enc.pth"
    torch.save({"model": official_sd(timm_vit())}, path)
    model = load_checkpoint(path, **HEADS)
    assert model.checkpoint_info is model.source and not model.has_decoder
    assert checkpoint_dict(model)["has_decoder"] is False


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


# ----------------------------------------------------------------------------- bad files
def test_missing_empty_directory_truncated_and_random_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)
    good = tmp_path / "good.pth"
    save_checkpoint(build_model("mae", **DIMS, **DEC), good)
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "noise.pth").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "noise.pth")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": _Payload()}}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused.*system"):
        load_checkpoint(path)
    with open(path, "wb") as f:  # newer protocols fail earlier, on an opcode; still never run
        pickle.dump({"model": {"x": _Payload()}}, f, protocol=4)
    with pytest.raises(CheckpointError, match="refused|not a readable"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()
    torch.save({"model": {"x": torch.zeros(1)}, "obj": _Payload()}, tmp_path / "evil2.pth")
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(tmp_path / "evil2.pth")
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_state_dict_of_another_model_is_named(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, path)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout.*conv1.weight"):
        load_checkpoint(path)


def test_partial_layout_names_missing_and_unexpected_keys(tmp_path):
    sd = official_sd(timm_vit())
    del sd["blocks.1.attn.qkv.weight"]
    sd["blocks.1.attn.q_norm.weight"] = torch.ones(16)
    path = tmp_path / "partial.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "blocks.1.attn.qkv.weight" in str(e.value) and "q_norm" in str(e.value)
    sd = {**official_sd(timm_vit()), **decoder_weights()}
    del sd["decoder_blocks.1.mlp.fc2.bias"]
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="decoder_blocks.1.mlp.fc2.bias"):
        load_checkpoint(path)


def test_shape_mismatch_is_named(tmp_path):
    sd = {**official_sd(timm_vit()), **decoder_weights()}
    sd["decoder_pred.weight"] = torch.zeros(10, 32)
    path = tmp_path / "shape.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match=r"decoder_pred.weight: checkpoint \(10, 32\)"):
        load_checkpoint(path)


def test_workbench_checkpoint_of_wrong_kind_is_named(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(build_model("mae", **DIMS, **DEC), path)
    obj = torch.load(path, weights_only=True)
    obj["config"]["kind"] = "mff"  # claims MFF but holds no fusion weights
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="fusion.logits"):
        load_checkpoint(path)
