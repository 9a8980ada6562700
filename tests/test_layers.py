"""The package's layers import one way only (README "Where things live").

The contract is pyproject.toml's ``[tool.importlinter]``: each layer imports only from the
layers below it, siblings written "a | b" import neither each other. import-linter reads every
import statement, those inside functions and under ``TYPE_CHECKING`` included. A second check
refuses any import cycle between modules, a package's ``__init__`` and its submodules included.
Both are shown to fail on a copy of the package with a bad import planted on purpose.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the package under ``root`` with ``root``'s pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root)}  # before the editable install's finder
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", "--config",
                           str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def import_cycles(root: Path) -> list[list[str]]:
    """Every set of modules of the package under ``root`` that import each other round a loop
    (the strongly connected components with more than one module), found in a child process
    so that the package imported is the one under ``root``."""
    code = textwrap.dedent("""
        import json, grimp, numpy as np
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
        g = grimp.build_graph("workbench", cache_dir=None)
        mods = sorted(g.modules)
        at = {m: i for i, m in enumerate(mods)}
        edges = [(at[m], at[d]) for m in mods for d in g.find_modules_directly_imported_by(m)]
        rows, cols = zip(*edges) if edges else ((), ())
        adj = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(mods), len(mods)))
        _, label = connected_components(adj, directed=True, connection="strong")
        groups = {}
        for m, lab in zip(mods, label):
            groups.setdefault(int(lab), []).append(m)
        print(json.dumps([ms for ms in groups.values() if len(ms) > 1]))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=300, check=True)
    return json.loads(out.stdout)


def planted_copy(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package and its pyproject.toml with ``line`` added inside a function at
    the end of ``module`` (a lazy import: the contract must see it too)."""
    shutil.copytree(ROOT / "workbench", tmp_path / "workbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {line}\n")
    return tmp_path


def test_the_layer_contract_holds():
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "KEPT" in r.stdout


def test_there_is_no_import_cycle():
    assert import_cycles(ROOT) == []


def test_every_module_is_in_a_layer():
    """A new top-level module or package must be placed in the contract, or it is unchecked."""
    import tomllib
    layers = tomllib.loads((ROOT / "pyproject.toml").read_text()
                           )["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    tops = {"workbench." + p.stem for p in (ROOT / "workbench").iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert tops <= named, f"modules in no layer: {sorted(tops - named)}"


@pytest.mark.parametrize("module, line, names", [
    ("workbench.core.config", "from workbench.experiments import findings",
     ["workbench.core", "workbench.experiments"]),
    ("workbench.training.loop", "from workbench.probes import linear",
     ["workbench.training", "workbench.probes"]),
    ("workbench.models.mae", "from workbench.checkpoints import load_checkpoint",
     ["workbench.models", "workbench.checkpoints"]),
])
def test_the_contract_fails_on_a_planted_upward_import(tmp_path, module, line, names):
    r = lint_imports(planted_copy(tmp_path, module, line))
    assert r.returncode != 0 and "BROKEN" in r.stdout, r.stdout[-3000:]
    assert all(n in r.stdout for n in names) and module in r.stdout


def test_the_cycle_check_fails_on_a_planted_cycle(tmp_path):
    """core.io importing core.results is allowed by the layers (one layer), but results
    importing io back would close a loop: the cycle check names it."""
    root = planted_copy(tmp_path, "workbench.core.results", "from workbench.core import io")
    path = root / "workbench/core/io.py"
    path.write_text(path.read_text() + "\n\ndef _planted_back():\n"
                    "    from workbench.core import results\n")
    cycles = import_cycles(root)
    assert any({"workbench.core.io", "workbench.core.results"} <= set(c) for c in cycles), cycles
