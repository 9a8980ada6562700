"""Training step throughput: our MAE / MFF-MAE against lightly's MAE, interleaved in one process.

One step = forward + MSE on the masked patches + backward + AdamW step, on synthetic images.
The peer is built as lightly's own MAE example does (``MaskedVisionTransformerTIMM`` around a timm
``VisionTransformer`` + ``MaskedVisionTransformerDecoderTIMM`` + a linear prediction head,
``utils.random_token_mask`` / ``patchify`` / ``get_at_index``, plain ``AdamW``), with the same
image size, patch, width, depth, heads, MLP ratio, decoder width/depth/heads, mask ratio and
batch as our preset. Both predict plain pixels (our ``norm_pix_loss`` is switched off so the
objectives are identical). Ours is the product's own step, ``workbench.training.train_step``,
on the state ``build_train_state`` makes for a run with the preset's defaults (per-sample seeded
masks, fused AdamW over ``param_groups``, the schedule, the scaler, autocast; no host-device
synchronisation inside the step).

    python bench/train_step.py                # CPU tiny (batch 64, fp32); + vit-b bf16 on CUDA
    python bench/train_step.py --rounds 3     # quicker, noisier

``ratio`` = our MAE images/s ÷ lightly's, CPU tiny (goal ≥ 1.25, issue 19); on a GPU ``ratio_gpu`` = the
best of ours (eager or compiled) ÷ lightly eager, vit-b bf16 batch 256 (goal ≥ 1.3).
"""
from __future__ import annotations

import argparse
import contextlib
import time
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
from common import header, interleave, median, table, write_result

from workbench import build_model
from workbench.training import Dist, TrainConfig, build_train_state, resolve, train_step
from workbench.training.settings import build_model_config

LR, BETAS, WD = 1.5e-4, (0.9, 0.95), 0.05


# ------------------------------------------------------------------------------ the peer
class LightlyMAE(nn.Module):
    """lightly's MAE (examples/pytorch_lightning/mae.py, current API) at our preset's sizes."""

    def __init__(self, cfg):
        super().__init__()
        from lightly.models import utils
        from lightly.models.modules import (MaskedVisionTransformerDecoderTIMM,
                                            MaskedVisionTransformerTIMM)
        from timm.models.vision_transformer import VisionTransformer

        self.utils = utils
        vit = VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size,
                                in_chans=cfg.in_chans, embed_dim=cfg.embed_dim, depth=cfg.depth,
                                num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True,
                                num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6))
        self.mask_ratio = cfg.mask_ratio
        self.patch_size = cfg.patch_size
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.sequence_length = self.backbone.sequence_length
        self.decoder_embed = nn.Linear(cfg.embed_dim, cfg.decoder_embed_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches, embed_dim=cfg.decoder_embed_dim,
            depth=cfg.decoder_depth, num_heads=cfg.decoder_num_heads,
            num_prefix_tokens=vit.num_prefix_tokens, mlp_ratio=cfg.mlp_ratio)
        self.prediction_head = nn.Linear(cfg.decoder_embed_dim,
                                         cfg.patch_size ** 2 * cfg.in_chans)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        u = self.utils
        b = images.shape[0]
        idx_keep, idx_mask = u.random_token_mask(size=(b, self.sequence_length),
                                                 mask_ratio=self.mask_ratio,
                                                 device=images.device)
        x_encoded = self.backbone.encode(images=images, idx_keep=idx_keep)
        x_decode = self.decoder_embed(x_encoded)
        x_masked = x_decode.new_zeros(b, self.sequence_length, x_decode.shape[-1])
        x_masked = u.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
        x_decoded = self.decoder(x_masked, idx_mask=idx_mask)
        x_pred = self.prediction_head(u.get_at_index(x_decoded, idx_mask))
        target = u.get_at_index(u.patchify(images, self.patch_size), idx_mask - 1)
        return F.mse_loss(x_pred.float(), target.float())


# ------------------------------------------------------------------------------ steppers
def _autocast(device: torch.device, bf16: bool):
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else None


class Stepper:
    """``run(n)`` does ``n`` training steps on one fixed synthetic batch and returns images/s;
    ``step()`` does one. Subclasses say what a step is."""

    def __init__(self, name: str, model: nn.Module, device: torch.device, batch: int):
        self.name, self.model, self.device, self.batch = name, model, device, batch
        self.losses: list[float] = []

    def step(self) -> float:
        raise NotImplementedError

    def run(self, n: int) -> float:
        sync = _sync(self.device)
        if sync:
            sync()
        t = time.perf_counter()
        for _ in range(n):
            loss = self.step()
        if sync:
            sync()
        dt = time.perf_counter() - t
        self.losses.append(float(loss))
        return n * self.batch / dt


class Ours(Stepper):
    """The product's own step: ``workbench.training.train_step`` on a state that
    ``build_train_state`` makes exactly as a run does (fused AdamW over ``param_groups``, the
    schedule, the scaler, per-sample seeded masks in one batched call, autocast), with the
    preset's defaults."""

    def __init__(self, kind, preset, device, batch, bf16=False, compile_model=False):
        cfg = resolve(TrainConfig(kind=kind, preset=preset, batch_size=batch, device=device.type,
                                  precision="bf16" if bf16 else "fp32", compile=compile_model,
                                  model_overrides={"norm_pix_loss": False}))
        self.state = build_train_state(cfg, build_model_config(cfg), device, cfg.precision)
        self.state.wrap(compile_model, Dist())
        super().__init__(f"ours {kind.upper()}" + (" +compile" if compile_model else ""),
                         self.state.raw, device, batch)
        self.imgs = synthetic_images(batch, self.model.cfg, device)

    def step(self) -> torch.Tensor:  # the loss, still on the device: the step does not wait
        first = self.state.step * self.batch  # mask seeds as a run draws them: one per sample
        return train_step(self.state, [(self.imgs, range(first, first + self.batch))])


class Peer(Stepper):
    """lightly's MAE stepped as its example steps it: loss, backward, AdamW, zero_grad."""

    def __init__(self, preset, device, batch, bf16=False, compile_model=False):
        cfg = build_model("mae", preset, norm_pix_loss=False).cfg
        model = LightlyMAE(cfg).to(device).train()
        super().__init__("lightly MAE" + (" +compile" if compile_model else ""), model, device,
                         batch)
        self.run_model = torch.compile(model) if compile_model else model
        self.imgs = synthetic_images(batch, cfg, device)
        self.bf16 = bf16
        self.opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WD)

    def step(self) -> torch.Tensor:
        with _autocast(self.device, self.bf16):
            loss = self.run_model(self.imgs)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


def synthetic_images(batch: int, cfg, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g).to(device)



def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def compare(steppers: list[Stepper], steps: int, rounds: int, warmup: int = 1) -> list[dict]:
    """Interleaved rounds of ``steps`` steps each; images/s medians per stepper."""
    ips = interleave({s.name: partial(s.run, steps) for s in steppers}, rounds, warmup)
    rows = []
    for s in steppers:
        rows.append(dict(name=s.name, images_per_s=median(ips[s.name]),
                         all_images_per_s=[round(x, 2) for x in ips[s.name]],
                         params=count_params(s.model), last_loss=s.losses[-1]))
    return rows


def section(label, steppers, steps, rounds, warmup, batch, preset, precision):
    print(f"\n-- {label}: preset {preset}, batch {batch}, {precision}, {rounds} interleaved "
          f"rounds of {steps} steps (+{warmup} warm-up)")
    rows = compare(steppers, steps, rounds, warmup)
    peer_row = next(r for r in rows if r["name"].startswith("lightly"))
    for r in rows:
        r["vs_lightly"] = r["images_per_s"] / peer_row["images_per_s"]
        paired = sorted(a / b for a, b in zip(r["all_images_per_s"],
                                              peer_row["all_images_per_s"]))
        r["vs_lightly_per_round"] = dict(median=median(paired), min=paired[0], max=paired[-1])
    print(table(rows, [("name", "model"), ("params", "params"), ("images_per_s", "images/s"),
                       ("vs_lightly", "÷ lightly"), ("last_loss", "loss")]))
    return dict(preset=preset, batch=batch, precision=precision, steps_per_round=steps,
                rounds=rounds, warmup_rounds=warmup, results=rows)


def profile_ops(stepper: Stepper, steps: int = 3, top: int = 12) -> dict:
    """Where one stepper's step time goes (torch profiler, self CPU time of each op over
    ``steps`` steps after one warm-up step): the ``top`` ops' shares, and the matmuls' share."""
    stepper.run(1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        stepper.run(steps)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    matmul = sum(e.self_cpu_time_total for e in ops if e.key in ("aten::mm", "aten::addmm",
                                                                  "aten::bmm"))
    return {"self_cpu_ms_per_step": round(total / 1e3 / steps, 1),
            "matmul_share": round(matmul / total, 3),
            "top_ops": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3),
                         "calls_per_step": e.count / steps} for e in ops[:top]]}


def compiled_cpu(kind: str, batch: int) -> tuple[Stepper, float]:
    """Our step with ``torch.compile`` on the CPU, compiled (3 steps) before it is timed; returns
    it and the seconds the first steps took (compile included; a warm on-disk cache shortens it)."""
    t = time.perf_counter()
    s = Ours(kind, "tiny", torch.device("cpu"), batch, compile_model=True)
    s.run(3)
    return s, round(time.perf_counter() - t, 1)


CPU_PRESETS = {"tiny": 64, "vit-s": 8, "vit-b": 8, "vit-l": 4}  # preset -> batch


def cpu_presets(steps: int = 2) -> dict:
    """Our images/s per preset on the CPU (no peer): one warm-up step, then ``steps`` timed."""
    cpu, rows = torch.device("cpu"), []
    for preset, batch in CPU_PRESETS.items():
        for kind in ("mae", "mff"):
            stepper = Ours(kind, preset, cpu, batch)
            stepper.run(1)
            ips = stepper.run(steps)
            rows.append({"preset": preset, "model": kind, "batch": batch, "images_per_s": ips,
                         "params": count_params(stepper.model)})
            print(f"  {preset:6s} {kind:3s} batch {batch:3d}: {ips:8.1f} img/s", flush=True)
            del stepper
    return {"steps": steps, "precision": "fp32", "results": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=4, help="steps per round (CPU)")
    ap.add_argument("--batch", type=int, default=64, help="CPU batch")
    ap.add_argument("--gpu-batch", type=int, default=256)
    ap.add_argument("--gpu-preset", default="vit-b")
    ap.add_argument("--no-gpu", action="store_true", help="skip the CUDA section")
    ap.add_argument("--out", default=None)
    ap.add_argument("--compile-cpu", action="store_true",
                    help="also time our MAE step under torch.compile on the CPU (compiles first)")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-op profiles")
    ap.add_argument("--presets", action="store_true",
                    help="only our images/s per preset on the CPU (bench/results/train_step_presets.json)")
    args = ap.parse_args()
    common.setup()
    if args.presets:  # its own file: the ratio run's machine and date stay with the ratio
        header("training step: our images/s per preset, CPU")
        write_result("train_step_presets", {"ratio": None, "ratio_reason": "no peer: our "
                     "images/s per preset on the CPU", **cpu_presets()}, args.out)
        return
    torch.manual_seed(0)
    header("training step: ours vs lightly MAE")
    cpu = torch.device("cpu")
    res = {"definition": "images/s of forward + masked-patch MSE + backward + AdamW step on a "
                         "fixed synthetic batch; median over interleaved rounds; ratio = our "
                         "MAE ÷ lightly MAE (CPU tiny)"}
    steppers = [Ours("mae", "tiny", cpu, args.batch), Ours("mff", "tiny", cpu, args.batch),
                Peer("tiny", cpu, args.batch)]
    compile_seconds = None
    if args.compile_cpu:
        compiled, compile_seconds = compiled_cpu("mae", args.batch)
        steppers.append(compiled)
    sec = section("CPU", steppers, args.steps, args.rounds, 1, args.batch, "tiny", "fp32")
    if compile_seconds is not None:
        sec["ours MAE +compile first_steps_seconds"] = compile_seconds
    if not args.no_profile:  # eager against eager, op by op
        sec["profiles"] = {s.name: profile_ops(s) for s in steppers[:3]}
        for name, prof in sec["profiles"].items():
            print(f"  {name}: {prof['self_cpu_ms_per_step']} ms/step (profiled), matmuls "
                  f"{100 * prof['matmul_share']:.0f} %")
    res["cpu"] = sec
    by = {r["name"]: r for r in sec["results"]}
    res["ratio"] = by["ours MAE"]["vs_lightly"]
    res["ratio_per_round"] = by["ours MAE"]["vs_lightly_per_round"]
    res["ratio_mff_cpu"] = by["ours MFF"]["vs_lightly"]
    res["goal_cpu"] = 1.25
    if torch.cuda.is_available() and not args.no_gpu:
        gpu = torch.device("cuda")
        try:
            res["gpu"] = gpu_section(gpu, args.gpu_preset, args.gpu_batch, rounds=5)
            res["ratio_gpu"] = res["gpu"]["ratio"]
            res["goal_gpu"] = 1.3
        except Exception as e:  # noqa: BLE001 - report and keep the CPU result
            res["gpu"] = {"error": f"{type(e).__name__}: {e}"}
            print(f"GPU section failed: {e}")
    else:
        res["gpu"] = {"skipped": "no CUDA device"}
    pr = res["ratio_per_round"]
    print(f"\nratio (our MAE ÷ lightly, CPU tiny): {res['ratio']:.3f}  (goal ≥ 1.25); per round: "
          f"median {pr['median']:.3f}, range {pr['min']:.3f}-{pr['max']:.3f}")
    write_result("train_step", res, args.out)


def gpu_section(device, preset, batch, rounds=5, steps=10, compile_ours=True,
                compile_peer=False) -> dict:
    """vit-b (bf16 autocast) ours eager / ours compiled / lightly eager, interleaved."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    steppers = [Ours("mae", preset, device, batch, bf16=True), Peer(preset, device, batch, True)]
    notes = {}
    for wanted, make in ((compile_ours, lambda: Ours("mae", preset, device, batch, bf16=True,
                                                     compile_model=True)),
                         (compile_peer, lambda: Peer(preset, device, batch, True,
                                                     compile_model=True))):
        if not wanted:
            continue
        t = time.perf_counter()
        try:  # compile outside the timed rounds; a compiler failure drops only this variant
            s = make()
            s.run(3)
            steppers.append(s)
            notes[f"{s.name} compile_seconds"] = round(time.perf_counter() - t, 1)
        except Exception as e:  # noqa: BLE001
            notes["compile_error"] = f"{type(e).__name__}: {str(e)[:500]}"
            print(f"torch.compile failed, timing eager only: {e}")
    sec = section("GPU", steppers, steps, rounds, 1, batch, preset, "bf16 autocast")
    sec.update(notes)
    by = {r["name"]: r for r in sec["results"]}
    best = max(r["images_per_s"] for n, r in by.items() if n.startswith("ours"))
    sec["ratio"] = best / by["lightly MAE"]["images_per_s"]
    sec["ratio_eager"] = by["ours MAE"]["vs_lightly"]
    sec["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    steppers.clear()
    torch.cuda.empty_cache()
    return sec


if __name__ == "__main__":
    main()
