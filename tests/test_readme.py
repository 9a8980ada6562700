"""Every Python example in README.md runs as written (issue 33.5).

The examples run one after another in one folder, each in a fresh namespace, in a child
process. The files the checkpoint example names are stood in for by small ones in the same
layouts, made here with the workbench's own writers (an official-MAE file, an mmpretrain MFF
file, a save_pretrained folder, a hub snapshot in a private cache, timm weights): the example's
text is not changed, only what it loads is small.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from test_checkpoints import to_mmpretrain
from workbench import build_model
from workbench.checkpoints import export_timm
from workbench.checkpoints.hf import export_hf

ROOT = Path(__file__).resolve().parents[1]


def readme_examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", (ROOT / "README.md").read_text(), re.M | re.S)


def stand_ins(folder: Path) -> Path:
    """The checkpoints the README's loading example names, small, in their layouts; returns the
    private Hugging Face cache that holds ``facebook/vit-mae-base``."""
    torch.manual_seed(0)
    mae, mff = build_model("mae", "tiny", norm_pix_loss=False), build_model("mff", "tiny")
    torch.save({"model": mae.state_dict()}, folder / "mae_visualize_vit_large.pth")
    torch.save({"meta": {"epoch": 300}, "state_dict": to_mmpretrain(mff)},
               folder / "mff_vit-base.pth")
    export_hf(mae, folder / "my-vit-mae")
    hub = folder / "hf-cache"
    snapshot = hub / "models--facebook--vit-mae-base" / "snapshots" / ("a" * 40)
    export_hf(mae, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    (folder / "vit_base_patch16_224.mae").mkdir()
    export_timm(mae, folder / "vit_base_patch16_224.mae" / "model.safetensors")
    return hub


def test_the_readme_has_examples():
    examples = readme_examples()
    assert len(examples) >= 3 and all("import" in e for e in examples)


def test_every_readme_example_runs(tmp_path):
    hub = stand_ins(tmp_path)
    (tmp_path / "weights").symlink_to(ROOT / "weights")  # the shipped weights, as in a checkout
    runner = textwrap.dedent("""
        import sys
        for i, code in enumerate(sys.argv[1:], 1):
            exec(compile(code, f"README.md python example {i}", "exec"), {"__name__": "readme"})
            print(f"example {i} ran", flush=True)
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    r = subprocess.run([sys.executable, "-c", runner, *readme_examples()], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count(" ran") == len(readme_examples())
