"""What a user meets at the command line: help without torch, log lines off a terminal, finished
and resumed runs, refused settings and the leftovers of a failed start."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from workbench.__main__ import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2,
             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
SMALL_ARGS = [f"--set={k}={v}" for k, v in SMALL.items()]
QUIET = ["--set", "picture_every=0", "--set", "eval_images=8", "--device", "cpu",
         "--knn-every", "0"]


def train_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "mae", "--steps", "4", "--batch-size", "8", "--out", str(out),
            "--log-every", "2", *SMALL_ARGS, *QUIET, *extra]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


# ----------------------------------------------------------------------------- help
def test_help_and_argument_errors_do_not_import_torch():
    """--help, a bad choice and an unknown --set name answer before torch is imported."""
    probe = ("import runpy, sys\n"
             "sys.argv = ['workbench'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('workbench', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr)\n")
    for argv in (["--help"], ["train", "--help"], ["train", "--model", "vit"],
                 ["train", "--set", "dept=3"]):
        p = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True,
                           cwd=ROOT, timeout=60)
        assert "NO_TORCH" in p.stderr, (argv, p.stderr[-500:])


def test_train_help_shows_defaults_examples_and_settings(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--resume --out runs/mae-tiny" in text
    assert "(default: tiny" in text and "(default: 0.75)" in text and "(default: 10)" in text
    assert "python -m workbench settings" in text
    assert main(["settings"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"^\s+depth\s+6$", listing, re.M)  # the tiny preset's encoder depth
    assert re.search(r"^\s+steps\s+300$", listing, re.M)  # and its training length
    assert "norm_pix_loss" in listing and "base_lr" in listing


def test_common_entry_points_import_from_the_top_level():
    import workbench
    from workbench import (TrainConfig, build_model, export_hf, export_timm,  # noqa: F401
                           load_checkpoint, load_models, reconstruct, train)
    from workbench.checkpoints import load_checkpoint as direct

    assert load_checkpoint is direct and set(workbench.__all__) >= {"export_hf", "train"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        workbench.nope


def test_cli_model_kinds_are_the_registered_ones():
    """--model offers the table of kinds (read without torch), and every kind has its class."""
    from workbench.core.config import MODEL_KINDS
    from workbench.models import MODEL_CLASSES

    train = build_parser().train_parser
    assert MODEL_CLASSES.names() == MODEL_KINDS.names()
    for kind in MODEL_CLASSES:
        assert train.parse_args(["--model", kind]).kind == kind
        assert MODEL_CLASSES.get(kind).has_fusion == MODEL_KINDS.get(kind).has_fusion
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "simmim"])


# ----------------------------------------------------------------------------- runs
def test_log_lines_off_a_terminal_and_finished_run_message(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out)) == 0  # pytest's capture: stdout/stderr are not terminals
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith("[train] step ")]
    assert len(lines) == 2, text
    assert re.match(r"\[train\] step 2/4  loss \d+\.\d{4}  lr \d\.\d\de-\d\d  \d+ img/s  ETA \S+",
                    lines[0]), lines[0]
    final = records(out)[-1]
    assert f"[train] run (mae, tiny): step 4/4, loss {final['loss']:.4f}" in text  # the run's name
    # run again: already complete, with the checkpoint's numbers (not "loss nan")
    assert main(["train", "--resume", "--out", str(out), "--device", "cpu"]) == 0
    again = capsys.readouterr().out
    assert "already complete at step 4" in again and "nan" not in again
    assert f"loss {final['loss']:.4f}" in again
    assert f"held-out loss {final['heldout_loss']:.4f}" in again
    assert records(out)[-1] == final  # nothing rewritten
    # the same command again without --resume: refused, saying what the directory holds
    assert main(train_args(out)) == 1
    assert f"holds a run (complete at step 4, loss {final['loss']:.4f}): pass --resume" in \
        capsys.readouterr().err
    # --no-progress: only the result
    assert main(train_args(tmp_path / "quiet", "--no-progress")) == 0
    assert "[train] step " not in capsys.readouterr().out


def test_resume_takes_the_run_from_the_checkpoint_and_names_changes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out, "--set", "base_lr=1e-2")) == 0
    # no --model, --preset or --set: the checkpoint's model and settings; more steps warn that
    # the schedule changes
    with pytest.warns(UserWarning, match="steps 6 instead of 4: the lr schedule"):
        assert main(["train", "--resume", "--out", str(out), "--steps", "6", "--device", "cpu",
                     "--no-progress"]) == 0
    conf = json.loads((out / "config.json").read_text())
    assert conf["config"]["embed_dim"] == 64 and conf["train_config"]["kind"] == "mae"
    assert conf["train_config"]["base_lr"] == 1e-2 and conf["train_config"]["steps"] == 6
    assert [r["step"] for r in records(out)] == [2, 4, 6]
    capsys.readouterr()
    # a different model: the differing fields by name, not two dicts
    assert main(["train", "--resume", "--out", str(out), "--steps", "8", "--device", "cpu",
                 "--set", "depth=3", "--mask-ratio", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "different model" in err and "depth: checkpoint 2, requested 3" in err
    assert "mask_ratio: checkpoint 0.75, requested 0.5" in err and "embed_dim" not in err


@pytest.mark.parametrize("ratio, words", [(0.0, "masks none of the 16 patches"),
                                          (0.95, "masks all of the 16 patches")])
def test_mask_ratios_with_nothing_to_predict_or_nothing_seen_are_refused(tmp_path, capsys,
                                                                          ratio, words):
    out = tmp_path / "run"
    assert main(train_args(out, "--mask-ratio", str(ratio))) == 1
    err = capsys.readouterr().err
    assert words in err and "4x4 grid" in err
    assert not out.exists()


def test_failed_start_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(train_args(out, "--data", str(tmp_path / "no-such-folder"))) == 1
    assert "not found" in capsys.readouterr().err and not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(train_args(out, "--data", str(empty))) == 1
    assert "no class subfolders" in capsys.readouterr().err and not out.exists()
    # a start that fails after the directory is made removes it; an existing directory stays
    import workbench.training.loop as loop

    def no_model(*_):
        raise ValueError("no model today")

    monkeypatch.setattr(loop, "build_train_state", no_model)
    assert main(train_args(out)) == 1
    assert "no model today" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    assert main(train_args(out)) == 1 and out.is_dir()


def test_small_folder_warns_and_names_its_training_image_loss(tmp_path):
    data = tmp_path / "imgs"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for k in range(2):  # 4 images: fewer than a batch, none held out (every 10th is)
            Image.new("RGB", (20, 20), (60 * k, 90, 30)).save(data / c / f"{k}.png")
    out = tmp_path / "run"
    with pytest.warns(UserWarning) as seen:
        assert main(train_args(out, "--data", str(data), "--no-progress")) == 0
    text = " ".join(str(w.message) for w in seen)
    assert "4 training images, fewer than one batch (8)" in text
    assert "train_images_loss" in text
    last = records(out)[-1]
    assert "heldout_loss" not in last and last["train_images_loss"] > 0


def test_resume_a_checkpoint_written_before_a_model_field_existed(tmp_path):
    """A field added to ModelConfig later (layer_norm_eps) takes its default when an older
    checkpoint is resumed: not a 'different model'."""
    import torch

    out = tmp_path / "run"
    assert main(train_args(out, "--no-progress")) == 0
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    del ck["config"]["layer_norm_eps"]
    torch.save(ck, out / "checkpoint.pt")
    assert main(["train", "--resume", "--out", str(out), "--steps", "6", "--device", "cpu",
                 "--no-progress"]) == 0
    assert records(out)[-1]["step"] == 6
