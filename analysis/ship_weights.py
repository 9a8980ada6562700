"""Train the gallery's tiny MAE and MFF-MAE with the CPU learning regime and ship them.

    python analysis/ship_weights.py                 # train both into runs/ship/, write weights/
    python analysis/ship_weights.py --runs DIR      # reuse finished runs of the same command
    python analysis/ship_weights.py --runs DIR --commit SHA   # ... trained at commit SHA

The command line of ``workbench.experiments.ship_weights``.
"""
from __future__ import annotations

import sys

from workbench.experiments.ship_weights import main

if __name__ == "__main__":
    sys.exit(main())
