"""Videos read from a store against the same videos on disk, as users feel it: whole processes.

    python benchmarks/bench_storage.py [--rounds 3] [--cache DIR] [--quick | --seconds S] [--speed-only]

1. speed: a folder of 8 clips of 10 s, 1280x720 H.264 at 25 fps with a panning noise texture
   (bench_decode.py's clips, generated once under --cache; 4 clips of 4 s with --quick),
   extracted with the default model, ``tdvideo extract DIR -o OUT -q --overwrite``, from
   local disk, against the same files uploaded to a bucket of moto's S3 server (started here
   on a free local port, stopped at the end): ``tdvideo extract s3://bkt/videos/ -o OUT2 -q
   --overwrite``. One untimed run of each first, then --rounds rounds, local and S3
   alternating (and which goes first alternating too). Printed: median seconds and CPU
   seconds (user + system, of the command and its worker processes) of each, the S3
   server's own CPU seconds, the ratio local / S3 (goal: >= 0.9), the range of the
   per-round ratios, and the ratio of CPU seconds (local against S3 and its server): on a
   machine whose cores the extraction keeps busy, the wall ratio tends to it.
2. memory: peak RSS of extracting one small object (one of those clips) against a 2 GiB one:
   the same clip with a sparse ``free`` box of 2 GiB put before its moov (as
   tests/test_storage.py's ``_padded`` does: a valid MP4, 2 GiB large, no disk taken), both
   served by tests/rangeserver.py (HTTP with Range) from a temporary folder; medians over
   the rounds, and the difference (goal: at most 300 MiB more). Then the same through S3
   with 256 MiB of padding: not 2 GiB, because moto is no real store: it answers every GET,
   ranged or not, by reading the whole object into its own memory (and keeps each object
   above about 5 MiB in a temporary file), so a 2 GiB object would cost the benchmark
   2 GiB of memory per request in flight, and 2 GiB of disk. Each pair runs with the
   default workers (as users run it) and with ``--workers 0``: the peak RSS of a command
   is the largest of its processes' (``wait4``), not their sum, so with a worker the main
   process's (torch, the model) hides up to a few hundred MiB of growth in the worker that
   reads the object; with ``--workers 0`` the reading is in the process measured.

Each command runs through ``tdvideo._system.measure_command``, from a neutral folder: its
wall time from start to exit (start-up and imports included) and its peak RSS. The S3 and
HTTP servers run on this machine and take CPU time from the extraction they serve: a real
store's latency is not measured here, what reading through a store costs the client is.
The load average is printed at the start and the end: other work on the same cores makes
the wall times noisy (the CPU seconds much less so).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from tdvideo._system import available_cpus, measure_command

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import make_clip, make_folder  # a sibling script, not a package: after the path is set

BUCKET = "bkt"
PADDING_HTTP = 2 * 2**30
PADDING_S3 = 256 * 2**20
GOAL_RATIO = 0.9
GOAL_EXTRA_MIB = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(argv: list[str], port: int, *, cwd: Path | None = None) -> subprocess.Popen:
    """``argv`` started in its own process, once it accepts connections on ``port``."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode} before it served")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{' '.join(argv)} did not serve within 60 s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def padded(source: Path, target: Path, padding: int) -> Path:
    """``source`` (an MP4 with its moov last) with a ``free`` box of ``padding`` bytes before
    the moov: a valid file that large, sparse on disk (tests/test_storage.py's ``_padded``)."""
    data = source.read_bytes()
    at = data.index(b"moov") - 4
    if data.index(b"mdat") > at:
        raise SystemExit(f"{source}: its moov is not last; the padding would not be skipped")
    with target.open("wb") as fh:
        fh.write(data[:at])
        fh.write((padding + 8).to_bytes(4, "big") + b"free")
        fh.seek(padding, os.SEEK_CUR)
        fh.write(data[at:])
    return target


class Runner:
    """``tdvideo extract SOURCE -o OUT -q --overwrite`` as whole processes, from a neutral folder."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.exe = shutil.which("tdvideo") or str(Path(sys.executable).with_name("tdvideo"))

    def extract(self, source: str, out: Path, expect: int, *extra: str) -> tuple[float, int, float]:
        """(wall seconds, peak RSS bytes, CPU seconds of the command and its workers); exits
        when the command fails or does not write ``expect`` outputs."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        argv = [self.exe, "extract", source, "-o", str(out), "-q", "--overwrite", *extra]
        done = measure_command(argv, cwd=self.cwd, timeout=1800)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the launcher, the command and its workers: all reaped
        written = len(list(out.rglob("*.npy"))) if out.is_dir() else 0
        if done.code != 0 or written != expect:
            raise SystemExit(f"tdvideo extract {source}: exit {done.code}, {written} of {expect} outputs\n{done.stderr}")
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return done.seconds, done.peak_rss, cpu


def cpu_seconds(proc: subprocess.Popen | None) -> float:
    """CPU seconds a server process has used so far (Linux; 0 where /proc is not there)."""
    try:
        with open(f"/proc/{proc.pid}/stat") as fh:  # type: ignore[union-attr]
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, AttributeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mib(n: float) -> str:
    return f"{n / 2**20:7.1f} MiB"


def speed(runner: Runner, folder: Path, url: str, count: int, rounds: int, tmp: Path, server: subprocess.Popen) -> None:
    cases = {"local": (str(folder), tmp / "out_local"), "s3": (url, tmp / "out_s3")}
    for source, out in cases.values():  # untimed: the page cache, .pyc files, the server's first requests
        runner.extract(source, out, count)
    local_names = sorted(p.relative_to(cases["local"][1]).as_posix() for p in cases["local"][1].rglob("*.npy"))
    s3_names = sorted(p.relative_to(cases["s3"][1]).as_posix() for p in cases["s3"][1].rglob("*.npy"))
    if local_names != s3_names:
        raise SystemExit(f"different outputs: {local_names} against {s3_names}")
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    peaks: dict[str, list[int]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    served: list[float] = []
    for r in range(rounds):
        for name in list(cases) if r % 2 == 0 else list(cases)[::-1]:
            server_before = cpu_seconds(server)
            wall, peak, cpu = runner.extract(*cases[name], count)
            seconds[name].append(wall)
            peaks[name].append(peak)
            cpus[name].append(cpu)
            if name == "s3":
                served.append(cpu_seconds(server) - server_before)
        print(
            f"  round {r + 1}: local {seconds['local'][-1]:6.2f} s   s3 {seconds['s3'][-1]:6.2f} s"
            f"   (load average {os.getloadavg()[0]:.1f})", flush=True,
        )
    local, remote = statistics.median(seconds["local"]), statistics.median(seconds["s3"])
    ratios = sorted(lo / s3 for lo, s3 in zip(seconds["local"], seconds["s3"]))
    for name, label in (("local", "local disk"), ("s3", "s3 (moto)")):
        print(
            f"{label:<11}  median {statistics.median(seconds[name]):6.2f} s   CPU {statistics.median(cpus[name]):6.2f} s"
            f"   peak RSS {mib(statistics.median(peaks[name]))}"
        )
    print(f"             (the S3 server's own CPU: {statistics.median(served):.2f} s a run, on the same cores)")
    verdict = "meets" if local / remote >= GOAL_RATIO else "BELOW"
    print(f"ratio local / s3: {local / remote:.2f} (per round {ratios[0]:.2f}-{ratios[-1]:.2f}; goal >= {GOAL_RATIO}: {verdict})")
    cpu_ratio = statistics.median(cpus["local"]) / (statistics.median(cpus["s3"]) + statistics.median(served))
    print(f"CPU seconds local / (s3 + its server): {cpu_ratio:.2f} (what the wall ratio tends to where the cores are all busy)")


def memory(runner: Runner, label: str, small: str, large: str, rounds: int, tmp: Path) -> None:
    """Median peak RSS of extracting ``small`` and ``large`` (URLs), alternating, and the
    difference: with the default workers, and with ``--workers 0``."""
    print(label)
    for variant, extra in (("default workers", ()), ("--workers 0", ("--workers", "0"))):
        peaks: dict[str, list[int]] = {"small": [], "large": []}
        seconds: dict[str, list[float]] = {"small": [], "large": []}
        for r in range(rounds):
            for name in ("small", "large") if r % 2 == 0 else ("large", "small"):
                wall, peak, _ = runner.extract(small if name == "small" else large, tmp / f"out_{name}", 1, *extra)
                peaks[name].append(peak)
                seconds[name].append(wall)
        print(f"  {variant}:")
        for name in ("small", "large"):
            each = ", ".join(f"{p / 2**20:.1f}" for p in peaks[name])
            print(f"    {name:<6} peak RSS {mib(statistics.median(peaks[name]))} (each: {each})   median {statistics.median(seconds[name]):6.2f} s")
        extra_mib = (statistics.median(peaks["large"]) - statistics.median(peaks["small"])) / 2**20
        verdict = "meets" if extra_mib <= GOAL_EXTRA_MIB else "ABOVE"
        print(f"    large - small: {extra_mib:+.1f} MiB (goal <= {GOAL_EXTRA_MIB} MiB: {verdict})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each comparison")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tdvideo-bench", help="where the clips are kept")
    parser.add_argument("--quick", action="store_true", help="4 clips of 4 s instead of 8 of 10 s")
    parser.add_argument("--seconds", type=int, default=10, help="the length of each of the 8 clips")
    parser.add_argument("--speed-only", action="store_true", help="skip the memory comparison")
    args = parser.parse_args()
    count, seconds = (4, 4) if args.quick else (8, args.seconds)
    args.cache.mkdir(parents=True, exist_ok=True)
    clip = make_clip(args.cache, seconds)
    clips = make_folder(args.cache, f"storage{count}x{seconds}s", clip, count=count)
    folder = clips[0].parent

    tmp = Path(tempfile.mkdtemp(prefix="tdvideo-bench-storage-"))
    s3_port, http_port = free_port(), free_port()
    os.environ.update({  # for this process's s3fs and every command's
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
    })
    runner = Runner(tmp)
    moto = http = None
    try:
        moto = start_server([sys.executable, "-m", "moto.server", "-p", str(s3_port)], s3_port)
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir(BUCKET)
        for path in clips:
            fs.put(str(path), f"{BUCKET}/videos/{path.name}")
        print(
            f"{available_cpus()} CPUs (load average {os.getloadavg()[0]:.1f}); s3fs {version('s3fs')}, fsspec {version('fsspec')}, moto {version('moto')}; "
            f"{count} x {clip.name} ({clip.stat().st_size / 2**20:.1f} MiB each)"
        )

        print(f"\n== 1. speed: a folder of {count} clips from local disk against s3:// ({args.rounds} alternating rounds) ==")
        speed(runner, folder, f"s3://{BUCKET}/videos/", count, args.rounds, tmp, moto)
        if args.speed_only:
            return

        print(f"\n== 2. memory: one small object against one padded to {PADDING_HTTP / 2**30:g} GiB ({args.rounds} alternating rounds) ==")
        served = tmp / "served"
        served.mkdir()
        shutil.copyfile(clip, served / "small.mp4")
        padded(clip, served / "large.mp4", PADDING_HTTP)
        http = start_server([sys.executable, "-m", "tests.rangeserver", str(served), str(http_port)], http_port, cwd=ROOT)
        base = f"http://127.0.0.1:{http_port}"
        size = (served / "large.mp4").stat().st_size
        memory(runner, f"over HTTP (Range): small {clip.stat().st_size / 2**20:.1f} MiB, large {size / 2**20:.1f} MiB",
               f"{base}/small.mp4", f"{base}/large.mp4", args.rounds, tmp)

        large_s3 = padded(clip, tmp / "large_s3.mp4", PADDING_S3)
        fs.put(str(large_s3), f"{BUCKET}/large/large.mp4")
        fs.put(str(clip), f"{BUCKET}/small/small.mp4")
        memory(runner, f"over S3 (moto): small {clip.stat().st_size / 2**20:.1f} MiB, large {large_s3.stat().st_size / 2**20:.1f} MiB",
               f"s3://{BUCKET}/small/small.mp4", f"s3://{BUCKET}/large/large.mp4", args.rounds, tmp)
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other work on these cores makes the times noisier)")
    finally:
        stop(http)
        stop(moto)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
