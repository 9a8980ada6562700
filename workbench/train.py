"""The training loop: one function, ``train(cfg)``, for a single process or torchrun DDP.

Determinism: every random choice of a step -- which images, their crops and flips, their masks --
is a function of (seed, step, position in the global batch) only (see ``data.StepBatches``). So a
run gives the same weights on 1 or N ranks (same global batch, up to float rounding of the gradient
all-reduce), and a resumed run continues exactly where it stopped.

Reliability: every file is written atomically (temporary file + rename) or appended one whole line
at a time, so a run killed at any point -- even by SIGKILL in the middle of a checkpoint -- leaves
a loadable checkpoint and a directory that ``--resume`` continues. SIGINT / SIGTERM finish the
current step, write a checkpoint and return normally (all DDP ranks stop at the same step). A
NaN / inf loss, a full disk or an unwritable directory stop the run with the step and the last
good checkpoint named; a lock file keeps a second run out of a directory in use.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .checkpoints import checkpoint_dict, read_checkpoint
from .io import (OutputError, append_line, atomic_save, atomic_write, atomic_write_text,
                 check_free_space, check_writable, file_lock, read_metrics, remove_stale_temps)
from .config import ModelConfig, model_config
from .data import StepBatches, build_dataset, fixed_batch
from .models import MaskedAutoencoder, model_from_config
from .models.masking import Masking, mask_patches
from .probes.reconstruction import reconstruct

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Defaults per preset for the fields left as None. tiny: a few minutes on a 2-core CPU.
PRESET_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(steps=300, batch_size=64, base_lr=4e-3),
    # ~20 epochs of the built-in tiles per 1k steps; a few minutes on one H100 with bf16
    "gpu-small": dict(steps=5000, batch_size=256, base_lr=1.5e-3),
    # the papers' recipe: batch 4096, base lr 1.5e-4, 800 ImageNet epochs (~250k steps)
    "paper": dict(steps=250_000, batch_size=4096, base_lr=1.5e-4),
}


@dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` fields take the preset's default."""

    model: str = "mff"  # "mae" | "mff"
    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # any ModelConfig field
    data: str = "builtin"  # "builtin" or an image folder
    steps: int | None = None  # optimizer steps (schedule length)
    stop_after: int | None = None  # stop early at this step (checkpointed), schedule unchanged
    batch_size: int | None = None  # global batch, over all ranks and accumulation steps
    accum_steps: int = 1
    base_lr: float | None = None  # peak lr = base_lr * batch_size / 256
    lr: float | None = None  # absolute peak lr; overrides base_lr
    min_lr: float = 0.0
    warmup: float = 0.05  # warmup steps; a value < 1 is a fraction of ``steps``
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = None  # max gradient norm
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:N"
    precision: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU) | "fp32" | "bf16" | "fp16"
    compile: bool = False
    seed: int = 0
    out: str = "runs/mff-tiny"
    resume: bool = False
    ckpt_every: int = 200  # steps; 0: only at the end
    log_every: int = 10
    snapshot_every: int = 200  # reconstruction PNGs; 0: off
    eval_images: int = 64  # held-out images for the final held-out loss
    num_workers: int = 0  # DataLoader workers (0: load in the training process)
    threads: int | None = None  # CPU threads for torch (None: torch's default, all cores)
    progress: bool = True  # tqdm bar (only on a terminal)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


@dataclass
class TrainResult:
    step: int
    loss: float  # mean training loss of the last logged interval
    heldout_loss: float | None
    images_per_s: float
    wall_s: float
    out: str
    checkpoint: str
    interrupted: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the run early


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# ----------------------------------------------------------------------------- settings
def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the ``None`` defaults from the preset and check every setting."""
    defaults = PRESET_TRAIN_DEFAULTS.get(cfg.preset, PRESET_TRAIN_DEFAULTS["paper"])
    cfg = dataclasses.replace(cfg, **{k: v for k, v in defaults.items()
                                      if getattr(cfg, k) is None})
    cfg.betas = tuple(cfg.betas)
    for name in ("steps", "batch_size", "accum_steps", "log_every"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    for name in ("ckpt_every", "snapshot_every", "num_workers", "eval_images", "threads"):
        v = getattr(cfg, name)
        if name == "threads" and v is None:
            continue
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {getattr(cfg, name)!r}")
    for name in ("base_lr", "lr", "min_lr", "warmup", "weight_decay", "clip_grad"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ValueError(f"{name} must be a non-negative number, got {v!r}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {cfg.betas!r}")
    if cfg.stop_after is not None and not 1 <= cfg.stop_after <= cfg.steps:
        raise ValueError(f"stop_after must be in [1, steps={cfg.steps}], got {cfg.stop_after}")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    return cfg


def build_model_config(cfg: TrainConfig) -> ModelConfig:
    return model_config(cfg.model, cfg.preset, **cfg.model_overrides)


def peak_lr(cfg: TrainConfig) -> float:
    """The linear scaling rule: ``base_lr * batch_size / 256`` (unless ``lr`` is given)."""
    return cfg.lr if cfg.lr is not None else cfg.base_lr * cfg.batch_size / 256


def warmup_steps(cfg: TrainConfig) -> int:
    return int(round(cfg.warmup * cfg.steps)) if cfg.warmup < 1 else int(cfg.warmup)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of (0-based) optimizer step ``step``: linear warmup to the peak over the
    warmup steps, then half a cosine down to ``min_lr`` at ``steps``."""
    peak, warm = peak_lr(cfg), warmup_steps(cfg)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, cfg.steps - warm)
    return cfg.min_lr + (peak - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def param_groups(model: MaskedAutoencoder, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on norms, biases, position embeddings and tokens (1-D parameters
    and ``model.no_weight_decay()``), but decay on MFF's fusion logits and projections."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("fusion."):  # MFF: logits (1-D) and projections are decayed
            decay.append(p)
        elif p.ndim <= 1 or name in skip or name.split(".")[-1] in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def group_names(model: MaskedAutoencoder, weight_decay: float = 0.05) -> tuple[list[str], list[str]]:
    """(decayed, not decayed) parameter names, for inspection and tests."""
    ids = {id(p): n for n, p in model.named_parameters()}
    g = param_groups(model, weight_decay)
    return [ids[id(p)] for p in g[0]["params"]], [ids[id(p)] for p in g[1]["params"]]


# ----------------------------------------------------------------------------- helpers
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> Dist:
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; NCCL on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    here = not dist.is_initialized()
    if here:
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(rank, world, local, here)


def pick_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        name = cfg.device
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
        if name == "cuda":
            name = f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


def pick_precision(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 (with a GradScaler) needs a CUDA device; use fp32/bf16")
    return cfg.precision


def masks_for(seeds: list[int], grid: int, ratio: float, strategy: str,
              device: torch.device) -> Masking:
    """One mask per sample, each drawn from its own seed: independent of batch split."""
    parts = [mask_patches(1, grid, ratio, strategy, torch.Generator().manual_seed(s))
             for s in seeds]
    return Masking(*(torch.cat([getattr(m, f) for m in parts]).to(device)
                     for f in ("ids_keep", "ids_restore", "mask")))


def rng_state() -> dict:
    """Global RNG states in weights-only-loadable form (tensors, ints, lists)."""
    np_state = np.random.get_state()
    py = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                      float(np_state[4])]}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    n = s["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def finite_weights(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@torch.no_grad()
def evaluate(model: MaskedAutoencoder, imgs: torch.Tensor, mask_ratio: float = 0.75,
             seed: int = 0, batch_size: int = 256) -> float:
    """Masked-reconstruction loss on ``imgs`` with fixed masks (chunk ``i`` uses ``seed + i``);
    eval mode, no grad, mode restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i, chunk in enumerate(imgs.split(batch_size)):
        out = model(chunk.to(device), mask_ratio=mask_ratio, seed=seed + i)
        total += float(out.loss) * len(chunk)
        count += len(chunk)
    model.train(was_training)
    return total / max(1, count)


@torch.no_grad()
def reconstruction_grid(model: MaskedAutoencoder, imgs: torch.Tensor, seed: int = 0,
                        scale: int = 4):
    """A PIL image, one row per image: original | masked (black) | reconstruction with the
    visible patches pasted back, at the model's own mask ratio and strategy. The reconstruction
    is :func:`workbench.probes.reconstruct`'s (norm-pix predictions un-normalised with the true
    patch statistics, as in the MAE demo)."""
    from PIL import Image

    r = reconstruct(model, imgs, mask_ratio=model.cfg.mask_ratio,
                    mask_strategy=model.cfg.mask_strategy, seed=seed, fill=0.0)
    rows = [torch.cat([a, m, c], dim=2) for a, m, c in zip(r.original, r.masked, r.pasted)]
    grid = torch.cat(rows, dim=1).float().cpu()  # [3, B*S, 3S], each [3, S, 3S]
    arr = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    img = Image.fromarray(arr)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """About the size of a training checkpoint: the weights and buffers plus AdamW's two moments
    per trainable parameter."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = sum(2 * p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return state + moments


def raise_on_all_ranks(problem: Exception | None, dd: Dist, device: torch.device) -> None:
    """Raise rank 0's ``problem`` there, and a pointer to it on the other ranks, so that no rank
    waits forever for one that stopped."""
    if dd.world > 1:
        flag = torch.tensor([float(problem is not None)], device=device)
        dist.all_reduce(flag)
        if float(flag) and problem is None:
            raise RuntimeError("rank 0 could not start the run; see its error message")
    if problem is not None:
        raise problem


class StopRequest:
    """SIGINT / SIGTERM -> a flag; the loop finishes its step, writes a checkpoint and returns.

    Installed only in the main thread (Python delivers signals there), the previous handlers are
    put back by :meth:`restore`. The same signal a second time stops at once with the previous
    handler (KeyboardInterrupt for SIGINT, termination for SIGTERM); the checkpoint on disk is
    then the previous one, which atomic writes keep intact.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: str | None = None  # name of the first signal received
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal != name:  # first request (or the other signal): stop after this step
            self.signal = self.signal or name
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        self.restore()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)

    def agreed(self, dd: Dist, device: torch.device) -> bool:
        """True on every rank when any rank was asked to stop: all ranks stop at the same step."""
        if dd.world == 1:
            return self.signal is not None
        flag = torch.tensor([float(self.signal is not None)], device=device)
        dist.all_reduce(flag)
        return float(flag) > 0


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C (sent to the whole process group): the main process
    finishes its step with them, then shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ----------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) a model as ``cfg`` says; rank 0 writes ``cfg.out``."""
    cfg = resolve(cfg)
    mcfg = build_model_config(cfg)
    want_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    dd = setup_distributed("cuda" if want_cuda else "cpu")
    try:
        with contextlib.ExitStack() as held:  # the run directory's lock (rank 0)
            return _train(cfg, mcfg, dd, held)
    finally:
        if dd.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, mcfg: ModelConfig, dd: Dist,
           held: contextlib.ExitStack) -> TrainResult:
    if cfg.threads:  # for this run only: a notebook or test process gets its setting back
        held.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg, dd.local_rank)
    precision = pick_precision(cfg, device)
    if cfg.batch_size < dd.world * cfg.accum_steps:
        raise ValueError(f"batch size {cfg.batch_size} is smaller than ranks ({dd.world}) x "
                         f"accum_steps ({cfg.accum_steps}): every rank needs >= 1 image a step")
    if cfg.batch_size % (dd.world * cfg.accum_steps):
        raise ValueError(f"batch size {cfg.batch_size} must be divisible by ranks ({dd.world}) x "
                         f"accum_steps ({cfg.accum_steps})")
    out = Path(cfg.out)
    ckpt_path, metrics_path = out / "checkpoint.pt", out / "metrics.jsonl"
    problem = None
    if dd.main:  # before any training: is the output directory usable, and ours alone?
        try:
            check_writable(out)
            held.enter_context(file_lock(out / ".lock", timeout=0,
                                         holder="another training run"))
            if ckpt_path.exists() and not cfg.resume:
                raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue that run, "
                                      f"or choose another --out")
            stale = remove_stale_temps(out) + remove_stale_temps(out / "snapshots")
            if stale:
                print(f"[train] removed {len(stale)} temporary file(s) of a write that was cut "
                      f"short (e.g. {stale[0].name}); the files they would have replaced are "
                      f"intact", file=sys.stderr)
        except OSError as e:
            problem = e
    raise_on_all_ranks(problem, dd, device)  # every rank stops if rank 0 cannot start

    # model, optimizer, schedule -- identical on every rank (same seed)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    model = model_from_config(mcfg).to(device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=peak_lr(cfg),
                            betas=cfg.betas, fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / peak_lr(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    problem = None
    if dd.main:  # a full disk, where it can be known: room for one more checkpoint
        try:
            check_free_space(out, checkpoint_bytes(model))
        except OSError as e:
            problem = e
    raise_on_all_ranks(problem, dd, device)
    step = 0
    if cfg.resume and ckpt_path.exists():
        ck = read_checkpoint(ckpt_path, map_location="cpu")
        if ck.get("config") != mcfg.to_dict():
            raise ValueError(f"cannot resume {ckpt_path}: it holds a different model "
                             f"({ck.get('config')}) than requested ({mcfg.to_dict()})")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
        step = int(ck["step"])
        before = ck.get("train_config", {})
        changed = [k for k in ("batch_size", "seed", "data", "accum_steps")
                   if k in before and before[k] != getattr(cfg, k)]
        if changed and dd.main:
            warnings.warn(f"resuming {ckpt_path} with a different {', '.join(changed)}: the run "
                          f"continues, but not as the original run would have")
    elif cfg.resume and dd.main:
        print(f"[train] no checkpoint at {ckpt_path}; starting a new run", file=sys.stderr)
    stop = cfg.stop_after or cfg.steps

    # data: this rank's share of every global batch, a pure function of (seed, step)
    data = build_dataset(cfg.data, mcfg.img_size, "train", train_transform=True)
    if dd.main and hasattr(data, "report"):  # image folders: skipped and converted files
        print(f"[train] data: {data.report()}", file=sys.stderr)
    order = StepBatches(len(data), cfg.batch_size, cfg.seed, cfg.accum_steps, dd.rank, dd.world,
                        start_step=step, steps=stop)
    loader = DataLoader(data, batch_sampler=order, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        worker_init_fn=_ignore_sigint if cfg.num_workers else None)
    try:  # fixed held-out images: snapshots and the final held-out loss
        fixed = fixed_batch(cfg.data, mcfg.img_size, max(4, cfg.eval_images), "heldout", 0)[0]
    except ValueError as e:  # e.g. a small folder without held-out files
        warnings.warn(f"{e}: snapshots and the final loss use training images instead")
        fixed = fixed_batch(cfg.data, mcfg.img_size, max(4, cfg.eval_images), "train", 0)[0]

    raw = model
    if cfg.compile:
        model = torch.compile(model)
    if dd.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()

    # files (rank 0): config, metrics without lines past the resumed step, TensorBoard
    writer = None
    if dd.main:
        atomic_write_text(out / "config.json", json.dumps(
            {"model": mcfg.to_dict(), "train": cfg.to_dict()}, indent=2))
        kept = [r for r in read_metrics(metrics_path) if int(r.get("step", 0)) <= step]
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(out / "tb"), purge_step=step + 1 if step else None)
        except ImportError:
            print("[train] tensorboard not installed: no TensorBoard logs", file=sys.stderr)

    def last_good() -> str:
        return f"{ckpt_path} (step {last_ckpt})" if last_ckpt is not None else "none written"

    def write_failed(what: str, at: int, e: OSError) -> OutputError:
        return OutputError(f"could not write {what} at step {at}: {e}; training stopped. Last "
                           f"good checkpoint (intact): {last_good()}")

    def save(at: int) -> None:
        if not dd.main:
            return
        if not finite_weights(raw):
            raise TrainingDiverged(f"weights are not finite at step {at}; checkpoint not written. "
                                   f"Last good checkpoint: {last_good()}")
        try:
            atomic_save(checkpoint_dict(
                raw, step=at, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                scaler=scaler.state_dict() if scaler.is_enabled() else None, rng=rng_state(),
                train_config=cfg.to_dict(),
                data_position={"step": at, "samples_seen": at * cfg.batch_size,
                               "epoch": at * cfg.batch_size / len(data)}), ckpt_path)
        except OSError as e:  # e.g. ENOSPC: the old checkpoint is untouched, the temp removed
            raise write_failed(f"the checkpoint {ckpt_path}", at, e) from e

    def snapshot(at: int) -> None:
        path = out / "snapshots" / f"step_{at:06d}.png"
        try:
            grid = reconstruction_grid(raw, fixed[:4], seed=cfg.seed)
            atomic_write(path, lambda f: grid.save(f, format="PNG"))
        except OSError as e:
            raise write_failed(f"the snapshot {path}", at, e) from e

    def log(record: dict) -> None:
        if not dd.main:
            return
        try:
            append_line(metrics_path, json.dumps(record))
        except OSError as e:
            raise write_failed(f"{metrics_path}", record["step"], e) from e
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    writer.add_scalar(f"train/{k}", v, record["step"])
            for layer, w in zip(record.get("fused_layers", []), record.get("fusion_weights", [])):
                writer.add_scalar(f"fusion/block_{layer}", w, record["step"])

    bar = None
    if dd.main and cfg.progress and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=stop, initial=step, desc=f"{mcfg.kind}-{cfg.preset}", dynamic_ncols=True)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16"
                              else torch.float16, enabled=precision in ("bf16", "fp16"))
    batches = iter(loader)
    last_ckpt = step if ckpt_path.exists() and cfg.resume else None
    t_start = t_log = time.perf_counter()
    seen_log, loss_sum, loss_n, ips, last_loss = 0, 0.0, 0, 0.0, float("nan")
    heldout = None
    interrupted = False
    stopper = StopRequest().install()  # SIGINT / SIGTERM: finish the step, checkpoint, return
    held.callback(stopper.restore)  # the previous handlers come back however the run ends
    while step < stop:
        # ---- one optimizer step: accum_steps micro-batches of this rank's share
        lr = opt.param_groups[0]["lr"]
        step_loss = torch.zeros((), device=device)
        for micro in range(cfg.accum_steps):
            imgs, _ = next(batches)  # [b, 3, S, S], b = batch / (ranks * accum)
            imgs = imgs.to(device, non_blocking=True)
            masking = masks_for(order.mask_seeds(step, micro), mcfg.grid_size, mcfg.mask_ratio,
                                mcfg.mask_strategy, device)
            last = micro == cfg.accum_steps - 1
            with (model.no_sync() if dd.world > 1 and not last else contextlib.nullcontext()):
                with autocast:
                    loss = model(imgs, masking=masking).loss / cfg.accum_steps
                scaler.scale(loss).backward()  # DDP all-reduces gradients on the last micro
            step_loss += loss.detach()
        if dd.world > 1:
            dist.all_reduce(step_loss)
            step_loss /= dd.world
        loss_value = float(step_loss)
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"loss is {loss_value} at step {step + 1}; training stopped. "
                                   f"Last good checkpoint: {last_good()}. Try a lower lr, "
                                   f"clip_grad or fp32")
        if cfg.clip_grad:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.clip_grad)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        step += 1
        loss_sum, loss_n, seen_log = loss_sum + loss_value, loss_n + 1, seen_log + cfg.batch_size

        # ---- bookkeeping
        if bar is not None:
            bar.update(1)
        if step % cfg.log_every == 0 or step == stop:
            now = time.perf_counter()
            ips = seen_log / max(now - t_log, 1e-9)
            last_loss = loss_sum / loss_n
            record = {"step": step, "loss": last_loss, "lr": lr, "images_per_s": ips,
                      "epoch": step * cfg.batch_size / len(data)}
            if mcfg.kind == "mff":
                record["fusion_weights"] = [float(w) for w in raw.fusion_weights()]
                record["fused_layers"] = raw.fused_layers
            if step == stop and cfg.eval_images:
                heldout = evaluate(raw, fixed[:cfg.eval_images], mask_ratio=mcfg.mask_ratio,
                                   seed=cfg.seed)
                record["heldout_loss"] = heldout
            log(record)
            if bar is not None:
                bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{ips:.0f}")
            t_log, seen_log, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
        interrupted = stopper.agreed(dd, device) and step < stop  # the same on every rank
        if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == stop or interrupted:
            save(step)
            last_ckpt = step
        if dd.main and cfg.snapshot_every and (step % cfg.snapshot_every == 0 or step == stop):
            snapshot(step)
        if interrupted:
            break
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    wall = time.perf_counter() - t_start
    why = (stopper.signal or "stop requested on another rank") if interrupted else None
    if dd.main and interrupted:
        print(f"[train] {why}: interrupted at step {step}/{stop} after finishing it; checkpoint "
              f"{ckpt_path} (step {step}); resume with --resume", file=sys.stderr)
    elif dd.main:
        msg = f"[train] {mcfg.kind}-{cfg.preset}: step {step}/{cfg.steps}, loss {last_loss:.4f}"
        if heldout is not None:
            msg += f", held-out loss {heldout:.4f}"
        print(msg + f", {wall:.1f} s; checkpoint {ckpt_path}", file=sys.stderr)
    return TrainResult(step=step, loss=last_loss, heldout_loss=heldout, images_per_s=ips,
                       wall_s=wall, out=str(out), checkpoint=str(ckpt_path), interrupted=why)
