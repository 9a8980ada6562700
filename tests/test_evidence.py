"""The evidence profile's plan, run end to end at the smoke sizes, and resumed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.experiments import evidence, findings
from workbench.experiments.evidence_plan import pretrain_config
from workbench.training.settings import LEARNING_REGIME


def test_plan_covers_every_claim_input():
    p = evidence.PROFILES["cpu"]
    jobs = evidence.plan(p)
    names = [j.name for j in jobs]
    assert len(names) == len(set(names))  # one result file per job
    assert sum(j.stage == "pretrain" for j in jobs) == 2 * len(p.seeds) >= 6
    assert sum(j.stage == "sweep" for j in jobs) == len(p.sweep_ratios) * len(p.sweep_seeds)
    # ratios on both sides of MAE's 0.6-0.9 band, each run as long as the pretraining runs (the
    # learning regime), every probe at the learning criterion's sizes
    assert min(p.sweep_ratios) < 0.6 and sum(0.6 <= r <= 0.9 for r in p.sweep_ratios) >= 2
    assert p.sweep_steps == p.steps == LEARNING_REGIME["steps"] and p.data == "shapes"
    assert (p.probe_train, p.probe_test) == (1024, 2048) and len(p.sweep_seeds) >= 3
    assert p.hessian_batches * len(p.seeds) >= 18 and p.hessian_k == 5
    for j in jobs:  # every input a job needs is a job of the plan
        assert set(j.needs()) <= set(names)
    measure = next(j for j in jobs if j.stage == "measure")
    assert measure.needs() == ["pretrain-mae-seed0", "pretrain-mff-seed0"]
    # the fine-tuning series per seed on the finished pair: MAE Fig. 9's k = 0, 1, all and a
    # few-shot share against all the labels, scored on the criterion's test images
    tuned = [j for j in jobs if j.stage == "finetune"]
    assert [j.seed for j in tuned] == list(p.seeds)
    assert tuned[0].needs() == ["pretrain-mae-seed0", "pretrain-mff-seed0"]
    assert {0, 1, "all"} <= set(p.finetune_blocks) and min(p.finetune_fractions) <= 0.1
    assert 1.0 in p.finetune_fractions
    # the training dynamics per seed, on the pair's weight snapshots (kept at log-spaced steps)
    dynamic = [j for j in jobs if j.stage == "dynamics"]
    assert [j.seed for j in dynamic] == list(p.seeds)
    assert dynamic[0].needs() == ["pretrain-mae-seed0", "pretrain-mff-seed0"]
    assert pretrain_config(p, "mff", 0, Path("x")).snapshot_steps == "log"


def test_smoke_profile_runs_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "ev"
    assert evidence.main(["--profile", "smoke", "--out", str(out), "--jobs", "2"]) == 0
    claims = json.loads((out / "claims.json").read_text())
    assert len(claims) == 12
    assert claims[-3]["claim"] == "MFF-MAE's features become useful faster during pretraining"
    assert claims[-2]["source"] == "MAE §4.3 (Fig. 9)" and claims[-1]["claim"] == \
        "MFF-MAE's fine-tuning lead over MAE grows as labels shrink"
    assert claims[0]["claim"].startswith("the fusion weights move further toward shallow")
    # 2-step runs learn nothing: every claim about them is "not testable", with the runs named
    # (but the supervised run's own, which needs no pretraining)
    for c in claims:
        supervised = c["claim"].startswith("with a supervised objective")
        assert (c["verdict"] == "not testable") != supervised, c["claim"]
        assert supervised or "do not pass the learning criterion" in c["note"]
        assert {"p_adjusted", "sesoi"} <= c.keys()
    for c in claims:
        assert {"effect", "ci", "p", "n", "test", "verdict", "sizes"} <= c.keys()
        assert c["verdict"] in findings.VERDICTS and len(c["ci"]) == 2
    assert {c["sizes"]["seeds"] for c in claims} >= {2}  # the smoke profile's two seeds
    report = (out / "findings.md").read_text()
    assert report.startswith("# Findings") and "(smoke profile)" in report
    # the appendix: every run's learning check, the controls, the figures
    assert "| MFF-MAE seed 1 |" in report and "sweep MAE, mask ratio 0.75, seed 0" in report
    assert "## Controls: trained against initialisation" in report
    for name in ("learning_curves", "fusion_trajectories", "frequency_seeds"):
        assert (out / f"{name}.png").stat().st_size > 0 and f"({name}.png)" in report
    assert "## Fine-tuning, seed by seed" in report and "| 1 | MFF-MAE |" in report
    assert "2 pretraining seeds" in report and (out / "forest.png").stat().st_size > 0
    log = capsys.readouterr().out
    assert "pretrain 4/4" in log and "measure 2/2" in log  # a line per job and stage
    assert "finetune 2/2" in log and "dynamics 2/2" in log
    # the training dynamics over the two seeds: a figure per probe with its band, and each
    # number's change from the first snapshot to the last with its t interval over the seeds
    assert "## Training dynamics, over the seeds" in report
    assert "(over_training_fusion.png)" in report
    loss = json.loads((out / "over_training_reconstruction_loss.json").read_text())
    assert sorted(loss) == ["MAE", "MFF-MAE"] and len(loss["MAE"]) == 2  # seeds
    assert loss["MAE"][0]["steps"] == [0, 1, 2]  # the 2-step runs' snapshots
    change = [r["values"][-1][0] - r["values"][0][0] for r in loss["MAE"]]
    row = "| reconstruction_loss | MAE | loss |"
    line = next(x for x in report.splitlines() if x.startswith(row))
    assert f"{sum(change) / 2:+.3f}" in line and "(2) |" in line
    # again: every job is done, nothing runs, the same claims come out
    before = {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()}
    assert evidence.main(["--profile", "smoke", "--out", str(out)]) == 0
    assert "18 of 18 jobs already done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()} == before
    assert json.loads((out / "claims.json").read_text()) == claims
    # a lost result is redone alone, from the finished training run
    (out / "jobs" / "measure-seed1.json").unlink()
    assert evidence.main(["--profile", "smoke", "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "17 of 18 jobs already done" in log and "measure 2/2: measure-seed1" in log
    assert json.loads((out / "claims.json").read_text()) == claims
    # the report rebuilds from the job files alone: no runs, nothing trained
    import shutil

    copy = tmp_path / "committed"
    shutil.copytree(out / "jobs", copy / "jobs")
    assert evidence.main(["--profile", "smoke", "--out", str(copy), "--report-only"]) == 0
    assert json.loads((copy / "claims.json").read_text()) == claims
    assert (copy / "findings.md").read_text().split("## The learning")[1] == \
        report.split("## The learning")[1]
    assert not (copy / "runs").exists()
    (copy / "jobs" / "hessian-mae-seed0.json").unlink()
    assert evidence.main(["--profile", "smoke", "--out", str(copy), "--report-only"]) == 1
    assert "lacks 1 of 18 job results" in capsys.readouterr().err
    # a report of job files older than the fine-tuning stage: its claims "not testable: not run"
    (copy / "jobs" / "finetune-seed1.json").unlink()
    shutil.copy(out / "jobs" / "hessian-mae-seed0.json", copy / "jobs")
    assert evidence.main(["--profile", "smoke", "--out", str(copy), "--report-only"]) == 0
    older = json.loads((copy / "claims.json").read_text())
    assert older[:-2] == claims[:-2] and len(older) == 12
    for c in older[-2:]:
        assert c["verdict"] == "not testable" and c["effect"] is None
        assert "not run: no result for finetune-seed1" in c["note"]
    assert "## Fine-tuning, seed by seed" not in (copy / "findings.md").read_text()
    # ... and older than the dynamics stage: the report goes without that section
    (copy / "jobs" / "dynamics-seed0.json").unlink()
    assert evidence.main(["--profile", "smoke", "--out", str(copy), "--report-only"]) == 0
    assert json.loads((copy / "claims.json").read_text()) == older
    assert "## Training dynamics" not in (copy / "findings.md").read_text()


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, capsys):
    from workbench.core.io import file_lock

    out = tmp_path / "ev"
    with file_lock(out / ".lock", 0, holder="test"):
        assert evidence.main(["--profile", "smoke", "--out", str(out)]) == 1
    assert "held by another evidence run" in capsys.readouterr().err
    assert not (out / "jobs").exists()  # nothing ran


@pytest.mark.parametrize("bad", [["--jobs", "0"], ["--profile", "nope"]])
def test_bad_arguments_are_named(bad, capsys):
    with pytest.raises(SystemExit):
        evidence.main(bad)
    assert bad[0] in capsys.readouterr().err


def test_the_committed_cpu_evidence_rebuilds_from_its_job_files(tmp_path):
    """docs/results/cpu-evidence: --report-only on a copy of its jobs/ gives the committed
    claims.json and findings tables again; and every pretraining run in it has learned (the
    learning criterion, per seed), so its claims are about trained models."""
    import shutil

    committed = Path(__file__).resolve().parents[1] / "docs" / "results" / "cpu-evidence"
    shutil.copytree(committed / "jobs", tmp_path / "jobs")
    assert evidence.main(["--profile", "cpu", "--out", str(tmp_path), "--report-only"]) == 0
    assert json.loads((tmp_path / "claims.json").read_text()) == \
        json.loads((committed / "claims.json").read_text())
    ours, theirs = ((d / "findings.md").read_text() for d in (tmp_path, committed))
    assert ours.split("Verdicts:")[1] == theirs.split("Verdicts:")[1]
    for name in ("learning_curves", "fusion_trajectories", "frequency_seeds", "forest"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    for seed in evidence.PROFILES["cpu"].seeds:
        measured = json.loads((committed / "jobs" / f"measure-seed{seed}.json").read_text())
        assert all(rec["passed"] for rec in measured["result"]["learning"].values())
