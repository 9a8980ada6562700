"""The training loop: ``run_training(cfg, hooks)``, for a single process or torchrun DDP, read
top to bottom. What a run measures besides its loss (the feature monitor, the reconstruction
picture) comes in through ``hooks`` (:class:`TrainHooks`); ``workbench.train(cfg)`` is this loop with the
standard ones (``workbench.experiments.pretraining``).

Determinism: every random choice of a step -- which images, their crops and flips, their masks --
is a function of (seed, step, position in the global batch) only (see ``data.StepBatches``). So a
run gives the same weights on 1 or N ranks (same global batch, up to float rounding of the gradient
all-reduce), and a resumed run continues exactly where it stopped.

Reliability: every file is written atomically (temporary file + rename) or appended one whole line
at a time, so a run killed at any point -- even by SIGKILL in the middle of a checkpoint -- leaves
a loadable checkpoint and a directory that ``--resume`` continues. SIGINT / SIGTERM finish the
current step, write a checkpoint and return normally (all DDP ranks stop at the same step, the
one after the request). A NaN / inf loss, a full disk or an unwritable directory stop the run
with the step and the last good checkpoint named; a lock file keeps a second run out of a
directory in use. The step itself never waits for the device (see ``step.py``).

Nothing of the calling process changes: its global random generators and torch thread count are
as they were when ``run_training`` returns.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..core.config import ModelConfig
from ..data import StepBatches, build_dataset, fixed_batch
from ..core.io import read_metrics, run_files
from ..core.sizes import check_training_fits
from .distributed import (Dist, StopRequest, ignore_sigint, pick_device, setup_distributed,
                          wants_cuda)
from .evaluation import final_evaluation
from .finetune import StepTargets, draw_seed, finetune_data, note_subset
from .hooks import NO_HOOKS, DrawPicture, Measure, TrainHooks
from ..core.seeds import preserved_rng
from .run_dir import RunOutputs, check_room, claim_run_dir, resume
from .settings import (TrainConfig, TrainResult, build_model_config, check_mask_count,
                       resolve)
from .step import TrainingDiverged, TrainState, build_train_state, pick_precision, train_step
from .supervised import class_count


@dataclass
class RunData:
    """This rank's share of every global batch (a pure function of seed and step) and the fixed
    held-out images of pictures and the final held-out measurement."""

    num_items: int
    order: StepBatches
    batches: Iterator
    fixed: torch.Tensor  # [n, 3, S, S]
    fixed_labels: torch.Tensor  # [n]
    fixed_heldout: bool = True  # False: a small folder without held-out files lent training images
    labelled: bool = False  # the supervised objective: micro-batches carry class labels
    seeded: bool = False  # fine-tuning: ... and the seed of their mixup and drop-path draws

    def micro_batches(self, step: int, accum: int) -> Iterator[tuple[torch.Tensor, object]]:
        """(images, mask seeds) of each micro-batch of optimizer step ``step`` -- (images, class
        labels) for the supervised objective -- loaded lazily."""
        for micro in range(accum):
            imgs, labels = next(self.batches)  # [b, 3, S, S], b = batch / (ranks * accum)
            if self.seeded:
                seed = draw_seed(self.order.seed, step, micro, self.order.rank)
                yield imgs, StepTargets(labels, seed)
            else:
                yield imgs, labels if self.labelled else self.order.mask_seeds(step, micro)


@dataclass
class LogWindow:
    """Training loss and images since the last log line."""

    started: float = field(default_factory=time.perf_counter)
    images: int = 0
    loss_sum: torch.Tensor | float = 0.0  # summed on the device: read at log steps only
    steps: int = 0

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.loss_sum = self.loss_sum + loss
        self.steps += 1
        self.images += images

    def close(self) -> tuple[float, float]:
        """(mean loss, images/s) of the window (waits for the device)."""
        loss = float(self.loss_sum) / self.steps
        ips = self.images / max(time.perf_counter() - self.started, 1e-9)
        return loss, ips


def run_training(cfg: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) a model as ``cfg`` says, measuring what ``hooks`` bring (none: no
    ``knn_acc`` / ``probe_acc``, no pictures, the same weights); rank 0 writes ``cfg.out``."""
    cfg, hooks = resolve(cfg), hooks or NO_HOOKS
    mcfg = build_model_config(cfg)
    dd = setup_distributed("cuda" if wants_cuda(cfg.device) else "cpu")
    try:
        with contextlib.ExitStack() as held, preserved_rng():  # lock, threads, handlers back
            if cfg.threads:  # for this run only: a notebook or test process gets its setting back
                held.callback(torch.set_num_threads, torch.get_num_threads())
                torch.set_num_threads(cfg.threads)
            return run(cfg, mcfg, dd, held, hooks)
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


def open_dataset(cfg: TrainConfig, mcfg: ModelConfig, dd: Dist):
    """The training images, opened before any directory is made: a missing folder, one without
    images (or, for the supervised objective, without two classes) fails here and leaves
    nothing behind."""
    data = build_dataset(cfg.data, mcfg.img_size, "train", train_transform=True,
                         augment=cfg.augment)
    if dd.main and hasattr(data, "report"):  # image folders: skipped and converted files
        print(f"[train] data: {data.report()}", flush=True)
    if cfg.objective == "supervised":
        class_count(data, cfg.data)  # a classifier needs two classes
    if cfg.objective == "finetune":  # two classes, the head's count, the label fraction's subset
        data = finetune_data(data, cfg, dd.world, dd.main)
    if dd.main and len(data) < cfg.batch_size:
        warnings.warn(f"the data ({cfg.data}) has {len(data)} training images, fewer than one "
                      f"batch ({cfg.batch_size}): every batch repeats images")
    return data


def load_data(cfg: TrainConfig, mcfg: ModelConfig, dd: Dist, device: torch.device, data,
              start: int, stop: int) -> RunData:
    order = StepBatches(len(data), cfg.batch_size, cfg.seed, cfg.accum_steps, dd.rank, dd.world,
                        start_step=start, steps=stop)
    loader = DataLoader(data, batch_sampler=order, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        worker_init_fn=ignore_sigint if cfg.num_workers else None)
    n = max(4, cfg.eval_images)
    try:
        (fixed, labels), heldout = fixed_batch(cfg.data, mcfg.img_size, n, "heldout", 0), True
    except ValueError as e:  # e.g. a small folder without held-out files
        warnings.warn(f"{e}: pictures and the final loss use training images instead (the loss "
                      f"is logged as train_images_loss, not heldout_loss)")
        (fixed, labels), heldout = fixed_batch(cfg.data, mcfg.img_size, n, "train", 0), False
    return RunData(len(data), order, iter(loader), fixed, labels, heldout,
                   labelled=cfg.objective != "mim", seeded=cfg.objective == "finetune")


@contextlib.contextmanager
def removed_on_failure(root: Path, dd: Dist) -> Iterator[None]:
    """A start that fails (unwritable, no room, a bad setting) removes the run directory it
    created, so a corrected command does not meet a half-made run; an existing one is kept."""
    existed = root.exists()
    try:
        yield
    except BaseException:
        if dd.main and not existed:
            shutil.rmtree(root, ignore_errors=True)
        raise


def checked_device(cfg: TrainConfig, mcfg: ModelConfig, dd: Dist) -> tuple[torch.device, str]:
    """This rank's device and precision, after the checks that need them: the batch splits over
    the ranks, enough patches stay visible, and the run fits the device's memory."""
    device = pick_device(cfg.device, dd.local_rank)
    precision = pick_precision(cfg.precision, device)
    check_batch_split(cfg, dd)
    check_mask_count(mcfg, cfg.preset)
    check_training_fits(mcfg, cfg.batch_size, dd.world, cfg.accum_steps, device, precision)
    return device, precision


def run(cfg: TrainConfig, mcfg: ModelConfig, dd: Dist, held: contextlib.ExitStack,
        hooks: TrainHooks) -> TrainResult:
    """Set up (device, data, directory, model, resume), then step until ``stop``."""
    device, precision = checked_device(cfg, mcfg, dd)
    dataset = open_dataset(cfg, mcfg, dd)
    classes = None if cfg.objective == "mim" else cfg.num_classes or len(dataset.classes)
    files = run_files(cfg.out)
    with removed_on_failure(files.root, dd):
        claim_run_dir(files, cfg, dd, device, held)
        state = build_train_state(cfg, mcfg, device, precision, classes)  # same on every rank
        check_room(files, state.raw, dd, device)
        saved = resume(state, files, cfg, mcfg, dd) if cfg.resume else None
    stop = cfg.stop_after or cfg.steps
    if saved is not None and state.step >= stop:
        return finished_result(files, cfg, saved, state.step, stop, dd)
    data = load_data(cfg, mcfg, dd, device, dataset, state.step, stop)
    state.wrap(cfg.compile, dd)
    state.model.train()
    outputs = RunOutputs(files, dd, state.step if saved is not None else None)
    held.callback(outputs.close)
    outputs.open(cfg, mcfg, state.step)
    note_subset(files.root, dataset, cfg, dd.main)  # fine-tuning on a share of the labels
    measure, draw = measurements(cfg, mcfg, dd, hooks)
    if saved is None:
        record_start(outputs, state, measure)
    kept = outputs.start_snapshots(cfg, state, new_run=saved is None)  # steps still to keep
    bar = progress_bar(cfg, mcfg, dd, stop, state.step)
    lines = dd.main and cfg.progress and bar is None  # not a terminal: a line per log step
    stopper = StopRequest().install()  # SIGINT / SIGTERM: finish the step, checkpoint, return
    held.callback(stopper.restore)  # the previous handlers come back however the run ends
    held.callback(stopper.settle)
    t_start, first, window = time.perf_counter(), state.step, LogWindow()
    record, interrupted = {}, False
    while state.step < stop:
        lr = state.lr
        loss = train_step(state, data.micro_batches(state.step, cfg.accum_steps))  # no host wait
        window.add(loss, cfg.batch_size)
        if bar is not None:
            bar.update(1)
        knn_due = measure is not None and (state.step % cfg.knn_every == 0
                                           or state.step == cfg.steps)  # not at a stop_after
        eval_due = state.step == stop or bool(cfg.eval_every and state.step % cfg.eval_every == 0)
        log_due = state.step % cfg.log_every == 0 or eval_due or knn_due
        interrupted = stopper.agreed(dd, device) and state.step < stop  # the same on every rank
        save_due = (cfg.ckpt_every and state.step % cfg.ckpt_every == 0) or state.step == stop \
            or interrupted
        picture_due = draw is not None and (state.step % cfg.picture_every == 0
                                            or state.step == stop)
        snapshot_due = state.step in kept
        if log_due or save_due or picture_due or snapshot_due:  # before any write: a finite loss
            raise_if_diverged(state, outputs)
        if log_due:
            record = step_record(state, cfg, lr, window, data, measure if knn_due else None,
                                 heldout=eval_due)
            outputs.log(record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
            if lines:
                print(log_line(record, stop, time.perf_counter() - t_start, state.step - first),
                      flush=True)
            window = LogWindow()
        if save_due:
            outputs.save(state, cfg, data.num_items, record)
        if snapshot_due:
            outputs.snapshot(state)
        if picture_due:
            outputs.picture(state, draw, data.fixed[:4], cfg.seed)
        if interrupted:
            break
    if bar is not None:
        bar.close()
    why = (stopper.signal or "stop requested on another rank") if interrupted else None
    result = result_of(record, state.step, time.perf_counter() - t_start, files, why)
    if dd.main:
        print(final_message(result, cfg, mcfg, stop), flush=True)
    return result


def measurements(cfg: TrainConfig, mcfg: ModelConfig, dd: Dist, hooks: TrainHooks
                 ) -> tuple[Measure | None, DrawPicture | None]:
    """(the monitor's measure, the reconstruction picture) this run takes from ``hooks``, each
    None when off: the monitor on rank 0 only (the others do not wait for it) and when
    ``knn_every`` is set, pictures when ``picture_every`` is; a supervised run takes neither
    (both read an autoencoder)."""
    if cfg.objective != "mim":
        return None, None
    measure = hooks.monitor(cfg, mcfg) if hooks.monitor and cfg.knn_every and dd.main else None
    return measure, hooks.picture if cfg.picture_every else None


def raise_if_diverged(state: TrainState, outputs: RunOutputs) -> None:
    """Stop the run if a step's loss was not finite (its update and the later ones were
    skipped), naming that step and the last good checkpoint."""
    try:
        state.raise_if_diverged()
    except TrainingDiverged as e:
        raise TrainingDiverged(f"{e}; training stopped. Last good checkpoint: "
                               f"{outputs.last_good()}. Try a lower lr, clip_grad or "
                               f"fp32") from None


def result_of(record: dict, step: int, wall_s: float, files, interrupted: str | None = None
              ) -> TrainResult:
    """The run's result from its last metric record."""
    return TrainResult(step=step, loss=record.get("loss", float("nan")),
                       heldout_loss=record.get("heldout_loss"),
                       images_per_s=record.get("images_per_s", 0.0), wall_s=wall_s,
                       out=str(files.root), checkpoint=str(files.checkpoint),
                       interrupted=interrupted,
                       train_images_loss=record.get("train_images_loss"),
                       heldout_accuracy=record.get("heldout_accuracy"),
                       eval_top1=record.get("eval_top1"), eval_top5=record.get("eval_top5"))


def finished_result(files, cfg: TrainConfig, saved: dict, step: int, stop: int,
                    dd: Dist) -> TrainResult:
    """A resumed run that has nothing left to do: its numbers from the checkpoint (or, for an
    older checkpoint, the run's last metric record)."""
    record = saved or next((r for r in reversed(read_metrics(files.metrics)) if "loss" in r), {})
    result = result_of(record, step, 0.0, files)
    if dd.main:
        end = f"stop_after={stop} of {cfg.steps} steps" if stop < cfg.steps else "the last step"
        loss = f", loss {result.loss:.4f}" if record else ""
        held = (f", held-out loss {result.heldout_loss:.4f}"
                if result.heldout_loss is not None else "")
        print(f"[train] {files.root}: already complete at step {step} ({end}){loss}{held}; "
              f"checkpoint {files.checkpoint}. To train further pass a larger --steps (the lr "
              f"schedule is then recomputed for the new length)", flush=True)
    return result


def step_record(state: TrainState, cfg: TrainConfig, lr: float, window: LogWindow,
                data: RunData, measure: Measure | None, heldout: bool) -> dict:
    """The metric record of a log step: :func:`log_record` of the ``window``, the monitor's
    reading when ``measure`` is given, and with ``heldout`` (the last step, and every
    ``eval_every`` steps) the held-out measurement."""
    record = log_record(state, cfg, lr, *window.close(), data.num_items)
    if measure is not None:
        record.update(measure(state.raw))
    if heldout and cfg.eval_images:
        n = cfg.eval_images
        record.update(final_evaluation(state.raw, cfg, data.fixed[:n], data.fixed_labels[:n],
                                       data.fixed_heldout))
    return record


def log_record(state: TrainState, cfg: TrainConfig, lr: float, loss: float, ips: float,
               num_items: int) -> dict:
    """One line of ``metrics.jsonl``: step, loss, lr, images/s, epoch, and for a model that fuses
    layers its normalised fusion weights."""
    record = {"step": state.step, "loss": loss, "lr": lr, "images_per_s": ips,
              "epoch": state.step * cfg.batch_size / num_items}
    return {**record, **fusion_record(state)} if state.raw.has_fusion else record


def record_start(outputs: RunOutputs, state: TrainState, measure: Measure | None) -> None:
    """A new run's step 0: its initialisation (``init.safetensors``, the control of every
    probe) and, when it has them, where the fusion weights and the monitor start from."""
    outputs.save_init(state)
    initial = initial_record(state, measure)
    if initial:
        outputs.log(initial)


def initial_record(state: TrainState, measure: Measure | None) -> dict:
    """The step-0 line of a new run: the initial fusion weights and kNN accuracy, those the run
    has ({} when it has neither: no line)."""
    record = fusion_record(state) if state.raw.has_fusion else {}
    if measure is not None:
        record.update(step=state.step, **measure(state.raw))
    return record


def fusion_record(state: TrainState) -> dict:
    """The step and normalised fusion weights over the fused layers (logged at step 0 too)."""
    return {"step": state.step,
            "fusion_weights": [float(w) for w in state.raw.fusion_weights()],
            "fuse_layers": state.raw.fuse_layers}


def progress_bar(cfg: TrainConfig, mcfg: ModelConfig, dd: Dist, stop: int, step: int):
    """A tqdm bar on rank 0 when stderr is a terminal (a text bar) or the run is in a notebook
    kernel (a widget bar, tqdm.auto), else None (a line per log step instead)."""
    if not (dd.main and cfg.progress and (sys.stderr.isatty() or in_notebook())):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=stop, initial=step, desc=f"{mcfg.kind}-{cfg.preset}", dynamic_ncols=True)


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where tqdm.auto draws a widget)."""
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return type(ip).__name__ == "ZMQInteractiveShell"


def log_line(record: dict, stop: int, elapsed: float, steps_done: int) -> str:
    """The line a run prints at each log step when no progress bar is shown (output to a file,
    nohup, a batch scheduler): step, loss, lr, images/s and the time left at the pace so far."""
    left = elapsed / steps_done * (stop - record["step"]) if steps_done else float("nan")
    knn = f"  kNN {record['knn_acc']:.3f}" if "knn_acc" in record else ""
    knn += f"  probe {record['probe_acc']:.3f}" if "probe_acc" in record else ""
    knn += f"  top-1 {record['eval_top1']:.3f}" if "eval_top1" in record else ""
    return (f"[train] step {record['step']}/{stop}  loss {record['loss']:.4f}  "
            f"lr {record['lr']:.2e}  {record['images_per_s']:.0f} img/s{knn}  ETA {duration(left)}")


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 12s; '?' when unknown."""
    if seconds != seconds:  # NaN
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def final_message(r: TrainResult, cfg: TrainConfig, mcfg: ModelConfig, stop: int) -> str:
    if r.interrupted:
        return (f"[train] {r.interrupted}: interrupted at step {r.step}/{stop} after finishing "
                f"it; checkpoint {r.checkpoint} (step {r.step}); resume with --resume")
    msg = (f"[train] {Path(r.out).name} ({mcfg.kind}, {cfg.preset}): step {r.step}/{cfg.steps}, "
           f"loss {r.loss:.4f}")
    if r.heldout_loss is not None:
        msg += f", held-out loss {r.heldout_loss:.4f}"
    if r.eval_top1 is not None:
        msg += f", held-out top-1 {r.eval_top1:.3f}"
        msg += f", top-5 {r.eval_top5:.3f}" if r.eval_top5 is not None else ""
    if r.train_images_loss is not None:
        msg += f", loss on {cfg.eval_images} training images {r.train_images_loss:.4f} (no held-out images)"
    return msg + f", {r.wall_s:.1f} s; checkpoint {r.checkpoint}"
