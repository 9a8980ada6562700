"""The project's own files agree with each other."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted.update({_name(r): r.replace(" ", "") for r in extra})
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {_name(r): r.replace(" ", "") for r in pip}
    assert listed == wanted, (
        f"environment.yml and pyproject.toml disagree: only in pyproject "
        f"{sorted(set(wanted.items()) - set(listed.items()))}, only in environment.yml "
        f"{sorted(set(listed.items()) - set(wanted.items()))}")


def test_required_packages_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    for pkg in ("torch", "timm", "torchvision", "numpy", "matplotlib", "plotly", "ipywidgets",
                "jupyterlab", "papermill", "pyhessian", "scikit-image", "scikit-learn", "tqdm",
                "tensorboard"):
        assert pkg in names, pkg


def test_ci_runs_make_test_and_fails_on_failure():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "set -e" in ci
    # then the browser test, installing Debian's chromium when it is missing (and saying so)
    assert ci.index("make test\n") < ci.index("make test-browser")
    assert "apt-get install" in ci and "installing Debian's chromium" in ci
    assert re.search(r"^test:", (ROOT / "Makefile").read_text(), re.M)


# folders whose files the repository holds (the others a README path names are made by runs)
TRACKED = ("workbench", "tests", "analysis", "bench", "notebooks", "docs", "weights", ".ci")
PACKAGE_PARTS = tuple(p.name for p in (ROOT / "workbench").iterdir() if p.is_dir())


def readme_paths() -> set[str]:
    """Every path in backticks in README.md under a tracked folder; a path written from inside
    the package (``probes/learning.py``) is read as ``workbench/probes/learning.py``."""
    found = set()
    for ref in re.findall(r"`([\w.<>*/-]+/[\w.<>*/-]*)`", (ROOT / "README.md").read_text()):
        ref = ref.split("::")[0]
        first = ref.split("/")[0]
        if first in PACKAGE_PARTS and first != "__pycache__":
            ref = "workbench/" + ref
        if ref.split("/")[0] in TRACKED:
            found.add(ref)
    return found


def test_every_path_the_readme_names_exists():
    assert len(readme_paths()) > 20  # the reader still finds paths
    missing = [p for p in sorted(readme_paths())
               if not list(ROOT.glob(re.sub(r"<[^>]*>", "*", p).rstrip("/")))]
    assert not missing, f"README.md names paths that do not exist: {missing}"
