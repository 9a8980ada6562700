"""GPU benchmark: vit-b MAE pretraining throughput, model FLOPs utilisation, data pipeline,
training loop end to end, and the vit-l slider latency -- one command, a few minutes.

Sections (each in its own try/except: one failure still writes the others):

* step     ours eager, ours ``torch.compile``d and lightly's MAE (eager), vit-b, bf16 autocast,
           batch 256, synthetic images, interleaved rounds (``train_step.gpu_section``);
           ``ratio`` = best of ours ÷ lightly (goal ≥ 1.3).
* mfu      FLOPs of one forward + backward counted with ``torch.utils.flop_counter.FlopCounterMode``
           (matmuls, convolutions, attention), × steps/s ÷ the GPU's dense bf16 peak
           (H100 SXM / H200: 989 TFLOP/s, H100 PCIe 756, A100 312; ``--peak-tflops`` overrides);
           goal ≥ 40 % for the model step on synthetic data.
* data     the workbench's FolderImages + MAE transform (RandomResizedCrop 224 bicubic + flip) over
           synthetic JPEGs (~500×375, written to a temp dir), 8 DataLoader workers (and all
           cores), images/s, against the model step's images/s.
* loop     ``workbench.train`` end to end on that folder (vit-b, bf16, 8 workers, eager):
           images/s of its last logged interval.
* slider   ``ReconstructionExplorer`` update latency with vit-l (goal ≤ 300 ms).

Without CUDA it writes ``{"skipped": "no CUDA device"}`` and exits 0 at once.
``--smoke`` runs every section on the CPU at toy sizes (checks the code paths, not speed).

    python bench/gpu.py                 # writes bench/results/gpu.json
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import traceback
from pathlib import Path

import torch

import common
from common import header, median, write_result

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), first match on the device name
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("H200", 989.0), ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0),
                    ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0))
MFU_GOAL = 0.40


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return value
    return None


def count_step_flops(stepper) -> float:
    """FLOPs of one training step of ``stepper``, counted by dispatch (matmuls, convolutions,
    attention: the optimizer's elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        stepper.step()
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------ data
def _write_jpegs(args):
    root, start, stop, seed = args
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed + start)
    for i in range(start, stop):
        h, w = (375, 500) if i % 3 else (500, 375)
        small = rng.integers(0, 256, (h // 25, w // 25, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(
            Path(root) / f"c{i % 8}" / f"img_{i:05d}.jpg", quality=90)


def make_jpeg_folder(root: Path, n: int) -> float:
    """``n`` synthetic photos-like JPEGs in ``root/c0..c7`` (ImageNet layout); returns MB."""
    from multiprocessing import Pool
    for c in range(8):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    chunks = [(str(root), s, min(n, s + 64), 0) for s in range(0, n, 64)]
    with Pool(min(16, os.cpu_count() or 1)) as pool:
        pool.map(_write_jpegs, chunks)
    return sum(p.stat().st_size for p in root.rglob("*.jpg")) / 1e6


def loader_throughput(root: Path, img_size: int, batch: int, workers: int, steps: int,
                      skip: int = 3) -> dict:
    from torch.utils.data import DataLoader

    from workbench.data import FolderImages, StepBatches
    ds = FolderImages(root, img_size, "train", train_transform=True, verify=False)
    order = StepBatches(len(ds), batch, seed=0, steps=steps + skip)
    loader = DataLoader(ds, batch_sampler=order, num_workers=workers,
                        pin_memory=torch.cuda.is_available(), persistent_workers=False)
    it = iter(loader)
    t0 = time.perf_counter()
    for _ in range(skip):  # worker start-up and the first prefetch
        next(it)
    startup = time.perf_counter() - t0
    t = time.perf_counter()
    n = 0
    for imgs, _ in it:
        n += imgs.shape[0]
    dt = time.perf_counter() - t
    return dict(workers=workers, images=n, seconds=round(dt, 2), images_per_s=n / dt,
                startup_seconds=round(startup, 2), dataset_images=len(ds))


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (code paths only)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=3000, help="synthetic JPEGs for the data test")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not listed")
    ap.add_argument("--budget", type=float, default=420, help="seconds; later sections are "
                    "skipped once spent")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    common.setup()
    t_start = time.perf_counter()
    if not torch.cuda.is_available() and not args.smoke:
        print("bench/gpu.py: no CUDA device; writing a skipped result")
        write_result("gpu", {"ratio": None, "skipped": "no CUDA device",
                             "reason": "the GPU benchmark needs CUDA; run `python bench/gpu.py` "
                                       "on a GPU machine"}, args.out)
        return
    smoke = args.smoke
    device = torch.device("cpu" if smoke else "cuda")
    preset = "tiny" if smoke else "vit-b"
    batch = 8 if smoke else args.batch
    img_size = 32 if smoke else 224
    out_path = args.out or (Path(tempfile.gettempdir()) / "gpu-smoke.json" if smoke else None)
    header("GPU: vit-b MAE throughput, MFU, data pipeline" + (" [SMOKE, CPU]" if smoke else ""))
    res: dict = {"ratio": None, "smoke": smoke, "preset": preset, "batch": batch,
                 "goal_ratio": 1.3, "goal_mfu": MFU_GOAL, "errors": {}}
    name = "cpu (smoke)" if smoke else torch.cuda.get_device_name(0)
    peak = args.peak_tflops or peak_tflops(name)
    res["device"], res["peak_bf16_tflops"] = name, peak

    def budget_left() -> float:
        return args.budget - (time.perf_counter() - t_start)

    def run(section, fn):
        if budget_left() <= 0:
            res[section] = {"skipped": f"time budget of {args.budget:.0f} s spent"}
            print(f"-- {section}: skipped (budget)")
            return
        t = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one failing section must not lose the others
            res["errors"][section] = f"{type(e).__name__}: {e}"
            res.setdefault(section, {})["error"] = res["errors"][section]
            print(f"-- {section} FAILED: {e}")
            traceback.print_exc()
        finally:
            if isinstance(res.get(section), dict):
                res[section]["section_seconds"] = round(time.perf_counter() - t, 1)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    import train_step as ts

    def step_section():
        sec = ts.gpu_section(device, preset, batch, rounds=2 if smoke else args.rounds,
                             steps=2 if smoke else 10, compile_ours=not (smoke or args.no_compile))
        res["step"] = sec
        res["ratio"] = sec["ratio"]
        res["ratio_eager"] = sec["ratio_eager"]

    def mfu_section():
        ours = ts.Ours("mae", preset, device, batch, bf16=True)
        peer = ts.Peer(preset, device, batch, bf16=True)
        flops_ours, flops_peer = count_step_flops(ours), count_step_flops(peer)
        sec = {"flops_per_step": flops_ours, "flops_per_image": flops_ours / batch,
               "lightly_flops_per_step": flops_peer,
               "counted": "FlopCounterMode, one training step (forward + backward; optimizer not counted)"}
        step = res.get("step", {}).get("results", [])
        rows = {r["name"]: r["images_per_s"] for r in step}
        if not rows:  # the step section failed or was skipped: measure eager ours here
            rows = {"ours MAE": median([ours.run(3 if smoke else 10) for _ in range(3)])}
        for key, ips in rows.items():
            f = flops_peer if key.startswith("lightly") else flops_ours
            tflops = f * ips / batch / 1e12
            sec[key] = {"images_per_s": ips, "achieved_tflops": tflops,
                        "mfu": (tflops / peak) if peak else None}
        best = max((v for k, v in sec.items() if k.startswith("ours")),
                   key=lambda v: v["images_per_s"])
        sec["mfu_best_ours"] = best["mfu"]
        res["mfu"] = sec
        res["mfu_best_ours"] = best["mfu"]
        del ours, peer

    tmp = Path(tempfile.mkdtemp(prefix="mim-bench-gpu-"))
    folder = tmp / "jpegs"

    def data_section():
        n = 96 if smoke else args.images
        t = time.perf_counter()
        mb = make_jpeg_folder(folder, n)
        sec = {"jpegs": n, "megabytes": round(mb, 1), "generate_seconds":
               round(time.perf_counter() - t, 1), "transform": "FolderImages + RandomResizedCrop "
               f"{img_size} bicubic + flip + normalise, uint8 PIL decode", "loaders": []}
        counts = [2] if smoke else sorted({8, os.cpu_count() or 8})
        for w in counts:
            r = loader_throughput(folder, img_size, batch, w, steps=3 if smoke else 24)
            sec["loaders"].append(r)
            print(f"   {w} workers: {r['images_per_s']:.0f} images/s")
        eight = next((r for r in sec["loaders"] if r["workers"] == 8), sec["loaders"][0])
        sec["images_per_s_8_workers"] = eight["images_per_s"]
        step = res.get("step", {}).get("results", [])
        best = max((r["images_per_s"] for r in step if r["name"].startswith("ours")), default=None)
        if best:
            sec["model_step_images_per_s"] = best
            sec["loader_over_model"] = eight["images_per_s"] / best
            sec["bottleneck"] = ("data" if eight["images_per_s"] < best else "model")
        res["data"] = sec

    def loop_section():
        from workbench.core.io import read_metrics
        from workbench import TrainConfig, train
        if not folder.exists():
            make_jpeg_folder(folder, 96 if smoke else args.images)
        steps = 4 if smoke else 40
        cfg = TrainConfig(kind="mae", preset=preset, data=str(folder), steps=steps,
                          batch_size=batch, num_workers=2 if smoke else 8,
                          precision="fp32" if smoke else "bf16",
                          device=device.type, out=str(tmp / "run"), ckpt_every=0,
                          picture_every=0, eval_images=4, log_every=2 if smoke else 10,
                          progress=False, warmup=1)
        r = train(cfg)
        metrics = read_metrics(tmp / "run")
        ips = [m["images_per_s"] for m in metrics if "images_per_s" in m]
        sec = {"steps": steps, "batch": batch, "workers": cfg.num_workers, "precision":
               cfg.precision, "compile": False, "images_per_s_last_interval": r.images_per_s,
               "images_per_s_per_interval": ips, "wall_seconds": round(r.wall_s, 1)}
        eager = next((x["images_per_s"] for x in res.get("step", {}).get("results", [])
                      if x["name"] == "ours MAE"), None)
        if eager:
            sec["model_step_eager_images_per_s"] = eager
            sec["loop_over_model_step"] = r.images_per_s / eager
        res["loop"] = sec

    def slider_section():
        import slider
        if smoke:
            res["slider"] = slider.cpu_section(3)["explorer"][1]
            return
        sec = slider.gpu_section(30, "vit-l")
        row = sec["explorer"][0]
        res["slider"] = sec
        res["slider_median_ms"] = row["median_ms"]
        res["slider_ratio"] = slider.GPU_BUDGET_MS / row["median_ms"]

    run("step", step_section)
    run("mfu", mfu_section)
    run("data", data_section)
    run("loop", loop_section)
    run("slider", slider_section)
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"device {name}, peak bf16 {peak} TFLOP/s")
    if "step" in res and "results" in res["step"]:
        for r in res["step"]["results"]:
            print(f"  {r['name']:22s} {r['images_per_s']:9.1f} images/s")
        print(f"  ratio best ours ÷ lightly: {res['ratio']:.3f} (goal ≥ 1.3)")
    if res.get("mfu_best_ours") is not None:
        print(f"  MFU (best ours): {100 * res['mfu_best_ours']:.1f} % (goal ≥ 40 %)")
    if "data" in res and "images_per_s_8_workers" in res["data"]:
        print(f"  data pipeline, 8 workers: {res['data']['images_per_s_8_workers']:.0f} images/s "
              f"(bottleneck: {res['data'].get('bottleneck')})")
    if "loop" in res and "images_per_s_last_interval" in res["loop"]:
        print(f"  train loop end to end: {res['loop']['images_per_s_last_interval']:.0f} images/s")
    if "slider_median_ms" in res:
        print(f"  vit-l slider: median {res['slider_median_ms']:.0f} ms (goal ≤ 300 ms)")
    if res["errors"]:
        print(f"  errors: {res['errors']}")
    res["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_result("gpu", res, out_path)


if __name__ == "__main__":
    main()
