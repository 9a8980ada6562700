"""The gallery's pages, written from fake notebook folders (no notebook runs): ``index.html``
captions with the run's n's, and ``findings.html`` rendered from ``findings.md``."""
from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

import pytest

from workbench.experiments import captions, figures, gallery, scheduler
from workbench.experiments.findings import make_claim


def _png(path: Path, width: int, height: int) -> None:
    """A valid grey PNG of the given size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _claims() -> list:
    return [make_claim("MFF Table 1", "MFF-MAE <features> beat MAE's", "MFF − MAE accuracy",
                       "accuracy MAE 50 %, MFF 60 %", [[0, 1, 1, 0, 1, 1, 0, 1]],
                       direction="greater", unit="images", paired=True),
            make_claim("MFF §4.3 (Fig. 6)", "MFF's Hessian max eigenvalues are smaller",
                       "mean log ratio", "median top eigenvalue", [[-0.2, -0.1, -0.3, 0.05]],
                       direction="less", unit="minibatches")]


def _record(name: str, params: dict, files: list[str]) -> dict:
    return {"name": name, "notebook": f"{name}.ipynb", "executed": f"{name}/{name}.ipynb",
            "parameters": params, "status": "ok", "seconds": 1.5, "files": files}


def test_caption_counts_from_parameters_and_claims():
    params = {"N_BATCHES": 4, "BATCH_SIZE": 16, "TOP_K": 5, "N_IMAGES": 1, "SEED": 0,
              "RATIOS": [0.1, 0.75], "SUPERVISED_STEPS": None}
    claims = [c.to_dict() for c in _claims()] + [{"n": 7}]
    assert captions.caption_counts(params, claims) == (
        "n: 4 minibatches × 16 images; 1 image; 2 mask ratios (0.1, 0.75); "
        "top 5 eigenvalues per minibatch; claim over 1 seed, 8 images; "
        "claim over 1 seed, 4 minibatches; claim over n 7")
    assert captions.caption_counts({"BATCH_SIZE": 32, "N_PROBE": 256}, []) == (
        "n: minibatches of 32 images; 256 probe training + 256 held-out images")
    assert captions.caption_counts({"TRACE_SAMPLES": 30, "DENSITY_PROBES": 1}, []) == (
        "n: 30 Hutchinson probes; 1 Lanczos probe")
    assert captions.caption_counts({"SEED": 0}, []) == ""


def test_notebook_parameters_injected_win(tmp_path):
    """The parameters cell's literal defaults (papermill.inspect_notebook), then the values
    papermill ran the notebook with (metadata.papermill.parameters), which win."""
    cell = lambda tags, src: {"cell_type": "code", "id": f"c{len(str(src))}",  # noqa: E731
                              "metadata": {"tags": tags}, "source": src, "outputs": [],
                              "execution_count": None}
    nb = {"cells": [cell(["parameters"], ["N_IMAGES = 6\n", "DATA = 'builtin'  # note\n",
                                          "PATH = Path('x')\n", "RATIOS = [0.1, 0.5]\n"]),
                    cell(["injected-parameters"], "N_IMAGES = 2\nTOL = 1e-2\n"),
                    cell([], "N_IMAGES = 99\n")],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"},
                       "language_info": {"name": "python"},
                       "papermill": {"parameters": {"N_IMAGES": 2, "TOL": 0.01}}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    assert captions.notebook_parameters(path) == {"N_IMAGES": 2, "DATA": "builtin",
                                                  "RATIOS": [0.1, 0.5], "TOL": 0.01}
    del nb["metadata"]["papermill"]  # a notebook papermill did not run: its defaults
    path.write_text(json.dumps(nb))
    assert captions.notebook_parameters(path) == {"N_IMAGES": 6, "DATA": "builtin",
                                                  "RATIOS": [0.1, 0.5]}
    assert captions.notebook_parameters(tmp_path / "missing.ipynb") == {}
    (tmp_path / "broken.ipynb").write_text("{not json")
    assert captions.notebook_parameters(tmp_path / "broken.ipynb") == {}


def test_image_size_with_pillow(tmp_path):
    _png(tmp_path / "a.png", 7, 3)
    (tmp_path / "b.png").write_bytes(b"not a png")
    assert gallery.image_size(tmp_path / "a.png") == (7, 3)
    assert gallery.image_size(tmp_path / "b.png") is None
    assert gallery.image_size(tmp_path / "missing.png") is None


def test_write_index_captions_with_counts(tmp_path):
    (tmp_path / "hessian").mkdir()
    _png(tmp_path / "hessian" / "spectrum.png", 300, 200)
    _png(tmp_path / "hessian" / "wide.png", 800, 200)
    (tmp_path / "hessian" / "claims.json").write_text(json.dumps([_claims()[1].to_dict()]))
    records = [_record("hessian", {"N_BATCHES": 4, "BATCH_SIZE": 16, "TOP_K": 5},
                       ["hessian/claims.json", "hessian/spectrum.png", "hessian/wide.png"]),
               _record("linear_probe", {"N_PROBE": 384}, [])]
    captions = {"hessian": "Top-k <Hessian> eigenvalues. Paper: MFF Fig. 6.",
                "linear_probe.ipynb": "Probe accuracy."}  # found by notebook too
    gallery.write_index(tmp_path, records, {"git_commit": "abc"}, captions)
    page = (tmp_path / "index.html").read_text()
    assert "Top-k &lt;Hessian&gt; eigenvalues. Paper: MFF Fig. 6." in page
    assert ("n: 4 minibatches × 16 images; top 5 eigenvalues per minibatch; "
            "claim over 1 seed, 4 minibatches") in page
    assert "Probe accuracy." in page and "384 probe training + 384 held-out images" in page
    assert page.count("<figcaption class='caption'>") == 2
    # the wide figure spans both columns of the grid; a click opens the full-size file
    assert "<a class='wide' href='hessian/wide.png'" in page
    assert "<a class='narrow' href='hessian/spectrum.png'" in page
    assert "href='findings.html'" in page


def test_write_index_default_captions_from_figures_yaml(tmp_path):
    gallery.write_index(tmp_path, [_record("reconstruction", {"N_IMAGES": 6}, [])],
                             {"git_commit": None})
    page = (tmp_path / "index.html").read_text()
    assert "MAE Figs. 2–4" in page and "n: 6 images" in page
    # the parameters the record does not carry come from the notebook's parameters cell
    assert "mask ratio 0.75" in page


def test_figures_yaml_captions_name_the_paper():
    for entry in captions.load_parameter_sets(captions.PARAMS_FILE):
        assert "Paper:" in entry.get("caption", ""), entry["name"]


@pytest.mark.parametrize("with_claims", [True, False])
def test_write_findings_renders_html_tables(tmp_path, with_claims):
    claims = _claims()
    (tmp_path / "probe").mkdir()
    if with_claims:
        (tmp_path / "probe" / "claims.json").write_text(json.dumps([c.to_dict() for c in claims]))
    gallery.write_findings(tmp_path, [_record("probe", {}, [])])
    page = (tmp_path / "findings.html").read_text()
    assert "<table>" in page and "<h1>" in page and "href='index.html'" in page
    if with_claims:
        assert "MFF-MAE &lt;features&gt; beat MAE's" in page  # escaped, not raw HTML
        assert "MFF's Hessian max eigenvalues are smaller" in page
        assert page.count("<tr>") == 1 + len(claims)
        assert "<img src='forest.png'" in page and (tmp_path / "forest.png").exists()
    else:
        assert page.count("<tr>") == 1 and "forest.png" not in page


# ----------------------------------------------------------------------------- the batch's pool
def _task(name: str, kind: str, cost: float, needs=(), call=(time.sleep, 0)) -> "figures.Task":
    return figures.Task(name, kind, cost, tuple(needs), call)


def test_trainings_that_unblock_most_start_first_and_notebooks_wait_for_theirs():
    tasks = [_task("small", "notebook", 2), _task("b", "train", 1),
             _task("needs a", "notebook", 5, ["a"]), _task("a", "train", 1),
             _task("needs both", "notebook", 1, ["a", "b"])]
    assert figures.priorities(tasks) == {"small": 2, "b": 2, "needs a": 5, "a": 7,
                                         "needs both": 1}
    order = []
    times = figures.run_tasks(tasks, 1, lambda t, result: order.append(t.name))
    assert order == ["a", "needs a", "small", "b", "needs both"]
    assert set(times) == {t.name for t in tasks}
    assert times["needs both"][0] >= max(times["a"][1], times["b"][1])


def test_two_jobs_overlap_and_a_notebook_starts_when_its_training_ends():
    tasks = [_task("a", "train", 3, call=(time.sleep, 1.0)),
             _task("free", "notebook", 2, call=(time.sleep, 1.0)),
             _task("needs a", "notebook", 1, ["a"], call=(time.sleep, 0.1))]
    done = []
    times = figures.run_tasks(tasks, 2, lambda t, result: done.append(t.name))
    assert times["free"][0] < times["a"][1] and times["a"][0] < times["free"][1]  # side by side
    assert times["needs a"][0] >= times["a"][1]
    assert sorted(done) == ["a", "free", "needs a"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failed_training_starts_nothing_more_and_is_raised(jobs):
    tasks = [_task("a", "train", 9, call=(int, "not a number")),
             _task("needs a", "notebook", 5, ["a"]), _task("later", "notebook", 0.5)]
    done = []
    with pytest.raises(ValueError, match="not a number"):
        figures.run_tasks(tasks, jobs, lambda t, result: done.append(t.name))
    assert "needs a" not in done
    if jobs == 1:  # one at a time: nothing starts after the failure
        assert done == []


def test_only_the_runs_the_chosen_notebooks_read_are_trained(tmp_path):
    import argparse

    plans = {n: (tmp_path / n / "checkpoint.pt", ["train", "--out", str(tmp_path / n)])
             for n in ("mae", "mff", "pixels")}
    args = argparse.Namespace(steps=None, train_arg=[], out=tmp_path / "figures")
    hessian = {"name": "hessian", "notebook": "hessian.ipynb", "needs": ["mae", "mff"]}
    sweep = {"name": "sweep", "notebook": "mask_ratio_sweep.ipynb", "needs": []}
    everything = {"name": "reconstruction", "notebook": "reconstruction.ipynb"}

    def trained(sets):
        return sorted(t.name for t in figures.batch_tasks(plans, sets, args, {})
                      if t.kind == "train")

    assert trained([hessian]) == ["mae", "mff"]
    assert trained([sweep]) == []
    assert trained([sweep, everything]) == ["mae", "mff", "pixels"]  # default: every run
    tasks = {t.name: t for t in figures.batch_tasks(plans, [hessian, sweep], args, {})}
    assert tasks["hessian"].needs == ("mae", "mff") and tasks["sweep"].needs == ()
    reused = {**plans, "mae": (plans["mae"][0], None)}  # a finished run: nothing to wait for
    tasks = {t.name: t for t in figures.batch_tasks(reused, [hessian], args, {})}
    assert "mae" not in tasks and tasks["hessian"].needs == ("mff",)
    order = []  # and the notebook does run, after the one training left
    figures.run_tasks([_task("mff", "train", 3), _task("hessian", "notebook", 3, ["mff"])],
                      1, lambda t, result: order.append(t.name))
    assert order == ["mff", "hessian"]


def test_a_task_waiting_for_a_run_nobody_trains_is_an_error_not_a_hang():
    with pytest.raises(scheduler.ScheduleError, match="'hessian' needs \\['mae'\\]"):
        figures.run_tasks([_task("hessian", "notebook", 3, ["mae"])], 2, lambda t, r: None)
