"""A run's directory: claiming it, resuming from it, and everything a run writes there (rank 0)."""
from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import checkpoint_dict, read_checkpoint, save_weights
from ..core.config import ModelConfig
from ..core.io import (OutputError, RunFiles, append_record, atomic_save, atomic_write,
                  atomic_write_text, check_free_space, check_writable, file_lock, read_metrics,
                  remove_stale_temps, run_files)
from .distributed import Dist, check_on_main
from .evaluation import finite_weights
from .hooks import DrawPicture
from ..core.seeds import rng_state, set_rng_state
from ..core.sizes import human_bytes
from .settings import IF_ANY, TrainConfig, snapshot_schedule
from .step import TrainingDiverged, TrainState


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """About the size of a training checkpoint: the weights and buffers plus AdamW's two moments
    per trainable parameter."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = sum(2 * p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return state + moments


def claim_run_dir(files: RunFiles, cfg: TrainConfig, dd: Dist, device: torch.device,
                  held: contextlib.ExitStack) -> None:
    """Before any training: is the directory usable, and ours alone? Rank 0 checks that it is
    writable, takes its lock (held until ``held`` closes), refuses to overwrite a finished run
    without ``resume`` and removes temporary files of a write that was cut short; every rank
    stops if rank 0 cannot start."""
    def check() -> None:
        check_writable(files.root)
        held.enter_context(file_lock(files.lock, timeout=0, holder="another training run"))
        if files.checkpoint.exists() and not cfg.resume:
            raise FileExistsError(f"{files.root} holds a run ({describe_run(files)}): pass "
                                  f"--resume to continue it, or choose another --out")
        stale = [*remove_stale_temps(files.root), *remove_stale_temps(files.pictures),
                 *remove_stale_temps(files.snapshots)]
        if stale:
            print(f"[train] removed {len(stale)} temporary file(s) of a write that was cut short "
                  f"(e.g. {stale[0].name}); the files they would have replaced are intact",
                  flush=True)

    check_on_main(check, dd, device)


def describe_run(files: RunFiles) -> str:
    """'complete at step 300, loss 0.4550' / 'at step 120 of 300' from the run's checkpoint."""
    try:
        ck = read_checkpoint(files.checkpoint, map_location="cpu", mmap=True)  # not the weights
    except (OSError, ValueError) as e:  # a damaged checkpoint: say so, the refusal stands
        return f"its checkpoint cannot be read: {e}"
    step, steps = ck.get("step"), (ck.get("train_config") or {}).get("steps")
    loss = (ck.get("last_metrics") or {}).get("loss")
    where = f"complete at step {step}" if step == steps else f"at step {step} of {steps}"
    return where + (f", loss {loss:.4f}" if loss is not None else "")


def check_room(files: RunFiles, model: torch.nn.Module, dd: Dist, device: torch.device) -> None:
    """A full disk, where it can be known: room for one more checkpoint (on every rank's word)."""
    check_on_main(lambda: check_free_space(files.root, checkpoint_bytes(model)), dd, device)


def saved_train_config(out: str | Path) -> dict | None:
    """The training settings stored in the checkpoint of run directory ``out``; None when it has
    no checkpoint (or one written without them)."""
    files = run_files(out)
    if not files.checkpoint.exists():
        return None
    # the settings only: the tensors are mapped, not read (resume() reads them once, later)
    ck = read_checkpoint(files.checkpoint, map_location="cpu", mmap=True)
    return ck.get("train_config") or None


# what a resumed run may change and still continue (with a warning), and what each change means
RESUME_CHANGES = {
    "steps": "the lr schedule (warmup, cosine decay) is recomputed for the new length, so the lr "
             "from here on differs from the original run's",
    "batch_size": "the batches from here on differ from the original run's",
    "seed": "the images and masks from here on differ from the original run's",
    "data": "the run continues on other images",
    "accum_steps": "the micro-batches differ from the original run's",
}


def resume(state: TrainState, files: RunFiles, cfg: TrainConfig, mcfg: ModelConfig,
           dd: Dist) -> dict | None:
    """Load the run's checkpoint into ``state`` and the global generators. Returns the metric
    record saved with it ({} for an older checkpoint). Without a checkpoint: ``resume="if-any"``
    starts a new run (None), ``resume=True`` is an error naming the folder (a typo in ``--out``
    must not cost a whole training in the wrong place)."""
    if not files.checkpoint.exists():
        if cfg.resume != IF_ANY:
            raise FileNotFoundError(
                f"--resume: {files.root} holds no checkpoint ({files.checkpoint.name} is "
                f"missing), so there is nothing to continue; check --out for a typo, or leave "
                f"out --resume to start a new run there")
        if dd.main:
            print(f"[train] no checkpoint at {files.checkpoint}; starting a new run", flush=True)
        return None
    ck = read_checkpoint(files.checkpoint, map_location="cpu")
    # through ModelConfig: fields added since the checkpoint was written take their defaults
    saved = ModelConfig.from_dict(ck["config"]).to_dict() if ck.get("config") else {}
    if saved != mcfg.to_dict():
        raise ValueError(f"cannot resume {files.checkpoint}: it holds a different model; "
                         f"{differences(saved, mcfg.to_dict())}. Resume without these settings "
                         f"(the CLI takes them from the checkpoint) or choose another --out")
    state.load_state_dict(ck)
    set_rng_state(ck["rng"])
    before = ck.get("train_config", {})
    if dd.main:
        for k, meaning in RESUME_CHANGES.items():
            if k in before and before[k] != getattr(cfg, k):
                warnings.warn(f"resuming {files.checkpoint} with {k} {getattr(cfg, k)!r} instead "
                              f"of {before[k]!r}: {meaning}")
    return dict(ck.get("last_metrics") or {})


def differences(saved: dict, requested: dict) -> str:
    """'depth: checkpoint 2, requested 3; ...' for the fields that differ."""
    keys = [k for k in {**saved, **requested} if saved.get(k) != requested.get(k)]
    return "; ".join(f"{k}: checkpoint {saved.get(k)!r}, requested {requested.get(k)!r}"
                     for k in keys)


class RunOutputs:
    """Everything a run writes: ``config.json``, metric records (+ TensorBoard), checkpoints,
    weight snapshots and pictures. Only rank 0 writes; on other ranks every method does nothing.
    A failed write raises :class:`OutputError` naming the step and the last good checkpoint,
    left intact."""

    def __init__(self, files: RunFiles, dd: Dist, last_checkpoint: int | None):
        self.files, self.main = files, dd.main
        self.last_checkpoint = last_checkpoint  # step of the checkpoint on disk, None if none
        self.writer = None

    def open(self, cfg: TrainConfig, mcfg: ModelConfig, step: int) -> None:
        """Write ``config.json``, drop metric records past ``step`` (a resumed run rewrites
        them), open TensorBoard."""
        if not self.main:
            return
        atomic_write_text(self.files.config, json.dumps(
            {"config": mcfg.to_dict(), "train_config": cfg.to_dict()}, indent=2))
        # a resumed run keeps the records up to its checkpoint; a new one (a run killed before
        # its first checkpoint, started again) keeps none, not even the old step-0 line
        kept = [r for r in read_metrics(self.files.metrics) if int(r.get("step", 0)) <= step] \
            if step else []
        atomic_write_text(self.files.metrics, "".join(json.dumps(r) + "\n" for r in kept))
        self.drop_snapshots_after(step)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.files.tensorboard),
                                        purge_step=step + 1 if step else None)
        except ImportError:
            print("[train] tensorboard not installed: no TensorBoard logs", flush=True)

    def last_good(self) -> str:
        if self.last_checkpoint is None:
            return "none written"
        return f"{self.files.checkpoint} (step {self.last_checkpoint})"

    def failed(self, what: str, at: int, e: OSError) -> OutputError:
        return OutputError(f"could not write {what} at step {at}: {e}; training stopped. Last "
                           f"good checkpoint (intact): {self.last_good()}")

    def save(self, state: TrainState, cfg: TrainConfig, num_items: int,
             record: dict[str, Any] | None = None) -> None:
        """The full training state at ``state.step`` (refused when the weights are not finite),
        with the last metric ``record`` (what a finished run reports when run again)."""
        at = state.step
        if self.main:
            if not finite_weights(state.raw):
                raise TrainingDiverged(f"weights are not finite at step {at}; checkpoint not "
                                       f"written. Last good checkpoint: {self.last_good()}")
            position = {"step": at, "samples_seen": at * cfg.batch_size,
                        "epoch": at * cfg.batch_size / num_items}
            try:
                atomic_save(checkpoint_dict(state.raw, step=at, **state.state_dict(),
                                            rng=rng_state(), train_config=cfg.to_dict(),
                                            data_position=position,
                                            last_metrics=dict(record or {})),
                            self.files.checkpoint)
            except OSError as e:  # e.g. ENOSPC: the old checkpoint is untouched, the temp removed
                raise self.failed(f"the checkpoint {self.files.checkpoint}", at, e) from e
        self.last_checkpoint = at

    def save_init(self, state: TrainState) -> None:
        """The weights at step 0 (``init.safetensors``): every probe's control, the same model
        before training (a new run only; its size is the weights', no optimizer state)."""
        if not self.main:
            return
        try:
            save_weights(state.raw, self.files.init, step=state.step)
        except OSError as e:
            raise self.failed(f"the initial weights {self.files.init}", state.step, e) from e

    def picture(self, state: TrainState, draw: DrawPicture, imgs: torch.Tensor,
                seed: int) -> None:
        """``pictures/step_NNNNNN.png``: the picture ``draw`` makes of the model on ``imgs``."""
        if not self.main:
            return
        path = self.files.picture(state.step)
        try:
            picture = draw(state.raw, imgs, seed)
            atomic_write(path, lambda f: picture.save(f, format="PNG"))
        except OSError as e:
            raise self.failed(f"the picture {path}", state.step, e) from e

    def snapshot(self, state: TrainState) -> None:
        """``snapshots/step_NNNNNN.safetensors``: the weights now (encoder and decoder, no
        optimizer state; ``save_weights``, atomic), for ``probes.over_training``."""
        if not self.main:
            return
        path = self.files.snapshot(state.step)
        try:
            save_weights(state.raw, path, step=state.step)
        except OSError as e:
            raise self.failed(f"the weight snapshot {path}", state.step, e) from e

    def start_snapshots(self, cfg: TrainConfig, state: TrainState, new_run: bool) -> set[int]:
        """The snapshot steps still to come (a new run writes step 0 now), and on rank 0 their
        count and cost: '[train] snapshots: 10 steps (0, 1, 2, ..., 300), 1.2 MiB each, ...'."""
        planned = snapshot_schedule(cfg)
        if not planned:
            return set()
        took = ""
        if new_run and planned[0] == 0:
            started = time.perf_counter()
            self.snapshot(state)
            took = f", {1e3 * (time.perf_counter() - started):.0f} ms to write"
        if self.main:  # the steps this invocation reaches (a stop_after ends it earlier)
            kept = [s for s in planned if cfg.stop_after is None or s <= cfg.stop_after]
            size = sum(t.numel() * t.element_size() for t in state.raw.state_dict().values())
            shown = ", ".join(map(str, kept)) if len(kept) <= 8 else \
                f"{', '.join(map(str, kept[:4]))}, ..., {kept[-1]}"
            stop = "" if kept == planned else f" (to the stop at step {cfg.stop_after})"
            print(f"[train] snapshots: {len(kept)} steps ({shown}){stop}, {human_bytes(size)} "
                  f"each{took}, {human_bytes(size * len(kept))} in all, in "
                  f"{self.files.snapshots}", flush=True)
        return {s for s in planned if s > state.step}

    def drop_snapshots_after(self, step: int) -> None:
        """A resumed run keeps the snapshots up to its checkpoint; later ones (a run killed past
        its last checkpoint) are written again from the same weights, so none is stale."""
        if self.main:
            for at, path in self.files.snapshot_series().items():
                if at > step:
                    path.unlink(missing_ok=True)

    def log(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        try:
            append_record(self.files.metrics, record)
        except OSError as e:
            raise self.failed(f"{self.files.metrics}", record["step"], e) from e
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(f"train/{k}", v, record["step"])
            for layer, w in zip(record.get("fuse_layers", []), record.get("fusion_weights", [])):
                self.writer.add_scalar(f"fusion/block_{layer}", w, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
