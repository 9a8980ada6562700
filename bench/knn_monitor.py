"""What the kNN monitor costs a tiny pretraining run: ``train --knn-every`` at its default.

The monitor (``workbench.probes.monitor``) encodes a fixed labelled bank and its held-out
queries at mask ratio 0 and votes (DINO's weighted kNN) at step 0 and every ``knn_every`` steps.
Its share of a run = evaluations × seconds per evaluation ÷ (steps × seconds per training step),
with the step the product's own ``train_step`` on the state ``build_train_state`` makes for the
preset's defaults (batch 64), and both timed interleaved in one process on the same model.

Goal: under 5 % of the training time (``ratio`` = 5 % ÷ the measured share; ≥ 1 meets it).

    python bench/knn_monitor.py
"""
from __future__ import annotations

import time

import torch

import common
from common import header, interleave, median, table, write_result

from workbench.data import StepBatches, build_dataset
from workbench.training import TrainConfig, build_train_state, resolve, train_step
from workbench.probes.monitor import build_monitor
from workbench.training.settings import build_model_config

GOAL = 0.05


def evaluations(steps: int, every: int) -> int:
    """Monitor evaluations of a run: step 0, every ``every`` steps, and the last step."""
    return 1 + steps // every + (1 if steps % every else 0)


def measure(kind: str, rounds: int, steps_per_round: int = 4) -> dict:
    cfg = resolve(TrainConfig(kind=kind, preset="tiny", device="cpu"))
    state = build_train_state(cfg, build_model_config(cfg), torch.device("cpu"), "fp32")
    data = build_dataset(cfg.data, state.raw.cfg.img_size, "train", train_transform=True)
    order = StepBatches(len(data), cfg.batch_size, cfg.seed, steps=cfg.steps)
    batches = iter(torch.utils.data.DataLoader(data, batch_sampler=order))
    t = time.perf_counter()
    monitor = build_monitor(cfg.data, cfg.knn_data, state.raw.cfg.img_size, cfg.knn_images)
    build_s = time.perf_counter() - t

    def steps() -> float:
        start = time.perf_counter()
        for _ in range(steps_per_round):
            imgs, _ = next(batches)
            train_step(state, [(imgs, order.mask_seeds(state.step, 0))])
        return (time.perf_counter() - start) / steps_per_round

    def evaluate() -> float:
        start = time.perf_counter()
        monitor.accuracy(state.raw)
        return time.perf_counter() - start

    times = interleave({"step": steps, "knn": evaluate}, rounds=rounds)
    step_s, knn_s = median(times["step"]), median(times["knn"])
    n = evaluations(cfg.steps, cfg.knn_every)
    share = (n * knn_s + build_s) / (cfg.steps * step_s)
    return {"model": kind, "steps": cfg.steps, "knn_every": cfg.knn_every,
            "knn_images": cfg.knn_images, "evaluations": n, "step_s": step_s,
            "knn_eval_s": knn_s, "build_s": build_s, "share": share}


def main(rounds: int = 5) -> None:
    common.setup()
    header("kNN monitor: share of a tiny run's training time")
    rows = [measure(kind, rounds) for kind in ("mae", "mff")]
    print(table(rows, [("model", "model"), ("step_s", "step s"), ("knn_eval_s", "kNN eval s"),
                       ("evaluations", "evals"), ("build_s", "build s"), ("share", "share")]))
    worst = max(r["share"] for r in rows)
    write_result("knn_monitor", {"ratio": GOAL / worst, "goal_share": GOAL, "share": worst,
                                 "rounds": rounds, "results": rows})


if __name__ == "__main__":
    main()
