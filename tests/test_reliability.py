"""Reliability and bad input (issue 8): nothing lost, clear errors.

Training runs are killed (SIGKILL at random points and in the middle of a checkpoint write),
interrupted (SIGINT / SIGTERM), starved of disk space and fed bad data or settings; each time the
last checkpoint must load, ``--resume`` must continue to exactly the weights of an uninterrupted
run, and errors must name the problem. Cases already tested elsewhere are listed in the README
section "Reliability: what is guaranteed and how it is tested".

The killed runs are the real command line (``workbench.__main__.main``) in a forked child: the
child starts with torch already imported, so a kill-and-resume cycle costs a fraction of a second
instead of the ~10 s a fresh interpreter takes on a small machine. One slow test does the same
with a real ``python -m workbench`` process.
"""
from __future__ import annotations

import errno
import io
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import workbench.training.loop as train_loop
from workbench.__main__ import main
from workbench.checkpoints import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from workbench.core.io import file_lock
from workbench.data import FolderImages
from workbench.models import MaskedAutoencoder, build_model
from workbench import train
from workbench.training import IF_ANY, Dist, StopRequest, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
from workbench.experiments import figures as make_figures  # noqa: E402

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
STEPS = 40
RUN = dict(steps=STEPS, batch_size=8, ckpt_every=1, log_every=1, warmup=2, base_lr=1e-2,
           picture_every=0, eval_images=8, knn_every=0)
GUARD_S = 120.0  # only so that a hung child fails the test instead of hanging the suite


# ----------------------------------------------------------------------------- helpers
def cli_args(out: Path, **changes) -> list[str]:
    """``python -m workbench train ...`` for the small run (``changes``: more settings), with
    ``--resume`` once the run has a checkpoint (before, --resume would be refused)."""
    settings = {**SMALL, **RUN, **changes}
    resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
    return (["train", "--model", "mff", "--device", "cpu", "--out", str(out), "--no-progress",
             *resume] + [f"--set={k}={v}" for k, v in settings.items()])


def config(out: Path, **changes) -> TrainConfig:
    """The same run as :func:`cli_args`, for an in-process ``train``."""
    return TrainConfig(kind="mff", device="cpu", out=str(out), progress=False, resume=IF_ANY,
                       model_overrides=dict(SMALL), **{**RUN, **changes})


class Child:
    """A forked process: poll / wait / kill without ever leaving a zombie or hanging the suite."""

    def __init__(self, pid: int):
        self.pid, self.status = pid, None

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)  # -N: killed by signal N
        return self.status

    def wait(self) -> int:
        deadline = time.monotonic() + GUARD_S
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"child {self.pid} did not finish")
            time.sleep(0.01)
        return self.status

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)  # a child that just exited is a zombie: kill is harmless


def fork_cli(argv: list[str], log: Path, hook: Callable[[], None] | None = None) -> Child:
    """Run the command line ``argv`` in a forked child writing its output to ``log``; ``hook``
    runs in the child first (to plant a pause or a fault)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process (3.12+)
        pid = os.fork()
    if pid:
        return Child(pid)
    code = 1
    try:  # the child: never return into pytest
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)
        if hook is not None:
            hook()
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported in the log, exit code 1
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def wait_byte(fd: int) -> bytes:
    """One byte from a pipe (b"" once the writer is gone)."""
    ready, _, _ = select.select([fd], [], [], GUARD_S)
    assert ready, "the child never reached the planted pause"
    return os.read(fd, 1)


def metric_steps(run: Path) -> list[int]:
    """Steps of metrics.jsonl's training records (an MFF run's step-0 line of initial fusion
    weights aside, which comes once, first); every line must be a complete JSON record."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    initial = [i for i, r in enumerate(records) if "loss" not in r]
    assert initial in ([], [0]), f"step-0 record(s) at lines {initial}"
    return [r["step"] for r in records if "loss" in r]


def temps(run: Path) -> list[Path]:
    return sorted(run.glob(".*.tmp"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), (k, (wa[k] - wb[k]).abs().max())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread in this process and its forked children: bit-identical runs, no
    oversubscription of the small machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The checkpoint of an uninterrupted run: what every interrupted run must end at."""
    out = tmp_path_factory.mktemp("straight")
    assert train(config(out)).step == STEPS
    return out / "checkpoint.pt"


# ----------------------------------------------------------------------------- SIGKILL
def test_sigkill_at_random_points_never_loses_the_run(tmp_path, straight):
    """Kill the command line with SIGKILL after random delays (reading the checkpoint meanwhile):
    after every kill the checkpoint loads, its step never goes back, every file of the run is
    complete; then ``--resume`` runs to the end and gives the uninterrupted run's weights."""
    run, log = tmp_path / "run", tmp_path / "log.txt"
    rng = random.Random(8)
    last, kills = 0, 0
    for _ in range(12):
        child = fork_cli(cli_args(run), log)
        deadline = time.monotonic() + rng.uniform(0.05, 1.0)
        try:
            while time.monotonic() < deadline and child.poll() is None:
                if (run / "checkpoint.pt").exists():  # a reader while training rewrites it
                    assert read_checkpoint(run / "checkpoint.pt")["step"] >= last
        finally:
            child.kill()
            status = child.wait()
        kills += status == -signal.SIGKILL
        assert status in (0, -signal.SIGKILL), log.read_text()[-3000:]
        if (run / "checkpoint.pt").exists():
            model = load_checkpoint(run / "checkpoint.pt")
            assert model.checkpoint_info.step >= last
            last = model.checkpoint_info.step
        if (run / "config.json").exists():
            json.loads((run / "config.json").read_text())
        if (run / "metrics.jsonl").exists():
            metric_steps(run)  # no torn line
        if status == 0:
            break
    assert kills >= 1, "no run was killed"
    assert main(cli_args(run)) == 0  # --resume to the end
    assert load_checkpoint(run / "checkpoint.pt").checkpoint_info.step == STEPS
    assert_same_weights(run / "checkpoint.pt", straight)
    assert metric_steps(run) == list(range(1, STEPS + 1))
    assert temps(run) == []


def test_sigkill_in_the_middle_of_a_checkpoint_write(tmp_path, straight, capsys):
    """The 4th checkpoint write stops half-way and the process is killed there: the step-3
    checkpoint is intact, the half-written temporary file is removed by the resumed run, which
    ends at the uninterrupted run's weights."""
    run = tmp_path / "run"
    ready_r, ready_w = os.pipe()

    def hook() -> None:
        real, calls = torch.save, [0]

        def half_then_hang(obj, f, *args, **kwargs):
            calls[0] += 1
            if calls[0] < 4:
                return real(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            real(obj, buf, *args, **kwargs)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.write(ready_w, b"x")
            time.sleep(GUARD_S)  # killed here

        torch.save = half_then_hang

    child = fork_cli(cli_args(run), tmp_path / "log.txt", hook)
    try:
        assert wait_byte(ready_r) == b"x"
    finally:
        child.kill()
        child.wait()
        os.close(ready_r)
        os.close(ready_w)
    assert read_checkpoint(run / "checkpoint.pt")["step"] == 3
    left = temps(run)
    assert [p.name.startswith(".checkpoint.pt.") for p in left] == [True]
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(left[0])  # the kill really cut a write short
    capsys.readouterr()
    assert train(config(run)).step == STEPS
    assert "removed 1 temporary file" in capsys.readouterr().out  # information: stdout
    assert temps(run) == []
    assert_same_weights(run / "checkpoint.pt", straight)
    assert metric_steps(run) == list(range(1, STEPS + 1))


def test_reader_sees_only_complete_checkpoints_while_training_rewrites(tmp_path):
    """Every checkpoint write pauses half-way until the test has read checkpoint.pt: each read,
    made while a newer file is half-written, gets the complete previous checkpoint."""
    run = tmp_path / "run"
    mid_r, mid_w = os.pipe()
    done_r, done_w = os.pipe()

    def hook() -> None:
        real = torch.save

        def paused(obj, f, *args, **kwargs):
            buf = io.BytesIO()
            real(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.write(mid_w, b"m")  # half written: the test reads now
            os.read(done_r, 1)
            f.write(data[len(data) // 2:])

        torch.save = paused

    child = fork_cli(cli_args(run, steps=8), tmp_path / "log.txt", hook)
    os.close(mid_w)  # EOF on mid_r once the child exits
    seen = []
    try:
        while wait_byte(mid_r):
            path = run / "checkpoint.pt"
            seen.append(read_checkpoint(path)["step"] if path.exists() else None)
            os.write(done_w, b"d")
        assert child.wait() == 0
    finally:
        child.kill()
        child.wait()
        for fd in (mid_r, done_r, done_w):
            os.close(fd)
    assert seen == [None] + list(range(1, 8))  # during write k: the complete file of step k - 1
    assert read_checkpoint(run / "checkpoint.pt")["step"] == 8


# ----------------------------------------------------------------------------- SIGINT / SIGTERM
def pause_in_step(k: int, ready_w: int, go_r: int) -> Callable[[], None]:
    """A child hook: in the forward pass of step ``k``, tell the test and wait for its go."""
    def hook() -> None:
        real, calls = MaskedAutoencoder.forward_loss, [0]

        def paused(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == k:
                os.write(ready_w, b"r")
                os.read(go_r, 1)  # the signal arrives while the child waits here
            return real(self, *args, **kwargs)

        MaskedAutoencoder.forward_loss = paused
    return hook


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_finishes_the_step_checkpoints_and_exits_0(tmp_path, straight, sig):
    k = 5
    run, log = tmp_path / "run", tmp_path / "log.txt"
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = fork_cli(cli_args(run), log, pause_in_step(k, ready_w, go_r))
    try:
        assert wait_byte(ready_r) == b"r"  # the child is inside step k
        os.kill(child.pid, sig)
        os.write(go_w, b"g")
        assert child.wait() == 0, log.read_text()[-3000:]
    finally:
        child.kill()
        child.wait()
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
    text = log.read_text()
    name = signal.Signals(sig).name
    assert f"{name}: interrupted at step {k}/{STEPS}" in text and "resume with --resume" in text
    assert read_checkpoint(run / "checkpoint.pt")["step"] == k  # the step in progress, finished
    assert metric_steps(run) == list(range(1, k + 1))
    before = signal.getsignal(sig)
    result = train(config(run))
    assert result.step == STEPS and result.interrupted is None
    assert signal.getsignal(sig) is before  # train() put the previous handler back
    assert_same_weights(run / "checkpoint.pt", straight)


def test_second_sigterm_stops_at_once_keeping_the_last_checkpoint(tmp_path):
    k = 4
    run, log = tmp_path / "run", tmp_path / "log.txt"
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()

    def hook() -> None:  # at step k: wait for the first SIGTERM to be seen, then for a second one
        real, calls = MaskedAutoencoder.forward_loss, [0]

        def paused(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == k:
                os.write(ready_w, b"1")
                handler = signal.getsignal(signal.SIGTERM)
                while handler.__self__.signal is None:  # the StopRequest's bound handler
                    time.sleep(0.001)
                os.write(ready_w, b"2")
                os.read(go_r, 1)
            return real(self, *args, **kwargs)

        MaskedAutoencoder.forward_loss = paused

    child = fork_cli(cli_args(run), log, hook)
    try:
        assert wait_byte(ready_r) == b"1"
        os.kill(child.pid, signal.SIGTERM)
        assert wait_byte(ready_r) == b"2"
        os.kill(child.pid, signal.SIGTERM)
        assert child.wait() == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
    assert load_checkpoint(run / "checkpoint.pt").checkpoint_info.step == k - 1


def test_stop_request_is_only_installed_in_the_main_thread():
    before = signal.getsignal(signal.SIGTERM)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("s", StopRequest().install()))
    t.start()
    t.join()
    assert signal.getsignal(signal.SIGTERM) is before  # a thread cannot take the signals
    s = StopRequest().install()
    assert signal.getsignal(signal.SIGTERM) == s._handle
    s.restore()
    assert signal.getsignal(signal.SIGTERM) is before


# ----------------------------------------------------------------------------- disk, directory
def test_disk_full_mid_run_names_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                       capsys):
    run = tmp_path / "run"
    real, calls = torch.save, [0]

    def full_disk(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    assert main(cli_args(run, steps=6)) == 1
    err = capsys.readouterr().err
    assert "could not write the checkpoint" in err and "at step 3" in err
    assert "No space left on device" in err and "(intact)" in err and "(step 2)" in err
    assert load_checkpoint(run / "checkpoint.pt").checkpoint_info.step == 2
    assert temps(run) == []  # the partial temporary file was removed


def test_not_enough_free_space_is_an_error_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: types.SimpleNamespace(total=10**9, used=10**9, free=1000))
    run = tmp_path / "run"
    assert main(cli_args(run)) == 1
    assert "not enough free space" in capsys.readouterr().err
    assert not (run / "checkpoint.pt").exists() and not (run / "metrics.jsonl").exists()


def test_a_second_training_into_a_directory_in_use_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    with file_lock(run / ".lock"):  # as a running training holds it
        assert main(cli_args(run)) == 1
    err = capsys.readouterr().err
    assert "held by another training run" in err and f"pid {os.getpid()}" in err
    assert not (run / "checkpoint.pt").exists()


def test_a_killed_lock_holder_leaves_no_stale_lock(tmp_path):
    """A process that dies holding a run's lock (SIGKILL: no clean-up of its own) is named while
    it lives and leaves nothing that blocks the next run: the lock file stays, locking nothing."""
    from workbench.core.io import FileLocked

    run = tmp_path / "run"
    holder = ("import sys, time\nfrom workbench.core.io import file_lock\n"
              f"with file_lock({str(run / '.lock')!r}):\n"
              "    print('held', flush=True)\n    time.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", holder], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert select.select([proc.stdout], [], [], GUARD_S)[0]
        assert proc.stdout.readline() == "held\n"
        with pytest.raises(FileLocked, match=rf"held by another training run \(pid {proc.pid}\)"):
            with file_lock(run / ".lock", 0, holder="another training run"):
                pass
    finally:
        proc.kill()
        proc.wait(GUARD_S)
    with file_lock(run / ".lock", 0):  # at once: the kernel dropped the dead holder's lock
        assert (run / ".lock").read_text() == str(os.getpid())
    assert [p.name for p in run.iterdir()] == [".lock"] and (run / ".lock").read_text() == ""
    with file_lock(run / ".lock", 0):  # the file left behind blocks nothing
        pass


def test_nan_before_any_checkpoint_writes_none(tmp_path, monkeypatch, capsys):
    real = MaskedAutoencoder.forward_loss
    monkeypatch.setattr(MaskedAutoencoder, "forward_loss",
                        lambda self, *a: real(self, *a) * float("inf"))
    run = tmp_path / "run"
    assert main(cli_args(run)) == 1
    err = capsys.readouterr().err
    assert "loss is" in err and "at step 1" in err and "Last good checkpoint: none written" in err
    assert not (run / "checkpoint.pt").exists() and temps(run) == []


def test_resume_from_a_corrupt_checkpoint_is_refused_and_keeps_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(cli_args(run, steps=2)) == 0
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(cli_args(run, steps=4)) == 1
    assert "truncated or corrupt" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == data[: len(data) // 2]  # left for the user


# ----------------------------------------------------------------------------- data
def odd_folder(root: Path) -> Path:
    """Images smaller than a 16 px crop and in every mode the loader converts."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (7, 5, 3), dtype=np.uint8)).save(root / "a/tiny.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "a/pixel.png")
    Image.fromarray(rng.integers(0, 255, (40, 3), dtype=np.uint8), "L").save(root / "a/sliver.png")
    Image.fromarray(rng.integers(0, 65535, (10, 10), dtype=np.uint16)).save(root / "a/deep16.png")
    Image.new("LA", (20, 20), (90, 128)).save(root / "a/gray_alpha.png")
    Image.new("RGB", (40, 40), (0, 90, 0)).save(root / "b/plain.png")
    Image.new("RGBA", (30, 12), (0, 0, 200, 100)).save(root / "b/rgba.png")
    Image.new("RGB", (30, 30), (50, 50, 50)).convert("P").save(root / "b/palette.png")
    return root


def test_small_and_odd_images_are_converted_counted_and_train(tmp_path, capsys):
    root = odd_folder(tmp_path / "imgs")
    ds = FolderImages(root, 16, "train")
    assert len(ds) == 8 and ds.skipped == []
    assert ds.converted == {"smaller than 16 px (upscaled)": 5, "grayscale -> RGB": 2,
                            "16-bit -> 8-bit RGB": 1, "alpha dropped": 2, "palette -> RGB": 1}
    for train_transform in (True, False):
        view = FolderImages(root, 16, "train", train_transform=train_transform)
        for i in range(len(view)):
            x, _ = view[(i, i)] if train_transform else view[i]
            assert x.shape == (3, 16, 16) and torch.isfinite(x).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no held-out files in so small a folder
        result = train(config(tmp_path / "run", data=str(root), steps=2))
    assert result.step == 2 and np.isfinite(result.loss)
    out = capsys.readouterr().out  # information goes to stdout, problems to stderr
    assert "8 images in 2 classes" in out and "5 smaller than 16 px (upscaled)" in out


def test_empty_image_folders_are_errors_before_training(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = tmp_path / "no_images"
    (no_images / "cls").mkdir(parents=True)
    (no_images / "cls" / "notes.txt").write_text("not an image")
    for data, message in [(empty, "no class subfolders"), (no_images, "no readable images")]:
        run = tmp_path / f"run-{data.name}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(cli_args(run, data=str(data))) == 1
        assert message in capsys.readouterr().err
        assert not (run / "checkpoint.pt").exists()


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize("setting,message", [
    ("mask_ratio=1.0", r"mask_ratio must be in \[0, 1\)"),
    ("mask_ratio=-0.1", r"mask_ratio must be in \[0, 1\)"),
    ("img_size=18", "img_size 18 is not divisible by patch_size 4"),
    ("fuse_layers=[0,5]", r"fuse_layers \[5\] out of range for an encoder of depth 2"),
])
def test_bad_settings_are_errors_at_start(tmp_path, capsys, setting, message):
    run = tmp_path / "run"
    assert main(cli_args(run) + [f"--set={setting}"]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not run.exists()  # nothing was created


def test_batch_smaller_than_ranks_is_an_error_at_start(tmp_path, monkeypatch):
    monkeypatch.setattr(train_loop, "setup_distributed", lambda kind: Dist(0, 4, 0, False))
    with pytest.raises(ValueError, match=r"batch size 2 is smaller than ranks \(4\)"):
        train(config(tmp_path / "run", batch_size=2))
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- figure batch
def tiny_checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    mae, mff = tmp_path / "mae.pt", tmp_path / "mff.pt"
    save_checkpoint(build_model("mae", **SMALL), mae)
    save_checkpoint(build_model("mff", **SMALL), mff)
    return mae, mff


def test_batch_names_a_half_written_checkpoint_before_any_work(tmp_path, capsys):
    mae, mff = tiny_checkpoints(tmp_path)
    data = mae.read_bytes()
    mae.write_bytes(data[: len(data) // 2])  # as if copied while still being written
    out = tmp_path / "figures"
    with pytest.raises(SystemExit):
        make_figures.main(["--mae", str(mae), "--mff", str(mff), "--out", str(out)])
    err = capsys.readouterr().err
    assert "--mae checkpoint cannot be used" in err and str(mae) in err
    assert "truncated or corrupt" in err
    assert not (out / "manifest.json").exists()


def test_two_batches_into_one_figures_folder_take_turns(tmp_path, monkeypatch):
    """While one batch holds figures/.lock a second one waits (and writes nothing), or with
    ``--lock-timeout 0`` fails at once naming the lock; released, the second one runs."""
    mae, mff = tiny_checkpoints(tmp_path)
    params = tmp_path / "none.yaml"
    params.write_text("[]\n")  # no notebooks: only the gallery files
    out = tmp_path / "figures"
    argv = ["--mae", str(mae), "--mff", str(mff), "--out", str(out), "--params", str(params)]

    class Watch(io.StringIO):  # stderr that tells when the batch says it waits
        def __init__(self):
            super().__init__()
            self.waiting = threading.Event()

        def write(self, text):
            if "waiting" in text:
                self.waiting.set()
            return super().write(text)

    stderr = Watch()
    monkeypatch.setattr(sys, "stderr", stderr)
    box = {}
    with file_lock(out / ".lock"):  # the first batch
        assert make_figures.main(argv + ["--lock-timeout", "0"]) == 1
        assert "held by another make_figures run" in stderr.getvalue()
        second = threading.Thread(target=lambda: box.setdefault("rc", make_figures.main(argv)))
        second.start()
        assert stderr.waiting.wait(GUARD_S)
        assert not (out / "manifest.json").exists()  # it waits, writing nothing
    second.join(GUARD_S)
    assert box.get("rc") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["figures"] == [] and (out / "index.html").exists()
    assert temps(out) == []


# ----------------------------------------------------------------------------- slow, end to end
@pytest.mark.slow
def test_real_process_sigterm_sigkill_and_resume(tmp_path, straight):
    """The same guarantees with real ``python -m workbench train`` processes (start-up ~10 s)."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def cmd() -> list[str]:  # built at each start: --resume once there is a checkpoint
        return [sys.executable, "-m", "workbench", *cli_args(run), "--set=threads=1"]

    def start_and_wait_for(step: int) -> subprocess.Popen:
        proc = subprocess.Popen(cmd(), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # the run's whole output
        deadline = time.monotonic() + 4 * GUARD_S
        while not ((run / "checkpoint.pt").exists()
                   and read_checkpoint(run / "checkpoint.pt")["step"] >= step):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        return proc

    proc = start_and_wait_for(2)
    proc.send_signal(signal.SIGTERM)
    err, _ = proc.communicate(timeout=GUARD_S)  # stdout and stderr together
    assert proc.returncode == 0 and "SIGTERM: interrupted at step" in err, err[-3000:]
    stopped = read_checkpoint(run / "checkpoint.pt")["step"]
    proc = start_and_wait_for(stopped + 2)
    proc.kill()
    proc.communicate(timeout=GUARD_S)
    assert load_checkpoint(run / "checkpoint.pt").checkpoint_info.step >= stopped + 2
    done = subprocess.run(cmd(), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=4 * GUARD_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(run / "checkpoint.pt", straight)


@pytest.mark.slow
def test_notebook_reports_a_half_written_checkpoint(tmp_path):
    """A notebook given a truncated checkpoint fails with a record naming the file and the reason;
    the batch goes on."""
    mae, mff = tiny_checkpoints(tmp_path)
    data = mff.read_bytes()
    mff.write_bytes(data[: len(data) // 2])
    common = {"MAE_CHECKPOINT": str(mae), "MFF_CHECKPOINT": str(mff),
              "MAE_RUN_DIR": str(tmp_path), "MFF_RUN_DIR": str(tmp_path)}
    record = make_figures.run_notebook({"name": "masks", "notebook": "mask_sampling.ipynb",
                                        "parameters": {"N_IMAGES": 1}},
                                       tmp_path / "figures", common)
    assert record["status"] == "failed"
    assert "CheckpointError" in record["error"] and "truncated or corrupt" in record["error"]
    assert str(mff) in record["error"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_run_files_get_the_users_normal_permissions(tmp_path, umask, mode):
    """Atomic writes (checkpoint, config, gallery files) get the mode a plain open() would give
    -- 0644 under the usual umask, not mkstemp's 0600 -- and still follow a stricter umask."""
    from workbench.core.io import atomic_write_text, default_file_mode

    old = os.umask(umask)
    try:
        assert default_file_mode() == mode
        atomic_write_text(tmp_path / "a.json", "{}")
        run = tmp_path / f"run{umask}"
        train(TrainConfig(kind="mff", preset="tiny", model_overrides=dict(
            img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32,
            decoder_depth=1, decoder_num_heads=2), steps=1, batch_size=8, out=str(run),
            device="cpu", progress=False, picture_every=0, eval_images=4))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl"):
        assert (run / name).stat().st_mode & 0o777 == mode, name
