"""Shared bookkeeping for the benchmarks: machine and versions, interleaved timing, result files.

Every benchmark times our code and its peer *in the same process, interleaved*: round ``i`` runs
ours then the peer, round ``i+1`` the peer then ours, and so on; each side's figure is the
median over rounds. The machine is shared (other jobs come and go), so absolute numbers drift
from run to run, but both sides see the same drift and their ratio is what the results report.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

PACKAGES = ("torch", "torchvision", "timm", "lightly", "pyhessian", "numpy", "mim-workbench")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Where the numbers were taken: CPU, cores, torch threads, load, GPU if any."""
    import torch

    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "load_average": [round(x, 2) for x in os.getloadavg()],
           "platform": platform.platform()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["cuda"] = torch.version.cuda
    return out


def setup() -> None:
    """What every benchmark's ``main`` does first: ``BENCH_THREADS=N`` pins torch to N threads
    (steadier on a machine shared with other jobs)."""
    if os.environ.get("BENCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))


def versions() -> dict:
    from workbench.core.provenance import git_commit, package_versions

    return {**package_versions(PACKAGES), "git_commit": git_commit(ROOT, short=True)}


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def write_result(name: str, result: dict, path: str | Path | None = None) -> Path:
    """``bench/results/<name>.json``: ``ratio`` first, then the benchmark's figures, then the
    machine, versions and date (atomic write)."""
    body = {"benchmark": name, "ratio": result.pop("ratio", None), **result,
            "machine": machine(), "versions": versions(), "date": now()}
    path = Path(path) if path else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1, default=_plain) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path


def _plain(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def interleave(contenders: dict[str, Callable[[], float]], rounds: int,
               warmup: int = 1) -> dict[str, list[float]]:
    """Call every contender ``warmup`` times, then ``rounds`` times alternating the order
    (ABC, CBA, ABC, ...). Each call returns its own measurement (seconds, or any figure);
    returns the measurements per contender."""
    names = list(contenders)
    for _ in range(warmup):
        for n in names:
            contenders[n]()
    out = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(contenders[n]())
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def percentile(xs, q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def timed(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> float:
    """Wall seconds of one call (``sync`` before and after, e.g. torch.cuda.synchronize)."""
    if sync:
        sync()
    t = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - t


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A plain-text table: ``columns`` = [(key, header)], values formatted already or numbers."""
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)
    cells = [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, (_, h) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def header(title: str) -> None:
    m = machine()
    print(f"== {title}")
    print(f"   {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, load "
          f"{m['load_average']}" + (f", {m['gpu']}" if "gpu" in m else ""))
