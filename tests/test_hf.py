"""Hugging Face checkpoints, checked against transformers itself: a small ViTMAEForPreTraining
written by ``save_pretrained`` loads here and gives the same encoder output, loss and predictions
under the same masking noise (in both key spellings, safetensors and .bin); ``export_hf`` writes
a directory transformers loads with the same outputs; hub names come from the local cache only;
timm's ``.safetensors`` files round-trip through ``export_timm``."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

from workbench import build_model
from workbench.checkpoints import (LAYOUTS, CheckpointError, detect_layout, export_timm,
                                   load_checkpoint, read_checkpoint)
from workbench.checkpoints.hf import export_hf, masking_from_noise

transformers = pytest.importorskip("transformers")

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
             image_size=32, patch_size=8, num_channels=3, decoder_hidden_size=32,
             decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
             decoder_intermediate_size=128, mask_ratio=0.75)
N, KEEP = 16, 4  # patches of a 32 px image in 8 px patches; visible at ratio 0.75
QUERY = "vit.encoder.layer.0.attention.attention.query.weight"  # a key in the hub's spelling


def hf_model(norm_pix_loss: bool = False, seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.ViTMAEConfig(**{**SMALL, **kw}, norm_pix_loss=norm_pix_loss)
    model = transformers.ViTMAEForPreTraining(cfg).eval()
    with torch.no_grad():  # norms start at 1 / 0, the mask token at 0: make every tensor count
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def images_and_noise(b: int = 3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, 32, 32, generator=g), torch.rand(b, N, generator=g)


def save_bin(model, folder):
    """``save_pretrained(safe_serialization=False)``: pytorch_model.bin. transformers 5 always
    writes safetensors; then the .bin holds its modules' own names (``vit.layers.N...q_proj``)."""
    model.save_pretrained(folder, safe_serialization=False)
    if not (folder / "pytorch_model.bin").exists():
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        assert "vit.layers.0.attention.q_proj.weight" in model.state_dict()
    assert (folder / "pytorch_model.bin").exists() and not (folder / "model.safetensors").exists()


def to_hub_names(sd: dict) -> dict:
    """transformers 5 names (its modules', or its save_pretrained's ``decoder.decoder_encoder.
    layer.N``) -> the names of the files on the hub (written by transformers 4)."""
    table = [(r"^vit\.layers\.", "vit.encoder.layer."), (r"^layers\.", "encoder.layer."),
             (r"^decoder\.decoder_encoder\.layer\.", "decoder.decoder_layers."),
             (r"attention\.q_proj\.", "attention.attention.query."),
             (r"attention\.k_proj\.", "attention.attention.key."),
             (r"attention\.v_proj\.", "attention.attention.value."),
             (r"attention\.o_proj\.", "attention.output.dense."),
             (r"mlp\.fc1\.", "intermediate.dense."), (r"mlp\.fc2\.", "output.dense.")]
    out = {}
    for k, v in sd.items():
        for old, new in table:
            k = re.sub(old, new, k)
        out[k] = v
    return out


def assert_same_outputs(hf, ours, x, noise, atol=1e-5):
    """Same mask, loss, predictions and (token order aside) encoder output."""
    with torch.no_grad():
        theirs = hf(pixel_values=x, noise=noise)
        enc = hf.vit(pixel_values=x, noise=noise).last_hidden_state  # visible in noise order
        mine = ours(x, masking=masking_from_noise(noise, hf.config.mask_ratio))
    assert torch.equal(mine.mask, theirs.mask)
    assert torch.allclose(mine.loss, theirs.loss, atol=atol, rtol=0)
    assert torch.allclose(mine.pred, theirs.logits, atol=atol, rtol=0)
    rank = torch.argsort(torch.argsort(noise, dim=1)[:, :KEEP], dim=1)  # HF token -> raster order
    body = torch.gather(enc[:, 1:], 1, rank.unsqueeze(-1).expand(-1, -1, enc.shape[-1]))
    assert torch.allclose(mine.latent, torch.cat([enc[:, :1], body], 1), atol=atol, rtol=0)


# ----------------------------------------------------------------------------- loading
@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_save_pretrained_directory_loads_with_the_same_outputs(tmp_path, norm_pix_loss):
    hf = hf_model(norm_pix_loss)
    hf.save_pretrained(tmp_path)
    model = load_checkpoint(tmp_path)
    info = model.checkpoint_info
    assert info.layout == "huggingface" and info.has_decoder
    c = model.cfg
    assert (c.img_size, c.patch_size, c.embed_dim, c.depth, c.num_heads, c.mlp_ratio) == \
        (32, 8, 64, 2, 2, 4.0)
    assert (c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads) == (32, 1, 2)
    assert c.norm_pix_loss is norm_pix_loss and c.mask_ratio == 0.75
    assert c.layer_norm_eps == 1e-12 and model.norm.eps == 1e-12
    assert_same_outputs(hf, model, *images_and_noise())


def test_huggingface_is_one_more_registered_layout(tmp_path):
    assert list(LAYOUTS)[-1] == "huggingface"
    hf_model().save_pretrained(tmp_path)
    obj = read_checkpoint(tmp_path)
    assert set(obj) == {"hf_config", "hf_weights"} and detect_layout(obj) == "huggingface"
    assert detect_layout(obj["hf_weights"]) == "huggingface"  # weights alone: by their names


def test_encoder_at_ratio_0_equals_transformers(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path)
    model = load_checkpoint(tmp_path)
    x, _ = images_and_noise()
    hf.vit.embeddings.config.mask_ratio = 0.0  # what random_masking reads
    with torch.no_grad():
        order = torch.arange(N, dtype=torch.float).expand(x.shape[0], -1)  # keep raster order
        theirs = hf.vit(pixel_values=x, noise=order).last_hidden_state
        assert torch.allclose(model.encode(x), theirs, atol=1e-5, rtol=0)


def test_bin_file_and_both_key_spellings(tmp_path):
    hf = hf_model(norm_pix_loss=True, seed=3)
    save_bin(hf, tmp_path / "bin")
    assert_same_outputs(hf, load_checkpoint(tmp_path / "bin"), *images_and_noise())
    # the hub's files: rewrite whatever this transformers writes into the hub's spelling
    hf.save_pretrained(tmp_path / "new")
    hub = tmp_path / "hub"
    hub.mkdir()
    shutil.copy(tmp_path / "new" / "config.json", hub)
    save_file(to_hub_names(load_file(tmp_path / "new" / "model.safetensors")),
              hub / "model.safetensors", metadata={"format": "pt"})
    assert QUERY in load_file(hub / "model.safetensors")
    model = load_checkpoint(hub)
    assert model.checkpoint_info.layout == "huggingface"
    assert_same_outputs(hf, model, *images_and_noise())
    # and transformers reads this simulated hub file as the same model
    again = transformers.ViTMAEForPreTraining.from_pretrained(hub).eval()
    assert_same_outputs(again, model, *images_and_noise())


def test_vitmae_model_is_an_encoder_only_checkpoint(tmp_path):
    hf = hf_model(seed=4)
    hf.vit.save_pretrained(tmp_path / "enc")  # ViTMAEModel: no "vit." prefix, no decoder
    model = load_checkpoint(tmp_path / "enc")
    assert model.checkpoint_info.layout == "huggingface" and not model.has_decoder
    x, noise = images_and_noise()
    with torch.no_grad():
        theirs = hf.vit(pixel_values=x, noise=noise).last_hidden_state
        mine = model.norm(model.forward_encoder(
            x, 0.75, masking=masking_from_noise(noise, 0.75)).features[-1])
    rank = torch.argsort(torch.argsort(noise, dim=1)[:, :KEEP], dim=1)
    body = torch.gather(theirs[:, 1:], 1, rank.unsqueeze(-1).expand(-1, -1, 64))
    assert torch.allclose(mine, torch.cat([theirs[:, :1], body], 1), atol=1e-5, rtol=0)
    out = export_hf(model, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ViTMAEModel"]
    back = transformers.ViTMAEModel.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.allclose(back(pixel_values=x, noise=noise).last_hidden_state, theirs,
                              atol=1e-6, rtol=0)


def test_a_bare_weights_file_loads_with_its_config_beside_it(tmp_path):
    hf = hf_model(seed=5)
    hf.save_pretrained(tmp_path)
    model = load_checkpoint(tmp_path / "model.safetensors")
    assert model.cfg.layer_norm_eps == 1e-12 and model.cfg.num_heads == 2
    assert_same_outputs(hf, model, *images_and_noise())


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_export_hf_round_trip(tmp_path, norm_pix_loss):
    hf = hf_model(norm_pix_loss, seed=6)
    hf.save_pretrained(tmp_path / "src")
    ours = load_checkpoint(tmp_path / "src")
    out = export_hf(ours, tmp_path / "out")
    back, info = transformers.ViTMAEForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    assert back.config.layer_norm_eps == 1e-12 and back.config.norm_pix_loss is norm_pix_loss
    x, noise = images_and_noise()
    assert_same_outputs(back.eval(), ours, x, noise)
    assert QUERY in load_file(out / "model.safetensors")  # the spelling every version reads
    again = load_checkpoint(out)
    assert again.cfg == ours.cfg
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                   ours.state_dict().values()))


def test_export_hf_of_our_own_model_keeps_eps_1e6(tmp_path):
    ours = build_model("mae", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                       decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2).eval()
    back = transformers.ViTMAEForPreTraining.from_pretrained(export_hf(ours, tmp_path)).eval()
    assert back.config.layer_norm_eps == 1e-6 and back.config.norm_pix_loss is True
    assert_same_outputs(back, ours, *images_and_noise())
    with pytest.raises(ValueError, match="no ViTMAE equivalent"):
        export_hf(build_model("mff", img_size=32, patch_size=8, embed_dim=64, depth=2,
                              num_heads=2), tmp_path / "mff")


# ----------------------------------------------------------------------------- bad files
def _hub_copy(src, dst, edit):
    dst.mkdir()
    shutil.copy(src / "config.json", dst)
    sd = to_hub_names(load_file(src / "model.safetensors"))
    edit(sd)
    save_file(sd, dst / "model.safetensors")
    return dst


def test_missing_or_misshaped_projections_are_named(tmp_path):
    hf_model(seed=7).save_pretrained(tmp_path / "src")
    gone = _hub_copy(tmp_path / "src", tmp_path / "gone", lambda sd: sd.pop(QUERY))
    with pytest.raises(CheckpointError, match=r"key\.weight.*value\.weight.*\['query'\]"):
        load_checkpoint(gone)
    bad = QUERY.replace("query", "key")

    def shrink(sd):
        sd[bad] = sd[bad][:32].contiguous()
    with pytest.raises(CheckpointError, match=re.escape(f"{bad} (32, 64)")):
        load_checkpoint(_hub_copy(tmp_path / "src", tmp_path / "shape", shrink))
    fc1 = "vit.encoder.layer.1.intermediate.dense.weight"

    def wrong_fc1(sd):
        sd[fc1] = torch.zeros(128, 64)
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc1\.weight: checkpoint "
                                              r"\(128, 64\) vs model \(256, 64\)"):
        load_checkpoint(_hub_copy(tmp_path / "src", tmp_path / "fc1", wrong_fc1))
    with pytest.raises(CheckpointError, match="without a checkpoint.*config.json"):
        load_checkpoint(tmp_path)  # holds folders, no weights


# ----------------------------------------------------------------------------- hub cache
def use_hub_cache(monkeypatch, folder) -> None:
    """Point the hub cache at ``folder`` for one test. huggingface_hub reads ``HF_HUB_CACHE`` /
    ``HF_HOME`` once, when it is imported (before any test runs), into
    ``huggingface_hub.constants.HF_HUB_CACHE``, which both ``hub_cache_dir`` and
    ``snapshot_download`` read at each call: a test sets that constant (an environment variable
    set now would be ignored by huggingface_hub itself)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))


def test_hub_cache_follows_the_environment_at_start(tmp_path):
    """``HF_HOME`` / ``HF_HUB_CACHE`` set before Python starts name the cache (huggingface_hub's
    rule, read through its constants)."""
    code = "from workbench.checkpoints.hf import hub_cache_dir; print(hub_cache_dir())"
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME")}
    for extra, expected in (({"HF_HOME": str(tmp_path)}, tmp_path / "hub"),
                            ({"HF_HUB_CACHE": str(tmp_path / "c")}, tmp_path / "c")):
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                             capture_output=True, text=True, timeout=120, check=True)
        assert out.stdout.strip() == str(expected)


def test_hub_name_not_in_the_cache_names_the_folder(tmp_path, monkeypatch):
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    use_hub_cache(monkeypatch, cache)
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint("facebook/vit-mae-base")
    assert str(cache) in str(e.value)
    assert "huggingface-cli download facebook/vit-mae-base" in str(e.value)


def test_hub_name_resolves_from_the_cache(tmp_path, monkeypatch):
    hf = hf_model(seed=8)
    snapshot = tmp_path / "hub" / "models--facebook--vit-mae-base" / "snapshots" / ("a" * 40)
    hf.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    use_hub_cache(monkeypatch, tmp_path / "hub")
    model = load_checkpoint("facebook/vit-mae-base")
    assert model.checkpoint_info.layout == "huggingface"
    assert_same_outputs(hf, model, *images_and_noise())


# ----------------------------------------------------------------------------- timm
def test_timm_safetensors_round_trip(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ours = build_model("mae", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2).eval()
    path = tmp_path / "model.safetensors"
    sd = export_timm(ours, path)
    assert set(load_file(path)) == set(sd)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                            num_classes=0).eval()
    vit.load_state_dict(load_file(path), strict=True)
    model = load_checkpoint(path, num_heads=2)
    assert model.checkpoint_info.layout == "timm" and not model.has_decoder
    x, _ = images_and_noise()
    with torch.no_grad():
        assert torch.allclose(model.encode(x), vit.forward_features(x), atol=1e-5, rtol=0)
        assert torch.allclose(model.encode(x), ours.encode(x), atol=1e-6, rtol=0)
    # as the hub stores it: timm/<name> with model.safetensors and timm's own config.json
    snapshot = tmp_path / "hub" / "models--timm--vit_tiny.mae" / "snapshots" / ("b" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(path, snapshot)
    (snapshot / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch8_32"}))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("b" * 40)
    use_hub_cache(monkeypatch, tmp_path / "hub")
    assert detect_layout(load_file(path)) == "timm"
    model = load_checkpoint("timm/vit_tiny.mae", num_heads=2)
    with torch.no_grad():
        assert torch.allclose(model.encode(x), ours.encode(x), atol=1e-6, rtol=0)
    export_timm(ours, tmp_path / "vit.pth")  # any other suffix: a PyTorch file
    assert load_checkpoint(tmp_path / "vit.pth", num_heads=2).checkpoint_info.layout == "timm"
