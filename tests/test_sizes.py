"""Sizes checked before anything is allocated (issue 29): the closed-form parameter count against
real models, the activation estimate against what autograd keeps, settings checked against the
weights by every checkpoint converter, refusals of what cannot fit (hostile files and settings
run in a subprocess under a 4 GiB address-space limit, so a regression fails the test instead of
taking the machine), ``train --dry-run`` and ``info``, the probes' cost notices and refusals, and
SIGTERM sent to the torchrun launcher itself."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import workbench.core.sizes as sizes
from workbench.__main__ import main
from workbench.checkpoints import (CheckpointError, checkpoint_dict, export_timm, load_checkpoint,
                                   save_checkpoint)
from workbench.core.config import ModelConfig
from workbench.checkpoints.hf import export_hf
from workbench.models import build_model, model_from_config
from workbench.probes import hessian_trace, mae_loss_fn, select_parameters
from workbench.core.sizes import activation_elements, model_size, training_size
from workbench.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 4 << 30  # RLIMIT_AS of the hostile cases' subprocesses
SMALL = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32,
             decoder_depth=2, decoder_num_heads=2)
SMALL_ARGS = [f"--set={k}={v}" for k, v in SMALL.items()]


def limited() -> None:
    """preexec_fn: the child may map at most LIMIT bytes (a regression fails, not the machine)."""
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def run_limited(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Python ``code`` in a fresh interpreter under the address-space limit, one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limited)


# ----------------------------------------------------------------------------- the closed form
@pytest.mark.parametrize("kind,extra", [
    ("mae", {}), ("mff", {}), ("mff", {"fusion_proj": "mlp", "depth": 5}),
    ("mff", {"fusion_proj": "identity", "fuse_layers": [0, 1]}),
    ("mae", {"mask_token_in_encoder": True}), ("mae", {"mlp_ratio": 2.5, "in_chans": 1}),
    ("mff", {"img_size": 24, "patch_size": 8, "decoder_embed_dim": 16, "decoder_depth": 1})])
def test_parameter_count_equals_the_built_models(kind, extra):
    model = build_model(kind, **{**SMALL, **extra})
    size = model_size(model.cfg)
    assert size.parameters == sum(p.numel() for p in model.parameters())
    assert size.parameters == sum(v.numel() for v in model.state_dict().values())
    assert size.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert size.fusion == (sum(p.numel() for p in model.fusion.parameters())
                           if model.has_fusion else 0)
    assert size.weight_bytes == 4 * size.parameters
    assert sum(size.parts.values()) == size.parameters
    # an encoder-only model (has_decoder=False) still holds its decoder's tensors
    bare = model_from_config(model.cfg, has_decoder=False)
    assert sum(p.numel() for p in bare.parameters()) == size.parameters


@pytest.mark.parametrize("kind", ["mae", "mff"])
def test_parameter_count_of_the_tiny_preset(kind):
    model = build_model(kind, "tiny")
    assert model_size(model.cfg).parameters == sum(p.numel() for p in model.parameters())


def saved_bytes(model, fn) -> int:
    """Bytes of the tensors autograd saves while ``fn`` runs (each storage once; the model's own
    weights, which any step holds anyway, left out)."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            seen[storage.data_ptr()] = storage.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("kind,extra", [("mae", {}), ("mff", {"fusion_proj": "mlp"}),
                                        ("mae", {"mask_token_in_encoder": True}),
                                        ("mae", {"mask_ratio": 0.5, "mlp_ratio": 2.0})])
def test_activation_estimate_is_what_autograd_keeps(kind, extra):
    """Counted tensor by tensor, the estimate is within a few per cent of what autograd saves
    for a training forward (fused attention), under math attention, and for the retained graph
    of a first gradient taken with create_graph (what every Hessian-vector product reuses)."""
    torch.manual_seed(0)
    model = build_model(kind, **{**SMALL, "img_size": 32, **extra})
    x, b = torch.randn(6, 3, 32, 32), 6
    train = saved_bytes(model, lambda: model(x, seed=0).loss)
    assert 0.95 < activation_elements(model.cfg) * 4 * b / train < 1.03
    params = [p for p in model.parameters() if p.requires_grad]
    with sdpa_kernel(SDPBackend.MATH):
        forward = saved_bytes(model, lambda: model(x, seed=0).loss)
        graph = saved_bytes(model, lambda: torch.autograd.grad(
            model(x, seed=0).loss, params, create_graph=True, allow_unused=True))
    assert 0.95 < activation_elements(model.cfg, math_attention=True) * 4 * b / forward < 1.03
    assert 0.9 < sizes.hvp_graph_bytes(model.cfg, b) / graph < 1.03
    assert training_size(model.cfg, b).activation_bytes == activation_elements(model.cfg) * 4 * b


def test_training_size_counts_gradients_and_two_moments():
    cfg = ModelConfig(kind="mff", **SMALL)
    t = training_size(cfg, micro_batch=8)
    n = model_size(cfg).trainable
    assert (t.gradient_bytes, t.optimizer_bytes) == (4 * n, 8 * n)
    assert t.rank_bytes == t.model.weight_bytes + 12 * n + t.activation_bytes
    assert training_size(cfg, 16).activation_bytes == 2 * t.activation_bytes


def test_machine_memory_is_the_smallest_limit():
    budget = sizes.machine_memory()
    assert 0 < budget.bytes <= sizes.physical_memory()
    assert "GiB" in budget.where or "MiB" in budget.where
    assert sizes.device_memory("cpu").bytes == budget.bytes


# ----------------------------------------------------------------------------- hostile inputs
HOSTILE_FILES = r"""
import json, sys
from pathlib import Path
from workbench.checkpoints import CheckpointError, load_checkpoint
for folder in sys.argv[1:]:
    try:
        load_checkpoint(folder)
        print("LOADED", folder)
    except CheckpointError as e:
        print("REFUSED", str(e).replace("\n", " "))
"""


def edit_config(folder: Path, **changes) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return folder


def test_hostile_files_are_refused_before_a_block_is_built(tmp_path):
    """A save_pretrained directory (what export_hf writes: the hub's file names, checked against
    transformers in test_hf) whose config.json says ten million layers; an encoder-only one whose
    config asks for a decoder of ten million blocks; a timm file whose blocks are numbered 0 and
    9999999. Loaded in a child under a 4 GiB address-space limit: each is refused with one line
    naming the numbers, fast, instead of std::bad_alloc."""
    torch.manual_seed(0)
    model = build_model("mae", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    layers = edit_config(export_hf(model, tmp_path / "layers"), num_hidden_layers=10_000_000)
    encoder = model_from_config(model.cfg, has_decoder=False)
    encoder.load_state_dict(model.state_dict())
    decoder = edit_config(export_hf(encoder, tmp_path / "decoder"),
                          decoder_num_hidden_layers=10_000_000)
    sd = export_timm(model)
    sd = {k.replace("blocks.1.", "blocks.9999999."): v for k, v in sd.items()}
    torch.save(sd, tmp_path / "gaps.pth")
    begin = time.perf_counter()
    proc = run_limited(HOSTILE_FILES, str(layers), str(decoder), str(tmp_path / "gaps.pth"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert len(out) == 3 and all(line.startswith("REFUSED") for line in out), proc.stdout
    assert ("config.json says num_hidden_layers=10000000 but the weights hold 2 encoder blocks"
            in out[0])
    assert "decoder_depth=10000000 x decoder_embed_dim=32" in out[1]
    assert "parameters" in out[1] and "GiB of fp32 weights" in out[1]
    assert "ulimit -v" in out[1]  # the child's address-space limit is the smaller budget
    assert "blocks numbered [0, 9999999]" in out[2]
    assert time.perf_counter() - begin < 60


def test_hf_config_that_contradicts_its_weights_names_each_setting(tmp_path):
    model = build_model("mae", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    folder = edit_config(export_hf(model, tmp_path / "hf"), hidden_size=128, num_attention_heads=2,
                         intermediate_size=512, decoder_num_hidden_layers=3, image_size=64)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(folder)
    msg = str(e.value)
    assert "\n" not in msg
    for said in ("config.json says hidden_size=128 but the weights hold width 64",
                 "config.json says image_size=64 but the weights hold 4x4 patches of 8 px",
                 "config.json says intermediate_size=512 but the weights hold an MLP of 256",
                 "config.json says decoder_num_hidden_layers=3 but the weights hold 1 decoder"):
        assert said in msg, msg


def to_mmpretrain(sd: dict) -> dict:
    """Official MAE keys -> mmpretrain's (backbone. / neck.), enough for the converter."""
    sub = [("norm1.", "ln1."), ("norm2.", "ln2."), ("mlp.fc1.", "ffn.layers.0.0."),
           ("mlp.fc2.", "ffn.layers.1.")]
    out = {}
    for k, v in sd.items():
        for ours, mm in (("blocks.", "backbone.layers."),
                         ("decoder_blocks.", "neck.decoder_blocks.")):
            if k.startswith(ours):
                idx, tail = k[len(ours):].split(".", 1)
                tail = next((m + tail[len(o):] for o, m in sub if tail.startswith(o)), tail)
                k = f"{mm}{idx}.{tail}"
                break
        else:
            k = {"norm.weight": "backbone.ln1.weight", "norm.bias": "backbone.ln1.bias",
                 "decoder_norm.weight": "neck.ln1.weight",
                 "decoder_norm.bias": "neck.ln1.bias"}.get(k, k)
            if k.startswith("patch_embed.proj."):
                k = "backbone.patch_embed.projection." + k[len("patch_embed.proj."):]
            elif k in ("cls_token", "pos_embed"):
                k = "backbone." + k
            elif not k.startswith(("backbone.", "neck.")):
                k = "neck." + k
        out[k] = v
    return out


def test_every_converter_checks_settings_against_the_weights(tmp_path):
    """Each layout's settings -- our stored config, the caller's overrides on timm / official /
    mmpretrain files (whose dimensions come from the shapes) -- are compared with the tensors
    before a model is built, and the disagreement is named in one line."""
    model = build_model("mae", **SMALL)
    ours = tmp_path / "ours.pt"
    obj = checkpoint_dict(model)
    obj["config"]["depth"] = 5
    torch.save(obj, ours)
    with pytest.raises(CheckpointError, match="workbench checkpoint contradicts itself: the "
                       "file's config says depth=5 but the weights hold 2 encoder blocks"):
        load_checkpoint(ours)
    save_checkpoint(model, ours)
    with pytest.raises(CheckpointError, match="the override embed_dim=64 but the weights hold "
                       r"width 32 \(patch_embed.proj.weight \[32, 3, 4, 4\]\)"):
        load_checkpoint(ours, embed_dim=64)
    timm = tmp_path / "timm.pth"
    export_timm(model, timm)
    with pytest.raises(CheckpointError, match="timm checkpoint contradicts itself: the override "
                       "depth=3 but the weights hold 2 encoder blocks"):
        load_checkpoint(timm, depth=3, num_heads=2)
    official = tmp_path / "official.pth"
    torch.save({"model": model.state_dict()}, official)
    with pytest.raises(CheckpointError, match="mae-official checkpoint contradicts itself: the "
                       "override decoder_depth=4 but the weights hold 2 decoder blocks"):
        load_checkpoint(official, num_heads=2, decoder_num_heads=2, decoder_depth=4)
    mm = tmp_path / "mm.pth"
    torch.save({"meta": {}, "state_dict": to_mmpretrain(model.state_dict())}, mm)
    assert load_checkpoint(mm, num_heads=2, decoder_num_heads=2).cfg.depth == 2
    with pytest.raises(CheckpointError, match="mmpretrain checkpoint contradicts itself: the "
                       "override patch_size=8 but the weights hold 4 px patches"):
        load_checkpoint(mm, num_heads=2, decoder_num_heads=2, patch_size=8)


HOSTILE_TRAIN = r"""
import sys
from workbench.__main__ import main
for argv in (["train", "--set", "depth=1000000", "--out", sys.argv[1]],
             ["train", "--set", "embed_dim=1000000", "--set", "num_heads=16", "--out", sys.argv[1]],
             ["train", "--set", "embed_dim=1000000", "--out", sys.argv[1]]):
    print("RC", main(argv), flush=True)
"""


def test_train_with_a_million_blocks_or_width_is_refused_at_start(tmp_path):
    """``train --set depth=1000000`` / ``--set embed_dim=1000000``: an error naming the setting,
    the parameters, the fp32 bytes and the memory there is, before any block is built and before
    the run directory is made (in a child under a 4 GiB address-space limit). The width alone
    (with the tiny preset's 3 heads) already fails the divisibility check."""
    out = tmp_path / "run"
    proc = run_limited(HOSTILE_TRAIN, str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["RC", "1"] * 3, (proc.stdout, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, proc.stderr[-3000:]
    depth, width, heads = errors
    assert depth.startswith("error: depth=1000000 x embed_dim=192: the model would have 4.4e11 "
                            "parameters, 1.62 TiB of fp32 weights; this process may map"), depth
    assert width.startswith("error: depth=6 x embed_dim=1000000: the model would have 7.7e13 "
                            "parameters, 280 TiB of fp32 weights;"), width
    assert "Nothing was built" in depth and "ViT-H" in depth
    assert heads == "error: embed_dim 1000000 is not divisible by num_heads 3"
    assert not out.exists()
    assert "Traceback" not in proc.stderr


def test_build_model_refuses_a_million_blocks_before_building():
    """The Python API's ``build_model`` checks the size as ``train`` does (in a child under the
    address-space limit: a regression fails there, not the machine)."""
    proc = run_limited("from workbench import build_model\n"
                       "try:\n    build_model('mae', 'tiny', depth=1_000_000)\n"
                       "except ValueError as e:\n    print('REFUSED', e)\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("REFUSED depth=1000000 x embed_dim=192"), proc.stdout


# ----------------------------------------------------------------------------- CLI
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--dry-run", "--model", "mae", "--steps", "40", "--batch-size", "8",
               "--out", str(out), "--data", "shapes", *SMALL_ARGS, "--set", "accum_steps=2"])
    text = capsys.readouterr().out
    assert rc == 0 and not out.exists()
    lines = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    assert text.startswith("[dry-run] the plan; nothing is trained or written")
    assert f"{out} (new)" in lines["run"]
    assert "steps              40; warmup 2" in lines["steps"]
    assert "8 images a step = 1 rank(s) x 2 micro-batch(es) x 4 images" in lines["batch"]
    assert lines["data"].startswith("data               shapes")
    assert lines["device"].endswith("cpu, fp32") or "cuda" in lines["device"]
    n = sum(p.numel() for p in build_model("mae", **SMALL).parameters())
    assert lines["parameters"].startswith(f"parameters         {sizes.human_count(n)} (")
    assert "fits:" in lines["memory"]


def test_dry_run_refuses_what_cannot_fit(tmp_path, capsys, monkeypatch):
    """The paper's recipe (batch 4096) on a machine of 64 GiB: refused with the activations
    named and what to change; the same model at batch 64 fits."""
    monkeypatch.setattr(sizes, "machine_memory",
                        lambda: sizes.MemoryBudget(64 << 30, "this machine has 64 GiB of memory"))
    argv = ["train", "--dry-run", "--model", "mae", "--preset", "vit-b", "--device", "cpu",
            "--out", str(tmp_path / "run")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 4096 images per micro-batch x 50 encoder / 197 decoder tokens")
    assert "this machine has 64 GiB of memory" in err
    assert "lower batch_size or raise accum_steps" in err.lower()
    assert main([*argv, "--batch-size", "64"]) == 0
    assert "fits: this machine has 64 GiB" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def test_info_prints_the_size_estimate(tmp_path, capsys):
    model = build_model("mff", **SMALL)
    path = tmp_path / "ck.pt"
    save_checkpoint(model, path)
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    n = sum(p.numel() for p in model.parameters())
    assert f"parameters         {sizes.human_count(n)} (encoder" in text
    assert "fp32 weights       " in text and "per micro-batch" in text
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == n and info["weight_bytes_fp32"] == 4 * n
    assert info["activation_bytes_per_image"] == activation_elements(model.cfg) * 4


# ----------------------------------------------------------------------------- probes
HOSTILE_PROBES = r"""
import torch
import workbench.core.sizes as sizes
from workbench.models import build_model
from workbench.probes import (hessian_density, hessian_spectrum, loss_landscape, mae_loss_fn,
                              select_parameters, top_hessian_eigenvalues)
torch.manual_seed(0)
model = build_model("mae", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                    decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2).eval()
x = torch.randn(2, 3, 16, 16)
loss_fn = mae_loss_fn(model, x)
params = select_parameters(model)
def refused(call):
    try:
        call()
        print("RAN")
    except sizes.TooLarge as e:
        print("REFUSED", e)
# ~42k parameters: a full Lanczos basis of 1e6 steps (capped at n) is n^2 floats, 6.7 GiB
refused(lambda: hessian_density(loss_fn, params, lanczos_steps=10**6))
refused(lambda: top_hessian_eigenvalues(loss_fn, params, k=1, ncv=10**6))
# a machine of 64 KiB: the retained graph of one batch does not fit, nor the landscape's copies
sizes.machine_memory = lambda: sizes.MemoryBudget(1 << 16, "this machine has 64 KiB")
refused(lambda: hessian_spectrum(model, x, k=1, progress=False))
refused(lambda: loss_landscape(model, loss_fn, directions=2, steps=3))
"""


def test_probes_refuse_what_cannot_fit():
    proc = run_limited(HOSTILE_PROBES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert len(out) == 4 and all(line.startswith("REFUSED") for line in out), proc.stdout
    density, lanczos, spectrum, landscape = out
    assert "hessian_density(lanczos_steps=1000000) Lanczos basis: 42512 vectors of 42.5K " \
           "parameters need 6.73 GiB" in density and "reorthogonalize=False" in density
    assert "top_hessian_eigenvalues(k=1) Lanczos basis" in lanczos
    assert "hessian_spectrum: ~" in spectrum and "of retained graph for 2 images" in spectrum
    assert "this machine has 64 KiB" in spectrum
    assert "loss_landscape(directions=2)" in landscape and "3 vectors" in landscape


def test_long_probes_say_what_they_will_cost(capsys, monkeypatch):
    """A probe whose planned Hessian-vector products (the first one timed, not an extra one)
    exceed the notice threshold prints its expected cost first; under it, nothing is printed
    and the product count is unchanged."""
    torch.manual_seed(0)
    model = build_model("mae", **SMALL).eval()
    loss_fn = mae_loss_fn(model, torch.randn(2, 3, 16, 16))
    params = select_parameters(model, "decoder")
    quiet = hessian_trace(loss_fn, params, num_samples=4)
    assert capsys.readouterr().out == "" and quiet.num_hvps == 4
    monkeypatch.setattr(sizes, "COST_NOTICE_S", 0.0)
    loud = hessian_trace(loss_fn, params, num_samples=4)
    text = capsys.readouterr().out
    assert text.startswith("[hessian_trace] expected ~") and loud.num_hvps == 4
    assert "3 more Hessian-vector products x " in text and "(the first one, timed)" in text
    assert loud.estimate == quiet.estimate


# ----------------------------------------------------------------------------- torchrun SIGTERM
TORCHRUN_SCRIPT = """
import json, os, sys
import workbench.training.loop as loop
from workbench import TrainConfig, train
real = loop.train_step

def step_then_mark(state, batches):  # both ranks say when they are past step 2
    loss = real(state, batches)
    if state.step == 2:
        open(sys.argv[2] + os.environ["RANK"], "w").close()
    return loss

loop.train_step = step_then_mark
r = train(TrainConfig(**json.loads(sys.argv[1])))
with open(sys.argv[3] + os.environ["RANK"], "w") as f:
    json.dump({"step": r.step, "interrupted": r.interrupted}, f)
"""


def test_sigterm_to_the_torchrun_launcher_reaches_every_rank(tmp_path):
    """SIGTERM to torchrun itself (a scheduler stopping the job), not to a worker: the launcher
    forwards it to each rank's process group (os.killpg), so the ranks and their DataLoader
    workers get it. The workers ignore it (before the fix they died, and the ranks failed with
    "DataLoader worker ... is killed by signal: Terminated" at the next step, with no
    checkpoint); the ranks finish their step, stop together, rank 0 checkpoints that step and
    train() returns normally on both. The launcher itself then exits 1 with its SignalException
    (torch's behaviour, not checked here); it waits --shutdown-timeout (30 s) before SIGKILL."""
    script = tmp_path / "run_ddp.py"
    script.write_text(TORCHRUN_SCRIPT)
    cfg = TrainConfig(kind="mff", model_overrides=dict(SMALL), steps=200, batch_size=8,
                      base_lr=1e-2, warmup=2, log_every=1, ckpt_every=0, picture_every=0,
                      eval_images=8, knn_every=0, progress=False, num_workers=1,
                      out=str(tmp_path / "ddp"))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    mark, result = tmp_path / "past-step-2-", tmp_path / "result"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), json.dumps(cfg.to_dict()), str(mark), str(result)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 150
        while not all(Path(f"{mark}{r}").exists() for r in (0, 1)):
            assert launcher.poll() is None, launcher.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the ranks never got past step 2"
            time.sleep(0.05)
        launcher.send_signal(signal.SIGTERM)
        output = launcher.communicate(timeout=120)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert "killed by signal" not in output, output[-3000:]
    results = [json.loads(Path(f"{result}{r}").read_text()) for r in (0, 1)]
    assert {r["interrupted"] for r in results} == {"SIGTERM"}, (results, output[-3000:])
    step = results[0]["step"]
    assert results[1]["step"] == step and 3 <= step < 200
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt").checkpoint_info.step == step
    assert f"SIGTERM: interrupted at step {step}/200" in output
