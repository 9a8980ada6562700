"""Where a run executes: ranks (torchrun DDP), the device, and stop requests (SIGINT / SIGTERM)
that every rank obeys at the same step."""
from __future__ import annotations

import os
import re
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist


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


def wants_cuda(device: str) -> bool:
    """Whether the ``device`` setting ("auto", "cpu", "cuda", "cuda:N") asks for a GPU."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def pick_device(device: str, local_rank: int) -> torch.device:
    """The torch device of this rank for the ``device`` setting (auto: cuda when available)."""
    name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if name == "cuda":
            name = f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


def all_ranks_agree(flag: bool, dd: Dist, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (one all-reduce; none alone)."""
    if dd.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t)
    return float(t) > 0


def check_on_main(check: Callable[[], None], dd: Dist, device: torch.device) -> None:
    """Run ``check`` on rank 0; an OSError it raises stops every rank (see
    :func:`raise_on_all_ranks`)."""
    problem = None
    if dd.main:
        try:
            check()
        except OSError as e:
            problem = e
    raise_on_all_ranks(problem, dd, device)


def raise_on_all_ranks(problem: Exception | None, dd: Dist, device: torch.device) -> None:
    """Raise rank 0's ``problem`` there, and a pointer to it on the other ranks, so that no rank
    waits forever for one that stopped."""
    if all_ranks_agree(problem is not None, dd, device) and problem is None:
        raise RuntimeError("rank 0 could not start the run; see its error message")
    if problem is not None:
        raise problem


class PendingVote:
    """One rank's stop vote, all-reduced over the ranks without the host waiting for it: queued
    behind the step in flight, read (:meth:`result`) one step later, when that step is done."""

    def __init__(self, flag: bool, device: torch.device) -> None:
        self.votes = torch.full((1,), float(flag), device=device)  # a fill: no host copy
        self.work = dist.all_reduce(self.votes, async_op=True)
        self.event = None
        if device.type == "cuda":  # to pinned host memory on a side stream, behind the reduce
            self.host = torch.empty(1, pin_memory=True)
            side = torch.cuda.Stream(device)
            with torch.cuda.stream(side):
                self.work.wait()  # NCCL: the side stream (not the step's) waits for it
                self.votes.record_stream(side)
                self.host.copy_(self.votes, non_blocking=True)
                self.event = torch.cuda.Event()
                self.event.record(side)

    def result(self) -> bool:
        """True when any rank voted to stop (waits for this vote only)."""
        if self.event is not None:
            self.event.synchronize()
            return bool(self.host[0] > 0)
        self.work.wait()
        return bool(self.votes[0] > 0)


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
        self._vote: PendingVote | None = None  # several ranks: the last step's, not yet read

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
        """True on every rank, at the same step, once any rank was asked to stop. One process:
        at once. Several ranks: each step's votes are all-reduced without waiting and read after
        the next step, so every rank stops one step after the request and the host never waits
        for the step in flight."""
        if dd.world == 1:
            return self.signal is not None
        stop = self._vote.result() if self._vote is not None else False
        self._vote = None if stop else PendingVote(self.signal is not None, device)
        return stop

    def settle(self) -> None:
        """Wait for a vote still in flight (the run ended first), so none outlives the run."""
        if self._vote is not None:
            self._vote.result()
            self._vote = None


def ignore_sigint(worker_id: int) -> None:
    """DataLoader worker init: workers ignore the stop signals (StopRequest.SIGNALS), which reach
    the whole process group -- Ctrl-C from a terminal, SIGTERM from torchrun (its launcher
    forwards a SIGTERM it gets to each rank's process group), Slurm or ``timeout``. The main
    process finishes its step with them, checkpoints, then shuts them down; had they died, the
    step after the request (DDP ranks stop one step later) would fail with "DataLoader worker is
    killed by signal: Terminated" and no checkpoint. A worker whose main process is gone exits
    by itself (DataLoader's watchdog)."""
    for s in StopRequest.SIGNALS:
        signal.signal(s, signal.SIG_IGN)
