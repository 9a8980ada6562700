"""Fine-tuning (objective "finetune"): MAE's recipe in the one loop, partial fine-tuning, few-shot
subsets, the classifier's file and the command line's refusals."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.checkpoints import (Classifier, classifier_from_encoder, freeze_blocks,
                                   load_classifier, save_weights, timm_create_args, timm_name)
from workbench.core.config import model_config
from workbench.data import BuiltinShapes, LabelSubset, balanced_subset
from workbench.experiments.finetune import finetune, finetune_config
from workbench.experiments.shipped import SHIPPED_RUNS
from workbench.models import model_from_config
from workbench.training.finetune import layer_decay_groups

ROOT = Path(__file__).resolve().parents[1]
MAE_TINY = SHIPPED_RUNS["mae"].weights


def tiny_encoder_file(tmp_path, **overrides) -> Path:
    """A small random MAE encoder in our layout (tiny dims, cheap to fine-tune)."""
    torch.manual_seed(0)
    model = model_from_config(model_config("mae", "tiny", **overrides))
    path = tmp_path / "encoder.safetensors"
    save_weights(model, path)
    return path


def quick(pretrained, out, **fields):
    """A fine-tuning run of a few steps of 8 images, one thread."""
    base = dict(data="shapes", out=str(out), steps=4, batch_size=8, threads=1, progress=False,
                log_every=1, eval_images=16)
    return finetune_config(pretrained, **{**base, **fields})


# ------------------------------------------------------------------ (a) layer decay groups
def official_layer_id(name: str, depth: int) -> int:
    """MAE util/lr_decay.py get_layer_id_for_vit, written out again."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


@pytest.mark.parametrize("pool", ["avg", "token"])
def test_layer_decay_groups_follow_the_official_rule(pool):
    """ViT-B's depth 12 (narrow widths to stay cheap): every parameter's lr scale is
    decay ** (depth + 1 - layer id); no weight decay on biases, norms, cls token, positions."""
    cfg = model_config("mae", "vit-b", img_size=32, patch_size=8, embed_dim=32, num_heads=2)
    model = Classifier(cfg, num_classes=10, global_pool=pool)
    decay, peak = 0.65, 1e-3
    groups = layer_decay_groups(model, weight_decay=0.05, layer_decay=decay, peak=peak)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            seen.add(name)
            want = decay ** (cfg.depth + 1 - official_layer_id(name, cfg.depth))
            assert g["lr_scale"] == pytest.approx(want, rel=1e-12), name
            assert g["lr"] == pytest.approx(peak * want, rel=1e-12), name
            no_decay = p.ndim <= 1 or name in ("cls_token", "pos_embed")
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert seen == set(names.values())
    assert "head.weight" in seen and ("fc_norm.weight" in seen) == (pool == "avg")
    assert ("norm.weight" in seen) == (pool == "token")


# ------------------------------------------------------------------ the classifier itself
def test_classifier_takes_the_encoder_and_a_fresh_head(tmp_path):
    from workbench.checkpoints import load_checkpoint

    enc = load_checkpoint(MAE_TINY)
    torch.manual_seed(0)
    model = classifier_from_encoder(enc, 8, "avg", drop_path=0.1)
    assert isinstance(model, torch.nn.Module) and type(model).__mro__[1].__name__ == \
        "VisionTransformer"
    sd = enc.state_dict()
    for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.5.mlp.fc2.weight"):
        assert torch.equal(model.state_dict()[k], sd[k]), k
    assert model.head.bias.abs().max() == 0
    assert 0 < model.head.weight.std() < 1e-4  # trunc_normal std 2e-5
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


def test_timm_loads_the_classifier_file(tmp_path):
    """Widths of vit_tiny_patch16 (192, 3 heads) at 32 px / 4 px patches / 2 blocks: timm's
    create_model with checkpoint_path gives the same logits."""
    import timm

    enc = model_from_config(model_config("mae", "tiny", depth=2))
    model = classifier_from_encoder(enc, 5, "avg").eval()
    from workbench.checkpoints import save_classifier

    save_classifier(model, tmp_path / "model.safetensors")
    args = timm_create_args(model)
    assert args["model_name"] == "vit_tiny_patch16_224" and timm_name(model.cfg) is None
    theirs = timm.create_model(**args, checkpoint_path=str(tmp_path / "model.safetensors")).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(theirs(x), model(x), atol=1e-6)
    assert torch.equal(load_classifier(tmp_path / "model.safetensors")(x), model(x))
    assert timm_name(model_config("mae", "vit-b")) == "vit_base_patch16_224"


# ------------------------------------------------------------------ (b) partial fine-tuning
def test_tune_blocks_leaves_frozen_weights_bit_identical(tmp_path):
    enc = tiny_encoder_file(tmp_path)
    out = tmp_path / "k2"
    finetune(quick(enc, out, tune_blocks=2))
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    init = load_classifier(out)  # the trained one
    from workbench.checkpoints import load_checkpoint

    start = classifier_from_encoder(load_checkpoint(enc), 8).state_dict()
    trained = ck["model"]
    for k, v in trained.items():
        frozen = not k.startswith(("blocks.4.", "blocks.5.", "fc_norm.", "head.", "norm."))
        if frozen:
            assert torch.equal(v, start[k]), k
        elif k.startswith(("blocks.4.", "blocks.5.")) and k.endswith("weight"):
            assert not torch.equal(v, start[k]), k
    assert torch.equal(init.state_dict()["blocks.0.attn.qkv.weight"],
                       start["blocks.0.attn.qkv.weight"])
    # only the trainable parameters are in the optimizer
    n_opt = sum(len(g["params"]) for g in ck["optimizer"]["param_groups"])
    model = Classifier(model_config("mae", "tiny"), 8)
    frozen = freeze_blocks(model, 2)
    trainable = [k for k, _ in model.named_parameters()
                 if k.startswith(("blocks.4.", "blocks.5.", "fc_norm.", "head."))]
    assert n_opt == len(trainable) == len(list(model.parameters())) - len(frozen)
    assert freeze_blocks(Classifier(model_config("mae", "tiny"), 8), 6) == []


def test_mixup_and_drop_path_draws_are_a_function_of_the_step_seed():
    """The same micro-batch seed gives the same loss whatever the global generators hold."""
    import numpy as np

    from workbench.training import TrainConfig
    from workbench.training.finetune import FinetuneLoss, StepTargets

    torch.manual_seed(0)
    model = Classifier(model_config("mae", "tiny", depth=1), 8, drop_path=0.5).train()
    loss = FinetuneLoss(TrainConfig(), 8)
    imgs, labels = torch.randn(4, 3, 32, 32), [0, 1, 2, 3]
    def fp32():
        return torch.autocast("cpu", enabled=False)

    values = []
    for noise in (1, 2):  # other global generator states
        np.random.seed(noise)
        torch.manual_seed(noise)
        values.append(loss(model, imgs.clone(), StepTargets(labels, 7), fp32))
    other = loss(model, imgs.clone(), StepTargets(labels, 8), fp32)
    assert torch.equal(values[0], values[1]) and not torch.equal(values[0], other)


# ------------------------------------------------------------------ (c) it learns
def test_finetuning_the_shipped_tiny_mae_beats_chance(tmp_path):
    """60 steps of 64 shapes (8 classes, chance 12.5 %), mixup and cutmix off: measured 32.8 %
    top-1 on 512 held-out images; the threshold leaves ~10 points of margin."""
    cfg = finetune_config(MAE_TINY, data="shapes", out=str(tmp_path / "ft"), steps=60,
                          threads=1, progress=False, mixup=0, cutmix=0, seed=0)
    r = finetune(cfg)
    print(f"fine-tuned tiny MAE: top-1 {r.eval_top1:.3f}, top-5 {r.eval_top5:.3f}")
    assert r.eval_top1 > 0.22
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").open()]
    assert "eval_top1" in records[-1] and "eval_top5" in records[-1]


# ------------------------------------------------------------------ (d) exact resume
def test_resume_gives_the_weights_of_a_straight_run(tmp_path):
    """Mixup, cutmix and drop path on: their draws are per (seed, step, micro-batch, rank)."""
    enc = tiny_encoder_file(tmp_path, depth=2)
    finetune(quick(enc, tmp_path / "straight", steps=6, eval_every=3))
    finetune(quick(enc, tmp_path / "split", steps=6, eval_every=3, stop_after=3))
    cfg = quick(enc, tmp_path / "split", steps=6, eval_every=3, resume=True)
    finetune(cfg)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [r["step"] for r in map(json.loads, (tmp_path / "split" / "metrics.jsonl").open())
             if "eval_top1" in r]
    assert steps == [3, 6]


# ------------------------------------------------------------------ (e) few-shot subsets
def test_balanced_subset_counts_and_determinism():
    ds = BuiltinShapes(16, "train", size=800)  # 100 per class
    a = balanced_subset(ds, 0.1, seed=3)
    assert a == balanced_subset(ds, 0.1, seed=3) and a != balanced_subset(ds, 0.1, seed=4)
    sub = LabelSubset(ds, a)
    assert sub.class_counts() == {c: 10 for c in ds.classes}
    assert LabelSubset(ds, balanced_subset(ds, 0.001)).class_counts() == {c: 1 for c in ds.classes}
    assert sub[(0, 5)][1] == ds.label(a[0])
    with pytest.raises(ValueError, match="label_fraction"):
        balanced_subset(ds, 0)


def test_label_fraction_is_recorded(tmp_path, capsys):
    enc = tiny_encoder_file(tmp_path, depth=1)
    finetune(quick(enc, tmp_path / "few", steps=1, label_fraction=0.01))
    rec = json.loads((tmp_path / "few" / "label_subset.json").read_text())
    assert rec["images"] == 8 * round(0.01 * 1024) and set(rec["per_class"].values()) == {10}
    assert "per class" in capsys.readouterr().out


# ------------------------------------------------------------------ (f) refusals
def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "workbench", "finetune", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(ROOT)})


def test_cli_refuses_before_writing(tmp_path):
    enc = tiny_encoder_file(tmp_path, depth=1)
    bad = tmp_path / "not_an_encoder.pth"
    torch.save({"model": {"decoder_pred.weight": torch.zeros(3, 3)}}, bad)
    (tmp_path / "one" / "only").mkdir(parents=True)
    from PIL import Image
    Image.new("RGB", (40, 40)).save(tmp_path / "one" / "only" / "a.png")
    cases = [((str(bad), "--data", "shapes"), "no ViT encoder"),
             ((str(enc), "--data", str(tmp_path / "one")), "at least 2 classes"),
             ((str(enc), "--data", "shapes", "--set", "num_classes=4"), "smaller than the 8"),
             ((str(enc), "--data", "shapes", "--tune-blocks", "7"), "tune_blocks")]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"run{i}"
        proc = cli(*args, "--out", str(out), "--steps", "1", "--batch-size", "4")
        assert proc.returncode == 1 and message in proc.stderr, (args, proc.stderr[-2000:])
        assert not out.exists(), args


def test_cli_finetunes_and_resumes(tmp_path):
    enc = tiny_encoder_file(tmp_path, depth=1)
    out = tmp_path / "ft"
    proc = cli(str(enc), "--out", str(out), "--steps", "2", "--batch-size", "4",
               "--tune-blocks", "0", "--set", "eval_images=8", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "top-1" in proc.stdout
    assert {"checkpoint.pt", "config.json", "metrics.jsonl", "model.safetensors"} <= {
        p.name for p in out.iterdir()}
    proc = cli("--resume", "--out", str(out), "--steps", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_classifier(out).cfg.depth == 1


DDP_FINETUNE = """
import json, sys
from workbench.experiments.finetune import finetune
from workbench.training import TrainConfig
finetune(TrainConfig(**json.loads(sys.argv[1])))
"""


def test_ddp_two_gloo_ranks_match_single_process(tmp_path):
    """2 CPU ranks x 4 images == 1 process x 8 (mixup, cutmix and drop path off: those pair or
    draw per rank), frozen blocks included."""
    from test_train import run_two_gloo_ranks

    enc = tiny_encoder_file(tmp_path, depth=2)
    kw = dict(steps=3, mixup=0, cutmix=0, drop_path=0.0, tune_blocks=1)
    finetune(quick(enc, tmp_path / "single", **kw))
    run_two_gloo_ranks(tmp_path, DDP_FINETUNE,
                       json.dumps(quick(enc, tmp_path / "ddp", **kw).to_dict()))
    a = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert (tmp_path / "ddp" / "model.safetensors").exists()
