"""File safety in one place: atomic writes, locks, appended metric lines, the run-directory layout
and the one reader of ``metrics.jsonl``.

Every file the workbench writes goes through here, so that a process killed at any moment (even
by SIGKILL mid-write) leaves either the old file or the new one, never a partial one:

* :func:`atomic_write` -- write a temporary file beside the target, fsync, rename it over;
* :func:`append_line` -- one whole line per ``write`` on an ``O_APPEND`` descriptor;
* :func:`file_lock` -- a ``filelock`` lock the operating system drops when its holder dies;
* :class:`RunFiles` -- the names of a training run's files, spelled once.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import filelock

TEMP_SUFFIX = ".tmp"  # atomic_write's temporary files: ".<name>.<random>.tmp"


class OutputError(OSError):
    """Files cannot be written (disk full, unwritable folder); the message says which and why."""


class FileLocked(OSError):
    """Another process holds the lock of a run directory or figure folder."""


# ----------------------------------------------------------------------------- the run directory
@dataclass(frozen=True)
class RunFiles:
    """The files of a training run directory (``python -m workbench train --out ROOT``)."""

    root: Path

    @property
    def checkpoint(self) -> Path:  # model, optimizer, scheduler, scaler, RNG, configs, step
        return self.root / "checkpoint.pt"

    @property
    def init(self) -> Path:  # the weights at step 0 (save_weights): the control of every probe
        return self.root / "init.safetensors"

    @property
    def weights(self) -> Path:  # final weights only (save_weights), e.g. a shipped run
        return self.root / "model.safetensors"

    @property
    def metrics(self) -> Path:  # one JSON record per log step
        return self.root / "metrics.jsonl"

    @property
    def config(self) -> Path:  # {"model": ModelConfig, "train": TrainConfig}
        return self.root / "config.json"

    @property
    def pictures(self) -> Path:  # reconstruction PNGs (picture_every)
        return self.root / "pictures"

    @property
    def snapshots(self) -> Path:  # the weights kept over training (snapshot_steps)
        return self.root / "snapshots"

    @property
    def probe_cache(self) -> Path:  # probes.over_training's numbers, one JSON per measurement
        return self.root / "probe_cache"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def lock(self) -> Path:  # held by the training process that writes here
        return self.root / ".lock"

    def picture(self, step: int) -> Path:
        return self.pictures / f"step_{step:06d}.png"

    def snapshot(self, step: int) -> Path:  # save_weights: encoder + decoder, no optimizer
        return self.snapshots / f"step_{step:06d}.safetensors"

    def snapshot_series(self) -> dict[int, Path]:
        """{step: file} of the weight snapshots on disk, by step ({} without any)."""
        if not self.snapshots.is_dir():
            return {}
        found = {}
        for path in self.snapshots.glob("step_*.safetensors"):
            digits = path.stem[len("step_"):]
            if digits.isdigit():
                found[int(digits)] = path
        return dict(sorted(found.items()))

    def read_settings(self) -> tuple[dict, dict] | None:
        """``config.json``'s model settings and training settings (``ModelConfig`` /
        ``TrainConfig`` dicts, under the keys a checkpoint gives them: ``config`` and
        ``train_config``; older runs wrote ``model`` and ``train``), or None without the file."""
        if not self.config.exists():
            return None
        saved = json.loads(self.config.read_text())
        return (saved.get("config", saved.get("model")) or {},
                saved.get("train_config", saved.get("train")) or {})


def run_files(root: str | os.PathLike) -> RunFiles:
    return RunFiles(Path(root))


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory holding ``checkpoint.pt`` (else ``model.safetensors``,
    the weights of a shipped run) -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        files = run_files(path)
        for candidate in (files.checkpoint, files.weights):
            if candidate.exists():
                return candidate
    return path


# ----------------------------------------------------------------------------- atomic writes
def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask (0o644 under the usual
    022). Read from /proc where it can be, so the umask is never changed, even for a moment."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync, then rename it over ``path``:
    a reader sees the old file or the new one, never a partial one. If ``write`` fails the temporary
    file is removed and ``path`` is untouched; if the process is killed, a ``.<name>.*.tmp`` file
    may stay behind, which :func:`remove_stale_temps` deletes (a run does so when it starts).
    The file gets the mode a plain ``open()`` would give it (:func:`default_file_mode`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())  # mkstemp's 0o600 would hide run files from others
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`: never a partial checkpoint at ``path``."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files that :func:`atomic_write` leaves when its process is
    killed mid-write. Only call this while holding the folder's :func:`file_lock` (a live writer's
    temporary file looks the same)."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".*{TEMP_SUFFIX}")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# ----------------------------------------------------------------------------- metric lines
def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line with a single ``write`` on an O_APPEND descriptor: a killed process leaves
    the whole line or none of it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = (line + "\n").encode()
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {path}")
    finally:
        os.close(fd)


def append_record(path: str | os.PathLike, record: dict) -> None:
    """One metrics record as one JSON line (see :func:`append_line`)."""
    append_line(path, json.dumps(record))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (a run directory names its own); [] if none.

    Blank lines are skipped. An incomplete *last* line -- a write cut short by a kill or a full
    disk -- is skipped with a warning; a damaged line anywhere else means the file is not one the
    training engine wrote, and is a ValueError naming the line.
    """
    path = Path(path)
    if path.is_dir():
        path = run_files(path).metrics
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == last:
                warnings.warn(f"{path}:{lineno} is an incomplete last record; skipped")
                continue
            raise ValueError(f"{path}:{lineno} is not valid JSON ({e.msg})") from e
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno} is not a JSON object")
        rows.append(record)
    return rows


# ----------------------------------------------------------------------------- checks
def check_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` if needed and prove a file can be written there."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"output directory {folder} is not writable: {e}") from e


def check_free_space(folder: str | os.PathLike, needed: int, what: str = "a checkpoint") -> None:
    """Refuse to start when ``folder`` cannot hold ``needed`` more bytes (a checkpoint is written
    beside the old one, then renamed over it)."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OutputError(f"not enough free space in {folder}: {what} needs about "
                          f"{needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free; free some space "
                          f"or choose another --out")


# ----------------------------------------------------------------------------- locks
@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = None,
              holder: str = "another process") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (:class:`filelock.FileLock`) for the ``with`` block.

    The operating system drops the lock when the holder exits, however it exits (SIGKILL too), so
    a lock is never left stale; the file itself may stay (empty), and locks nothing. The holder
    writes its pid into the file, which a refused process names. ``timeout``: None waits as long
    as needed (saying once that it waits), 0 (or less) fails at once, otherwise fails after that
    many seconds with :class:`FileLocked`. Two locks of one path exclude each other within a
    process too (each holds its own descriptor).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(path, on_acquired=_write_pid)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if timeout is not None and timeout <= 0:
                raise
            print(_held_message(path, holder) + "; waiting", file=sys.stderr)
            lock.acquire(timeout=-1 if timeout is None else timeout)
    except filelock.Timeout:
        raise FileLocked(_held_message(path, holder) + "; wait for it to finish or use another "
                         "folder") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.truncate(path, 0)  # no pid of a finished holder for the next refusal to name
        lock.release()


def _write_pid(fd: int) -> None:
    """``filelock``'s ``on_acquired`` hook: this process's pid as the lock file's content."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, str(os.getpid()).encode())


def _held_message(path: Path, holder: str) -> str:
    """"<path> is held by <holder> (pid <pid>)", the pid read from the lock file ("?" if none)."""
    try:
        pid = path.read_text().strip() or "?"
    except OSError:  # e.g. Windows: a locked file cannot be read
        pid = "?"
    return f"{path} is held by {holder} (pid {pid})"
