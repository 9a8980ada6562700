"""Where a result came from: package versions and the git commit of a checkout."""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """``{"python": ..., name: installed version or None}`` for each distribution name."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(root: str | Path, short: bool = False) -> str | None:
    """The checkout's HEAD commit, with ``-dirty`` when tracked files differ from it; None outside
    a git checkout (or without git)."""
    try:
        args = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
        commit = subprocess.run(args, cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None
