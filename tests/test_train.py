"""The training engine: schedule, weight-decay groups, exact resume, DDP equivalence, metrics,
NaN handling and the command line."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.__main__ import main
from workbench.checkpoints import load_checkpoint, read_checkpoint
from workbench.models import MaskedAutoencoder, build_model
from workbench.probes import fusion_history, fusion_state
from workbench import train
from workbench.training import (TrainConfig, TrainingDiverged, evaluate, group_names, lr_at,
                                peak_lr, resolve)

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
SMALL_ARGS = [f"--set={k}={v}" for k, v in SMALL.items()]


def small_cfg(out, **kw) -> TrainConfig:
    base = dict(kind="mff", model_overrides=dict(SMALL), steps=6, batch_size=8, base_lr=1e-2,
                warmup=2, log_every=1, ckpt_every=3, picture_every=0, eval_images=8,
                progress=False, knn_every=0, out=str(out))  # the monitor: test_knn_monitor
    return TrainConfig(**{**base, **kw})


def metrics(run) -> list[dict]:
    return [json.loads(l) for l in (Path(run) / "metrics.jsonl").read_text().splitlines() if l]


def weights(run) -> dict[str, torch.Tensor]:
    return read_checkpoint(Path(run) / "checkpoint.pt")["model"]


# ----------------------------------------------------------------------------- schedule
def test_lr_schedule_warmup_cosine_and_batch_scaling():
    cfg = resolve(TrainConfig(steps=100, warmup=10, batch_size=512, base_lr=1e-3, min_lr=1e-5))
    peak = 1e-3 * 512 / 256
    assert peak_lr(cfg) == pytest.approx(peak)
    for s in range(10):  # linear warmup reaching the peak at the last warmup step
        assert lr_at(s, cfg) == pytest.approx(peak * (s + 1) / 10)
    for s in range(10, 100):
        t = (s - 10) / 90
        assert lr_at(s, cfg) == pytest.approx(1e-5 + (peak - 1e-5) * 0.5 * (1 + math.cos(math.pi * t)))
    assert lr_at(10, cfg) == pytest.approx(peak)
    assert lr_at(55, cfg) == pytest.approx((peak + 1e-5) / 2)
    lrs = [lr_at(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    # warmup given as a fraction; lr given outright
    frac = resolve(TrainConfig(steps=200, warmup=0.1, batch_size=256, base_lr=1e-3))
    assert lr_at(19, frac) == pytest.approx(1e-3) and lr_at(0, frac) == pytest.approx(1e-3 / 20)
    assert peak_lr(resolve(TrainConfig(lr=3e-4, batch_size=4096))) == 3e-4
    assert resolve(TrainConfig(preset="vit-b")).base_lr == 1.5e-4


# ----------------------------------------------------------------------------- weight decay
def test_weight_decay_groups():
    mff = build_model("mff", "tiny", **SMALL)
    decay, no_decay = group_names(mff)
    for name in ("fusion.logits", "fusion.projections.0.weight", "fusion.projections.0.bias",
                 "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight",
                 "decoder_embed.weight", "decoder_pred.weight"):
        assert name in decay, name
    for name in ("cls_token", "mask_token", "norm.weight", "norm.bias", "blocks.0.norm1.weight",
                 "blocks.0.attn.qkv.bias", "decoder_norm.bias", "decoder_embed.bias",
                 "patch_embed.proj.bias"):
        assert name in no_decay, name
    trainable = {n for n, p in mff.named_parameters() if p.requires_grad}
    assert set(decay) | set(no_decay) == trainable and not set(decay) & set(no_decay)
    assert "pos_embed" not in trainable  # fixed sin-cos
    mae = build_model("mae", "tiny", mask_token_in_encoder=True, **SMALL)
    decay, no_decay = group_names(mae)
    assert "encoder_mask_token" in no_decay and not any(n.startswith("fusion") for n in decay)


# ----------------------------------------------------------------------------- runs
def test_exact_resume_mff(tmp_path):
    straight = train(small_cfg(tmp_path / "a", accum_steps=2))
    first = train(small_cfg(tmp_path / "b", accum_steps=2, stop_after=3))
    assert first.step == 3 and read_checkpoint(tmp_path / "b/checkpoint.pt")["step"] == 3
    # a line logged after the checkpoint (as if the run had crashed later) is dropped on resume
    with open(tmp_path / "b/metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 0.0}) + "\n")
    second = train(small_cfg(tmp_path / "b", accum_steps=2, resume=True))
    assert second.step == straight.step == 6
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert wa.keys() == wb.keys() and "fusion.logits" in wa
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0), k
    assert not torch.equal(wa["fusion.logits"], torch.ones_like(wa["fusion.logits"]))  # trained
    oa = read_checkpoint(tmp_path / "a/checkpoint.pt")["optimizer"]["state"]
    ob = read_checkpoint(tmp_path / "b/checkpoint.pt")["optimizer"]["state"]
    assert all(torch.allclose(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"], atol=1e-9) for i in oa)
    # step 0: the initial fusion weights, logged once (not again on resume)
    assert [r["step"] for r in metrics(tmp_path / "b")] == [0, 1, 2, 3, 4, 5, 6]
    la, lb = ([r for r in metrics(tmp_path / x) if "loss" in r] for x in "ab")
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], abs=1e-6)


def test_metrics_config_pictures_and_checkpoint(tmp_path):
    cfg = small_cfg(tmp_path, log_every=2, picture_every=3)
    result = train(cfg)
    first, *rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [2, 4, 6]
    # the weights at initialisation (uniform: zero logits), where the fusion moves from
    assert first == {"step": 0, "fusion_weights": [0.5, 0.5], "fuse_layers": [0, 1]}
    rcfg = resolve(cfg)
    for r in rows:
        assert {"step", "loss", "lr", "images_per_s", "epoch", "fusion_weights",
                "fuse_layers"} <= r.keys()
        assert math.isfinite(r["loss"]) and r["images_per_s"] > 0
        assert r["lr"] == pytest.approx(lr_at(r["step"] - 1, rcfg))  # lr used by that step
        assert r["fuse_layers"] == [0, 1] and len(r["fusion_weights"]) == 2
        assert sum(r["fusion_weights"]) == pytest.approx(1.0, abs=1e-5)
    assert r["epoch"] == pytest.approx(6 * 8 / len_builtin(16))
    # the fusion probe reads back exactly what was logged, and the last row is the model's now
    history = fusion_history(tmp_path)
    assert history.steps.tolist() == [0, 2, 4, 6] and history.layers == [0, 1]
    assert history.weights.tolist() == [r["fusion_weights"] for r in [first, *rows]]
    now = fusion_state(load_checkpoint(tmp_path / "checkpoint.pt")).weights
    assert torch.allclose(now.double(), history.weights[-1], atol=1e-6)
    assert "heldout_loss" in rows[-1] and "heldout_loss" not in rows[0]
    assert rows[-1]["heldout_loss"] == pytest.approx(result.heldout_loss)
    conf = json.loads((tmp_path / "config.json").read_text())
    assert conf["config"]["depth"] == 2 and conf["config"]["kind"] == "mff"
    assert conf["train_config"]["steps"] == 6 and conf["train_config"]["batch_size"] == 8
    # pictures: original | masked | reconstruction, 4 held-out images, scaled x4
    snaps = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    assert snaps == ["step_000003.png", "step_000006.png"]
    with Image.open(tmp_path / "pictures/step_000006.png") as im:
        assert im.size == (3 * 16 * 4, 4 * 16 * 4)
    assert any((tmp_path / "tb").iterdir())
    # the checkpoint: our layout (loads with load_checkpoint) + full training state
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng", "train_config", "data_position", "step"} <= ck.keys()
    assert ck["data_position"]["samples_seen"] == 48 and ck["train_config"]["steps"] == 6
    model = load_checkpoint(tmp_path / "checkpoint.pt")
    assert model.checkpoint_info.step == 6 and model.cfg.kind == "mff"
    # the held-out loss is reproducible from the saved model
    from workbench.data import heldout_batch
    imgs, _ = heldout_batch(16, 8)
    assert evaluate(model, imgs, seed=0) == pytest.approx(result.heldout_loss, rel=1e-5)


def len_builtin(size):
    from workbench.data import BuiltinPhotos
    return len(BuiltinPhotos(size, "train"))


def test_evaluate_uses_fixed_masks():
    torch.manual_seed(0)
    model = build_model("mae", "tiny", **SMALL)
    imgs = torch.randn(6, 3, 16, 16)
    a, b = evaluate(model, imgs, seed=0), evaluate(model, imgs, seed=0)
    assert a == b and a != evaluate(model, imgs, seed=1)
    assert model.training  # mode restored


def test_training_lowers_the_heldout_loss(tmp_path):
    cfg = small_cfg(tmp_path, kind="mae", steps=20, batch_size=16, base_lr=2e-2, warmup=3,
                    log_every=10, ckpt_every=0)
    from workbench.data import heldout_batch
    torch.manual_seed(0)
    before = evaluate(build_model("mae", "tiny", **SMALL), heldout_batch(16, 8)[0], seed=0)
    after = train(cfg).heldout_loss
    assert after < 0.8 * before, (before, after)


def poison_losses(monkeypatch, bad) -> dict[str, int]:
    """Make the loss NaN on the calls (counted from 1) where ``bad(call)`` holds; returns the
    counter ({"n": calls so far})."""
    calls = {"n": 0}
    real = MaskedAutoencoder.forward_loss

    def poisoned(self, imgs, pred, mask):
        calls["n"] += 1
        loss = real(self, imgs, pred, mask)
        return loss * float("nan") if bad(calls["n"]) else loss

    monkeypatch.setattr(MaskedAutoencoder, "forward_loss", poisoned)
    return calls


def test_nan_loss_stops_with_step_and_last_checkpoint(tmp_path, monkeypatch):
    poison_losses(monkeypatch, lambda call: call >= 5)
    with pytest.raises(TrainingDiverged, match=r"step 5\b.*checkpoint.*step 4"):
        train(small_cfg(tmp_path, steps=8, ckpt_every=2))
    model = load_checkpoint(tmp_path / "checkpoint.pt")
    assert model.checkpoint_info.step == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert max(r["step"] for r in metrics(tmp_path)) == 4


def test_a_nan_between_log_steps_is_reported_at_the_next(tmp_path, monkeypatch):
    """The loop reads the loss only where it writes: a NaN at step 3 stops the run at the next
    log step (5) with step 3 named, and nothing after step 2 is logged or saved."""
    calls = poison_losses(monkeypatch, lambda call: call == 3)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3\b.*none written"):
        train(small_cfg(tmp_path, steps=8, log_every=5, ckpt_every=0))
    assert calls["n"] == 5  # steps 4 and 5 ran (their updates skipped), then the check stopped it
    assert max(r["step"] for r in metrics(tmp_path)) == 0  # only the initial record
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("precision,clip_grad", [("fp32", None), ("fp32", 1.0), ("fp16", 1.0)])
def test_a_non_finite_loss_skips_every_later_update_until_reported(precision, clip_grad):
    """The step does not wait for the device: a NaN loss is recorded there, and that update and
    every later one are skipped, so the weights and AdamW's state stay those of the last good
    step until ``raise_if_diverged`` names the first bad step. fp16 (on the CPU here: its
    GradScaler path, which sets AdamW's ``found_inf`` itself) keeps the same promise."""
    import copy

    from workbench.training import build_train_state, train_step
    from workbench.training.settings import build_model_config

    cfg = resolve(small_cfg("unused", clip_grad=clip_grad))
    state = build_train_state(cfg, build_model_config(cfg), torch.device("cpu"), precision)
    imgs, seeds = torch.rand(8, 3, 16, 16), range(8)
    loss = train_step(state, [(imgs, seeds)])
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and torch.isfinite(loss)
    state.raise_if_diverged()  # nothing to report
    good = copy.deepcopy(state.raw.state_dict())
    moments = copy.deepcopy(state.optimizer.state_dict()["state"])
    assert torch.isnan(train_step(state, [(imgs * float("nan"), seeds)]))
    assert torch.isfinite(train_step(state, [(imgs, seeds)]))  # finite again: skipped all the same
    assert state.step == 3 and not hasattr(state.optimizer, "found_inf")
    for k, v in state.raw.state_dict().items():
        assert torch.equal(v, good[k]), k
    after = state.optimizer.state_dict()["state"]
    for i, st in moments.items():
        for k, v in st.items():
            assert torch.equal(after[i][k], v), (i, k)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 2\b"):
        state.raise_if_diverged()


def test_an_unfused_optimizer_state_of_an_older_run_resumes_fused():
    """Runs from before AdamW was fused on the CPU saved ``fused: None, foreach: False``; loaded
    as saved, the step's ``found_inf`` would make AdamW refuse to step."""
    from workbench.training import build_train_state, train_step
    from workbench.training.schedule import param_groups
    from workbench.training.settings import build_model_config

    cfg = resolve(small_cfg("unused"))
    mcfg = build_model_config(cfg)
    old = build_train_state(cfg, mcfg, torch.device("cpu"), "fp32")
    unfused = torch.optim.AdamW(param_groups(old.raw, cfg.weight_decay), lr=1e-3, foreach=False)
    loss = old.raw(torch.rand(8, 3, 16, 16), seed=0).loss
    loss.backward()
    unfused.step()
    ck = {"model": old.raw.state_dict(), "optimizer": unfused.state_dict(),
          "scheduler": old.scheduler.state_dict(), "scaler": None, "step": 1}
    state = build_train_state(cfg, mcfg, torch.device("cpu"), "fp32")
    state.load_state_dict(ck)
    assert all(g["fused"] and not g["foreach"] for g in state.optimizer.param_groups)
    assert torch.equal(state.optimizer.state_dict()["state"][0]["exp_avg"],
                       unfused.state_dict()["state"][0]["exp_avg"])
    assert torch.isfinite(train_step(state, [(torch.rand(8, 3, 16, 16), range(8))]))
    assert state.step == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: host-device synchronisation")
def test_the_step_never_waits_for_the_gpu():
    """On a GPU ``train_step`` queues its work and returns: no synchronising call (a ``.item()``,
    a copy from pageable memory) inside it. torch's sync debug mode turns one into an error."""
    from workbench.training import build_train_state, train_step
    from workbench.training.settings import build_model_config

    cfg = resolve(small_cfg("unused", device="cuda", precision="bf16", clip_grad=1.0))
    device = torch.device("cuda")
    state = build_train_state(cfg, build_model_config(cfg), device, cfg.precision)
    imgs = torch.rand(8, 3, 16, 16).pin_memory()
    train_step(state, [(imgs, range(8))])  # first call: lazy initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            loss = train_step(state, [(imgs, range(8 * step, 8 * step + 8))])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss) and state.step == 4
    state.raise_if_diverged()


def test_workers_give_the_same_run(tmp_path):
    a = train(small_cfg(tmp_path / "w0", steps=2, num_workers=0, ckpt_every=0))
    b = train(small_cfg(tmp_path / "w1", steps=2, num_workers=1, ckpt_every=0))
    assert a.heldout_loss == b.heldout_loss
    wa, wb = weights(tmp_path / "w0"), weights(tmp_path / "w1")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_on_an_image_folder(tmp_path):
    root = tmp_path / "folder"
    for c, colour in [("red", (200, 30, 30)), ("blue", (30, 30, 200))]:
        (root / c).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (24 + 4 * k, 20), colour).save(root / c / f"{k}.png")
    (root / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning):
        result = train(small_cfg(tmp_path / "run", data=str(root), steps=2, ckpt_every=0))
    assert result.step == 2 and math.isfinite(result.loss)
    assert load_checkpoint(tmp_path / "run/checkpoint.pt").checkpoint_info.step == 2
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        train(small_cfg(tmp_path / "run2", data=str(tmp_path / "nope"), steps=1))


def test_clear_errors_before_training(tmp_path):
    with pytest.raises(ValueError, match="divisible by ranks"):
        train(small_cfg(tmp_path / "x", batch_size=6, accum_steps=4))
    with pytest.raises(ValueError, match="smaller than ranks"):
        train(small_cfg(tmp_path / "x", batch_size=2, accum_steps=4))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="not writable"):
        train(small_cfg(blocker / "run"))
    train(small_cfg(tmp_path / "done", steps=1))
    with pytest.raises(FileExistsError, match="--resume"):
        train(small_cfg(tmp_path / "done", steps=1))


def test_the_loop_takes_its_measurements_as_hooks(tmp_path):
    """``run_training`` without hooks trains the same weights as ``workbench.train`` (the
    standard monitor and pictures) and writes neither; a hook given is called as documented."""
    from workbench.training import TrainHooks, run_training

    kw = dict(kind="mae", steps=4, log_every=2, picture_every=2, knn_every=2, knn_images=32)
    wired = train(small_cfg(tmp_path / "wired", **kw))
    bare = run_training(small_cfg(tmp_path / "bare", **kw))
    assert [r["step"] for r in metrics(tmp_path / "wired") if "knn_acc" in r] == [0, 2, 4]
    assert not any("knn_acc" in r for r in metrics(tmp_path / "bare"))
    assert sorted(p.name for p in (tmp_path / "wired/pictures").iterdir()) == \
        ["step_000002.png", "step_000004.png"]
    assert not (tmp_path / "bare/pictures").exists() or \
        not any((tmp_path / "bare/pictures").iterdir())
    assert wired.heldout_loss == bare.heldout_loss
    wa, wb = weights(tmp_path / "wired"), weights(tmp_path / "bare")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    calls = []

    def factory(cfg, mcfg):
        calls.append(("built", cfg.knn_every, mcfg.img_size))
        return lambda model: {"my_reading": float(len(calls))}

    def picture(model, imgs, seed):
        calls.append(("drawn", tuple(imgs.shape), seed))
        return Image.new("RGB", (2, 2))

    run_training(small_cfg(tmp_path / "mine", **kw), TrainHooks(monitor=factory, picture=picture))
    assert calls[0] == ("built", 2, 16) and calls.count(("drawn", (4, 3, 16, 16), 0)) == 2
    assert [r["step"] for r in metrics(tmp_path / "mine") if "my_reading" in r] == [0, 2, 4]


# ----------------------------------------------------------------------------- DDP
DDP_SCRIPT = """
import json, sys
from workbench import TrainConfig, train
train(TrainConfig(**json.loads(sys.argv[1])))
"""


def run_two_gloo_ranks(tmp_path, script: str, *args: str) -> None:
    """``script`` (Python source) under torchrun on 2 CPU ranks, one thread each; fails the test
    with the ranks' stderr unless both exit 0."""
    path = tmp_path / "run_ddp.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(path), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ddp_two_gloo_ranks_match_single_process(tmp_path):
    """2 CPU ranks x 4 images == 1 process x 8 images (masks and crops are per sample)."""
    cfg = small_cfg(tmp_path / "single", steps=4, clip_grad=1.0, log_every=1, ckpt_every=0)
    train(cfg)
    # each rank also accumulates 2 micro-batches of 2 (covers DDP's no_sync path)
    ddp = small_cfg(tmp_path / "ddp", steps=4, clip_grad=1.0, log_every=1, ckpt_every=0,
                    accum_steps=2)
    run_two_gloo_ranks(tmp_path, DDP_SCRIPT, json.dumps(ddp.to_dict()))
    ws, wd = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    assert ws.keys() == wd.keys()
    for k in ws:
        a, b = ws[k].clone(), wd[k].clone()
        if k.endswith("attn.qkv.bias"):
            # The key bias shifts every attention logit of a query equally, so softmax ignores it:
            # its true gradient is 0 and Adam turns the rounding noise of that 0 into steps of up
            # to lr. Checked loosely; everything else must agree to float precision.
            d = a.shape[0] // 3
            assert (a[d:2 * d] - b[d:2 * d]).abs().max() < 4 * peak_lr(resolve(cfg))
            a[d:2 * d] = b[d:2 * d] = 0
        assert torch.allclose(a, b, atol=1e-6, rtol=0), (k, (a - b).abs().max())
    ls, ld = ([r for r in metrics(tmp_path / x) if "loss" in r] for x in ("single", "ddp"))
    assert [r["loss"] for r in ls] == pytest.approx([r["loss"] for r in ld], abs=1e-5)
    assert len(ld) == 4  # one line per step, written by rank 0 only
    assert len(metrics(tmp_path / "ddp")) == 5  # and the initial fusion weights (step 0)


DDP_STOP_SCRIPT = """
import json, os, signal, sys
import workbench.training.loop as loop
from workbench import TrainConfig, train
real = loop.train_step

def step_then_signal(state, batches):  # rank 1 alone is asked to stop, during step 3
    loss = real(state, batches)
    if os.environ["RANK"] == "1" and state.step == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return loss

loop.train_step = step_then_signal
r = train(TrainConfig(**json.loads(sys.argv[1])))
with open(sys.argv[2] + os.environ["RANK"], "w") as f:
    json.dump({"step": r.step, "interrupted": r.interrupted}, f)
"""


def test_ddp_ranks_stop_together_one_step_after_a_signal_to_one(tmp_path):
    """A stop request reaches every rank without a per-step wait: the votes are all-reduced
    without blocking and read a step later, so both ranks stop after step 4 (the request came
    during step 3 on rank 1 only), rank 0 checkpoints that step, and both exit normally."""
    cfg = small_cfg(tmp_path / "ddp", steps=8, log_every=1, ckpt_every=0)
    run_two_gloo_ranks(tmp_path, DDP_STOP_SCRIPT, json.dumps(cfg.to_dict()),
                       str(tmp_path / "result"))
    results = [json.loads((tmp_path / f"result{r}").read_text()) for r in (0, 1)]
    assert [r["step"] for r in results] == [4, 4], results
    assert results[0]["interrupted"] == "stop requested on another rank"
    assert results[1]["interrupted"] == "SIGTERM"
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt").checkpoint_info.step == 4


# ----------------------------------------------------------------------------- CLI
def test_cli_train_info_and_errors(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "mae", "--steps", "4", "--batch-size", "8", "--out", str(out),
               "--log-every", "2", "--mask-ratio", "0.5", "--no-progress", *SMALL_ARGS,
               "--set", "picture_every=0", "--set", "base_lr=1e-2"])
    assert rc == 0
    assert {"checkpoint.pt", "metrics.jsonl", "config.json"} <= {p.name for p in out.iterdir()}
    conf = json.loads((out / "config.json").read_text())
    assert conf["config"]["mask_ratio"] == 0.5 and conf["config"]["embed_dim"] == 64
    assert conf["train_config"]["base_lr"] == 1e-2 and conf["train_config"]["kind"] == "mae"
    # the preset's kNN monitor: step 0 (before training) and the last step carry knn_acc
    assert [r["step"] for r in metrics(out)] == [0, 2, 4]
    assert [r["step"] for r in metrics(out) if "knn_acc" in r] == [0, 4]
    capsys.readouterr()
    assert main(["info", str(out / "checkpoint.pt")]) == 0
    text = capsys.readouterr().out
    assert "workbench" in text and "embed_dim" in text
    info = {line.split()[0]: line.split(None, 1)[1] for line in text.splitlines()}
    assert info["layout"] == "workbench" and info["step"] == "4" and info["kind"] == "mae"
    # resume to more steps from the command line
    again = ["train", "--model", "mae", "--steps", "6", "--batch-size", "8", "--out", str(out),
             "--resume", "--log-every", "2", "--mask-ratio", "0.5", "--no-progress", *SMALL_ARGS,
             "--set", "picture_every=0", "--set", "base_lr=1e-2"]
    assert main(again) == 0
    assert [r["step"] for r in metrics(out)] == [0, 2, 4, 6]
    assert load_checkpoint(out / "checkpoint.pt").checkpoint_info.step == 6
    # resuming into a different model is refused with a message
    capsys.readouterr()
    assert main(again[:4] + ["8"] + again[5:] + ["--set", "depth=3"]) == 1
    assert "different model" in capsys.readouterr().err
    # an existing run without --resume is refused
    assert main([a for a in again if a != "--resume"]) == 1
    assert "--resume" in capsys.readouterr().err


def test_cli_unknown_setting_and_existing_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(tmp_path / "x"), "--set", "dept=3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown setting 'dept'" in err and "depth" in err
    with pytest.raises(SystemExit):
        main(["train", "--set", "novalue"])
    assert "key=value" in capsys.readouterr().err.lower()
    assert main(["info", str(tmp_path / "missing.pt")]) == 1
    assert "not found" in capsys.readouterr().err


def test_gpu_small_preset_defaults():
    """The GPU science preset: ViT-S-like encoder at 64 px, MFF's ViT-B fusion layers, its own
    training defaults (not the 4096-batch paper recipe)."""
    cfg = resolve(TrainConfig(kind="mff", preset="gpu-small"))
    assert (cfg.batch_size, cfg.steps) == (256, 5000)
    model = build_model("mff", "gpu-small")
    assert (model.cfg.img_size, model.cfg.embed_dim, model.cfg.depth) == (64, 384, 12)
    assert model.fuse_layers == [0, 2, 4, 6, 8, 11]
    assert resolve(TrainConfig(preset="vit-b")).batch_size == 4096  # others: the papers' recipe


def test_train_step_is_the_step_the_loop_runs(tmp_path):
    """The benchmarks time ``train_step``: driven by hand over the run's own batches and mask
    seeds, it gives exactly the weights of ``train``."""
    from torch.utils.data import DataLoader

    from workbench.data import StepBatches, build_dataset
    from workbench.training import build_train_state, train_step
    from workbench.training.settings import build_model_config

    cfg = resolve(small_cfg(tmp_path / "run", steps=3, ckpt_every=0, eval_images=0))
    train(cfg)
    state = build_train_state(cfg, build_model_config(cfg), torch.device("cpu"), "fp32")
    data = build_dataset(cfg.data, SMALL["img_size"], "train", train_transform=True)
    order = StepBatches(len(data), cfg.batch_size, cfg.seed, steps=cfg.steps)
    for step, (imgs, _) in enumerate(DataLoader(data, batch_sampler=order)):
        train_step(state, [(imgs, order.mask_seeds(step, 0))])
    assert state.step == 3
    saved = read_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    for k, v in state.raw.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_train_leaves_the_callers_generators_and_threads_alone(tmp_path):
    import random

    torch.manual_seed(123), random.seed(5), np.random.seed(7)
    threads = torch.get_num_threads()
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123), random.seed(5), np.random.seed(7)
    train(small_cfg(tmp_path / "run", steps=2, threads=1, seed=99))
    assert torch.get_num_threads() == threads
    after = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]


def test_a_notebook_kernel_gets_a_progress_bar(monkeypatch):
    """In a Jupyter kernel (the quickstart's training cell) the run draws tqdm's widget bar;
    elsewhere without a terminal it prints a line per log step instead (no bar)."""
    import workbench.training.loop as loop
    from workbench.training.distributed import Dist

    assert loop.in_notebook() is False  # pytest is no kernel
    cfg, mcfg = resolve(TrainConfig(kind="mae", steps=4)), build_model("mae").cfg
    monkeypatch.setattr(loop.sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(loop, "in_notebook", lambda: False)
    assert loop.progress_bar(cfg, mcfg, Dist(), 4, 0) is None
    monkeypatch.setattr(loop, "in_notebook", lambda: True)
    bar = loop.progress_bar(cfg, mcfg, Dist(), 4, 0)
    assert bar is not None and bar.total == 4
    bar.close()
