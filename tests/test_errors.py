"""Errors that name the real cause (issue 33): a file that is not a checkpoint says what it is,
a device this machine lacks says so, and images that are not what the model takes are refused
or warned about instead of giving quietly wrong numbers."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from workbench import build_model, load_checkpoint
from workbench.__main__ import main
from workbench.checkpoints import CheckpointError, save_weights
from workbench.data import normalize
from workbench.probes import top_hessian_eigenvalues

SMALL = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
             decoder_num_heads=2)


@pytest.fixture
def weights(tmp_path):
    model = build_model("mae", "tiny", **SMALL)
    save_weights(model, tmp_path / "model.safetensors")
    return tmp_path / "model.safetensors"


@pytest.mark.parametrize("text, what", [('{"model": {"depth": 4}}', "a JSON file"),
                                        ("notes on my runs\n", "a text file")])
def test_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path, capsys, text, what):
    path = tmp_path / "file"
    path.write_text(text)
    with pytest.raises(CheckpointError, match=what):
        load_checkpoint(path)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert what in err and "not a checkpoint" in err and "Error" not in err


def test_a_device_this_machine_lacks_is_named(weights):
    with pytest.raises(CheckpointError, match="not a torch device"):
        load_checkpoint(weights, map_location="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="CUDA is not available.*map_location='cpu'"):
            load_checkpoint(weights, map_location="cuda")


def test_train_names_an_unknown_device(tmp_path, capsys):
    assert main(["train", "--device", "tpu", "--steps", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) != 0
    assert "device 'tpu' is not one of auto, cpu, cuda" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_images_that_are_not_normalised_are_refused_or_warned_about():
    model = build_model("mae", "tiny", **SMALL).eval()
    pixels = torch.rand(4, 3, 32, 32)
    with pytest.raises(TypeError, match="uint8"):
        model((pixels * 255).to(torch.uint8), seed=0)
    with pytest.raises(ValueError, match="beyond any ImageNet-normalised"):
        model(pixels * 255, seed=0)
    with pytest.warns(UserWarning, match=r"look like \[0, 1\] pixels"):
        model.encode(pixels)
    grey, white = torch.full((1, 3, 32, 32), 128.0), torch.full((1, 3, 32, 32), 255.0)
    quiet = [normalize(pixels * 255), torch.randn(8, 3, 32, 32), normalize(grey), normalize(white)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for imgs in quiet:
            model(imgs, seed=0)
    model.train()  # training steps are not checked by value (that would wait for the device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(pixels, seed=0)


def test_hessian_takes_parameters_or_named_parameters_and_names_frozen_ones():
    torch.manual_seed(0)
    model = build_model("mae", "tiny", **SMALL)
    imgs = torch.randn(4, 3, 32, 32)

    def loss():
        return model(imgs, seed=0).loss

    trainable = [p for p in model.parameters() if p.requires_grad]
    want = top_hessian_eigenvalues(loss, trainable, k=1)
    with pytest.warns(UserWarning, match="frozen parameter.*pos_embed, decoder_pos_embed"):
        named = top_hessian_eigenvalues(loss, model.named_parameters(), k=1)
    with pytest.warns(UserWarning, match=r"frozen parameter.*#1"):
        plain = top_hessian_eigenvalues(loss, model.parameters(), k=1)
    assert torch.equal(named, want) and torch.equal(plain, want)
    with pytest.raises(ValueError, match="all frozen"):
        top_hessian_eigenvalues(loss, [model.pos_embed], k=1)
    with pytest.raises(TypeError, match="not a tensor"):
        top_hessian_eigenvalues(loss, [("w", 3.0)], k=1)


@pytest.mark.parametrize("args, message", [
    (["--mask-ratio", "1.5"], "mask_ratio must be in [0, 1), got 1.5"),
    (["--preset", "vit-bb"], "vit-bb"),
    (["--data", "/nonexistent-folder"], "image folder not found: /nonexistent-folder"),
    (["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (["--device", "tpu"], "device 'tpu' is not one of auto, cpu, cuda"),
])
def test_value_errors_answer_before_torch_is_imported(tmp_path, args, message):
    """A new run's values are checked before torch loads (bench/cli.py times the answer)."""
    code = ("import sys; from workbench.__main__ import main; "
            f"rc = main(['train', *{args!r}, '--out', {str(tmp_path / 'r')!r}]); "
            "print('torch' in sys.modules, rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["False", "1"], r.stdout + r.stderr
    assert message in r.stderr and not (tmp_path / "r").exists()


def test_set_without_equals_names_the_form():
    r = subprocess.run([sys.executable, "-m", "workbench", "train", "--set", "depth", "4"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--set takes KEY=VALUE, e.g. --set depth=..." in r.stderr


def test_resume_without_a_checkpoint_is_an_error_naming_the_folder(tmp_path, capsys):
    out = tmp_path / "typo"
    assert main(["train", "--resume", "--out", str(out), "--steps", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{out} holds no checkpoint" in err and "leave out --resume" in err
    assert not out.exists()  # nothing trained or left in the wrong place


def test_resume_if_any_starts_a_run_where_there_is_none(tmp_path):
    from workbench.training import IF_ANY, TrainConfig, run_training

    cfg = dict(kind="mae", preset="tiny", model_overrides=SMALL, steps=2, batch_size=4,
               out=str(tmp_path / "run"), progress=False, knn_every=0, picture_every=0,
               eval_images=4)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        run_training(TrainConfig(**cfg, resume=True))
    assert run_training(TrainConfig(**cfg, resume=IF_ANY)).step == 2  # started
    assert run_training(TrainConfig(**cfg, resume=True)).step == 2  # now there is one: done
    with pytest.raises(ValueError, match="resume must be"):
        run_training(TrainConfig(**cfg, resume="yes"))
