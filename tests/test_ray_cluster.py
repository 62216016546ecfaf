"""The Ray engine on a cluster of several nodes (``ray.cluster_utils.Cluster``, as Ray's own
tests make one: a head and two more nodes, one CPU each, on this machine), and how it
splits a node's CPUs between decoding and the model."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tdvideo
from tdvideo.extract import run_status
from tdvideo.settings import Settings
from tdvideo.synthetic import index_frame, write_clip
from tdvideo.video._reader import RawChunk, ReadOptions, read_chunks

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra")

ROOT = Path(__file__).resolve().parents[1]


def chunks_noting_the_node(path: Path, options: ReadOptions) -> Iterator[RawChunk]:
    """read_chunks, leaving beside the video the id of the Ray node that decoded it."""
    import ray

    path.with_name(f"{path.name}.node").write_text(ray.get_runtime_context().get_node_id())
    yield from read_chunks(path, options)


def chunks_noting_each_try_holding_one(path: Path, options: ReadOptions) -> Iterator[RawChunk]:
    """read_chunks, adding a line with the node's id beside the video each time it is decoded.
    The first video a node listed in ``removable`` (beside the videos) starts is held there,
    its id in ``victim``, until that node is removed: a node lost while it decodes, whatever
    the machine's load (a sleep let a loaded machine finish the video before the removal)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    with path.with_name(f"{path.name}.tries").open("a") as fh:
        fh.write(node + "\n")
    if node in path.with_name("removable").read_text().split():
        try:
            fd = os.open(path.with_name("victim"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            pass
        else:
            os.write(fd, f"{node} {path.name}".encode())
            os.close(fd)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # ends when the node's processes are killed
                time.sleep(0.1)
    yield from read_chunks(path, options)


def alive_nodes_once_settled(ray: Any, expected: int, *, within: float = 60.0) -> int:
    """How many nodes the cluster reports alive, waiting (up to ``within`` s) for it to be
    ``expected``: the GCS marks a removed node dead once its health checks fail, which a
    loaded machine makes take seconds."""
    deadline = time.monotonic() + within
    while True:
        alive = len([n for n in ray.nodes() if n["Alive"]])
        if alive == expected or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


class _FakeRay:
    """What _resources asks of Ray: its nodes and the cluster's resources."""

    def __init__(self, nodes: list[dict[str, float]]) -> None:
        self._nodes = nodes

    def nodes(self) -> list[dict[str, Any]]:
        return [{"Alive": True, "Resources": n} for n in self._nodes] + [{"Alive": False, "Resources": {"CPU": 64.0}}]

    def cluster_resources(self) -> dict[str, float]:
        return {"GPU": sum(n.get("GPU", 0.0) for n in self._nodes)}


@pytest.mark.parametrize(
    ("nodes", "settings", "expected"),
    [
        # One CPU machine: the model on both cores, two decoders (FFmpeg threads: one each) beside it.
        ([{"CPU": 2.0}], {}, {"gpus": 0, "actors": 1, "actor_cpus": 1.5, "torch_threads": 2, "decode_cpus": 0.25, "ffmpeg_threads": 1}),
        # --workers and --threads as in the local engine.
        ([{"CPU": 16.0}], {"workers": 4, "threads": 2}, {"actors": 1, "torch_threads": 16, "decode_cpus": 0.25, "ffmpeg_threads": 2}),
        # Three nodes of one CPU: an actor on each (0.75 of a CPU: two never fit on one node).
        ([{"CPU": 1.0}] * 3, {}, {"actors": 3, "actor_cpus": 0.75, "torch_threads": 1, "decode_cpus": 0.25}),
        # GPUs: an actor a GPU with one CPU and one thread; the other CPUs decode, one each.
        ([{"CPU": 16.0, "GPU": 2.0}], {}, {"gpus": 2, "actors": 2, "actor_cpus": 1.0, "torch_threads": 1, "decode_cpus": 1.0}),
        # Told to run on the CPU: the GPUs are left alone.
        ([{"CPU": 8.0, "GPU": 1.0}], {"device": "cpu"}, {"gpus": 0, "actors": 1, "torch_threads": 8}),
    ],
)
def test_how_a_node_is_split_between_decoding_and_the_model(nodes: list[dict[str, float]], settings: dict, expected: dict) -> None:
    from tdvideo.extract._ray import _resources

    plan = _resources(_FakeRay(nodes), Settings(**settings))
    assert {key: getattr(plan, key) for key in expected} == expected
    if not plan.gpus:  # what Ray reserves fits each node: an actor and every decoder of it
        smallest = min(n["CPU"] for n in nodes)
        workers = settings.get("workers") or int(smallest)
        assert plan.actor_cpus + workers * plan.decode_cpus <= smallest


def test_a_cluster_without_a_cpu_is_one_line() -> None:
    from tdvideo.errors import UsageError
    from tdvideo.extract._ray import _resources

    with pytest.raises(UsageError, match="no node with a CPU"):
        _resources(_FakeRay([{"GPU": 1.0}]), Settings())


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # The nodes' workers import this module (the decoder above) as the test process does.
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), before) if p)
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        for _ in range(2):
            nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
        ray.init(address=nodes.address, log_to_driver=False)
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def test_three_nodes_share_the_work_and_agree_with_the_local_engine(cluster: Any, tmp_path: Path) -> None:
    import ray

    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        write_clip(src / f"v{i}.mp4", 6 + i, make_frame=lambda k: index_frame(k, 32, 48))
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3

    extractor = tdvideo.Extractor(model="thumbnail")
    extractor._decode = chunks_noting_the_node
    results = list(extractor.run([src], out=tmp_path / "ray", engine="ray", progress=False))
    assert sorted(r.status for r in results) == ["done"] * 6
    # Decoding tasks spread over the nodes; the caller's Ray is left up.
    decoded_on = {(src / f"v{i}.mp4.node").read_text() for i in range(6)}
    assert len(decoded_on) >= 2 and ray.is_initialized()
    # The model ran on every node, an actor each: the GCS's table keeps the ended ones (no
    # dashboard here for ray.util.state; Ray's own tests read this table).
    actors = ray._private.state.actors().values()
    model_nodes = [a["Address"]["NodeID"] for a in actors if "_Model" in a["ActorClassName"]]
    assert sorted(model_nodes) == sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]), list(actors)

    local = list(tdvideo.Extractor(model="thumbnail").run([src], out=tmp_path / "local", progress=False))
    assert sorted(r.status for r in local) == ["done"] * 6
    for i in range(6):
        on_ray, here = tdvideo.load(tmp_path / "ray" / f"v{i}"), tdvideo.load(tmp_path / "local" / f"v{i}")
        np.testing.assert_allclose(on_ray.array, here.array, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(on_ray.timestamps, here.timestamps)
    report = run_status(tmp_path / "ray")
    assert report.done == 6 and report.complete


def test_a_node_removed_mid_run_loses_nothing(cluster: Any, tmp_path: Path) -> None:
    """A node goes away while it decodes (as a preempted machine does): the videos it held
    are decoded again elsewhere, once, every output is written, and status is complete."""
    import ray

    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):
        write_clip(src / f"v{i}.mp4", 6 + i, make_frame=lambda k: index_frame(k, 32, 48))
    cluster.add_node(num_cpus=1)  # four nodes: the three the module shares stay after this test
    cluster.wait_for_nodes()
    nodes = {node.node_id: node for node in cluster.worker_nodes}
    (src / "removable").write_text("\n".join(nodes))
    removed: list[str] = []
    started = time.monotonic()

    def remove_the_node_holding_a_video() -> None:
        victim = src / "victim"
        while time.monotonic() - started < 120:
            if victim.exists() and victim.read_text():
                node = victim.read_text().split()[0]
                cluster.remove_node(nodes[node])
                removed.append(node)
                return
            time.sleep(0.05)

    extractor = tdvideo.Extractor(model="thumbnail")
    extractor._decode = chunks_noting_each_try_holding_one
    results: list[Any] = []
    remover = threading.Thread(target=remove_the_node_holding_a_video, daemon=True)
    runner = threading.Thread(target=lambda: results.extend(extractor.run([src], out=tmp_path / "ray", engine="ray", progress=False)), daemon=True)
    remover.start()
    runner.start()
    runner.join(timeout=240)  # a run that waits forever for the lost node fails here instead
    assert not runner.is_alive(), "the run did not end within 240 s of losing a node"
    remover.join(timeout=60)
    assert removed and alive_nodes_once_settled(ray, 3) == 3
    assert sorted(r.status for r in results) == ["done"] * 8, [(r.path, r.status, r.error) for r in results]
    lost = removed[0]
    held = (src / "victim").read_text().split()[1]
    for i in range(8):
        tries = (src / f"v{i}.mp4.tries").read_text().split()
        # Decoded once, or (what the lost node held) once more, elsewhere; what it had
        # finished before it went may stay its own.
        assert len(tries) == 1 or (len(tries) == 2 and tries[0] == lost != tries[1]), (i, tries, lost)
    held_tries = (src / f"{held}.tries").read_text().split()
    assert len(held_tries) == 2 and held_tries[0] == lost, held_tries

    list(tdvideo.Extractor(model="thumbnail").run([src], out=tmp_path / "local", progress=False))
    for i in range(8):
        np.testing.assert_allclose(tdvideo.load(tmp_path / "ray" / f"v{i}").array, tdvideo.load(tmp_path / "local" / f"v{i}").array, rtol=1e-5, atol=1e-5)
    report = run_status(tmp_path / "ray")
    assert report.done == 8 and report.failed == 0 and report.complete


def test_a_node_removed_while_its_model_actor_works_loses_nothing(cluster: Any, tmp_path: Path) -> None:
    """Every node holds a model actor (one a node: two do not fit): a node removed once the
    first video is written takes an actor with batches still to run. Ray restarts what it
    held; the run ends with every output, equal to the local engine's."""
    import ray

    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):
        write_clip(src / f"v{i}.mp4", 40, make_frame=lambda k: index_frame(k, 32, 48))
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    victim = next(iter(cluster.worker_nodes))
    results: list[Any] = []
    removed: list[bool] = []

    def remove_once_a_video_is_written() -> None:
        deadline = time.monotonic() + 200
        while not results and time.monotonic() < deadline:
            time.sleep(0.05)
        if results:
            time.sleep(0.3)
            cluster.remove_node(victim)
            removed.append(True)

    # Weights from a file: random ones would differ between actors, and from the local run.
    import torch
    import torchvision

    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    extractor = tdvideo.Extractor(model="resnet18", weights=weights)
    remover = threading.Thread(target=remove_once_a_video_is_written, daemon=True)
    runner = threading.Thread(target=lambda: results.extend(extractor.run([src], out=tmp_path / "ray", engine="ray", progress=False)), daemon=True)
    remover.start()
    runner.start()
    runner.join(timeout=300)
    assert not runner.is_alive(), "the run did not end within 300 s of losing a node"
    remover.join(timeout=60)
    assert removed and alive_nodes_once_settled(ray, 3) == 3
    assert sorted(r.status for r in results) == ["done"] * 8, [(r.path, r.status, r.error) for r in results]
    list(tdvideo.Extractor(model="resnet18", weights=weights).run([src], out=tmp_path / "local", progress=False))
    for i in range(8):
        np.testing.assert_allclose(tdvideo.load(tmp_path / "ray" / f"v{i}").array, tdvideo.load(tmp_path / "local" / f"v{i}").array, rtol=1e-4, atol=1e-4)
    report = run_status(tmp_path / "ray")
    assert report.done == 8 and report.failed == 0 and report.complete
