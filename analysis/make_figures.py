"""Regenerate every figure into a gallery: train (or take) checkpoints, run the notebooks with
papermill, and write ``manifest.json``, ``index.html`` and ``findings.md``.

    python analysis/make_figures.py                       # tiny MAE, MFF-MAE, pixel-target MAE
    python analysis/make_figures.py --mae A.pth --mff B.pth --out figures-vitb   # external models

The command line of ``workbench.experiments.figures`` (the batch; its gallery pages are
``workbench.experiments.gallery``, their captions ``workbench.experiments.captions``).
"""
from __future__ import annotations

import sys

from workbench.experiments.figures import main

if __name__ == "__main__":
    sys.exit(main())
