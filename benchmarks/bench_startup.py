"""Start-up as users feel it: whole processes, timed from outside, from start to exit.

    python benchmarks/bench_startup.py [--runs 5]

Each command runs ``--runs`` times, the commands in turn (so that a slow moment of the
machine spreads over all of them); medians are printed. ``import torch`` is timed with a
normal exit and with ``os._exit`` (what ``tdvideo``'s command line does), which shows
what the interpreter's teardown costs after torch was imported.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def commands() -> dict[str, list[str]]:
    exe = shutil.which("tdvideo") or str(Path(sys.executable).with_name("tdvideo"))
    python = sys.executable
    return {
        "tdvideo --version": [exe, "--version"],
        "tdvideo --help": [exe, "--help"],
        "tdvideo extract --help": [exe, "extract", "--help"],
        "tdvideo models": [exe, "models"],
        "python -c 'import tdvideo'": [python, "-c", "import tdvideo"],
        "python: import torch, normal exit": [python, "-c", "import torch"],
        "python: import torch, os._exit": [python, "-c", "import os, torch; os._exit(0)"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    todo = commands()
    times: dict[str, list[float]] = {label: [] for label in todo}
    cwd = tempfile.mkdtemp(prefix="tdvideo-startup-")  # no checkout on sys.path by accident
    for _ in range(args.runs):
        for label, command in todo.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=cwd)
            times[label].append(time.perf_counter() - start)
    shutil.rmtree(cwd, ignore_errors=True)
    for label, seconds in times.items():
        print(f"{label:<36} {statistics.median(seconds):5.2f} s  (range {min(seconds):.2f}-{max(seconds):.2f})")


if __name__ == "__main__":
    main()
