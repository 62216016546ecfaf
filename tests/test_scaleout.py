"""Beyond one process: static shards (torchrun/SLURM environment or --shard), as real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
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


def cli(*args: str, env: dict[str, str] | None = None, quiet: bool = True) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")}
    return subprocess.Popen(
        [sys.executable, "-m", "tdvideo", "extract", *args, *(["-q"] if quiet else []), "--workers", "0"],
        env={**environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def status(out: Path) -> tuple[int, dict]:
    """``tdvideo status OUT --json``: its exit code and counts."""
    done = subprocess.run([sys.executable, "-m", "tdvideo", "status", str(out), "--json"], capture_output=True, text=True, check=False)
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
    text = subprocess.run([sys.executable, "-m", "tdvideo", "status", str(out)], capture_output=True, text=True, check=False)
    assert text.returncode == 1
    assert text.stdout.splitlines() == [f"failed: {bad}: VideoOpenError: not a video FFmpeg can open (Invalid data found when processing input)",
                                        "8 done, 1 failed, 0 not yet done (9 videos, 1 plan)"]

    # The bad file replaced by a good one: a rerun clears its failure.
    shutil.copy(many / "v0.mp4", bad)
    list(Extractor().run([tmp_path / "in"], out=out, progress=False))
    assert status(out) == (0, {"done": 9, "failed": 0, "pending": 0, "total": 9})


def test_runs_add_to_the_record_and_status_covers_every_plan(many: Path, tmp_path: Path) -> None:
    """Two runs over different inputs into one folder: the second neither forgets the first's
    failure nor its videos; a rerun of the first's inputs supersedes its plan."""
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(many, first)
    (first / "bad.mp4").write_bytes(b"not a video" * 100)
    second.mkdir()
    shutil.copy(many / "v0.mp4", second / "w.mp4")
    out = tmp_path / "out"
    assert [r.status for r in Extractor().run([first], out=out, progress=False)].count("failed") == 1
    assert [r.status for r in Extractor().run([second], out=out, progress=False)] == ["done"]
    code, counts = status(out)
    assert code == 1 and counts == {"done": 9, "failed": 1, "pending": 0, "total": 10}
    assert len(run_status(out).plans) == 2
    assert len((out / "failures.jsonl").read_text().splitlines()) == 1  # the first run's failure is still there
    # The first run's inputs again, the bad file gone: its plan is replaced by the new one.
    (first / "bad.mp4").unlink()
    list(Extractor().run([first], out=out, progress=False))
    assert status(out) == (0, {"done": 9, "failed": 0, "pending": 0, "total": 9})


def test_status_names_the_plans_that_disagree(many: Path, tmp_path: Path) -> None:
    """Two inputs that map to one output name, from two runs: status says so, naming both plans."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, clip in ((a, "v0.mp4"), (b, "v1.mp4")):
        folder.mkdir()
        shutil.copy(many / clip, folder / "same.mp4")
    out = tmp_path / "out"
    list(Extractor().run([a], out=out, progress=False))
    list(Extractor().run([b], out=out, progress=False, overwrite=True))
    report = run_status(out)
    [conflict] = report.conflicts
    assert f"planned from {a / 'same.mp4'} (plan " in conflict and f"and from {b / 'same.mp4'} (plan " in conflict
    text = subprocess.run([sys.executable, "-m", "tdvideo", "status", str(out)], capture_output=True, text=True, check=False)
    # One output cannot hold both videos' features: not all done.
    assert text.returncode == 1 and any(line.startswith("conflict: ") for line in text.stdout.splitlines())


def test_status_of_a_folder_no_run_wrote_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tdvideo", "status", str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "no tdvideo run recorded its plan here" in done.stderr


# -- claim mode -------------------------------------------------------------------------------


def test_claims_are_exclusive_kept_alive_and_taken_over_when_stale(tmp_path: Path) -> None:
    from tdvideo.extract._claims import Claims

    mine, theirs = Claims(tmp_path, timeout=0.4), Claims(tmp_path, timeout=0.4)
    claim = mine.folder / "k.claim"
    assert mine.take(claim) and not theirs.take(claim)
    time.sleep(1.2)  # three timeouts: the heartbeat keeps it fresh
    assert not theirs.take(claim)
    mine._stop.set()  # its process stalls (or died): no more heartbeats
    time.sleep(0.6)
    assert theirs.take(claim)  # taken over
    assert json.loads(claim.read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in claim.parent.iterdir()) == ["k.claim"]  # the old claim renamed away and removed
    theirs.release(claim)
    assert mine.take(claim)
    mine.close()
    theirs.close()
    assert not claim.exists()


def claimed_by(folder: Path, pid: int) -> bool:
    for claim in folder.glob("*.claim"):
        try:
            if json.loads(claim.read_text()).get("pid") == pid:
                return True
        except ValueError:
            continue  # being written
    return False


def summary(stderr: str) -> dict[str, int]:
    """The counts of a run's last line: "3 done, 2 skipped, 0 failed, 3 by other processes; ..."."""
    counts = [line for line in stderr.splitlines() if " done, " in line][-1].split(";")[0]
    found = {word: int(n) for n, word in re.findall(r"(\d+) (done|skipped|failed)\b(?! in)", counts)}
    others = re.search(r"(\d+) by other processes(?: \((\d+) of them failed\))?", counts)
    elsewhere = {"elsewhere": int(others.group(1)) if others else 0}
    return {**found, **elsewhere, **({"failed_elsewhere": int(others.group(2))} if others and others.group(2) else {})}


def test_a_claim_of_a_dead_process_of_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    from tdvideo.extract._claims import Claims

    mine = Claims(tmp_path, timeout=1000)
    claim = mine.folder / "k.claim"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"host": "h", "pid": child.pid, "owner": f"w{child.pid}-{json.loads(json.dumps(mine.owner))['owner'].rsplit('-', 1)[1]}"}
        claim.write_text(json.dumps(record))
        assert not mine.take(claim)  # its process is alive: at work
    finally:
        child.kill()
        child.wait()
    assert mine.take(claim)  # gone: taken over at once, long before the timeout
    # Another host's process cannot be looked up: its claim waits for the timeout.
    other = mine.folder / "o.claim"
    other.write_text(json.dumps({"host": "elsewhere", "pid": child.pid, "owner": f"w{child.pid}-0badcafe"}))
    assert not mine.take(other)
    mine.close()


def _clips(src: Path, lengths: list[int]) -> None:
    src.mkdir()
    for i, frames in enumerate(lengths):
        write_clip(src / f"v{i}.mp4", frames, make_frame=lambda k: index_frame(k, 64, 96))


LENGTHS = [60, 12, 45, 8, 30, 20, 50, 10]
SLOW = ["--model", "resnet18", "--weights", "none", "--balance", "claim"]  # a few frames a second here


def _wait_for_claim(claims: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not claimed_by(claims, process.pid):
        assert process.poll() is None and time.monotonic() < deadline, "the process never claimed a video"
        time.sleep(0.05)


def test_claiming_processes_share_the_videos_and_finish_a_dead_ones(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    _clips(src, LENGTHS)
    victim = cli(str(src), "-o", str(out), *SLOW)
    claims = out / ".tdvideo" / "claims"
    _wait_for_claim(claims, victim)
    others = [cli(str(src), "-o", str(out), *SLOW, quiet=False) for _ in range(2)]
    victim.kill()  # SIGKILL mid-video: its claim stays, with no heartbeat
    victim.wait()
    finished_by_victim = len(list(out.glob("*.npy")))
    counts = []
    for proc in others:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        counts.append(summary(err))
    # The dead one's claim was taken over at once (its process is gone from this host), and
    # each process waited for the videos the other held: every video done, none twice.
    assert len(list(out.glob("*.npy"))) == 8
    assert sum(c["done"] for c in counts) == 8 - finished_by_victim
    assert all(c["done"] + c["skipped"] + c["elsewhere"] == 8 and c["failed"] == 0 for c in counts), counts
    assert status(out) == (0, {"done": 8, "failed": 0, "pending": 0, "total": 8})
    assert not list(out.glob(".*.tmp")) and not list(claims.glob("*.claim"))  # no half files, no claims left
    for i, frames in enumerate(LENGTHS):
        assert len(tdvideo.load(out / f"v{i}.npy")) == frames


def test_an_immediate_rerun_after_a_kill_finishes_the_job(tmp_path: Path) -> None:
    """The report's case: a claim-mode process killed, then the same command at once (the
    claim timeout is two minutes): the rerun takes the dead process's videos, exit 0 only
    when all are done."""
    src, out = tmp_path / "in", tmp_path / "out"
    _clips(src, LENGTHS[:4])
    victim = cli(str(src), "-o", str(out), *SLOW)
    _wait_for_claim(out / ".tdvideo" / "claims", victim)
    victim.kill()
    victim.wait()
    finished = len(list(out.glob("*.npy")))
    rerun = cli(str(src), "-o", str(out), *SLOW, quiet=False)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert summary(err) == {"done": 4 - finished, "skipped": finished, "failed": 0, "elsewhere": 0}
    assert status(out) == (0, {"done": 4, "failed": 0, "pending": 0, "total": 4})


def test_a_video_that_fails_in_one_claiming_process_is_not_tried_again_by_another(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    _clips(src, [20] * 6)
    (src / "broken.mp4").write_bytes(b"not a video" * 100)
    procs = [cli(str(src), "-o", str(out), *SLOW, quiet=False) for _ in range(2)]
    counts = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err  # a video of the run failed
        counts.append(summary(err))
    assert sum(c["failed"] for c in counts) == 1, counts  # tried once, in one process
    assert sum(c["done"] for c in counts) == 6 and len(list(out.glob("*.npy"))) == 6
    for c in counts:
        assert c["done"] + c["skipped"] + c["failed"] + c["elsewhere"] == 7, c
    other = next(c for c in counts if c["failed"] == 0)
    assert other.get("failed_elsewhere") == 1, counts
    # A rerun once the run is over (here: a claim timeout of 1 s) tries the failure again.
    time.sleep(1.5)
    rerun = cli(str(src), "-o", str(out), *SLOW, "--claim-timeout", "1", quiet=False)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 1 and summary(err) == {"done": 0, "skipped": 6, "failed": 1, "elsewhere": 0}, err


def test_claims_that_are_no_claims_are_taken_over(tmp_path: Path) -> None:
    """A dangling link or a folder where a claim goes is no claim of any process: the run
    takes it over (a waiting process would otherwise wait for ever)."""
    import hashlib

    src, out = tmp_path / "in", tmp_path / "out"
    _clips(src, [6, 6, 6])
    claims = out / ".tdvideo" / "claims"
    claims.mkdir(parents=True)
    os.symlink(tmp_path / "nowhere", claims / f"{hashlib.sha1(b'v0').hexdigest()}.claim")
    (claims / f"{hashlib.sha1(b'v1').hexdigest()}.claim").mkdir()
    proc = cli(str(src), "-o", str(out), "--balance", "claim", "--claim-timeout", "600", quiet=False)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert len(list(out.glob("*.npy"))) == 3


def test_a_waiting_claiming_process_stops_on_the_first_signal(tmp_path: Path) -> None:
    """Waiting for a video another (live) process holds, decoding in its own process: the
    first SIGTERM stops it, with the one interrupted line."""
    import hashlib
    import signal

    from tdvideo._files import owner_tag

    src, out = tmp_path / "in", tmp_path / "out"
    _clips(src, [6, 6])
    claims = out / ".tdvideo" / "claims"
    claims.mkdir(parents=True)
    holder = {"owner": f"w1-{owner_tag().rsplit('-', 1)[1]}", "pid": 1}  # pid 1: alive for as long as the test
    (claims / f"{hashlib.sha1(b'v1').hexdigest()}.claim").write_text(json.dumps(holder))
    proc = cli(str(src), "-o", str(out), "--balance", "claim", quiet=False)
    deadline = time.monotonic() + 60
    while not (out / "v0.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)  # now waiting for v1
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143 and err.strip().splitlines()[-1].startswith("interrupted: "), err


def test_a_claiming_process_holds_no_more_claims_than_it_decodes(tmp_path: Path) -> None:
    """The model is the slow part here: decoding could run ahead by many videos, but each
    claim stands for a video being decoded or not yet committed, one per decoder."""
    src, out = tmp_path / "in", tmp_path / "out"
    _clips(src, [6] * 10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tdvideo", "extract", str(src), "-o", str(out), *SLOW, "--workers", "2", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    claims = out / ".tdvideo" / "claims"
    most = 0
    while proc.poll() is None:
        most = max(most, len(list(claims.glob("*.claim"))) if claims.is_dir() else 0)
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert 1 <= most <= 2
    assert len(list(out.glob("*.npy"))) == 10


# -- the Ray engine ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # The tests' own decoders cross to Ray's workers by reference: they import the tests too.
    root = str(Path(__file__).resolve().parents[1])
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": root}})
    yield ray
    ray.shutdown()


def test_the_ray_engine_gives_the_local_engines_outputs(ray_cluster, many: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    shutil.copytree(many, src)
    (src / "bad.mp4").write_bytes(b"not a video" * 100)
    local = {r.path.name + r.path.parent.name: r for r in Extractor(workers=0).run([src], out=tmp_path / "local", progress=False)}
    remote = {r.path.name + r.path.parent.name: r for r in Extractor().run([src], out=tmp_path / "ray", engine="ray", progress=False)}
    assert local.keys() == remote.keys() and len(remote) == 9
    for key, result in remote.items():
        assert result.status == local[key].status, key
        if result.status == "done":
            ours, theirs = tdvideo.load(result.output), tdvideo.load(local[key].output)
            np.testing.assert_allclose(ours.array, theirs.array, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(ours.timestamps, theirs.timestamps)
            assert result.output.relative_to(tmp_path / "ray") == local[key].output.relative_to(tmp_path / "local")
    failures = [json.loads(line) for line in (tmp_path / "ray" / "failures.jsonl").read_text().splitlines()]
    assert [f["path"] for f in failures] == [str(src / "bad.mp4")]
    assert status(tmp_path / "ray") == (1, {"done": 8, "failed": 1, "pending": 0, "total": 9})
    again = list(Extractor().run([src], out=tmp_path / "ray", engine="ray", progress=False))
    assert sorted(r.status for r in again) == ["failed"] + ["skipped"] * 8


def test_the_ray_engine_windows_and_maps(ray_cluster, many: Path, tmp_path: Path) -> None:
    """Outputs that are not one vector per frame travel the same way: clip windows, spatial maps."""
    for case, options in enumerate(({"model": "conv2d", "num_frames": 3}, {"model": "thumbnail", "clip_len": 2})):
        [local] = Extractor(workers=0, **options).run([many / "v3.mp4"], out=tmp_path / f"l{case}", progress=False)
        [remote] = Extractor(**options).run([many / "v3.mp4"], out=tmp_path / f"r{case}", engine="ray", progress=False)
        np.testing.assert_allclose(tdvideo.load(remote.output).array, tdvideo.load(local.output).array, rtol=1e-6, atol=1e-7)


def test_claim_mode_is_not_for_the_ray_engine(many: Path, tmp_path: Path) -> None:
    with pytest.raises(tdvideo.UsageError, match="the Ray engine balances the work itself"):
        list(Extractor().run([many], out=tmp_path, engine="ray", balance="claim", progress=False))


def test_a_ray_decoder_that_dies_fails_its_video_alone(ray_cluster, many: Path, tmp_path: Path) -> None:
    """Once: Ray's retry decodes it. Every time: the video fails, the others are done."""
    from .test_loader import crashing_decode

    src = tmp_path / "in"
    shutil.copytree(many, src)
    shutil.copy(many / "v2.mp4", src / "crash_once.mp4")
    shutil.copy(many / "v3.mp4", src / "crash_always.mp4")
    extractor = Extractor()
    extractor._decode = crashing_decode
    every = list(extractor.run([src], out=tmp_path / "out", engine="ray", progress=False))
    results = {r.path.name: r for r in every}
    assert results["crash_once.mp4"].status == "done"
    assert len(tdvideo.load(results["crash_once.mp4"].output)) == len(tdvideo.load(results["v2.mp4"].output))
    assert results["crash_always.mp4"].status == "failed" and "its process died" in results["crash_always.mp4"].error
    assert sorted(r.status for r in every) == ["done"] * 9 + ["failed"]
