"""Summarise ``bench/results/*.json`` as one Markdown table (stdout and bench/results/summary.md).

    python bench/report.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def f(x, spec=".2f", unit="") -> str:
    return "–" if x is None else f"{x:{spec}}{unit}"


def where(r: dict) -> str:
    m, v = r.get("machine", {}), r.get("versions", {})
    dev = m.get("gpu") or f"{m.get('cpu', '?')}, {m.get('cores')} cores, " \
                           f"{m.get('torch_threads')} thr, load {m.get('load_average', ['?'])[0]}"
    return f"{dev}; torch {v.get('torch')}; {r.get('date', '?')[:10]}"


def met(ok) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def train_step_rows(r: dict) -> list[tuple]:
    out = []
    c = {x["name"]: x for x in r["cpu"]["results"]}
    goal = r.get("goal_cpu", 1.0)
    out.append(("training step, CPU tiny b64 fp32 (img/s)",
                f"MAE {c['ours MAE']['images_per_s']:.0f}, MFF "
                f"{c['ours MFF']['images_per_s']:.0f}",
                f"lightly MAE {c['lightly MAE']['images_per_s']:.0f}",
                f(r["ratio"]) + "×", f"≥ {goal}×", met(r["ratio"] >= goal), where(r)))
    if "ours MAE +compile" in c:
        out.append(("training step, CPU tiny, ours under torch.compile (img/s)",
                    f"{c['ours MAE +compile']['images_per_s']:.0f} (first steps "
                    f"{r['cpu'].get('ours MAE +compile first_steps_seconds', '–')} s)",
                    f"lightly MAE {c['lightly MAE']['images_per_s']:.0f}",
                    f(c["ours MAE +compile"]["vs_lightly"]) + "×", "–", "–", where(r)))
    g = r.get("gpu", {})
    if "results" in g:
        gr = {x["name"]: x for x in g["results"]}
        best = max((x for n, x in gr.items() if n.startswith("ours")),
                   key=lambda x: x["images_per_s"])
        out.append((f"training step, GPU {g['preset']} b{g['batch']} bf16 (img/s)",
                    f"{best['name']} {best['images_per_s']:.0f}",
                    f"lightly {gr['lightly MAE']['images_per_s']:.0f}",
                    f(g["ratio"]) + "×", "≥ 1.3×", met(g["ratio"] >= 1.3), where(r)))
    return out


def hessian_rows(r: dict) -> list[tuple]:
    out = []
    s = r["summary"]
    k1 = s["k1"]
    ours, theirs = k1.get("ours") or {}, k1.get("pyhessian") or {}
    out.append(("Hessian top eigenvalue, tiny MAE b32, 1e-3 rel. accuracy (s, HVPs)",
                f"{f(k1.get('ours_seconds'), '.1f')} s, {ours.get('hvps')} HVPs",
                f"pyhessian {f(k1.get('pyhessian_seconds'), '.1f')} s, "
                f"{theirs.get('hvps')} HVPs", f(r["ratio"]) + "×", "≥ 3×",
                met(None if r["ratio"] is None else r["ratio"] >= 3), where(r)))
    k5 = s.get("k5")
    if k5:
        lb = k5.get("ratio_lower_bound")
        ratio = f(k5.get("ratio")) + "×" if k5.get("ratio") else f"≥ {f(lb)}×"
        p5 = k5.get("pyhessian") or k5.get("pyhessian_tightest_tried") or {}
        out.append(("Hessian top-5 eigenvalues, same problem (s, HVPs)",
                    f"{f(k5.get('ours_seconds') or (k5.get('ours') or {}).get('seconds'), '.1f')}"
                    f" s, {(k5.get('ours') or {}).get('hvps')} HVPs",
                    f"pyhessian {f(k5.get('pyhessian_seconds') or p5.get('seconds'), '.1f')} s,"
                    f" {p5.get('hvps')} HVPs", ratio, "–", "–", where(r)))
    sp = s["spectrum"]
    out.append((f"Hessian spectrum, {sp['batches']} minibatches × top-5, b16 (s)",
                f"{sp['ours_warm_seconds']:.0f} s (warm starts)",
                f"pyhessian {sp['pyhessian_seconds_extrapolated']:.0f} s "
                f"(extrapolated from {sp['extrapolated_from_batches']})",
                f(sp["ratio"]) + "×", "–", "–", where(r)))
    return out


def hessian_exact_rows(r: dict) -> list[tuple]:
    out = []
    by = {(x["engine"], x["k"]): x for x in r["top_k"]}
    for k in (3, 5):
        o, p = by[("lanczos", k)], by[("pyhessian", k)]
        out.append((f"Hessian top-{k}, clustered spectrum (1,792 params, exact Hessian), tol "
                    f"{r['tol']:g}: seeds within tol, HVPs",
                    f"{o['within_tol']}/{o['seeds']}, {o['mean_hvps']:.0f} HVPs, max err "
                    f"{o['max_rel_err']:.0e}",
                    f"pyhessian {p['within_tol']}/{p['seeds']}, {p['mean_hvps']:.0f} HVPs, max "
                    f"err {p['max_rel_err']:.0e}", "–", "all within tol",
                    met(o["within_tol"] == o["seeds"]), where(r)))
    d = r["density"]
    out.append(("Hessian density (SLQ) vs exact, same problem",
                f"{d['hvps']} HVPs, {d['seconds']:.1f} s; L1 {d['l1_density_distance']:.3f}, "
                f"W1 {d['wasserstein1']:.1e}",
                "pyhessian density(): " + ("runs" if d["pyhessian"]["runs"] else
                                           "fails on current torch"), "–", "–", "–", where(r)))
    return out


CPU_BUDGET = 100.0  # ms: a slider move of the tiny explorers on the CPU (bench/slider.py)


def slider_rows(r: dict) -> list[tuple]:
    out = []
    out.append(("mask-ratio slider update, tiny MAE + MFF-MAE, CPU (ms)",
                f"median {r['cpu_median_ms']:.1f}, p95 {r['cpu_p95_ms']:.0f}",
                "budget 100 ms", f(r["ratio"]) + "× (budget ÷ median)",
                "≤ 100 ms (issue 19: ≤ 25)",
                met(r["cpu_median_ms"] <= 100) + f" ({met(r['cpu_median_ms'] <= 25)})", where(r)))
    step = r.get("step_slider")
    if step:  # the training-step slider of the dynamics explorer (issue 32)
        out.append(("training-step slider update, tiny MAE + MFF-MAE, CPU (ms)",
                    f"median {step['median_ms']:.1f}, max {step['max_ms']:.0f} (app built in "
                    f"{step['first_build_s']:.1f} s, {step['cached_build_s']:.1f} s cached)",
                    "budget 100 ms", f(CPU_BUDGET / step["median_ms"]) + "× (budget ÷ median)",
                    "≤ 100 ms", met(step["median_ms"] <= CPU_BUDGET), where(r)))
    if "gpu_median_ms" in r:
        out.append(("mask-ratio slider update, vit-l, GPU (ms)",
                    f"median {r['gpu_median_ms']:.0f}", "budget 300 ms",
                    f(r["ratio_gpu"]) + "×", "≤ 300 ms", met(r["gpu_median_ms"] <= 300),
                    where(r)))
    return out


def knn_monitor_rows(r: dict) -> list[tuple]:
    out = []
    by = {x["model"]: x for x in r["results"]}
    out.append(("kNN monitor share of a tiny run (every "
                f"{by['mae']['knn_every']} steps, {by['mae']['knn_images']} images)",
                ", ".join(f"{k.upper()} {100 * x['share']:.1f} % ({x['evaluations']} × "
                          f"{x['knn_eval_s']:.2f} s)" for k, x in by.items()),
                f"steps {by['mae']['step_s']:.2f} s × {by['mae']['steps']}",
                f(r["ratio"]) + "× (goal ÷ share)", "< 5 %",
                met(r["share"] < r["goal_share"]), where(r)))
    return out


def cli_rows(r: dict) -> list[tuple]:
    out = []
    ref = {c["case"]: c for c in r["cases"]}.get("import torch", {})
    out.append(("command line: --help, settings, argument errors, no torch (s)",
                f"slowest median {r['slowest_median_s']:.2f}",
                f"budget {r['budget_s']:.0f} s (`import torch` alone: "
                f"{f(ref.get('median_s'), '.1f')} s)", f(r["ratio"]) + "× (budget ÷ slowest)",
                "≤ 1 s", met(r["slowest_median_s"] <= r["budget_s"]), where(r)))
    return out


def figures_rows(r: dict) -> list[tuple]:
    out = []
    if "error" in r:
        out.append(("`make figures` end to end", f"failed: {r['error'][:80]}", "–", "–", "–",
                    "–", where(r)))
    else:
        total = r.get("make_figures_seconds")
        out.append(("`make figures` end to end, fresh copy (s)",
                    f"total {f(total, '.0f')} (trainings ended at "
                    f"{f(r.get('train_seconds'), '.0f')}; notebooks beside and after them); "
                    + (f"install {f(r.get('install_seconds'), '.0f')}"
                       if r.get("install_seconds") is not None else "install not timed"),
                    "–", "–", "≤ 300 s", met(total is not None and total <= 300), where(r)))
    return out


def gpu_rows(r: dict) -> list[tuple]:
    out = []
    if r.get("skipped"):
        out.append(("GPU: vit-b throughput, MFU, data pipeline", f"skipped: {r['skipped']}",
                    "–", "–", "≥ 1.3×, MFU ≥ 40 %", "–", where(r)))
    else:
        mfu = r.get("mfu_best_ours")
        d = r.get("data", {})
        out.append(("GPU: vit-b MAE step, bf16 (best of ours ÷ lightly)",
                    f"MFU {f(None if mfu is None else 100 * mfu, '.0f', ' %')}",
                    "lightly MAE", f(r.get("ratio")) + "×", "≥ 1.3×, MFU ≥ 40 %",
                    met(None if r.get("ratio") is None or mfu is None
                        else r["ratio"] >= 1.3 and mfu >= 0.4), where(r)))
        out.append(("GPU: data pipeline, 8 workers, 224 px JPEG (img/s)",
                    f(d.get("images_per_s_8_workers"), ".0f"),
                    f"model step {f(d.get('model_step_images_per_s'), '.0f')}",
                    f(d.get("loader_over_model")) + "× (loader ÷ model)",
                    "not the bottleneck", met(None if d.get("loader_over_model") is None
                                              else d["loader_over_model"] >= 1), where(r)))
    return out


# each result file's rows, in the table's order
ROWS = (("train_step", train_step_rows), ("hessian", hessian_rows),
        ("hessian_exact", hessian_exact_rows), ("slider", slider_rows),
        ("knn_monitor", knn_monitor_rows), ("cli", cli_rows), ("figures", figures_rows),
        ("gpu", gpu_rows))


def rows() -> list[tuple]:
    out = []
    for name, make in ROWS:
        r = load(name)
        if r:
            out += make(r)
    return out


def main() -> None:
    head = ("benchmark", "ours", "peer / budget", "ratio", "goal", "met", "machine / date")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows()]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.md").write_text(text)


if __name__ == "__main__":
    main()
