"""How fast the command line answers when no work is asked: ``--help``, a subcommand's help,
``settings``, argument errors and a new run's value errors. None of them imports torch, so each costs a Python start-up
and argparse; ``python -c "import torch"`` is timed beside them, interleaved, as what every
answer would cost if the command line imported the package's models first.

Budget: 1 s per answer ("well under a second"). There is no peer, so ``ratio`` is budget ÷ the
slowest case's median (higher is better, ≥ 1 meets it).

    python bench/cli.py
"""
from __future__ import annotations

import subprocess
import sys
import time

import common
from common import header, median, table, write_result

BUDGET_S = 1.0
CASES = {
    "--help": ["-m", "workbench", "--help"],
    "train --help": ["-m", "workbench", "train", "--help"],
    "settings": ["-m", "workbench", "settings"],
    "bad --model": ["-m", "workbench", "train", "--model", "vit"],
    "unknown --set": ["-m", "workbench", "train", "--set", "dept=3"],
    # value errors of a new run, checked before torch is imported (issue 33.6)
    "--mask-ratio 1.5": ["-m", "workbench", "train", "--mask-ratio", "1.5"],
    "--preset vit-bb": ["-m", "workbench", "train", "--preset", "vit-bb"],
    "--data /nonexistent": ["-m", "workbench", "train", "--data", "/nonexistent"],
    "--batch-size 0": ["-m", "workbench", "train", "--batch-size", "0"],
    "--device tpu": ["-m", "workbench", "train", "--device", "tpu"],
}
REFERENCE = {"import torch": ["-c", "import torch"]}


def answer_time(argv: list[str]) -> float:
    """Wall seconds of one ``python ARGV`` run (its output discarded)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=common.ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main(rounds: int = 7) -> None:
    common.setup()
    header("command-line answers (no torch)")
    runs = {**CASES, **REFERENCE}
    times = common.interleave({name: (lambda a=argv: answer_time(a)) for name, argv in runs.items()},
                              rounds=rounds)
    rows = [{"case": name, "median_s": median(ts), "max_s": max(ts)} for name, ts in times.items()]
    print(table(rows, [("case", "case"), ("median_s", "median s"), ("max_s", "max s")]))
    slowest = max(median(times[name]) for name in CASES)
    write_result("cli", {"ratio": BUDGET_S / slowest, "budget_s": BUDGET_S,
                         "slowest_median_s": slowest, "rounds": rounds, "cases": rows})


if __name__ == "__main__":
    main()
