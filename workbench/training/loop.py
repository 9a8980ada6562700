"""The training loop: ``train(cfg)``, for a single process or torchrun DDP, read top to bottom.

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

Nothing of the calling process changes: its global random generators and torch thread count are
as they were when ``train`` returns.
"""
from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..config import ModelConfig
from ..data import StepBatches, build_dataset, fixed_batch
from ..io import run_files
from .distributed import (Dist, StopRequest, ignore_sigint, pick_device, setup_distributed,
                          wants_cuda)
from .evaluation import evaluate
from .rng import preserved_rng
from .run_dir import RunOutputs, check_room, claim_run_dir, resume
from .settings import TrainConfig, TrainResult, build_model_config, resolve
from .step import TrainingDiverged, TrainState, build_train_state, pick_precision, train_step


@dataclass
class RunData:
    """This rank's share of every global batch (a pure function of seed and step) and the fixed
    held-out images of snapshots and the final held-out loss."""

    num_items: int
    order: StepBatches
    batches: Iterator
    fixed: torch.Tensor  # [n, 3, S, S]

    def micro_batches(self, step: int, accum: int) -> Iterator[tuple[torch.Tensor, list[int]]]:
        """(images, mask seeds) of each micro-batch of optimizer step ``step``, loaded lazily."""
        for micro in range(accum):
            imgs, _ = next(self.batches)  # [b, 3, S, S], b = batch / (ranks * accum)
            yield imgs, self.order.mask_seeds(step, micro)


@dataclass
class LogWindow:
    """Training loss and images since the last log line."""

    started: float = field(default_factory=time.perf_counter)
    images: int = 0
    loss_sum: float = 0.0
    steps: int = 0

    def add(self, loss: float, images: int) -> None:
        self.loss_sum += loss
        self.steps += 1
        self.images += images

    def close(self) -> tuple[float, float]:
        """(mean loss, images/s) of the window."""
        ips = self.images / max(time.perf_counter() - self.started, 1e-9)
        return self.loss_sum / self.steps, ips


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) a model as ``cfg`` says; rank 0 writes ``cfg.out``."""
    cfg = resolve(cfg)
    mcfg = build_model_config(cfg)
    dd = setup_distributed("cuda" if wants_cuda(cfg.device) else "cpu")
    try:
        with contextlib.ExitStack() as held, preserved_rng():  # lock, threads, handlers back
            if cfg.threads:  # for this run only: a notebook or test process gets its setting back
                held.callback(torch.set_num_threads, torch.get_num_threads())
                torch.set_num_threads(cfg.threads)
            return run(cfg, mcfg, dd, held)
    finally:
        if dd.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def check_batch_split(cfg: TrainConfig, dd: Dist) -> None:
    if cfg.batch_size < dd.world * cfg.accum_steps:
        raise ValueError(f"batch size {cfg.batch_size} is smaller than ranks ({dd.world}) x "
                         f"accum_steps ({cfg.accum_steps}): every rank needs >= 1 image a step")
    if cfg.batch_size % (dd.world * cfg.accum_steps):
        raise ValueError(f"batch size {cfg.batch_size} must be divisible by ranks ({dd.world}) x "
                         f"accum_steps ({cfg.accum_steps})")


def load_data(cfg: TrainConfig, mcfg: ModelConfig, dd: Dist, device: torch.device, start: int,
              stop: int) -> RunData:
    data = build_dataset(cfg.data, mcfg.img_size, "train", train_transform=True)
    if dd.main and hasattr(data, "report"):  # image folders: skipped and converted files
        print(f"[train] data: {data.report()}", file=sys.stderr)
    order = StepBatches(len(data), cfg.batch_size, cfg.seed, cfg.accum_steps, dd.rank, dd.world,
                        start_step=start, steps=stop)
    loader = DataLoader(data, batch_sampler=order, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        worker_init_fn=ignore_sigint if cfg.num_workers else None)
    n = max(4, cfg.eval_images)
    try:
        fixed = fixed_batch(cfg.data, mcfg.img_size, n, "heldout", 0)[0]
    except ValueError as e:  # e.g. a small folder without held-out files
        warnings.warn(f"{e}: snapshots and the final loss use training images instead")
        fixed = fixed_batch(cfg.data, mcfg.img_size, n, "train", 0)[0]
    return RunData(len(data), order, iter(loader), fixed)


def run(cfg: TrainConfig, mcfg: ModelConfig, dd: Dist, held: contextlib.ExitStack) -> TrainResult:
    """Set up (device, directory, model, resume, data), then step until ``stop``."""
    device = pick_device(cfg.device, dd.local_rank)
    precision = pick_precision(cfg.precision, device)
    check_batch_split(cfg, dd)
    files = run_files(cfg.out)
    claim_run_dir(files, cfg, dd, device, held)
    state = build_train_state(cfg, mcfg, device, precision)  # identical on every rank
    check_room(files, state.raw, dd, device)
    resumed = cfg.resume and resume(state, files, cfg, mcfg, dd)
    stop = cfg.stop_after or cfg.steps
    data = load_data(cfg, mcfg, dd, device, state.step, stop)
    state.wrap(cfg.compile, dd)
    state.model.train()
    outputs = RunOutputs(files, dd, state.step if resumed else None)
    held.callback(outputs.close)
    outputs.open(cfg, mcfg, state.step)
    if not resumed and state.raw.has_fusion:  # the initial weights: where the fusion moves from
        outputs.log(fusion_record(state))
    bar = progress_bar(cfg, mcfg, dd, stop, state.step)
    stopper = StopRequest().install()  # SIGINT / SIGTERM: finish the step, checkpoint, return
    held.callback(stopper.restore)  # the previous handlers come back however the run ends
    t_start, window = time.perf_counter(), LogWindow()
    last_loss, ips, heldout, interrupted = float("nan"), 0.0, None, False
    while state.step < stop:
        lr = state.lr
        try:
            loss = train_step(state, data.micro_batches(state.step, cfg.accum_steps))
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{e}; training stopped. Last good checkpoint: "
                                   f"{outputs.last_good()}. Try a lower lr, clip_grad or "
                                   f"fp32") from None
        window.add(loss, cfg.batch_size)
        if bar is not None:
            bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == stop:
            last_loss, ips = window.close()
            record = log_record(state, cfg, lr, last_loss, ips, data.num_items)
            if state.step == stop and cfg.eval_images:
                heldout = record["heldout_loss"] = evaluate(
                    state.raw, data.fixed[:cfg.eval_images], mask_ratio=mcfg.mask_ratio,
                    seed=cfg.seed)
            outputs.log(record)
            if bar is not None:
                bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{ips:.0f}")
            window = LogWindow()
        interrupted = stopper.agreed(dd, device) and state.step < stop  # the same on every rank
        if (cfg.ckpt_every and state.step % cfg.ckpt_every == 0) or state.step == stop \
                or interrupted:
            outputs.save(state, cfg, data.num_items)
        if cfg.snapshot_every and (state.step % cfg.snapshot_every == 0 or state.step == stop):
            outputs.snapshot(state, data.fixed[:4], cfg.seed)
        if interrupted:
            break
    if bar is not None:
        bar.close()
    why = (stopper.signal or "stop requested on another rank") if interrupted else None
    result = TrainResult(step=state.step, loss=last_loss, heldout_loss=heldout, images_per_s=ips,
                         wall_s=time.perf_counter() - t_start, out=str(files.root),
                         checkpoint=str(files.checkpoint), interrupted=why)
    if dd.main:
        print(final_message(result, cfg, mcfg, stop), file=sys.stderr)
    return result


def log_record(state: TrainState, cfg: TrainConfig, lr: float, loss: float, ips: float,
               num_items: int) -> dict:
    """One line of ``metrics.jsonl``: step, loss, lr, images/s, epoch, and for a model that fuses
    layers its normalised fusion weights."""
    record = {"step": state.step, "loss": loss, "lr": lr, "images_per_s": ips,
              "epoch": state.step * cfg.batch_size / num_items}
    return {**record, **fusion_record(state)} if state.raw.has_fusion else record


def fusion_record(state: TrainState) -> dict:
    """The step and normalised fusion weights over the fused layers (logged at step 0 too)."""
    return {"step": state.step,
            "fusion_weights": [float(w) for w in state.raw.fusion_weights()],
            "fused_layers": state.raw.fused_layers}


def progress_bar(cfg: TrainConfig, mcfg: ModelConfig, dd: Dist, stop: int, step: int):
    """A tqdm bar on rank 0 when stderr is a terminal, else None."""
    if not (dd.main and cfg.progress and sys.stderr.isatty()):
        return None
    from tqdm import tqdm
    return tqdm(total=stop, initial=step, desc=f"{mcfg.kind}-{cfg.preset}", dynamic_ncols=True)


def final_message(r: TrainResult, cfg: TrainConfig, mcfg: ModelConfig, stop: int) -> str:
    if r.interrupted:
        return (f"[train] {r.interrupted}: interrupted at step {r.step}/{stop} after finishing "
                f"it; checkpoint {r.checkpoint} (step {r.step}); resume with --resume")
    msg = f"[train] {mcfg.kind}-{cfg.preset}: step {r.step}/{cfg.steps}, loss {r.loss:.4f}"
    if r.heldout_loss is not None:
        msg += f", held-out loss {r.heldout_loss:.4f}"
    return msg + f", {r.wall_s:.1f} s; checkpoint {r.checkpoint}"
