"""The evidence profile: the papers' claims over training seeds, minibatches and mask ratios.

    python analysis/evidence.py                    # CPU profile into evidence/ (make evidence)
    python analysis/evidence.py --profile gpu      # the same plan at the gpu-small preset
    python analysis/evidence.py --out DIR --jobs 2

The command line of ``workbench.experiments.evidence`` (the plan, its jobs and its report).
"""
from __future__ import annotations

import sys

from workbench.experiments.evidence import main

if __name__ == "__main__":
    sys.exit(main())
