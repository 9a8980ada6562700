"""The evidence plan: its profiles (sizes) and its jobs -- pretrain MAE and MFF-MAE per seed,
the supervised fusion comparison per seed, a short MAE run per (mask ratio, seed), then per seed
the frequency, linear-probe and Hessian measurements, the fine-tuning series and the training
dynamics (probes at every weight snapshot) on the finished runs -- and where each job's result
lives (``OUT/jobs/<job>.json``). ``evidence_jobs`` runs them, ``evidence_report`` turns their
results into claims."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from workbench.probes.learning import CRITERION_TEST, CRITERION_TRAIN
from workbench.training.settings import IF_ANY, LEARNING_REGIME


@dataclass(frozen=True)
class Profile:
    """Sizes of the plan. ``seeds`` pretraining seeds per model; every per-seed measurement uses
    the pair (MAE seed s, MFF seed s)."""

    name: str
    preset: str = "tiny"
    device: str = "cpu"
    data: str = LEARNING_REGIME["data"]  # pretraining images: the CPU learning regime's
    probe_data: str = "shapes"  # labelled set of the probes and the supervised comparison
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int | None = LEARNING_REGIME["steps"]  # pretraining steps (None: the preset's)
    supervised_batch: int = 32  # the lr, steps and seed are the pretraining run's
    frequency_images: int = 256
    # the learning criterion's sizes (probes.learning): every probe, trained and at init
    probe_train: int = CRITERION_TRAIN
    probe_test: int = CRITERION_TEST
    hessian_batches: int = 6  # per seed, each also on the initialisation: 18 + 18 over 3 seeds
    hessian_batch_size: int = 16
    hessian_k: int = 5
    hessian_tol: float = 1e-2
    # each ratio trained as the pretraining runs are (600 steps of 64), so that each can pass the
    # learning criterion; three ratios (one below MAE's 0.6-0.9 band, two in it) to fit the
    # 120-minute budget (a 600-step run takes ~8 min of one core)
    sweep_ratios: tuple[float, ...] = (0.25, 0.75, 0.9)
    sweep_seeds: tuple[int, ...] = (0, 1, 2)  # 3: a t interval over 2 seeds has 1 df
    sweep_steps: int = LEARNING_REGIME["steps"]
    sweep_batch: int = 64
    # the fine-tuning series per seed (experiments.finetune.finetune_series) on the probe's
    # labelled set, scored on the probe's test images: MAE Fig. 9's k and MFF's few-shot share
    finetune_blocks: tuple[int | str, ...] = (0, 1, "all")
    finetune_fractions: tuple[float, ...] = (0.01, 1.0)
    finetune_steps: int | None = 60  # None: the preset's fine-tuning default
    finetune_batch: int | None = 64
    finetune_settings: tuple[tuple[str, object], ...] = (("mixup", 0), ("cutmix", 0))
    # the training dynamics per seed: every pretraining run keeps weight snapshots at log-spaced
    # steps ("log": 0, 1, 2, 5, ..., the last; ~12 MiB each for the tiny models), measured by the
    # gallery's probes (experiments.dynamics.GALLERY_PROBES); a number: their images, train and
    # test sizes instead
    dynamics_images: int | None = None


PROFILES = {
    "cpu": Profile("cpu"),
    "gpu": Profile("gpu", preset="gpu-small", device="cuda", seeds=(0, 1, 2, 3, 4), steps=None,
                   supervised_batch=256, frequency_images=1024, probe_train=4096,
                   probe_test=2048, hessian_batches=8, hessian_batch_size=64, hessian_tol=1e-3,
                   sweep_ratios=(0.1, 0.25, 0.4, 0.6, 0.75, 0.9), sweep_seeds=(0, 1, 2),
                   sweep_steps=1000, sweep_batch=256),
    # for tests: every job on the smallest sizes that still give every claim its inputs
    "smoke": Profile("smoke", seeds=(0, 1), steps=2, supervised_batch=8, frequency_images=8,
                     probe_train=96, probe_test=16, hessian_batches=1, hessian_batch_size=4,
                     hessian_k=2, hessian_tol=0.5, sweep_ratios=(0.25, 0.75),
                     sweep_seeds=(0,), sweep_steps=2, sweep_batch=8, finetune_steps=2,
                     finetune_batch=8, dynamics_images=8),
}


@dataclass(frozen=True)
class Job:
    stage: str  # pretrain | supervised | sweep | measure | hessian | finetune | dynamics
    seed: int
    kind: str = ""  # mae | mff for pretrain / hessian
    ratio: float | None = None  # sweep
    cost: float = 1.0  # rough relative run time: the costliest ready job starts first

    @property
    def name(self) -> str:
        parts = [self.stage, self.kind, f"r{round(self.ratio * 100)}" if self.ratio else "",
                 f"seed{self.seed}"]
        return "-".join(p for p in parts if p)

    def needs(self) -> list[str]:
        if self.stage in ("measure", "finetune", "dynamics"):
            return [Job("pretrain", self.seed, k).name for k in ("mae", "mff")]
        if self.stage == "hessian":
            return [Job("pretrain", self.seed, self.kind).name]
        return []


def plan(p: Profile) -> list[Job]:
    jobs = [Job("pretrain", s, k, cost=6) for s in p.seeds for k in ("mae", "mff")]
    jobs += [Job("supervised", s, cost=4) for s in p.seeds]
    jobs += [Job("sweep", s, ratio=r, cost=3 + 3 * (1 - r)) for s in p.sweep_seeds
             for r in p.sweep_ratios]
    jobs += [Job("hessian", s, k, cost=5) for s in p.seeds for k in ("mae", "mff")]
    jobs += [Job("measure", s, cost=1) for s in p.seeds]
    jobs += [Job("finetune", s, cost=4) for s in p.seeds]
    jobs += [Job("dynamics", s, cost=2) for s in p.seeds]
    return jobs


def run_path(out: Path, kind: str, seed: int) -> Path:
    return out / "runs" / f"{kind}-seed{seed}"


def pretrain_config(p: Profile, kind: str, seed: int, out: Path):
    from workbench.training import TrainConfig

    return TrainConfig(kind=kind, preset=p.preset, data=p.data, steps=p.steps, seed=seed,
                       device=p.device, out=str(run_path(out, kind, seed)), resume=IF_ANY,
                       picture_every=0, progress=False, snapshot_steps="log")


def result_path(out: Path, job: Job) -> Path:
    return out / "jobs" / f"{job.name}.json"


# stages added after the committed CPU evidence (docs/results/cpu-evidence) was run: a report
# rebuilds without their results, and says their claims were not run
LATER_STAGES = ("finetune", "dynamics")


def missing_results(out: Path, jobs: list[Job]) -> list[str]:
    """The jobs without a result that a report needs (those of :data:`LATER_STAGES` it does
    without)."""
    return [j.name for j in jobs
            if j.stage not in LATER_STAGES and not result_path(out, j).exists()]


def load_results(out: Path, jobs: list[Job]) -> dict[str, dict]:
    """{job name: its result file's contents}, for every job that has one."""
    return {j.name: json.loads(result_path(out, j).read_text()) for j in jobs
            if result_path(out, j).exists()}
