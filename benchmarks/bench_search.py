"""Search latency over 1,000,000 rows x 512, as users feel it: a whole process.

    python benchmarks/bench_search.py [--rows 1000000] [--per-video 1000] [--dim 512] [--rounds 3] [--keep DIR]

Writes a folder of ``rows / per-video`` outputs of ``per-video`` timesteps each, ``dim``
float32 values a row (random unit vectors, as image-text embeddings are; with the metadata a
CLIP run writes, through tdvideo's own writer), once (kept with --keep), then runs, --rounds
times:

    python -c "import numpy, tdvideo; tdvideo.search(OUT, vector=Q, k=10)"

(a vector query: the text tower's cost is the model's, not search's), printing the median
wall time from start to exit (start-up and imports included), the peak RSS, and the in-process
time of the search call. Each output is read as ``tdvideo.load`` reads it (its sha256
checked), so the time includes reading every byte from the page cache once.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tdvideo._system import measure_command
from tdvideo.writers import Features, write_features

SCRIPT = """
import sys, time
import numpy as np
import tdvideo
query = np.load(sys.argv[2])
start = time.perf_counter()
moments = tdvideo.search(sys.argv[1], vector=query, k=10)
print(f"{time.perf_counter() - start:.3f} {moments[0].video} {moments[0].row} {moments[0].score:.4f}")
"""


def make_folder(out: Path, *, rows: int, per_video: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    meta = {"model": "hf:openai/clip-vit-base-patch32", "weights": "openai/clip-vit-base-patch32", "embedding": "image-text",
            "random_weights": False, "pool": "avg", "layer": None, "features_per": "frame", "feature_shape": [dim]}
    for v in range(rows // per_video):
        array = rng.standard_normal((per_video, dim), dtype=np.float32)
        array /= np.linalg.norm(array, axis=1, keepdims=True)
        times = np.arange(per_video, dtype=np.float64)
        write_features(out / f"{v // 100:03d}" / f"video{v:06d}", Features(array=array, timestamps=times, metadata=meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-video", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the folder of outputs here")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tdvideo-bench-search-"))
    out = folder / "feats"
    try:
        if not out.exists():
            started = time.perf_counter()
            make_folder(out, rows=args.rows, per_video=args.per_video, dim=args.dim)
            print(f"wrote {args.rows // args.per_video} outputs of {args.per_video} x {args.dim} in {time.perf_counter() - started:.1f} s", flush=True)
        query = folder / "query.npy"
        np.save(query, np.random.default_rng(1).standard_normal(args.dim).astype(np.float32))
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"{args.rows:,} rows x {args.dim} in {args.rows // args.per_video} outputs ({size / 2**30:.2f} GiB on disk)")
        walls, peaks, inner = [], [], []
        for r in range(args.rounds + 1):  # the first: untimed, for the page cache
            measured = measure_command([sys.executable, "-c", SCRIPT, str(out), str(query)])
            if measured.code != 0:
                raise SystemExit(measured.stderr)
            if r == 0:
                continue
            walls.append(measured.seconds)
            peaks.append(measured.peak_rss)
            inner.append(float(measured.stdout.split()[0]))
            print(f"  round {r}: {measured.seconds:.2f} s (search call {inner[-1]:.2f} s), peak RSS {measured.peak_rss / 2**20:.0f} MiB; best: {measured.stdout.split(maxsplit=1)[1].strip()}", flush=True)
        print(f"median: {statistics.median(walls):.2f} s whole process, {statistics.median(inner):.2f} s in search, "
              f"peak RSS {statistics.median(peaks) / 2**20:.0f} MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
