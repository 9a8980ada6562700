"""Latency of ``probes.reconstruct`` for the tiny models (the slider budget is 100 ms).

    python bench/bench_reconstruct.py
"""
from __future__ import annotations

import statistics
import time

import torch

from workbench import build_model
from workbench.probes import reconstruct


def main() -> None:
    torch.manual_seed(0)
    for kind in ("mae", "mff"):
        model = build_model(kind, "tiny")
        for n in (1, 4, 8):
            imgs = torch.randn(n, 3, 32, 32)
            reconstruct(model, imgs)  # warm-up
            times = []
            for seed in range(30):
                start = time.perf_counter()
                reconstruct(model, imgs, seed=seed)
                times.append(time.perf_counter() - start)
            print(f"{kind} tiny, {n} images: median {1e3 * statistics.median(times):.1f} ms, "
                  f"max {1e3 * max(times):.1f} ms ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
