"""The Ray engine against the local engine on one machine, as users feel it, and where the CPU goes.

    python benchmarks/bench_ray.py [--rounds 2] [--cache DIR] [--model resnet18]

A folder of 8 clips of 10 s, 1280x720 H.264 (bench_storage.py's ``storage8x10s``, generated
once under --cache), extracted as whole processes from outside, start-up included:

    tdvideo extract DIR -o OUT -q --overwrite --model resnet18 --weights none --engine local|ray

one untimed run of each first, then --rounds rounds, the two engines alternating (and which
goes first alternating too). Printed: each run's wall time, the median of each engine and
the ratio local / ray (the goal: >= 0.85).

Where the CPU goes: while a command runs, every process below it is sampled from /proc
every 0.1 s (its own user + system time; a process's last 0.1 s before it exits can be
missed) and put in one of:

- local engine: ``main`` (the command's own process: start-up, batching, the model, the
  writer) and ``decoding`` (its decoding workers, ``worker_entry``);
- Ray engine: ``driver`` (the command's process: start-up, planning, Ray Data's executor,
  reassembly, the writer), ``model`` (the model actor, ``ray::MapWorker``), ``decoding``
  (the worker processes that ran a decoding task, ``ray::FlatMap(_decode)``) and ``ray``
  (Ray's own: the GCS, the raylet, the dashboard and its agents, monitors, Ray Data's
  helper actors and idle workers).

The medians of each part over the rounds are printed beside the wall times.
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
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import make_clip, make_folder  # a sibling script, not a package: after the path is set

GOAL = 0.85
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process itself) from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class TreeSampler:
    """The CPU seconds of every process below ``root``, each with what it was seen running."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.members = {root}
        self.cpu: dict[int, float] = {}
        self.seen: dict[int, set[str]] = defaultdict(set)

    def sample(self) -> None:
        stats = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = _stat(int(name))
                if stat is not None:
                    stats[int(name)] = stat
        # Parents first: a process is ours if its parent is (once ours, always ours).
        changed = True
        while changed:
            changed = False
            for pid, (parent, _) in stats.items():
                if pid not in self.members and parent in self.members:
                    self.members.add(pid)
                    changed = True
        for pid in self.members & stats.keys():
            self.cpu[pid] = stats[pid][1]
            self.seen[pid].add(_cmdline(pid))

    def parts(self, engine: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for pid, seconds in self.cpu.items():
            lines = " ".join(self.seen[pid])
            if pid == self.root:
                part = "main" if engine == "local" else "driver"
            elif engine == "local":
                part = "decoding" if "worker_entry" in lines else "other"
            elif "MapWorker" in lines:
                part = "model"
            elif "_decode" in lines:
                part = "decoding"
            else:
                part = "ray"
            out[part] += seconds
        return dict(out)


def run(engine: str, folder: Path, out: Path, model: str) -> tuple[float, dict[str, float]]:
    argv = [sys.executable, "-m", "tdvideo", "extract", str(folder), "-o", str(out), "-q", "--overwrite",
            "--model", model, "--weights", "none", "--engine", engine]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    while proc.poll() is None:
        sampler.sample()
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}\n{err[-2000:]}")
    return seconds, sampler.parts(engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tdvideo-bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    clips = make_folder(args.cache, "storage8x10s", make_clip(args.cache, 10), count=8)
    folder = clips[0].parent
    tmp = Path(tempfile.mkdtemp(prefix="tdvideo-bench-ray-"))
    import ray

    print(f"{os.cpu_count()} CPUs, Ray {ray.__version__}; {len(clips)} x {clips[0].name}; model {args.model} (--weights none)")
    try:
        for engine in ("local", "ray"):  # untimed: the page cache, .pyc files
            run(engine, folder, tmp / engine, args.model)
        walls: dict[str, list[float]] = {"local": [], "ray": []}
        parts: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
        for r in range(args.rounds):
            for engine in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                seconds, split = run(engine, folder, tmp / engine, args.model)
                walls[engine].append(seconds)
                parts[engine].append(split)
                shown = ", ".join(f"{k} {v:.1f}" for k, v in sorted(split.items()))
                print(f"  round {r + 1}: {engine:<5} {seconds:6.2f} s   CPU s: {shown} (total {sum(split.values()):.1f})", flush=True)
        for engine in ("local", "ray"):
            names = sorted({k for split in parts[engine] for k in split})
            medians = {k: statistics.median(split.get(k, 0.0) for split in parts[engine]) for k in names}
            shown = ", ".join(f"{k} {v:.1f}" for k, v in medians.items())
            print(f"{engine:<5} median {statistics.median(walls[engine]):6.2f} s   CPU s (medians): {shown}")
        ratio = statistics.median(walls["local"]) / statistics.median(walls["ray"])
        ratios = sorted(lo / ra for lo, ra in zip(walls["local"], walls["ray"]))
        print(f"ratio local / ray: {ratio:.2f} (per round {ratios[0]:.2f}-{ratios[-1]:.2f}; goal >= {GOAL}: {'meets' if ratio >= GOAL else 'BELOW'})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
