"""Interactive latency of the mask-ratio slider: ``ReconstructionExplorer`` updates; and of the
training-step slider of ``DynamicsExplorer`` (the training-dynamics notebook's app).

One update = what the slider's callback does when the value changes: reconstruct the current
image with every model (seeded mask, eval, no grad), compose the panels, encode the PNG and set
the widget's value. Timed as the wall time of ``explorer.ratio.value = r`` (the observer runs
synchronously), over a back-and-forth drag of the slider; median, p95 and max. Not included: the
kernel -> browser message and the browser's redraw of a PNG of a few kB (a few ms on a local
JupyterLab).

Budgets: tiny on a CPU ≤ 100 ms, vit-l on a GPU ≤ 300 ms. There is no peer, so ``ratio`` is
budget ÷ median latency (higher is better, ≥ 1 meets the budget) for the notebook's own setup:
the tiny MAE and MFF-MAE side by side on the CPU.

The step slider: the tiny MAE and MFF-MAE trained 10 steps with ``snapshot_steps=log`` (5
snapshots each), the app built once to measure and cache its probes, then again from the cache
(what a second opening of the notebook costs), and a drag of its step slider over every step: one
move reconstructs with that step's models and swaps the probes' picture drawn at the start. Same
budget: 100 ms on the CPU.

    python bench/slider.py            # CPU tiny; + vit-l when CUDA is available
"""
from __future__ import annotations

import argparse
import time

import torch

import common
from common import header, median, percentile, table, write_result

from workbench import build_model
from workbench.data import heldout_batch
from workbench.core.pictures import compose_rows, png_bytes
from workbench.probes import reconstruct
from workbench.widgets import ReconstructionExplorer

CPU_BUDGET_MS, GPU_BUDGET_MS = 100.0, 300.0


def drag(n: int) -> list[float]:
    """Slider positions of a back-and-forth drag, 0.05 .. 0.95 in steps of 0.05."""
    up = [round(0.05 * i, 2) for i in range(1, 20)]
    seq = up + up[-2:0:-1]
    return [seq[i % len(seq)] for i in range(n)]


def explorer_latency(models: dict, imgs: torch.Tensor, updates: int = 30,
                     sync=None) -> dict:
    ex = ReconstructionExplorer(models, imgs, mask_ratio=0.75)
    for r in (0.5, 0.25, 0.75):  # warm-up (first-call allocations, lazy imports)
        ex.ratio.value = r
    wall, inner = [], []
    for r in drag(updates + 1)[1:]:
        if abs(ex.ratio.value - r) < 1e-9:
            continue
        if sync:
            sync()
        t = time.perf_counter()
        ex.ratio.value = r  # observer -> update(): reconstruct + compose + PNG
        if sync:
            sync()
        wall.append((time.perf_counter() - t) * 1e3)
        inner.append(ex.last_ms)
    return dict(updates=len(wall), median_ms=median(wall), p95_ms=percentile(wall, 95),
                max_ms=max(wall), widget_last_ms_median=median(inner),
                png_bytes=len(ex.image.value), all_ms=[round(x, 2) for x in wall])


def probe_latency(model, imgs, n=30, sync=None) -> dict:
    """``probes.reconstruct`` alone (no drawing), as the old bench_reconstruct did."""
    reconstruct(model, imgs)
    ts = []
    for seed in range(n):
        if sync:
            sync()
        t = time.perf_counter()
        reconstruct(model, imgs, seed=seed)
        if sync:
            sync()
        ts.append((time.perf_counter() - t) * 1e3)
    return dict(median_ms=median(ts), p95_ms=percentile(ts, 95), max_ms=max(ts))


def median_ms(f, n: int = 30) -> float:
    """Median wall ms of ``f()`` over ``n`` calls (``common.timed``), after 3 warm-up calls."""
    for _ in range(3):
        f()
    return median([1e3 * common.timed(f) for _ in range(n)])


def update_parts(models: dict, imgs: torch.Tensor, ratio: float = 0.5) -> dict:
    """Where one update's milliseconds go (median ms per part, all models together): the model
    forwards alone (already in eval, no grad), the eval-mode switch, the un-normalisation with
    visible-patch statistics, the whole of ``reconstruct`` (one model after the other, and the
    explorer's one thread per model), composing, PNG encoding."""
    from workbench.models import eval_mode
    from workbench.probes.reconstruction import unnormalize_patches

    x, scale = imgs[:1], max(1, 160 // imgs.shape[-1])
    explorer = ReconstructionExplorer(models, x, mask_ratio=ratio, seed=0)
    with torch.no_grad():
        outs = {n: m(x, mask_ratio=ratio, seed=0) for n, m in models.items()}
    res = {n: reconstruct(m, x, ratio) for n, m in models.items()}
    pic = compose_rows(res, 0, scale)

    def forwards():
        with torch.no_grad():
            for m in models.values():
                m(x, mask_ratio=ratio, seed=0)

    def switch():
        for m in models.values():
            with eval_mode(m):
                pass

    def unnormalise():
        for n, m in models.items():
            unnormalize_patches(m, outs[n].pred, x, outs[n].mask)

    parts = {"model forwards": forwards, "eval-mode switch": switch,
             "un-normalise (visible stats)": unnormalise,
             "reconstruct() total": lambda: [reconstruct(m, x, ratio) for m in models.values()],
             "reconstruct(), models in threads (the explorer's)": explorer.reconstruct_all,
             "compose_rows": lambda: compose_rows(res, 0, scale),
             "png_bytes": lambda: png_bytes(pic)}
    return {name: round(median_ms(f), 3) for name, f in parts.items()}


def cpu_section(updates: int) -> dict:
    torch.manual_seed(0)
    mae, mff = build_model("mae", "tiny").eval(), build_model("mff", "tiny").eval()
    imgs, _ = heldout_batch(32, 6, seed=0)
    rows = []
    for label, models in (("tiny MAE + MFF-MAE (notebook)", {"MAE": mae, "MFF-MAE": mff}),
                          ("tiny MAE", {"MAE": mae}), ("tiny MFF-MAE", {"MFF-MAE": mff})):
        r = explorer_latency(models, imgs, updates)
        rows.append(dict(setup=label, device="cpu", budget_ms=CPU_BUDGET_MS, **r))
    probe = []
    for kind, m in (("mae", mae), ("mff", mff)):
        for n in (1, 4, 8):
            x = torch.randn(n, 3, 32, 32)
            probe.append(dict(model=f"tiny {kind}", images=n, **probe_latency(m, x)))
    parts = update_parts({"MAE": mae, "MFF-MAE": mff}, imgs)
    return dict(explorer=rows, reconstruct_only=probe, update_parts_ms=parts)


def step_slider_section(repeats: int = 6) -> dict:
    """The training-step slider of the dynamics explorer over two tiny 10-step runs."""
    import tempfile
    from pathlib import Path

    from workbench import TrainConfig, train
    from workbench.widgets import DynamicsExplorer

    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for label, kind in (("MAE", "mae"), ("MFF-MAE", "mff")):
            runs[label] = Path(tmp) / kind
            train(TrainConfig(kind=kind, preset="tiny", steps=10, batch_size=16, data="shapes",
                              snapshot_steps="log", out=str(runs[label]), progress=False,
                              knn_every=0, picture_every=0, ckpt_every=0, eval_images=16))
        imgs, _ = heldout_batch(32, 4, seed=0)
        t = time.perf_counter()
        DynamicsExplorer(runs, imgs)  # measures every probe at every snapshot, draws the panels
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        app = DynamicsExplorer(runs, imgs)  # from probe_cache/
        cached_s = time.perf_counter() - t
        timing = app.latency(repeats=repeats)
    return dict(setup="tiny MAE + MFF-MAE, 5 snapshots each", device="cpu",
                budget_ms=CPU_BUDGET_MS, first_build_s=round(first_s, 2),
                cached_build_s=round(cached_s, 2), **timing)


def gpu_section(updates: int, preset: str = "vit-l") -> dict:
    """vit-l (fp32 weights, eval) on the GPU; the images come back to the CPU for the PNG."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model("mae", preset).to(dev).eval()
    imgs, _ = heldout_batch(224, 4, seed=0)
    imgs = imgs.to(dev)
    sync = torch.cuda.synchronize
    r = explorer_latency({"MAE": model}, imgs, updates, sync=sync)
    row = dict(setup=f"{preset} MAE", device=torch.cuda.get_device_name(0),
               budget_ms=GPU_BUDGET_MS, **r)
    probe = dict(model=f"{preset} mae", images=1, **probe_latency(model, imgs[:1], sync=sync))
    del model
    torch.cuda.empty_cache()
    return dict(explorer=[row], reconstruct_only=[probe])


def print_rows(rows):
    print(table(rows, [("setup", "setup"), ("device", "device"), ("updates", "updates"),
                       ("median_ms", "median ms"), ("p95_ms", "p95 ms"), ("max_ms", "max ms"),
                       ("budget_ms", "budget ms")]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    common.setup()
    header("mask-ratio slider latency (ReconstructionExplorer update)")
    res = {"definition": "wall ms of one slider change: reconstruct every model + compose + PNG "
                         "encode (browser redraw not included); ratio = 100 ms budget ÷ median "
                         "for the tiny MAE + MFF-MAE explorer on the CPU (no peer)"}
    cpu = cpu_section(args.updates)
    res["cpu"] = cpu
    print_rows(cpu["explorer"])
    print(table(cpu["reconstruct_only"],
                [("model", "reconstruct() only"), ("images", "images"), ("median_ms", "median ms"),
                 ("p95_ms", "p95 ms")]))
    print(table([dict(part=k, ms=v) for k, v in cpu["update_parts_ms"].items()],
                [("part", "one update, tiny MAE + MFF-MAE, ratio 0.5"), ("ms", "median ms")]))
    main_row = cpu["explorer"][0]
    res["ratio"] = CPU_BUDGET_MS / main_row["median_ms"]
    res["cpu_median_ms"], res["cpu_p95_ms"] = main_row["median_ms"], main_row["p95_ms"]
    res["goal_cpu_ms"] = CPU_BUDGET_MS
    res["step_slider"] = step = step_slider_section()
    print(table([step], [("setup", "step slider (DynamicsExplorer)"), ("updates", "updates"),
                         ("median_ms", "median ms"), ("max_ms", "max ms"),
                         ("first_build_s", "first build s"), ("cached_build_s", "cached build s"),
                         ("budget_ms", "budget ms")]))
    if torch.cuda.is_available() and not args.no_gpu:
        try:
            res["gpu"] = gpu_section(args.updates)
            g = res["gpu"]["explorer"][0]
            res["ratio_gpu"] = GPU_BUDGET_MS / g["median_ms"]
            res["gpu_median_ms"], res["goal_gpu_ms"] = g["median_ms"], GPU_BUDGET_MS
            print_rows(res["gpu"]["explorer"])
        except Exception as e:  # noqa: BLE001 - keep the CPU result
            res["gpu"] = {"error": f"{type(e).__name__}: {e}"}
            print(f"GPU section failed: {e}")
    else:
        res["gpu"] = {"skipped": "no CUDA device"}
    print(f"ratio (100 ms budget ÷ median, tiny MAE + MFF-MAE on CPU): {res['ratio']:.2f}")
    write_result("slider", res, args.out)


if __name__ == "__main__":
    main()
