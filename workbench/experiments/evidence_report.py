"""The evidence report from the job results (``evidence_plan.load_results``): every claim through
``workbench.experiments.findings``, ``claims.json``, ``findings.md`` with its appendix (the
learning criterion run by run, the controls, the figures) and ``forest.png``."""
from __future__ import annotations

import json
from pathlib import Path

from workbench.experiments.evidence_plan import Job, Profile, pretrain_config

ROOT = Path(__file__).resolve().parents[2]


def evidence_claims(p: Profile, results: dict[str, dict]) -> list:
    """Every claim from the job results, through ``workbench.experiments.findings``, each with its own
    verdict; :func:`write_report` decides them as one family (Holm). A claim about runs that do
    not pass the learning criterion (:func:`learning_failures`) is "not testable" here: its
    verdict would be about initialisations."""
    import numpy as np

    from workbench.experiments import findings
    from workbench.probes import FrequencyResponse, FusionHistory, KnnHistory
    from workbench.training.schedule import lr_sum
    from workbench.training.settings import resolve

    def r(job: Job) -> dict:
        return results[job.name]["result"]

    measured = [r(Job("measure", s)) for s in p.seeds]
    freq = {k: [FrequencyResponse.from_dict(m["frequency"][k]) for m in measured]
            for k in ("mae", "mff")}
    eigs = {k: [np.asarray(r(Job("hessian", s, k))["eigenvalues"]) for s in p.seeds]
            for k in ("mae", "mff")}
    sweep = [np.asarray([r(Job("sweep", s, ratio=q))["probe_correct"] for q in p.sweep_ratios])
             for s in p.sweep_seeds]
    fusion = [FusionHistory.from_dict(m["fusion"]) for m in measured]
    supervised = [FusionHistory.from_dict(r(Job("supervised", s))["history"]) for s in p.seeds]
    attainable = [findings.attainable_depth_shift(h.layers, lr_sum(resolve(
        pretrain_config(p, "mff", s, Path("."))))) for h, s in zip(fusion, p.seeds)]
    models = [
        findings.fusion_moves_shallow_vs_supervised(fusion, supervised, attainable),
        findings.fusion_moves_shallow(fusion),
        findings.supervised_fusion_favors_last(supervised),
        findings.shallow_layers_more_high_frequency("MAE", freq["mae"]),
        findings.shallow_layers_more_high_frequency("MFF-MAE", freq["mff"]),
        findings.mff_last_layer_less_high_frequency(freq["mae"], freq["mff"]),
        findings.mff_flatter_hessian(eigs["mae"], eigs["mff"]),
        findings.mff_better_linear_probe([m["probe_correct"]["mae"] for m in measured],
                                         [m["probe_correct"]["mff"] for m in measured],
                                         what="linear probe (mean pool)"),
    ] + ([findings.mff_converges_faster(*([KnnHistory(**m["knn"][k]) for m in measured]
                                          for k in ("mae", "mff")))]
         if all("knn" in m for m in measured) else [])  # measured before the kNN monitor: none
    tuned = finetune_claims(p, results)
    failed = learning_failures(p, results)
    if failed["models"]:
        why = ("runs that do not pass the learning criterion: " + ", ".join(failed["models"]))

        def mark(claims: list) -> list:  # the supervised run's own claim needs no pretraining
            return [c if c.claim.startswith("with a supervised objective") else
                    findings.not_testable(c, why) for c in claims]

        models, tuned = mark(models), mark(tuned)
    ratio = findings.high_mask_ratio_best(list(p.sweep_ratios), sweep)
    if failed["sweep"]:
        ratio = findings.not_testable(ratio, "sweep runs that do not pass the learning "
                                             "criterion: " + ", ".join(failed["sweep"]))
    ordered = [*models[:-1], ratio, models[-1]] if len(models) > 8 else [*models, ratio]
    return ordered + tuned


def stage_results(p: Profile, results: dict[str, dict], stage: str) -> list[dict] | None:
    """The per-seed results of a stage of :data:`evidence_plan.LATER_STAGES`, in seed order, or
    None when a seed's job has none (job files older than that stage)."""
    names = [Job(stage, s).name for s in p.seeds]
    return [results[n]["result"] for n in names] if all(n in results for n in names) else None


def finetune_claims(p: Profile, results: dict[str, dict]) -> list:
    """The fine-tuning series' claims over the seeds (``experiments.finetune.series_claims``), or,
    when a seed's fine-tuning job has no result (a report of jobs older than that stage), the
    same claims "not testable", with no numbers."""
    from workbench.experiments import findings
    from workbench.experiments.finetune import FinetuneSeries, series_claims

    found = stage_results(p, results, "finetune")
    if found is not None:
        return series_claims([FinetuneSeries.from_dict(r) for r in found])
    absent = [n for n in (Job("finetune", s).name for s in p.seeds) if n not in results]
    why = (f"not run: no result for {', '.join(absent)} (these job files predate the "
           f"fine-tuning stage; run the profile to add it)")
    return [findings.not_measured(findings.partial_ft_text("MAE"), why),
            findings.not_measured(findings.FEW_SHOT_TEXT, why)]


def describe(p: Profile, seconds: float | None) -> str:
    from workbench.core.provenance import git_commit

    steps = "the preset's" if p.steps is None else str(p.steps)
    wall = "" if seconds is None else \
        f" Wall time of the jobs, over every invocation: {seconds / 60:.1f} min."
    return (f"Profile `{p.name}` (`analysis/evidence.py`): {len(p.seeds)} pretraining seeds "
            f"{list(p.seeds)} each of MAE and MFF-MAE at the `{p.preset}` preset ({steps} steps) "
            f"on `{p.data}`; probes on the built-in `{p.probe_data}` set "
            f"({p.frequency_images} images for frequency, linear probe {p.probe_train} train / "
            f"{p.probe_test} test, C by 5-fold cross-validation); Hessian top-{p.hessian_k} on "
            f"{p.hessian_batches} augmented training minibatches of {p.hessian_batch_size} per "
            f"seed (tol {p.hessian_tol:g}); supervised fusion per seed with the pretraining run's "
            f"steps, peak lr, warmup and seed (batch {p.supervised_batch}); mask-ratio sweep over "
            f"{list(p.sweep_ratios)} x seeds {list(p.sweep_seeds)}, {p.sweep_steps} steps of "
            f"{p.sweep_batch}; fine-tuning series per seed (the last k of "
            f"{list(p.finetune_blocks)} "
            f"blocks on every label, every block on label shares {list(p.finetune_fractions)}; "
            f"{p.finetune_steps or 'the preset default'} steps of "
            f"{p.finetune_batch or 'the preset default'}, {dict(p.finetune_settings)}; scored on "
            f"the probe's {p.probe_test} test images); training dynamics per seed (the gallery's "
            f"probes at every log-spaced weight snapshot of the pretraining runs"
            f"{'' if p.dynamics_images is None else f', {p.dynamics_images} images each'}). "
            f"With several seeds each claim is tested over the seeds (a seed's "
            f"images or minibatches are averaged first).{wall} Commit {git_commit(ROOT)}.")


def write_report(out: Path, p: Profile, claims: list, seconds: float | None) -> None:
    """``claims.json``, ``findings.md`` and ``forest.png``. The report's claims are one family:
    their verdicts are Holm-adjusted over it (``workbench.experiments.findings.adjust_family``), and each
    claim keeps ``p``, ``p_two``, ``p_adjusted`` and its own verdict (``verdict_unadjusted``)."""
    from workbench import plots
    from workbench.experiments.findings import adjust_family, findings_markdown
    from workbench.core.io import atomic_write_text

    claims = adjust_family(claims)
    atomic_write_text(out / "claims.json", json.dumps([c.to_dict() for c in claims], indent=2))
    atomic_write_text(out / "findings.md", findings_markdown(claims, p.name, describe(p, seconds)))
    plots.save_figure(plots.forest_figure(claims, f"{p.name} profile: effect ± 95% interval"),
                      out, "forest")


def add_wall_seconds(out: Path, seconds: float) -> None:
    from workbench.core.io import atomic_write_text

    path = out / "wall_seconds.json"
    before = json.loads(path.read_text())["seconds"] if path.exists() else 0.0
    atomic_write_text(path, json.dumps({"seconds": before + seconds}))


def wall_seconds(out: Path) -> float:
    return json.loads((out / "wall_seconds.json").read_text())["seconds"]


# ----------------------------------------------------------------------------- learning, controls
def learning_failures(p: Profile, results: dict[str, dict]) -> dict[str, list[str]]:
    """Runs that do not pass the learning criterion, by what depends on them: "models" (the
    MAE / MFF-MAE pretraining runs, from the measure jobs) and "sweep" (the mask-ratio runs)."""
    failed: dict[str, list[str]] = {"models": [], "sweep": []}
    for s in p.seeds:
        for kind, rec in results[Job("measure", s).name]["result"]["learning"].items():
            if not rec["passed"]:
                failed["models"].append(f"{kind} seed {s} ({100 * rec['gain']:+.1f} points)")
    for s in p.sweep_seeds:
        for q in p.sweep_ratios:
            rec = results[Job("sweep", s, ratio=q).name]["result"]["learning"]
            if not rec["passed"]:
                failed["sweep"].append(f"ratio {q:g} seed {s} ({100 * rec['gain']:+.1f} points)")
    return failed


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def learning_table(p: Profile, results: dict[str, dict]) -> list[str]:
    """Markdown rows: every run's learning check (trained vs its initialisation, paired on the
    same held-out images) and the raw-pixel baseline."""
    from workbench.probes.learning import MIN_GAIN, MIN_GAIN_LOW

    lines = ["## The learning criterion, run by run", "",
             f"A linear probe on mean-pooled frozen features of the built-in shapes ({p.probe_train} "
             f"train / {p.probe_test} held-out images, 8 classes, chance 12.5 %), each run against "
             f"its own initialisation (the same config and seed at step 0), paired image by image. "
             f"A run passes with a gain >= {100 * MIN_GAIN:.0f} points and the 95 % interval above "
             f"+{100 * MIN_GAIN_LOW:.0f}. Claims about runs that fail are reported as not testable.",
             "", "| run | trained % | init % | raw pixels % | gain, points [95 % CI] | passes |",
             "|---|---|---|---|---|---|"]

    def row(name: str, rec: dict, pixels: str) -> str:
        return (f"| {name} | {_pct(rec['trained'])} | {_pct(rec['init'])} | {pixels} | "
                f"{100 * rec['gain']:+.1f} [{100 * rec['ci'][0]:+.1f}, {100 * rec['ci'][1]:+.1f}] | "
                f"{'yes' if rec['passed'] else '**no**'} |")

    for s in p.seeds:
        m = results[Job("measure", s).name]["result"]
        pixels = _pct(sum(m["pixels_correct"]) / len(m["pixels_correct"]))
        lines += [row(f"{LABEL[k]} seed {s}", rec, pixels) for k, rec in m["learning"].items()]
    for s in p.sweep_seeds:
        for q in p.sweep_ratios:
            rec = results[Job("sweep", s, ratio=q).name]["result"]["learning"]
            lines.append(row(f"sweep MAE, mask ratio {q:g}, seed {s}", rec, "–"))
    return lines


LABEL = {"mae": "MAE", "mff": "MFF-MAE"}


def controls_table(p: Profile, results: dict[str, dict]) -> list[str]:
    """Markdown rows: each per-model measurement on the trained model and on the same seed's
    initialisation (the control), so that a claim's pattern can be told from what an untrained
    ViT already shows."""
    import numpy as np

    from workbench.experiments.findings import depth_slope
    from workbench.probes import FrequencyResponse

    def slope(r: FrequencyResponse) -> float:  # of the mean curve, over the blocks
        rows = r.block_rows
        return float(depth_slope(np.asarray(r.high_frequency, dtype=float)[rows],
                                 np.asarray(r.depth, dtype=float)[rows]))

    lines = ["## Controls: trained against initialisation, seed by seed", "",
             "| seed | model | high-frequency slope over depth, trained / init | last block "
             "high frequency, trained / init | median top Hessian eigenvalue, trained / init |",
             "|---|---|---|---|---|"]
    for s in p.seeds:
        m = results[Job("measure", s).name]["result"]
        for k in ("mae", "mff"):
            tr = FrequencyResponse.from_dict(m["frequency"][k])
            ini = FrequencyResponse.from_dict(m["frequency_init"][k])
            h = results[Job("hessian", s, k).name]["result"]
            med = [float(np.median(np.abs(np.asarray(h[key]))[:, 0]))
                   for key in ("eigenvalues", "init_eigenvalues")]
            lines.append(f"| {s} | {LABEL[k]} | {slope(tr):+.3f} / {slope(ini):+.3f} | "
                         f"{tr.high_frequency[tr.last_block_row]:+.3f} / "
                         f"{ini.high_frequency[ini.last_block_row]:+.3f} | "
                         f"{med[0]:.3g} / {med[1]:.3g} |")
    return lines


def finetune_table(p: Profile, results: dict[str, dict]) -> list[str]:
    """Markdown rows: every seed's fine-tuning series, held-out top-1 (%) per run; [] when the
    fine-tuning jobs have no results."""
    from workbench.experiments.finetune import FinetuneSeries, run_name

    found = stage_results(p, results, "finetune")
    if found is None:
        return []
    runs = [(k, 1.0) for k in p.finetune_blocks] + \
        [("all", f) for f in p.finetune_fractions if f != 1.0]
    lines = ["## Fine-tuning, seed by seed", "", "Held-out top-1 (%) on the probe's test images: "
             "k = the last blocks tuned on every label; f = the share of the labels, every block "
             "tuned.", "", "| seed | model | " + " | ".join(run_name(*r) for r in runs) + " |",
             "|---|---|" + "---|" * len(runs)]
    for s, r in zip(p.seeds, found):
        series = FinetuneSeries.from_dict(r)
        lines += [f"| {s} | {m} | " + " | ".join(_pct(series.top1(m, *r)) for r in runs) + " |"
                  for m in series.models]
    return lines + [""]


def dynamics_section(out: Path, p: Profile,
                     results: dict[str, dict]) -> tuple[list[str], list[str]]:
    """(Markdown lines, figure files) of the training dynamics over the seeds: each probe against
    the step with the seeds as a band, and each headline number's change from the first
    snapshot to the last with its 95 % t interval over the seeds; ([], []) when the dynamics
    jobs have no results."""
    from workbench.experiments.dynamics import change_markdown, change_table, dynamics_figures
    from workbench.probes import OverTraining

    found = stage_results(p, results, "dynamics")
    if found is None:
        return [], []
    series: dict[str, dict[str, list]] = {}
    for result in found:
        for probe, by_model in result.items():
            for model, r in by_model.items():
                series.setdefault(probe, {}).setdefault(model, []).append(
                    OverTraining.from_dict(r))
    files = [f.name for f in dynamics_figures(series, out) if f.suffix == ".png"]
    lines = ["## Training dynamics, over the seeds", "",
             f"Every probe at each weight snapshot of the pretraining runs (seeds {list(p.seeds)}; "
             "figures: the mean over the seeds with their min-max band), and each number's change "
             "from the first snapshot (the initialisation) to the last, with the 95 % t interval "
             "of the mean change over the seeds.", "", change_markdown(change_table(series))]
    return lines, files


def evidence_figures(out: Path, p: Profile, results: dict[str, dict]) -> list[str]:
    """Every seed's learning curves, fusion trajectories against the supervised contrast and
    frequency curves against the initialisation, from the job results; returns the files."""
    from workbench import plots
    from workbench.probes import FrequencyResponse, FusionHistory

    measured = [results[Job("measure", s).name]["result"] for s in p.seeds]
    figures = {
        "learning_curves": plots.learning_curves_figure(
            {k: [m["curves"][k] for m in measured] for k in ("mae", "mff")}, p.seeds),
        "fusion_trajectories": plots.fusion_trajectories_figure(
            [FusionHistory.from_dict(m["fusion"]) for m in measured],
            [FusionHistory.from_dict(results[Job("supervised", s).name]["result"]["history"])
             for s in p.seeds], p.seeds),
        "frequency_seeds": plots.frequency_seeds_figure(
            {k: [FrequencyResponse.from_dict(m["frequency"][k]) for m in measured]
             for k in ("mae", "mff")},
            {k: [FrequencyResponse.from_dict(m["frequency_init"][k]) for m in measured]
             for k in ("mae", "mff")}, p.seeds)}
    for name, fig in figures.items():
        plots.save_figure(fig, out, name)
    return [f"{name}.png" for name in figures]


def report_appendix(out: Path, p: Profile, results: dict[str, dict]) -> str:
    """The report's second half: the learning criterion per run, the controls, the fine-tuning
    series and the training dynamics (when run), the figures."""
    files = evidence_figures(out, p, results)
    dynamics, dynamics_files = dynamics_section(out, p, results)
    lines = ["", *learning_table(p, results), "", *controls_table(p, results), "",
             *finetune_table(p, results), *dynamics, "## Figures", "",
             *[f"![{f}]({f})" for f in ["forest.png", *files, *dynamics_files]], ""]
    return "\n".join(lines)


def append_appendix(out: Path, p: Profile, results: dict[str, dict]) -> None:
    from workbench.core.io import atomic_write_text

    report = (out / "findings.md").read_text()
    atomic_write_text(out / "findings.md", report + report_appendix(out, p, results))
