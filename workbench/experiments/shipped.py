"""The weights the project trains itself and ships: the gallery's tiny MAE and MFF-MAE.

``make figures`` must show models that have learned (issue 28), and training them takes longer
than its 10-minute budget on two cores, so the two runs of the CPU learning regime are committed
under ``weights/<name>/``: ``model.safetensors`` (float16, to stay under the 25 MB the project
allows for shipped weights), the run's ``config.json`` and ``metrics.jsonl`` (the fusion and
monitor curves the notebooks draw), and ``provenance.json``: the exact command, seed, thread
count and commit that made them, the digest of the weights after the command's first
:data:`FINGERPRINT_STEPS` steps (``tests/test_shipped.py`` reruns those steps and compares them
bit for bit) and the run's learning check against its initialisation.

``analysis/ship_weights.py`` makes them; ``make figures TRAIN=1`` trains the same command afresh.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..training.settings import LEARNING_REGIME

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIR = ROOT / "weights"
FINGERPRINT_STEPS = 2  # steps of the command rerun by the reproduction test
SHIPPED_DTYPE = torch.float16
SHIPPED_LIMIT_BYTES = 25 * 10**6  # the project's limit for weights it ships, all files together
THREADS = 1  # one thread: the same float sums whatever the machine's core count


@dataclass(frozen=True)
class ShippedRun:
    kind: str  # model kind
    name: str  # folder under weights/
    seed: int = 0

    @property
    def folder(self) -> Path:
        return SHIPPED_DIR / self.name

    @property
    def weights(self) -> Path:
        return self.folder / "model.safetensors"

    @property
    def provenance(self) -> Path:
        return self.folder / "provenance.json"

    def command(self, out: str | os.PathLike) -> list[str]:
        """The ``python -m workbench`` arguments that train this run into ``out``."""
        return ["train", "--model", self.kind, "--preset", "tiny", "--data",
                str(LEARNING_REGIME["data"]), "--device", "cpu", "--steps",
                str(LEARNING_REGIME["steps"]), "--seed", str(self.seed), "--set",
                f"threads={THREADS}", "--out", str(out)]

    def argv(self, out: str | os.PathLike, *extra: str) -> list[str]:
        """The full command line: this interpreter, ``-m workbench``, :meth:`command`, ``extra``."""
        return [sys.executable, "-m", "workbench", *self.command(out), *extra]

    def read_provenance(self) -> dict:
        if not self.provenance.exists():
            raise FileNotFoundError(f"{self.provenance} is missing: the shipped {self.name} "
                                    f"weights have no provenance; run analysis/ship_weights.py")
        return json.loads(self.provenance.read_text())


SHIPPED_RUNS = {"mae": ShippedRun("mae", "mae-tiny"), "mff": ShippedRun("mff", "mff-tiny")}


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes in name order: equal digests
    mean bit-identical weights."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def shipped_bytes() -> int:
    """Bytes of every file under ``weights/``."""
    return sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file())
