"""Names a package offers from its submodules, imported on first use (PEP 562), so that
``python -m workbench --help`` and the training settings load without torch."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: ``where`` maps each exported name to the
    submodule (relative, e.g. ``".loop"``) that defines it. The first use imports the submodule
    and keeps the value in the package, so later uses are plain attribute reads."""
    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
