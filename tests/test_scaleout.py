"""Beyond one process: static shards (torchrun/SLURM environment or --shard), as real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tdvideo
from tdvideo import Extractor
from tdvideo.extract import Shard, run_status
from tdvideo.synthetic import index_frame, write_clip

from .conftest import video_tree


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight short clips of different lengths, two of them in subfolders with a shared name."""
    src = tmp_path_factory.mktemp("src")
    clips = {n: write_clip(src / f"c{n}.mp4", n, make_frame=lambda i: index_frame(i, 32, 48)) for n in (3, 5, 8, 13, 21, 34)}
    files = {f"v{i}.mp4": clips[n] for i, n in enumerate(clips)}
    files |= {"a/same.mp4": clips[8], "b/same.mp4": clips[13]}
    return video_tree(tmp_path_factory.mktemp("videos"), files)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")}
    return subprocess.Popen(
        [sys.executable, "-m", "tdvideo", "extract", *args, "-q", "--workers", "0"],
        env={**environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def status(out: Path) -> tuple[int, dict]:
    """``tdvideo status OUT --json``: its exit code and counts."""
    done = subprocess.run([sys.executable, "-m", "tdvideo", "status", str(out), "--json"], capture_output=True, text=True)
    report = json.loads(done.stdout)
    return done.returncode, {k: report[k] for k in ("done", "failed", "pending", "total")}


def outputs(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy"))


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("how", ["env", "flag"])
def test_concurrent_shards_cover_every_video_once(many: Path, tmp_path: Path, world: int, how: str) -> None:
    single = {r.output.relative_to(tmp_path / "one").as_posix(): r.output for r in Extractor().run([many], out=tmp_path / "one", progress=False)}
    out = tmp_path / "sharded"
    procs = [
        cli(str(many), "-o", str(out), env={"RANK": str(rank), "WORLD_SIZE": str(world)})
        if how == "env"
        else cli(str(many), "-o", str(out), "--shard", f"{rank}/{world}")
        for rank in range(world)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert outputs(out) == sorted(single)  # every video, exactly once (names are unique per output)
    for name, path in single.items():
        np.testing.assert_allclose(tdvideo.load(out / name).array, tdvideo.load(path).array, rtol=1e-6, atol=1e-7)
    assert status(out) == (0, {"done": 8, "failed": 0, "pending": 0, "total": 8})


def test_the_shard_flag_takes_what_the_environment_would(many: Path, tmp_path: Path) -> None:
    by_flag = [r.path for r in Extractor(shard="1/3").run([many], out=tmp_path / "a", progress=False)]
    by_env = [r.path for r in Extractor().run([many], out=tmp_path / "b", shard=Shard(1, 3), progress=False)]
    assert by_flag == by_env and 0 < len(by_flag) < 8
    assert [r.status for r in Extractor(shard="0/1").run([many], out=tmp_path / "c", progress=False)].count("done") == 8


def test_status_counts_what_every_rank_planned(many: Path, tmp_path: Path) -> None:
    """Only rank 0 of 2 ran: status still knows the other rank's videos, as not yet done."""
    bad = tmp_path / "in" / "bad.mp4"
    shutil.copytree(many, tmp_path / "in")
    bad.write_bytes(b"not a video" * 100)
    out = tmp_path / "out"
    mine = list(Extractor().run([tmp_path / "in"], out=out, shard=Shard(0, 2), progress=False))
    done = sum(r.status == "done" for r in mine)
    failed = sum(r.status == "failed" for r in mine)
    code, counts = status(out)
    assert code == 1 and counts == {"done": done, "failed": failed, "pending": 9 - done - failed, "total": 9}
    report = run_status(out)
    assert [f["path"] for f in report.failures] == ([str(bad)] if failed else [])

    list(Extractor().run([tmp_path / "in"], out=out, shard=Shard(1, 2), progress=False))
    text = subprocess.run([sys.executable, "-m", "tdvideo", "status", str(out)], capture_output=True, text=True)
    assert text.returncode == 1
    assert text.stdout.splitlines() == [f"failed: {bad}: VideoOpenError: not a video FFmpeg can open (Invalid data found when processing input)",
                                        "8 done, 1 failed, 0 not yet done (9 videos)"]

    # The bad file replaced by a good one: a rerun clears its failure.
    shutil.copy(many / "v0.mp4", bad)
    list(Extractor().run([tmp_path / "in"], out=out, progress=False))
    assert status(out) == (0, {"done": 9, "failed": 0, "pending": 0, "total": 9})


def test_status_of_a_folder_no_run_wrote_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tdvideo", "status", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "no tdvideo run recorded its plan here" in done.stderr
