"""Every notebook executes under real papermill with tiny parameters, and the batch writes a
gallery whose manifest and links point at files that exist."""
from __future__ import annotations

import ast
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import papermill as pm
import pytest
import torch
from importlib import metadata
import yaml

from workbench.experiments import findings
from workbench.probes import FrequencyResponse, FusionHistory, KnnHistory, over_training
from workbench import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
from workbench.experiments import figures as make_figures  # noqa: E402

SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny checkpoints: MAE, MFF-MAE and a pixel-target MAE (norm_pix_loss off), as the batch's;
    with weight snapshots at steps 0, 6 and 12 (the training-dynamics notebook's runs)."""
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for name, kind, overrides in (("mae", "mae", {}), ("mff", "mff", {}),
                                  ("pixels", "mae", {"norm_pix_loss": False})):
        res = train(TrainConfig(kind=kind, preset="tiny", model_overrides={**SMALL, **overrides},
                                steps=12, batch_size=16, log_every=2, out=str(base / name),
                                ckpt_every=0, picture_every=0, eval_images=16, progress=False,
                                snapshot_steps=[0, 6, 12]))
        out[name] = Path(res.checkpoint)
    return out


def common(runs, out_dir: Path) -> dict:
    return {"MAE_CHECKPOINT": str(runs["mae"]), "MFF_CHECKPOINT": str(runs["mff"]),
            "MAE_RUN_DIR": str(runs["mae"].parent), "MFF_RUN_DIR": str(runs["mff"].parent),
            "PIXEL_CHECKPOINT": str(runs["pixels"]), "OUTPUT_DIR": str(out_dir)}


TINY = {
    "reconstruction.ipynb": {"N_IMAGES": 2, "HIGH_RATIOS": [0.9]},
    "mask_sampling.ipynb": {"N_IMAGES": 2},
    "fusion_weights.ipynb": {"SUPERVISED_STEPS": 3, "SUPERVISED_BATCH": 16},
    "frequency.ipynb": {"N_IMAGES": 8, "SUBLAYERS": True},
    "hessian.ipynb": {"N_BATCHES": 2, "BATCH_SIZE": 4, "TOP_K": 2, "PARAMS": "encoder"},
    "curvature.ipynb": {"BATCH_SIZE": 4, "PARAMS": "decoder", "TRACE_SAMPLES": 3,
                        "DENSITY_PROBES": 1, "LANCZOS_STEPS": 4, "LANDSCAPE_STEPS": 3,
                        "LANDSCAPE_STEPS_2D": 3},
    "linear_probe.ipynb": {"N_PROBE": 48},
    "representations.ipynb": {"N_PROBE": 48, "N_CKA": 16, "N_ATTENTION": 4},
    "mask_ratio_sweep.ipynb": {"RATIOS": [0.5, 0.75], "SWEEP_STEPS": 3, "BATCH_SIZE": 8,
                               "N_PROBE": 32},
    "finetune.ipynb": {"TUNE_BLOCKS": [0, 1, "all"], "LABEL_FRACTIONS": [0.01, 1.0],
                       "FT_STEPS": 2, "BATCH_SIZE": 8, "EVAL_IMAGES": 16},
    "00_quickstart.ipynb": {"STEPS": 3, "BATCH_SIZE": 8},
    "training_dynamics.ipynb": {"N_IMAGES": 2, "PROBES": {
        "reconstruction_loss": {"images": 8}, "frequency": {"images": 8}, "fusion": {},
        "linear_probe": {"train": 32, "test": 32}}},
}
EXPECTED = {  # files each notebook must leave in OUTPUT_DIR
    "reconstruction.ipynb": ["reconstruction_r75.png", "reconstruction_r90.svg", "slider_latency.json",
                             "reconstruction_pixels.png", "reconstruction_pixels.json"],
    "mask_sampling.ipynb": ["mask_sampling_mae.png", "mask_sampling_mff-mae.json"],
    "fusion_weights.ipynb": ["fusion_weights.png", "fusion_weights_interactive.html",
                             "fusion_weights_supervised.png", "claims.json"],
    "frequency.ipynb": ["frequency.png", "last_layer_spectrum.svg", "claims.json"],
    "hessian.ipynb": ["hessian_spectrum.png", "hessian_spectrum.json", "claims.json"],
    "curvature.ipynb": ["hessian_trace.png", "hessian_density.svg", "landscape_1d.png",
                        "landscape_2d.json"],
    "linear_probe.ipynb": ["linear_probe.png", "linear_probe_correct.json", "claims.json"],
    "representations.ipynb": ["layer_probes.png", "layer_probes.json", "cka.png", "attention.svg",
                              "attention.json", "knn_history.png", "claims.json"],
    "mask_ratio_sweep.ipynb": ["mask_ratio_sweep.png", "claims.json"],
    "finetune.ipynb": ["finetune_series.png", "finetune_series.json", "claims.json"],
    "00_quickstart.ipynb": ["quickstart_reconstruction.png", "quickstart_fusion_weights.png"],
    "training_dynamics.ipynb": ["over_training_reconstruction_loss.png", "over_training_fusion.json",
                                "over_training_linear_probe.svg", "changes.md", "changes.json",
                                "dynamics-step0-reconstruction.png", "dynamics-step12-probes.png"],
}


def expected_claims(notebook: str, out: Path) -> list[dict] | None:
    """The claims ``workbench.experiments.findings`` makes of the numbers the notebook saved next to its
    figures (None: the notebook makes no claims)."""
    def saved(name):
        return json.loads((out / name).read_text())

    if notebook == "frequency.ipynb":
        rs = {n: FrequencyResponse.from_dict(d) for n, d in saved("frequency.json").items()}
        return ([findings.shallow_layers_more_high_frequency(n, r).to_dict() for n, r in rs.items()]
                + [findings.mff_last_layer_less_high_frequency(rs["MAE"], rs["MFF-MAE"]).to_dict()])
    if notebook == "fusion_weights.ipynb":
        claims = [findings.fusion_moves_shallow(
            FusionHistory.from_dict(saved("fusion_weights.json"))).to_dict()]
        if (out / "fusion_weights_supervised.json").exists():
            sup = FusionHistory.from_dict(saved("fusion_weights_supervised.json"))
            claims.append(findings.supervised_fusion_favors_last(sup).to_dict())
            claims.append(findings.fusion_moves_shallow_vs_supervised(
                FusionHistory.from_dict(saved("fusion_weights.json")), sup,
                saved("fusion_attainable.json")["attainable"]).to_dict())
        return claims
    if notebook == "hessian.ipynb":
        eigs = {n: torch.tensor(v, dtype=torch.float64)
                for n, v in saved("hessian_spectrum.json")["eigenvalues"].items()}
        return [findings.mff_flatter_hessian(eigs["MAE"], eigs["MFF-MAE"]).to_dict()]
    if notebook == "linear_probe.ipynb":
        c = saved("linear_probe_correct.json")
        return [findings.mff_better_linear_probe(c["MAE"], c["MFF-MAE"],
                                                 what="linear probe (mean pool)").to_dict()]
    if notebook == "mask_ratio_sweep.ipynb":
        from workbench.experiments.sweeps import MaskRatioSweep

        sweep = MaskRatioSweep.from_dict(saved("mask_ratio_sweep.json"))
        claim = findings.high_mask_ratio_best(sweep.ratios, sweep.correct_matrix)
        # the control was measured, and 3-step runs probed on 32 images cannot be judged
        assert sweep.init_correct is not None and "needs 2048" in sweep.untestable_reason()
        return [findings.not_testable(claim, sweep.untestable_reason()).to_dict()]
    if notebook == "finetune.ipynb":
        from workbench.experiments.finetune import FinetuneSeries, series_claims

        series = FinetuneSeries.from_dict(saved("finetune_series.json"))
        assert series.n_test == 16 and series.labelled["kall-f0.01"] == 80  # 10 per class
        return [c.to_dict() for c in series_claims(series)]
    if notebook == "representations.ipynb":
        h = {n: KnnHistory(**d) for n, d in saved("knn_history.json").items()}
        return [findings.mff_converges_faster(h["MAE"], h["MFF-MAE"]).to_dict()]
    return None


def test_every_notebook_is_covered():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(TINY)


def parameters(notebook: Path) -> dict:
    """The names and literal values the notebook's parameters cell assigns."""
    nb = json.loads(notebook.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{notebook.name}: expected one cell tagged 'parameters'"
    tree = ast.parse("".join(cells[0]["source"]))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}


@pytest.mark.parametrize("notebook", sorted(TINY))
def test_notebook_by_hand_writes_to_git_ignored_scratch(notebook):
    """Only the batch writes figures/ (so its manifest stays true): a notebook run by hand writes
    into scratch/<name>, which git ignores."""
    params = parameters(NOTEBOOKS / notebook)
    out = (NOTEBOOKS / params["OUTPUT_DIR"]).resolve()
    assert not out.is_relative_to(ROOT / "figures"), f"{notebook}: OUTPUT_DIR {out} is in figures/"
    assert out == ROOT / "scratch" / Path(notebook).stem
    assert "scratch/" in (ROOT / ".gitignore").read_text().splitlines()
    # the batch passes every notebook the same common parameters: each declares them, so
    # papermill warns of no unknown parameter
    assert {"MAE_CHECKPOINT", "MFF_CHECKPOINT", "MAE_RUN_DIR", "MFF_RUN_DIR", "PIXEL_CHECKPOINT",
            "OUTPUT_DIR"} <= params.keys()


@pytest.fixture(scope="module")
def quickstart_by_hand(tmp_path_factory):
    """The quickstart executed as a newcomer runs it: no OUTPUT_DIR or RUN_DIR given, from a
    copy of the notebooks/ folder, so its "../scratch" and "../runs" land in a temp folder."""
    root = tmp_path_factory.mktemp("by-hand")
    (root / "notebooks").mkdir()
    shutil.copy(NOTEBOOKS / "00_quickstart.ipynb", root / "notebooks")
    executed = root / "notebooks" / "executed.ipynb"
    pm.execute_notebook(str(root / "notebooks" / "00_quickstart.ipynb"), str(executed),
                        parameters={"STEPS": 3, "BATCH_SIZE": 8}, cwd=str(root / "notebooks"),
                        progress_bar=False, kernel_name="python3")
    return root, json.loads(executed.read_text())


def test_quickstart_by_hand_writes_scratch_not_figures(quickstart_by_hand):
    root, _ = quickstart_by_hand
    for name in EXPECTED["00_quickstart.ipynb"]:
        assert (root / "scratch" / "00_quickstart" / name).stat().st_size > 0, name
    assert sorted(p.name for p in root.iterdir()) == ["notebooks", "runs", "scratch"]  # no figures/


def test_quickstart_shows_no_stderr_and_no_reprs(quickstart_by_hand):
    """What a newcomer sees: no red stderr boxes (library warnings, messages) and no raw
    ``PosixPath(...)`` or dataclass reprs as cell results."""
    _, nb = quickstart_by_hand
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    stderr = [o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"]
    assert not stderr, f"the quickstart writes to stderr: {stderr}"
    for o in outputs:
        text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        assert "PosixPath(" not in text and "Result(" not in text, text
    assert not [o for o in outputs if o["output_type"] == "execute_result"]  # prints, not reprs
    assert any("final fusion weights" in "".join(o.get("text", "")) for o in outputs)


@pytest.mark.parametrize("notebook", sorted(TINY))
def test_notebook_runs_headless(notebook, runs, tmp_path):
    extra = {}
    if notebook == "mask_ratio_sweep.ipynb":
        extra = {"RUNS_DIR": str(tmp_path / "sweep")}
        # the sweep trains its own short runs: keep them as small as the fixtures
        nb = json.loads((NOTEBOOKS / notebook).read_text())
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])
    if notebook == "finetune.ipynb":  # its fine-tuning runs: in the test's folder
        extra = {"RUNS_DIR": str(tmp_path / "finetune")}
    if notebook == "00_quickstart.ipynb":
        extra = {"RUN_DIR": str(tmp_path / "quick")}
    if notebook == "training_dynamics.ipynb":
        extra = {"MAE_DYNAMICS_RUN": str(runs["mae"].parent),
                 "MFF_DYNAMICS_RUN": str(runs["mff"].parent)}
    params = {**common(runs, tmp_path / "out"), **TINY[notebook], **extra}
    pm.execute_notebook(str(NOTEBOOKS / notebook), str(tmp_path / notebook), parameters=params,
                        cwd=str(NOTEBOOKS), progress_bar=False, kernel_name="python3")
    for name in EXPECTED[notebook]:
        path = tmp_path / "out" / name
        assert path.exists() and path.stat().st_size > 0, f"{notebook} did not write {name}"
    expected = expected_claims(notebook, tmp_path / "out")
    claims = tmp_path / "out" / "claims.json"
    assert claims.exists() == (expected is not None)
    if expected is not None:  # each verdict is the one findings gives on the saved numbers
        got = json.loads(claims.read_text())
        assert got == expected and expected
        for c in got:  # every claim carries its evidence
            assert c["verdict"] in findings.VERDICTS and len(c["ci"]) == 2
            assert {"effect", "p", "n", "test", "sizes"} <= c.keys() and c["sizes"]["seeds"] == 1
    if notebook == "curvature.ipynb":  # the saved numbers are the probes' own, per model
        traces = json.loads((tmp_path / "out" / "hessian_trace.json").read_text())
        surfaces = json.loads((tmp_path / "out" / "landscape_2d.json").read_text())
        assert sorted(traces) == sorted(surfaces) == ["MAE", "MFF-MAE"]
        for t in traces.values():
            assert t["num_hvps"] == 3 and len(t["samples"]) == 3
            assert t["ci"][0] <= t["estimate"] <= t["ci"][1]
        for s in surfaces.values():  # a 3 x 3 grid whose centre is the loss at the weights
            assert s["losses"][1][1] == pytest.approx(s["base_loss"], rel=1e-6)
    if notebook == "training_dynamics.ipynb":  # the runs' own numbers at each step, and changes
        loss = json.loads((tmp_path / "out" / "over_training_reconstruction_loss.json").read_text())
        assert sorted(loss) == ["MAE", "MFF-MAE"]  # fusion: MFF-MAE alone
        assert list(json.loads((tmp_path / "out" / "over_training_fusion.json").read_text())) \
            == ["MFF-MAE"]
        direct = over_training(runs["mff"].parent, "reconstruction_loss", images=8)
        assert loss["MFF-MAE"][0]["steps"] == direct.steps == [0, 6, 12]
        assert np.asarray(loss["MFF-MAE"][0]["values"]) == pytest.approx(direct.values)
        rows = json.loads((tmp_path / "out" / "changes.json").read_text())
        row = next(r for r in rows if r["probe"] == "reconstruction_loss" and r["model"] == "MFF-MAE")
        assert row["change"] == pytest.approx(direct.values[-1, 0] - direct.values[0, 0])
        assert row["ci"] is None and row["seeds"] == 1  # one seed: no interval
    if notebook == "reconstruction.ipynb":  # Run All ends with the slider where the notebook put it
        nb = json.loads((tmp_path / notebook).read_text())
        assert json.loads((tmp_path / "out" / "slider_latency.json").read_text())["updates"] == 20
        widget_states = nb["metadata"].get("widgets", {}).get(
            "application/vnd.jupyter.widget-state+json", {}).get("state", {})
        sliders = [w["state"] for w in widget_states.values()
                   if w["state"].get("description") == "mask ratio"]
        assert len(sliders) == 1 and sliders[0]["value"] == pytest.approx(0.75)  # MASK_RATIO
        # the pixel-target figure says what it shows: plain pixels, nothing un-normalised
        assert json.loads((tmp_path / "out" / "reconstruction_pixels.json").read_text())["stats"] \
            == "pixels"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src"):
                self.links.append(v)


def test_batch_reuses_finished_runs_and_still_runs_every_notebook(runs, tmp_path, capfd):
    """A second `make figures` finds its tiny runs trained with the same request: it trains
    nothing, and the notebooks that wait for those runs start at once."""
    folder = tmp_path / "runs"
    for name in make_figures.GALLERY_RUNS:
        run = make_figures.TINY_RUNS[name]
        shutil.copytree(runs[name].parent, folder / run.folder)
        (folder / run.folder / "figures-request.json").write_text(
            json.dumps(make_figures.request_record(run, None, [])))
    params = tmp_path / "figures.yaml"
    params.write_text(yaml.safe_dump([{"name": "mask_sampling", "notebook": "mask_sampling.ipynb",
                                       "parameters": {"N_IMAGES": 1}}]))
    out = tmp_path / "figures"
    assert make_figures.main(["--runs", str(folder), "--out", str(out), "--params",
                              str(params), "--jobs", "2", "--train"]) == 0
    said = capfd.readouterr().out
    assert said.count("(same training request)") == 3 and "[figures] training" not in said
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["trainings"] == {} and manifest["figures"][0]["status"] == "ok"
    assert set(manifest["checkpoints"]) == {"mae", "mff", "pixels"}


def test_batch_writes_manifest_gallery_and_findings(runs, tmp_path, capfd):
    params = tmp_path / "figures.yaml"
    params.write_text(yaml.safe_dump([
        {"name": "fusion_weights", "notebook": "fusion_weights.ipynb",
         "parameters": {"SUPERVISED_STEPS": 0}},
        {"name": "mask_sampling", "notebook": "mask_sampling.ipynb", "parameters": {"N_IMAGES": 1}},
        {"name": "broken", "notebook": "mask_sampling.ipynb", "parameters": {"MASK_RATIO": 1.5}},
        {"name": "training_dynamics", "notebook": "training_dynamics.ipynb",
         "needs": ["mae_dynamics", "mff_dynamics"]},
    ]))
    out = tmp_path / "figures"
    code = make_figures.main(["--mae", str(runs["mae"]), "--mff", str(runs["mff"]),
                              "--out", str(out), "--params", str(params),
                              "--runs", str(tmp_path / "runs")])
    assert code == 1  # "broken" failed, and says so
    said = capfd.readouterr()
    # beside external models no tiny dynamics runs are trained: their figure set is left out
    assert "training_dynamics: skipped" in said.out and "[figures] training " not in said.out
    assert not (tmp_path / "runs").exists()
    notebook_lines = [line for line in said.out.splitlines() if re.match(r"\[figures\] \d/3 ", line)]
    assert len(notebook_lines) == 3 and all("s elapsed)" in line for line in notebook_lines)
    assert "Kernel is running" not in said.out + said.err  # the kernels' noise: in their folder
    assert "Kernel is running" in (out / "mask_sampling" / "kernel-stderr.log").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    status = {f["name"]: f["status"] for f in manifest["figures"]}
    assert status == {"fusion_weights": "ok", "mask_sampling": "ok", "broken": "failed"}
    stages = manifest["stages"]  # every notebook's seconds, start and end; nothing trained here
    assert stages["trainings"] == {} and manifest["train_seconds"] == 0
    assert set(stages["notebooks"]) == set(status)
    for name, t in stages["notebooks"].items():
        assert 0 <= t["start"] <= t["end"] <= stages["total_seconds"], name
        assert t["seconds"] <= t["end"] - t["start"] + 0.5, name
    assert stages["gallery_seconds"] >= 0
    broken = next(f for f in manifest["figures"] if f["name"] == "broken")
    assert "mask_ratio" in broken["error"]
    assert manifest["checkpoints"]["mae"]["sha256"] == make_figures.sha256(runs["mae"])
    for f in manifest["figures"]:  # each figure carries its own provenance
        assert f["checkpoints"]["mff"]["sha256"] == make_figures.sha256(runs["mff"])
        assert f["versions"]["torch"] == metadata.version("torch") and "git_commit" in f
        assert f["parameters"]["OUTPUT_DIR"].endswith(f["name"]) and f["seconds"] >= 0
        # external --mae/--mff without --pixels: no tiny pixel-target run beside them
        assert f["parameters"]["PIXEL_CHECKPOINT"] is None
    assert "torch" in manifest["versions"] and manifest["git_commit"]
    for fig in manifest["figures"]:
        assert fig["seconds"] >= 0 and fig["parameters"]["OUTPUT_DIR"].endswith(fig["name"])
        for f in fig["files"]:
            assert (out / f).exists(), f
    assert any(f.endswith(".png") for f in manifest["figures"][0]["files"])
    parser = _Links()
    parser.feed((out / "index.html").read_text())
    assert len(parser.links) >= 4
    for link in parser.links:
        assert (out / link).exists(), f"gallery link {link} does not resolve"
    findings = (out / "findings.md").read_text()
    assert "(quick profile)" in findings and "One training seed" in findings
    # one seed: the fusion's movement cannot be told from training noise
    assert re.search(r"\| MFF .*fusion weights move toward shallow layers .*\| seeds 1 \| "
                     r"\*\*inconclusive\*\*", findings)
    assert (out / "forest.png").stat().st_size > 0


def test_batch_plans_three_tiny_runs_the_pixel_one_shorter():
    """The MAE and MFF requests are the shipped runs' own command (so --train retrains them
    exactly); the pixel-target MAE trains a sixth of their steps with norm_pix_loss off, in
    runs/mae-pixels-tiny."""
    from workbench.experiments.shipped import SHIPPED_RUNS

    tiny = ["--preset", "tiny", "--data", "shapes", "--device", "cpu"]
    runs = make_figures.TINY_RUNS
    for name in ("mae", "mff"):
        assert make_figures.train_request(runs[name], None, []) + ["--out", "X"] == \
            SHIPPED_RUNS[name].command("X")
    assert make_figures.train_request(runs["mff"], 60, ["--seed", "1"]) == \
        ["train", "--model", "mff", *tiny, "--steps", "60", "--seed", "1", "--seed", "0",
         "--set", "threads=1"]
    assert make_figures.train_request(runs["pixels"], None, ["--seed", "1"]) == \
        ["train", "--model", "mae", *tiny, "--steps", "100", "--seed", "1",
         "--set", "norm_pix_loss=false"]
    for name in ("mae", "mff"):  # the dynamics runs: the same command, snapshots, a third of it
        assert make_figures.train_request(runs[f"{name}_dynamics"], None, []) == \
            make_figures.train_request(runs[name], None, []) + [
                "--set", "snapshot_steps=log", "--set", "knn_every=0", "--set", "stop_after=200"]
    assert make_figures.train_request(runs["mae_dynamics"], 4, [])[-2:] == ["--set", "stop_after=1"]
    assert make_figures.run_steps(runs["pixels"], 60) == 10
    assert make_figures.run_steps(runs["pixels"], 2) == 1
    ckpt, cmd = make_figures.plan_run("pixels", Path("/r"), None, [])
    assert ckpt.parent == Path("/r/mae-pixels-tiny") and cmd[cmd.index("--out") + 1] == str(ckpt.parent)


def test_batch_uses_the_shipped_weights_unless_asked_to_train(runs, tmp_path, capfd):
    """By default the gallery's MAE and MFF-MAE are weights/ (nothing trained), and every caption
    says so; --train (make figures TRAIN=1) plans their training instead."""
    from workbench.experiments.shipped import SHIPPED_RUNS

    params = tmp_path / "figures.yaml"
    params.write_text(yaml.safe_dump([{"name": "mask_sampling", "notebook": "mask_sampling.ipynb",
                                       "parameters": {"N_IMAGES": 1}}]))
    out = tmp_path / "figures"
    assert make_figures.main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--params",
                              str(params), "--pixels", str(runs["pixels"])]) == 0
    said = capfd.readouterr().out
    assert "[figures] training" not in said
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("mae", "mff"):
        assert manifest["checkpoints"][name]["path"] == str(SHIPPED_RUNS[name].weights)
    assert "MAE: shipped weights (32 px images" in manifest["models"] and "600 steps" in manifest["models"]
    assert "shipped weights" in (out / "index.html").read_text().split("<figcaption")[1]
    assert make_figures.shipped_checkpoints(["mae", "mff", "pixels"]) == {
        n: SHIPPED_RUNS[n].weights for n in ("mae", "mff")}


def test_batch_reports_missing_checkpoint(runs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        make_figures.main(["--mae", str(tmp_path / "missing.pt"), "--mff", str(runs["mff"]),
                           "--out", str(tmp_path / "f")])
    assert "missing.pt" in capsys.readouterr().err
