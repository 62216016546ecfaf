"""Scaling out on one machine: static shards against claim mode, and Ray against local.

    python benchmarks/bench_scaleout.py [--rounds 2] [--model resnet18]

A folder of generated clips of very different lengths (one long, many short: the case
where a fixed hash share leaves a process idle), run as whole processes timed from
outside, start-up included, in alternating rounds:
  1. one process; two processes with static shards (--shard 0/2 and 1/2); two processes
     with --balance claim. Each process decodes in this process (--workers 0), so two
     processes use the two cores the way two GPU ranks would use two GPUs.
  2. the Ray engine (a local Ray instance started by the command) against the local
     engine, whole process; and in process, with Ray already started, to separate Ray's
     start-up from its per-run cost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tdvideo.synthetic import index_frame, write_clip

LENGTHS = [600, 40, 30, 50, 20, 45, 35, 25, 60, 30, 40, 20]  # frames at 25 fps: one long, eleven short


def make_folder(root: Path) -> Path:
    folder = root / "skewed"
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(LENGTHS):
        path = folder / f"v{i:02d}.mp4"
        if not path.exists():
            write_clip(path, n, make_frame=lambda k: index_frame(k, 180, 320))
    return folder


def run_processes(commands: list[list[str]], env: dict[str, str]) -> float:
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env) for c in commands]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(commands[0])} failed: {err[-800:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tdvideo-bench")
    parser.add_argument(
        "--one-core-each", action="store_true",
        help="each process on one core (OMP_NUM_THREADS=1, --threads 1), as each rank on its own GPU would be; skips Ray",
    )
    args = parser.parse_args()
    folder = make_folder(args.cache)
    tmp = Path(tempfile.mkdtemp(prefix="tdvideo-scale-"))
    base = [sys.executable, "-m", "tdvideo", "extract", str(folder), "-q", "--model", args.model, "--weights", "none", "--workers", "0"]
    out = str(tmp / "out")
    env = dict(os.environ)
    if args.one_core_each:
        env["OMP_NUM_THREADS"] = "1"
        base += ["--threads", "1"]
    cases = {
        "1 process": [[*base, "-o", out]],
        "2 processes, static": [[*base, "-o", out, "--shard", f"{r}/2"] for r in range(2)],
        "2 processes, claim": [[*base, "-o", out, "--balance", "claim"] for _ in range(2)],
        "ray engine (local Ray, 2 CPUs)": [[*base[:-2], "-o", out, "--engine", "ray"]],  # without --workers 0
    }
    print(f"{len(LENGTHS)} clips of {sum(LENGTHS)} frames (longest {max(LENGTHS)}), 320x180; model {args.model}; {os.cpu_count()} cores")
    if args.one_core_each:
        del cases["ray engine (local Ray, 2 CPUs)"]
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, commands in cases.items():
            shutil.rmtree(out, ignore_errors=True)
            times[name].append(run_processes(commands, env))
    for name, seconds in times.items():
        print(f"{name:<32} {statistics.median(seconds):6.2f} s  (runs: {', '.join(f'{s:.2f}' for s in seconds)})")
    if args.one_core_each:
        shutil.rmtree(tmp, ignore_errors=True)
        return

    import ray

    import tdvideo

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, include_dashboard=False)
    started = time.perf_counter() - start
    extractor = tdvideo.Extractor(model=args.model, weights="none")
    for engine in ("local", "ray", "local", "ray"):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        results = list(extractor.run([folder], out=out, engine=engine, progress=False))
        assert all(r.status == "done" for r in results)
        print(f"in process, {engine:<5} engine: {time.perf_counter() - start:6.2f} s (ray.init took {started:.2f} s)")
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
