"""The weights the project ships (weights/): their provenance, their size, a model that has
learned, and a command that reproduces them -- its first steps bit for bit here, the whole run in
the slow test."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from workbench.checkpoints import load_checkpoint, read_checkpoint
from workbench.core.config import ModelConfig
from workbench.core.io import run_files
from workbench.probes.learning import initial_model, learning_check
from workbench.experiments.shipped import (FINGERPRINT_STEPS, SHIPPED_DTYPE, SHIPPED_LIMIT_BYTES,
                               SHIPPED_RUNS, shipped_bytes, weights_digest)

ROOT = Path(__file__).resolve().parents[1]
RUNS = list(SHIPPED_RUNS.values())
IDS = [r.name for r in RUNS]


def rerun(run, out: Path, *extra: str) -> dict:
    subprocess.run(run.argv(out, "--no-progress", *extra), cwd=ROOT, check=True)
    return read_checkpoint(out / "checkpoint.pt")["model"]


def test_the_shipped_weights_fit_the_projects_limit():
    assert 0 < shipped_bytes() <= SHIPPED_LIMIT_BYTES


@pytest.mark.parametrize("run", RUNS, ids=IDS)
def test_each_shipped_run_says_how_it_was_made_and_that_it_learned(run):
    prov = run.read_provenance()
    assert prov["command"] == ["python", "-m", "workbench", *run.command(f"runs/{run.name}")]
    assert prov["seed"] == run.seed and prov["commit"] and "dirty" not in prov["commit"]
    assert prov["stored_dtype"] == str(SHIPPED_DTYPE).removeprefix("torch.")
    check = prov["learning_check"]
    assert check["passed"] and check["gain"] >= 0.10 and check["ci"][0] > 0.05
    assert check["n_test"] >= 2048
    model = load_checkpoint(run.folder)  # the folder: model.safetensors
    saved_model, saved_train = run_files(run.folder).read_settings()
    assert model.cfg == ModelConfig.from_dict(saved_model) and model.cfg.kind == run.kind
    assert model.checkpoint_info.step == prov["step"] == saved_train["steps"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # its initialisation, rebuilt from config.json and the seed, is the one it started from
    assert weights_digest(initial_model(run.folder).state_dict()) == prov["init_sha256"]
    # the curves the notebooks draw came with it: fusion weights and the monitor from step 0
    rows = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()]
    monitored = [r for r in rows if "probe_acc" in r]
    assert monitored[0]["step"] == 0 and monitored[-1]["step"] == prov["step"]


@pytest.mark.parametrize("run", RUNS, ids=IDS)
def test_the_command_reproduces_the_first_steps_bit_for_bit(run, tmp_path):
    prov = run.read_provenance()
    assert prov["fingerprint"]["steps"] == FINGERPRINT_STEPS
    weights = rerun(run, tmp_path / run.name, "--set", f"stop_after={FINGERPRINT_STEPS}")
    assert weights_digest(weights) == prov["fingerprint"]["sha256"]


@pytest.mark.parametrize("run", RUNS, ids=IDS)
def test_the_shipped_model_passes_the_learning_criterion_as_loaded(run):
    """The float16-rounded weights the gallery uses, measured again: they still pass."""
    model = load_checkpoint(run.folder)
    check = learning_check(model, initial_model(run.folder), pixels=False)
    assert check.passed, check.summary()


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS, ids=IDS)
def test_the_command_reproduces_the_shipped_weights(run, tmp_path):
    """The whole command (~5 min each on one core): the shipped file is its final weights,
    rounded to the stored dtype, bit for bit."""
    weights = rerun(run, tmp_path / run.name)
    shipped = load_checkpoint(run.folder).state_dict()
    rounded = {k: v.to(SHIPPED_DTYPE).float() if v.is_floating_point() else v
               for k, v in weights.items()}
    assert weights_digest(rounded) == weights_digest(shipped)


def test_ship_script_refuses_a_run_that_has_not_learned(tmp_path, monkeypatch):
    from workbench.experiments import ship_weights

    from workbench.probes import learning

    class Failed:
        passed = False

        def summary(self):
            return "no gain"

    from workbench.experiments import shipped

    run_dir = SHIPPED_RUNS["mae"].folder  # any loadable run folder
    monkeypatch.setattr(learning, "learning_check", lambda *a, **k: Failed())
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)  # nothing may be written to weights/
    with pytest.raises(SystemExit, match="does not pass the learning criterion"):
        ship_weights.ship(SHIPPED_RUNS["mae"], run_dir)
    assert not any(tmp_path.iterdir())
