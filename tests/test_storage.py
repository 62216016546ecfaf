"""Videos where they live: an S3 API server (moto's, started here on a local port, talked to
by s3fs over HTTP exactly as AWS is) and an HTTP server that honours Range requests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tdvideo
from tdvideo._system import measure_command

from .conftest import Clip, video_tree

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("s3fs")
pytest.importorskip("moto")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server did not start"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("the server did not start in 30 s")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Clip]) -> Iterator[dict[str, object]]:
    """moto's S3 server on a local port, the environment pointing at it (this process's and
    every command's), and a bucket of clips under ``videos/``, one in a subfolder."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for(port, server)
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bkt")
    local = video_tree(tmp_path_factory.mktemp("s3src"), {"a.mp4": clips["h264"].path, "sub/b.webm": clips["vp9"].path, "c.avi": clips["mpeg4"].path})
    for path in sorted(local.rglob("*.*")):
        fs.put(str(path), f"bkt/videos/{path.relative_to(local).as_posix()}")
    fs.pipe("bkt/videos/notes.txt", b"not a video")
    yield {"fs": fs, "local": local, "port": port, "env": env}
    server.kill()
    server.wait()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def tdvideo_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tdvideo", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def test_a_bucket_prefix_gives_the_outputs_of_the_same_files_on_disk(s3: dict, tmp_path: Path) -> None:
    local_out, remote_out = tmp_path / "local", tmp_path / "remote"
    list(tdvideo.Extractor(workers=0).run([s3["local"]], out=local_out, progress=False))
    done = tdvideo_cli("extract", "s3://bkt/videos/", "-o", str(remote_out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names = sorted(p.relative_to(remote_out).as_posix() for p in remote_out.rglob("*.npy"))
    assert names == ["a.npy", "c.npy", "sub/b.npy"]  # the tree below the prefix, mirrored; notes.txt is no video
    for name in names:
        here, there = tdvideo.load(local_out / name), tdvideo.load(remote_out / name)
        np.testing.assert_allclose(there.array, here.array, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(there.timestamps, here.timestamps)
        source = there.metadata["source"]
        assert source["path"] == f"s3://bkt/videos/{Path(name).with_suffix('').as_posix()}{Path(source['path']).suffix}"
        assert source["fingerprint"].startswith("etag:") and source["size"] > 0
    for text in (done.stderr, *(p.read_text(errors="replace") for p in remote_out.rglob("*") if p.is_file() and p.suffix != ".npy")):
        assert "X-Amz-" not in text  # the workers' presigned addresses are never recorded
    # A rerun skips what is finished, by the store's ETag; an object rewritten is done again.
    again = tdvideo_cli("extract", "s3://bkt/videos/", "-o", str(remote_out), cwd=tmp_path)
    assert again.returncode == 0 and "0 done, 3 skipped" in again.stderr, again.stderr
    s3["fs"].put(str(s3["local"] / "a.mp4"), "bkt/videos/c.avi")  # another object under c.avi's key
    third = tdvideo_cli("extract", "s3://bkt/videos/", "-o", str(remote_out), "--overwrite", cwd=tmp_path)
    assert third.returncode == 0 and "3 done" in third.stderr, third.stderr
    s3["fs"].put(str(s3["local"] / "c.avi"), "bkt/videos/c.avi")


def _decoders() -> list[int]:
    """This process's decoding worker processes that are alive."""
    me, found = str(os.getpid()), []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().split(") ")[1].split()
            if entry.name.isdigit() and stat[1] == me and stat[0] != "Z" and b"worker_entry" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_decoding_processes_start_while_a_store_is_listed(s3: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing a bucket imports its SDK and waits on the network: the decoding processes are
    launched before it and import meanwhile, as many as the run can use; none are left after
    a run, nor after one that stops at planning."""
    from tdvideo.errors import UsageError
    from tdvideo.extract import _extractor

    during: list[int] = []
    plan_run = _extractor.plan_run
    monkeypatch.setattr(_extractor, "plan_run", lambda *a, **k: during.append(len(_decoders())) or plan_run(*a, **k))
    extractor = tdvideo.Extractor()
    most = min(extractor._worker_cap(), 8)
    cases = [
        ("s3://bkt/videos/", {}, most),  # a prefix: as many as the cores allow
        ("s3://bkt/videos/a.mp4", {}, 1),  # one video named
        (str(s3["local"]), {}, 0),  # local inputs are planned at once
        ("s3://bkt/videos/", {"workers": 0}, 0),
    ]
    for source, settings, launched in cases:
        during.clear()
        results = list(tdvideo.Extractor(**settings).run([source], out=tmp_path / "out", overwrite=True, progress=False))
        assert results and all(r.status == "done" for r in results), source
        assert during == [launched], (source, settings)
        assert _decoders() == [], source
    during.clear()
    with pytest.raises(UsageError, match="no-such-bucket"):
        list(extractor.run(["s3://no-such-bucket/videos/"], out=tmp_path / "out2", progress=False))
    assert during == [most] and _decoders() == []


_READ_IN_A_WORKER = """
import pickle, sys
from tdvideo.storage import open_read
from tdvideo.writers import SourceIdentity
url = pickle.loads(sys.stdin.buffer.read())
with open_read(url, block_size=100_000) as fh:
    data = fh.read()
    fh.seek(-1000, 2)
    tail = fh.read()
identity = SourceIdentity.of(url).to_dict()
heavy = sorted(m for m in ("s3fs", "botocore", "aiobotocore", "aiohttp", "fsspec") if m in sys.modules)
sys.stdout.buffer.write(pickle.dumps((data, tail, identity, heavy)))
"""


def test_decoding_processes_read_objects_by_presigned_addresses_without_the_sdk(s3: dict, tmp_path: Path) -> None:
    """The main process signs; a decoding process reads with the standard library's HTTP
    client: the same bytes and the same identity as through the SDK, which it never imports."""
    import pickle

    from tdvideo.storage import addressed, location
    from tdvideo.writers import SourceIdentity

    url = location("s3://bkt/videos/a.mp4", {})
    signed = addressed(url)
    assert signed == url and signed.direct.startswith(s3["env"]["AWS_ENDPOINT_URL"] + "/bkt/videos/a.mp4?")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in signed.direct  # SigV4, not botocore's SigV2 default for presigning
    assert "X-Amz" not in str(signed) + repr(signed)
    done = subprocess.run([sys.executable, "-c", _READ_IN_A_WORKER], input=pickle.dumps(signed), capture_output=True, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    data, tail, identity, heavy = pickle.loads(done.stdout)
    expected = (s3["local"] / "a.mp4").read_bytes()
    assert data == expected and tail == expected[-1000:]
    assert identity == SourceIdentity.of(url).to_dict()  # resume compares it with what the SDK says
    assert heavy == []


_DECODE_IN_A_WORKER = """
import http.client, pickle, sys
from tdvideo.video import ReadOptions, read_chunks
from tdvideo.writers import SourceIdentity
url = pickle.loads(sys.stdin.buffer.read())
asked = []
request = http.client.HTTPConnection.request
http.client.HTTPConnection.request = lambda self, method, target, *a, **k: asked.append((method, k.get("headers", {}).get("Range"))) or request(self, method, target, *a, **k)
identity = SourceIdentity.before_reading(url).to_dict()
frames = sum(len(chunk.frames) for chunk in read_chunks(url, ReadOptions(size=(32, 48))))
sys.stdout.buffer.write(pickle.dumps((identity, frames, asked)))
"""


def test_a_decoding_process_reads_a_small_object_with_one_request(s3: dict, tmp_path: Path) -> None:
    """Its identity, the decoder and the walk over its headers that checks its length share
    the first block: one GET, where there were four. A fresh look (the main process's check
    before it commits) asks the store again, and sees a rewrite the shared block would hide."""
    import pickle

    from tdvideo.storage import addressed, location
    from tdvideo.writers import SourceIdentity

    url = location("s3://bkt/videos/a.mp4", {})
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_IN_A_WORKER], input=pickle.dumps(addressed(url)), capture_output=True, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr.decode()
    identity, frames, asked = pickle.loads(done.stdout)
    assert identity == SourceIdentity.of(url).to_dict()
    assert frames == len(tdvideo.read_video(s3["local"] / "a.mp4", size=(32, 48)).frames) > 0
    assert asked == [("GET", "bytes=0-16777215")]

    s3["fs"].pipe("bkt/fresh/v.mp4", (s3["local"] / "a.mp4").read_bytes())
    signed = addressed(location("s3://bkt/fresh/v.mp4", {}))
    before = SourceIdentity.before_reading(signed)  # this process now keeps the object's block
    s3["fs"].pipe("bkt/fresh/v.mp4", (s3["local"] / "c.avi").read_bytes())
    assert before.unchanged() is False
    assert SourceIdentity.of(signed) != before


def test_a_presigned_read_never_mixes_two_versions_and_falls_back_to_the_sdk(s3: dict) -> None:
    from dataclasses import replace

    from tdvideo.storage import addressed, location, open_read

    fs = s3["fs"]
    fs.pipe("bkt/versions/v.bin", b"a" * 300_000)
    url = addressed(location("s3://bkt/versions/v.bin", {}))
    with open_read(url, block_size=100_000) as fh:
        assert fh.read(150_000) == b"a" * 150_000
        fs.pipe("bkt/versions/v.bin", b"b" * 300_000)  # rewritten while it is read
        with pytest.raises(OSError, match=r"^s3://bkt/versions/v.bin: reading at byte \d+ the object changed while it was read \(HTTP 412\)$"):
            fh.read()
    # An address the store does not answer as expected (here a 404): the SDK reads instead.
    elsewhere = replace(url, direct=f"{s3['env']['AWS_ENDPOINT_URL']}/bkt/versions/missing.bin")
    with open_read(elsewhere) as fh:
        assert fh.read() == b"b" * 300_000


def test_an_address_that_stops_working_part_way_hands_on_to_the_sdk(s3: dict) -> None:
    """A signature made with a session token stops working when the token expires, which can
    be part-way through a video: the SDK reads on from there, if the object is the version
    read so far (moto does not expire signatures: the store's refusal is simulated)."""
    from tdvideo.storage import _NotDirect, addressed, location, open_read

    def refused(*args: object, **kwargs: object) -> None:
        raise _NotDirect("HTTP 403")

    fs = s3["fs"]
    data = bytes(range(256)) * 1200
    fs.pipe("bkt/expiring/v.bin", data)
    url = addressed(location("s3://bkt/expiring/v.bin", {}))
    with open_read(url, block_size=100_000) as fh:
        assert fh.read(1000) == data[:1000]
        fh.raw._get = refused  # type: ignore[attr-defined]
        fh.seek(150_000)
        assert fh.read() == data[150_000:]
    with open_read(url, block_size=100_000) as fh:
        assert fh.read(1000) == data[:1000]
        fs.pipe("bkt/expiring/v.bin", data[::-1])
        fh.raw._get = refused  # type: ignore[attr-defined]
        fh.seek(150_000)
        with pytest.raises(OSError, match=r"^s3://bkt/expiring/v.bin: reading at byte 150000 the object changed while it was read$"):
            fh.read()


def test_a_member_of_a_shard_read_by_address_is_read_from_its_own_offset(clips: dict[str, Clip], tmp_path: Path) -> None:
    from tdvideo.storage import TarMember, Url, open_read

    root = tmp_path / "served"
    root.mkdir()
    payload = os.urandom(300_000)
    (root / "shard.tar").write_bytes(os.urandom(200_000) + payload)
    port, log = _free_port(), tmp_path / "requests.log"
    server = subprocess.Popen([sys.executable, "-m", "tests.rangeserver", str(root), str(port), str(log)], cwd=ROOT)
    try:
        _wait_for(port, server)
        shard = Url("s3", "bkt/shard.tar", direct=f"http://127.0.0.1:{port}/shard.tar")
        with open_read(TarMember(shard, "0001.mp4", 200_000, 300_000), block_size=1_000_000) as fh:
            assert fh.read() == payload
    finally:
        server.kill()
        server.wait()
    assert [line.split()[-1] for line in log.read_text().splitlines()] == ["bytes=200000-1199999"]  # one GET, from the member on


def test_a_presigned_read_tries_a_passing_5xx_again_and_names_the_object_when_it_gives_up(clips: dict[str, Clip], tmp_path: Path) -> None:
    from tdvideo.storage import Url, open_read

    root = video_tree(tmp_path / "served", {"v.mp4": clips["long_gop"].path})
    port, log = _free_port(), tmp_path / "requests.log"
    server = subprocess.Popen([sys.executable, "-m", "tests.rangeserver", str(root), str(port), str(log), "2"], cwd=ROOT)
    url = Url("s3", "bkt/v.mp4", direct=f"http://127.0.0.1:{port}/v.mp4?X-Amz-Signature=secret")
    try:
        _wait_for(port, server)
        with open_read(url, block_size=4096) as fh:
            data = fh.read()
    finally:
        server.kill()
        server.wait()
    assert data == (root / "v.mp4").read_bytes()
    assert "503" in log.read_text()  # the third GET failed, and was made again
    with pytest.raises(OSError, match=r"^s3://bkt/v.mp4: reading at byte 0 failed \(") as caught:
        open_read(url)  # nothing answers now: tried again, then one line naming the object
    assert "secret" not in str(caught.value)


class SilentServer:
    """A port that accepts connections and never answers on them: a store that stopped
    answering. ``connections`` counts what reached it."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.connections += 1
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture()
def silent() -> Iterator[SilentServer]:
    from tdvideo import storage

    server = SilentServer()
    yield server
    server.close()
    storage._silent.clear()  # what this process learnt of the stores it tried


def test_a_store_that_stops_answering_is_not_asked_again_at_once(silent: SilentServer) -> None:
    """A call the store does not answer fails after the SDK's three tries, not s3fs's five
    rounds of them on top; then calls to that store fail at once for a while, and after
    that one is tried again."""
    from tdvideo.storage import Url, stat_url

    options = {"endpoint_url": f"http://127.0.0.1:{silent.port}", "storage_timeout": 0.5, "key": "k", "secret": "s"}
    with pytest.raises(Exception, match="[Tt]imeout"):
        stat_url(Url.parse("s3://quiet/a.mp4", options))
    tried = silent.connections
    assert 1 <= tried <= 6, tried  # at most three tries of each of info's two requests
    with pytest.raises(TimeoutError, match=r"^its store gave no answer within 0.5 s moments ago; not asked again yet$"):
        stat_url(Url.parse("s3://quiet/b.mp4", options))
    assert silent.connections == tried  # not asked
    other = Url.parse("s3://quiet/a.mp4", {**options, "endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(Exception) as caught:  # another endpoint is another store: asked, refused
        stat_url(other)
    assert "not asked again" not in str(caught.value)
    time.sleep(0.6)  # the store's first silence is forgiven after the timeout: asked again
    with pytest.raises(Exception, match="[Tt]imeout"):
        stat_url(Url.parse("s3://quiet/a.mp4", options))
    assert silent.connections > tried


def test_a_read_by_address_that_gets_no_answer_is_tried_as_the_sdk_tries(silent: SilentServer) -> None:
    from tdvideo.storage import Url, open_read

    url = Url("s3", "hushed/v.mp4", options={"storage_timeout": 0.5}, direct=f"http://127.0.0.1:{silent.port}/v.mp4?X-Amz-Signature=secret")
    with pytest.raises(OSError, match=r"^s3://hushed/v.mp4: reading at byte 0 failed \(no answer within 0.5 s\)$"):
        open_read(url)
    assert silent.connections == 3  # three tries, as the SDK's
    with pytest.raises(OSError, match="not asked again yet"):
        open_read(url)
    assert silent.connections == 3


@contextmanager
def _serving(handler: type) -> Iterator[str]:
    """An HTTP server of ``handler`` in a thread of this process, on a free port: its address."""
    import threading
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "message"), [
    (403, "access denied (HTTP 403)"), (401, "access denied (HTTP 401)"),
    (500, "cannot be reached (the server answered HTTP 500)"), (404, "no such object, prefix or bucket"),
])
def test_an_http_server_s_refusal_is_named_as_what_it_is(status: int, message: str, tmp_path: Path) -> None:
    """fsspec's HTTP store calls every failed HEAD "not found"; only a 404 is."""
    from http.server import BaseHTTPRequestHandler

    class Refusing(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Refusing) as address:
        url = f"{address}/v.mp4"
        done = tdvideo_cli("extract", f"{url}?sig=SECRET", "-o", str(tmp_path / "out"), cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr == f"error: {url}: {message}\n", done.stderr


def test_a_server_that_ignores_range_requests_is_one_line_before_decoding(clips: dict[str, Clip], tmp_path: Path) -> None:
    """Python's own http.server sends the whole file for a range: a file of one block is read
    from it; a larger one is refused as it is opened, not inside the decoder."""
    from http.server import SimpleHTTPRequestHandler

    from tdvideo.storage import Url, open_read

    root = video_tree(tmp_path / "served", {"v.mp4": clips["h264"].path})

    class Whole(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    size = (root / "v.mp4").stat().st_size
    with _serving(Whole) as address:
        url = Url.parse(f"{address}/v.mp4")
        with open_read(url, block_size=size) as fh:
            assert fh.read() == (root / "v.mp4").read_bytes()
        with pytest.raises(OSError, match=rf"^{url}: the server does not answer range requests, and the file is larger than a block \(4096 bytes\)$"):
            open_read(url, block_size=4096)


def test_from_python_a_store_s_options_go_with_its_url(s3: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README shows: tdvideo.load, load_dir, run_status and probe reach a store
    by the options a Url carries, the environment pointing elsewhere."""
    from tdvideo.extract import run_status
    from tdvideo.storage import Url

    done = tdvideo_cli("extract", "s3://bkt/videos/a.mp4", "-o", "s3://bkt/pyopts/", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing there
    options = {"endpoint_url": s3["env"]["AWS_ENDPOINT_URL"], "storage_timeout": 5}
    feats = tdvideo.load(Url.parse("s3://bkt/pyopts/a", options))
    assert feats.array.shape[0] == len(feats.timestamps) > 0
    [(name, again)] = list(tdvideo.load_dir(Url.parse("s3://bkt/pyopts/", options)))
    assert name == "a" and np.array_equal(again.array, feats.array)
    assert run_status(Url.parse("s3://bkt/pyopts/", options)).complete
    assert tdvideo.probe(Url.parse("s3://bkt/videos/a.mp4", options)).frames


def test_the_clips_keep_their_index_at_the_end(s3: dict) -> None:
    """The MP4 in the bucket is written as a muxer writes it by default: moov after mdat, so
    reading it takes a range request at the end, not a download of the whole object."""
    data = s3["fs"].cat("bkt/videos/a.mp4")
    assert data.index(b"moov") > data.index(b"mdat")


def test_info_and_dry_run_on_urls(s3: dict, tmp_path: Path) -> None:
    one = tdvideo_cli("info", "s3://bkt/videos/a.mp4", cwd=tmp_path)
    assert one.returncode == 0 and one.stdout.splitlines()[0].split() == ["path", "s3://bkt/videos/a.mp4"], one.stdout + one.stderr
    table = tdvideo_cli("info", "s3://bkt/videos", cwd=tmp_path)
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 4, table.stdout  # a header and 3 rows
    dry = tdvideo_cli("extract", "s3://bkt/videos/", "-o", str(tmp_path / "out"), "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and sorted(dry.stdout.split()[1::2]) == ["s3://bkt/videos/a.mp4", "s3://bkt/videos/c.avi", "s3://bkt/videos/sub/b.webm"]


def test_what_keeps_a_store_from_being_read_is_one_line_before_any_work(s3: dict, tmp_path: Path) -> None:
    cases = [
        (["s3://no-such-bucket/videos/"], "s3://no-such-bucket/videos: no such object, prefix or bucket"),
        (["s3://bkt/videos/", "--storage-option", "endpoint_url=http://127.0.0.1:9", "--storage-timeout", "2"], "s3://bkt/videos: cannot be reached"),
        (["http://127.0.0.1:9/v.mp4", "--storage-timeout", "2"], "http://127.0.0.1:9/v.mp4: cannot be reached ("),  # not "no such object"
        (["gs://some-bucket/videos/"], "gs:// URLs need their store's package: pip install 'tdvideo[gcs]'"),
        (["az://container/videos/"], "az:// URLs need their store's package: pip install 'tdvideo[azure]'"),
    ]
    for args, message in cases:
        start = time.monotonic()
        done = tdvideo_cli("extract", *args, "-o", str(tmp_path / "out"), cwd=tmp_path, timeout=120)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], (args, done.stderr)
        assert time.monotonic() - start < 60, args
        assert not (tmp_path / "out").exists()
    done = tdvideo_cli("extract", "s3://bkt/videos/a.mp4", "-o", "s3://no-such-bucket/feats/", cwd=tmp_path, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot write to --out s3://no-such-bucket/feats: ") and "write-test" not in lines[0], lines[0]


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture()
def http(clips: dict[str, Clip], tmp_path: Path) -> Iterator[dict[str, object]]:
    """The Range-honouring server of tests/rangeserver.py, in its own process, over a folder
    of clips; it can be stopped and started again, and logs every request."""
    root = video_tree(tmp_path / "served", {f"v{i}.mp4": clips["long_gop"].path for i in range(4)})
    port = _free_port()
    log = tmp_path / "requests.log"

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "tests.rangeserver", str(root), str(port), str(log)], cwd=ROOT)
        _wait_for(port, proc)
        return proc

    state = {"root": root, "url": f"http://127.0.0.1:{port}", "log": log, "start": start, "proc": start()}
    yield state
    state["proc"].kill()  # type: ignore[attr-defined]
    state["proc"].wait()  # type: ignore[attr-defined]


SECRET = "X-Amz-Signature=0123456789abcdef&X-Amz-Credential=AKIASECRET"


def test_a_signed_url_s_query_string_is_used_and_never_recorded(http: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (Path(http["root"]) / "bad.mp4").write_bytes(b"not a video" * 100)
    urls = [f"{http['url']}/v0.mp4?{SECRET}", f"{http['url']}/bad.mp4?{SECRET}"]
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join(urls) + "\n")
    done = tdvideo_cli("extract", "--from-list", str(listed), "-o", str(out), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert SECRET in Path(http["log"]).read_text()  # what was fetched carried it
    for text in (done.stdout, done.stderr, *(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.suffix != ".npy")):
        assert "0123456789abcdef" not in text and "AKIASECRET" not in text
    assert json.loads((out / "v0.json").read_text())["source"]["path"] == f"{http['url']}/v0.mp4"
    [failure] = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert failure["path"] == f"{http['url']}/bad.mp4"
    # A URL that is not there is a usage error, as a missing path is, and says so without it.
    missing = tdvideo_cli("extract", f"{http['url']}/missing.mp4?{SECRET}", "-o", str(out), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr == f"error: {http['url']}/missing.mp4: no such object, prefix or bucket\n"


def test_a_server_that_goes_away_mid_run_fails_those_videos_and_a_rerun_completes(http: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tdvideo", "extract", *(f"{http['url']}/v{i}.mp4" for i in range(4)), "-o", str(out),
         "--workers", "0", "--model", "resnet18", "--weights", "none", "--storage-timeout", "2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("*.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    http["proc"].send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=180)
    failed = [line for line in stderr.splitlines() if line.startswith("failed: ")]
    assert proc.returncode == 1 and failed, stderr
    assert all(line.startswith(f"failed: {http['url']}/v") for line in failed), failed
    assert not any("changed, moved or deleted" in line for line in failed), failed  # the store went away, nothing changed
    assert "Traceback" not in stderr
    http["proc"].wait()
    http["proc"] = http["start"]()
    again = tdvideo_cli("extract", *(f"{http['url']}/v{i}.mp4" for i in range(4)), "-o", str(out), "--workers", "0",
                        "--model", "resnet18", "--weights", "none", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.glob("*.npy")) == [f"v{i}.npy" for i in range(4)]


def _padded(source: Path, target: Path, padding: int) -> None:
    """``source`` (an MP4 with its moov last) with a ``free`` box of ``padding`` bytes before
    the moov: a valid file that large, sparse on disk (no disk taken by the padding)."""
    data = source.read_bytes()
    at = data.index(b"moov") - 4
    with target.open("wb") as fh:
        fh.write(data[:at])
        fh.write((padding + 8).to_bytes(4, "big") + b"free")
        fh.seek(padding, os.SEEK_CUR)
        fh.write(data[at:])


def test_a_large_object_is_read_in_bounded_memory(http: dict, tmp_path: Path) -> None:
    """A 2 GB object costs what a small one does: it is read by ranges, never whole."""
    small, large = Path(http["root"]) / "v0.mp4", Path(http["root"]) / "large.mp4"
    _padded(small, large, 2 * 2**30)
    assert large.stat().st_size > 2 * 2**30
    peaks = {}
    for name in ("v0", "large"):
        done = measure_command([sys.executable, "-m", "tdvideo", "extract", f"{http['url']}/{name}.mp4", "-o", str(tmp_path / name)], cwd=tmp_path, timeout=300)
        assert done.code == 0, done.stderr
        peaks[name] = done.peak_rss
    assert len(tdvideo.load(tmp_path / "large" / "large")) == len(tdvideo.load(tmp_path / "v0" / "v0")) == 200
    assert peaks["large"] - peaks["v0"] < 300 * 2**20, peaks
    shutil.rmtree(tmp_path / "large")


# -- outputs in a bucket -----------------------------------------------------------------------


def test_outputs_in_a_bucket_resume_status_export_show_and_load(s3: dict, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    fs = s3["fs"]
    fs.pipe("bkt/more/bad.mp4", b"not a video" * 100)
    fs.put(str(s3["local"] / "a.mp4"), "bkt/more/a.mp4")
    out = "s3://bkt/feats"
    done = tdvideo_cli("extract", "s3://bkt/more/", "-o", out, cwd=tmp_path)
    assert done.returncode == 1 and "failed: s3://bkt/more/bad.mp4: " in done.stderr, done.stderr
    assert fs.exists("bkt/feats/a.npy") and fs.exists("bkt/feats/a.json")
    [log] = fs.glob("bkt/feats/failures*.jsonl")  # a log of this process's own: an object cannot be appended to
    assert json.loads(fs.cat(log).decode().splitlines()[0])["path"] == "s3://bkt/more/bad.mp4"
    features = tdvideo.load(f"{out}/a")
    assert len(features) == 60 and features.metadata["file_etag"]
    status = tdvideo_cli("status", out, "--json", cwd=tmp_path)
    counts = json.loads(status.stdout)
    assert status.returncode == 1 and (counts["done"], counts["failed"], counts["pending"]) == (1, 1, 0), status.stdout + status.stderr
    again = tdvideo_cli("extract", "s3://bkt/more/", "-o", out, cwd=tmp_path)
    assert again.returncode == 1 and "0 done, 1 skipped, 1 failed" in again.stderr, again.stderr
    # An array rewritten in the bucket (its ETag changes) is no longer trusted: done again.
    fs.pipe("bkt/feats/a.npy", fs.cat("bkt/feats/a.npy")[:-4] + b"\0\0\0\0")
    assert json.loads(tdvideo_cli("status", out, "--json", cwd=tmp_path).stdout)["done"] == 0
    redo = tdvideo_cli("extract", "s3://bkt/more/", "-o", out, cwd=tmp_path)
    assert "1 done, 0 skipped, 1 failed" in redo.stderr, redo.stderr
    exported = tdvideo_cli("export", out, "--to", str(tmp_path / "f.parquet"), cwd=tmp_path)
    assert exported.returncode == 0 and exported.stderr.startswith("1 video, 60 rows ->"), exported.stderr
    shown = tdvideo_cli("show", f"{out}/a", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.strip() == f"{out}/a.png" and fs.cat("bkt/feats/a.png").startswith(b"\x89PNG")


def test_claim_mode_in_a_bucket(s3: dict, tmp_path: Path) -> None:
    """Two processes claiming videos through the bucket's conditional writes: each video done once."""
    fs = s3["fs"]
    for i in range(6):
        fs.put(str(s3["local"] / "a.mp4"), f"bkt/claimed/v{i}.mp4")
    args = ["extract", "s3://bkt/claimed/", "-o", "s3://bkt/cfeats", "--balance", "claim", "--model", "resnet18", "--weights", "none"]
    procs = [subprocess.Popen([sys.executable, "-m", "tdvideo", *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = 0
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        line = [x for x in err.splitlines() if " done, " in x][-1]
        done += int(line.split()[0])
    assert done == 6
    assert sorted(fs.glob("bkt/cfeats/*.npy")) == [f"bkt/cfeats/v{i}.npy" for i in range(6)]
    assert fs.glob("bkt/cfeats/.tdvideo/claims/*.claim") == []


def test_a_claim_released_while_it_is_read_is_taken_not_a_crash(s3: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two processes in claim mode: one read another's claim just as that one released it;
    # the read failed "The specified key does not exist" as a bare OSError, and the run stopped.
    from tdvideo.extract._claims import open_claims
    from tdvideo.storage import Url, open_read

    fs = s3["fs"]
    fs.pipe("bkt/race/gone.bin", b"x" * 1000)
    fh = open_read(Url.parse("s3://bkt/race/gone.bin"))  # opened (the store said what it is) ...
    fs.rm("bkt/race/gone.bin")  # ... and removed before its first read
    with pytest.raises(FileNotFoundError, match=r"^s3://bkt/race/gone.bin: reading at byte 0 failed"):
        fh.read()
    fh.close()

    claims = open_claims(Url.parse("s3://bkt/race/out"), timeout=600)
    claim = Url.parse("s3://bkt/race/out/.tdvideo/claims/v.claim")
    assert claims.take(claim)  # this process holds it
    other = open_claims(Url.parse("s3://bkt/race/out"), timeout=600)

    def released_meanwhile(path: object) -> bool:
        claims.release(claim)
        raise FileNotFoundError(f"{path}: reading at byte 0 failed (The specified key does not exist.)")

    monkeypatch.setattr(other, "_holder_gone", released_meanwhile)
    assert other.take(claim)  # taken once released, instead of the run stopping on the error
    claims.close()
    other.close()


def test_claims_need_a_store_that_creates_only_when_absent() -> None:
    from tdvideo.errors import UsageError
    from tdvideo.extract._claims import open_claims
    from tdvideo.storage import Url

    with pytest.raises(UsageError, match=r"balance=claim needs a store that creates an object only when absent"):
        open_claims(Url.parse("memory://out"), timeout=10)


# -- WebDataset shards -------------------------------------------------------------------------


def _shard(path: Path, members: dict[str, bytes]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def shards(clips: dict[str, Clip], tmp_path: Path) -> Path:
    """Two shards as video2dataset writes them: a video, its JSON and caption per key; in the
    second, a damaged video member."""
    folder = tmp_path / "shards"
    folder.mkdir()
    video = clips["h264"].path.read_bytes()
    _shard(folder / "00000.tar", {
        "000000000.mp4": video, "000000000.json": b'{"caption": "a cat", "url": "http://x/y"}', "000000000.txt": b"a cat",
        "000000001.mp4": clips["vp9"].path.read_bytes(), "000000001.txt": b"a dog",
    })
    _shard(folder / "00001.tar", {"000000002.mp4": b"\0" * 5000, "000000002.json": b"{}", "000000003.mp4": video})
    return folder


def test_webdataset_shards_give_a_video_per_member(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = tdvideo_cli("extract", str(shards / "{00000..00001}.tar"), "-o", str(out), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("failed: ")] == [
        line for line in done.stderr.splitlines() if line.startswith(f"failed: {shards / '00001.tar'}:000000002.mp4: ")
    ] != []  # the damaged member fails alone
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy"))
    assert names == ["00000/000000000.npy", "00000/000000001.npy", "00001/000000003.npy"]
    first = tdvideo.load(out / "00000" / "000000000")
    assert first.metadata["sidecar"] == {"json": {"caption": "a cat", "url": "http://x/y"}, "txt": "a cat"}
    assert first.metadata["source"]["path"] == f"{shards / '00000.tar'}:000000000.mp4"
    direct = tdvideo.Extractor(workers=0).extract(tdvideo.storage.TarMember(shards / "00000.tar", "000000000.mp4", 512, first.metadata["source"]["size"]))
    np.testing.assert_allclose(first.array, direct.array, rtol=1e-6, atol=1e-7)
    again = tdvideo_cli("extract", str(shards / "{00000..00001}.tar"), "-o", str(out), cwd=tmp_path)
    assert "0 done, 3 skipped, 1 failed" in again.stderr, again.stderr  # resume per member
    status = json.loads(tdvideo_cli("status", str(out), "--json", cwd=tmp_path).stdout)
    assert (status["done"], status["failed"]) == (3, 1)
    listed = tdvideo_cli("info", str(shards / "{00000..00001}.tar"), "--json", cwd=tmp_path)  # info reads them as extract does
    assert [json.loads(line)["path"] for line in listed.stdout.splitlines()] == [
        f"{shards / '00000.tar'}:000000000.mp4", f"{shards / '00000.tar'}:000000001.mp4", f"{shards / '00001.tar'}:000000003.mp4"
    ], listed.stdout + listed.stderr
    assert listed.returncode == 1 and f"failed: {shards / '00001.tar'}:000000002.mp4" in listed.stderr


def test_webdataset_shards_in_a_bucket(s3: dict, shards: Path, tmp_path: Path) -> None:
    for shard in shards.glob("*.tar"):
        s3["fs"].put(str(shard), f"bkt/wds/{shard.name}")
    local = tdvideo_cli("extract", str(shards / "{00000..00001}.tar"), "-o", str(tmp_path / "local"), cwd=tmp_path)
    remote = tdvideo_cli("extract", "s3://bkt/wds/{00000..00001}.tar", "-o", str(tmp_path / "remote"), cwd=tmp_path)
    assert remote.returncode == local.returncode == 1, remote.stderr
    for name in ("00000/000000000", "00000/000000001", "00001/000000003"):
        np.testing.assert_allclose(tdvideo.load(tmp_path / "remote" / name).array, tdvideo.load(tmp_path / "local" / name).array, rtol=1e-6, atol=1e-7)
    # A range past the last shard names a shard that is not there: one usage line, before any work.
    for past, missing in ((str(shards / "{00001..00002}.tar"), f"{shards / '00002.tar'}: no such file"),
                          ("s3://bkt/wds/{00001..00002}.tar", "s3://bkt/wds/00002.tar: no such object")):
        out = tmp_path / "past"
        refused = tdvideo_cli("extract", past, "-o", str(out), cwd=tmp_path)
        assert refused.returncode == 2 and refused.stderr == f"error: {missing}\n", refused.stderr
        assert not out.exists()


def test_a_damaged_shard_is_named_and_its_readable_members_kept(clips: dict[str, Clip], tmp_path: Path) -> None:
    whole = _shard(tmp_path / "whole.tar", {f"{i:09d}.mp4": clips["h264"].path.read_bytes() for i in range(3)})
    import tarfile

    with tarfile.open(whole) as tar:
        last = tar.getmembers()[-1]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: last.offset_data + 1000])  # inside the last member's video
    found = tdvideo.extract.discover_videos([str(cut)])
    assert [v.relative.as_posix() for v in found.videos] == ["cut/000000000", "cut/000000001"]
    assert [u.path for u in found.unreadable] == [cut]
    assert found.unreadable[0].reason.startswith("cut short: 000000002.mp4 ends at byte")


def test_a_shard_that_is_no_regular_file_is_refused_without_opening_it(tmp_path: Path) -> None:
    """A FIFO named like a shard would block the open forever; a folder so named is no shard."""
    os.mkfifo(tmp_path / "pipe.tar")
    (tmp_path / "folder.tar").mkdir()
    for command in ("info", "extract"):
        done = tdvideo_cli(command, "pipe.tar", "folder.tar", *(("-o", "out") if command == "extract" else ()), cwd=tmp_path, timeout=60)
        failed = sorted(line for line in done.stderr.splitlines() if line.startswith("failed: "))
        assert done.returncode == 1 and failed == [
            "failed: folder.tar: not a regular file (a directory)", "failed: pipe.tar: not a regular file (a FIFO)"
        ], done.stderr


def test_the_ray_engine_reads_the_objects_in_its_tasks(s3: dict, tmp_path: Path) -> None:
    """Decoding tasks open the bucket's objects themselves: the outputs are the local engine's."""
    pytest.importorskip("ray")
    local = tdvideo_cli("extract", "s3://bkt/videos/", "-o", str(tmp_path / "local"), cwd=tmp_path)
    ray = tdvideo_cli("extract", "s3://bkt/videos/", "-o", str(tmp_path / "ray"), "--engine", "ray", cwd=tmp_path)
    assert local.returncode == ray.returncode == 0, ray.stderr
    for name in ("a", "c", "sub/b"):
        np.testing.assert_allclose(tdvideo.load(tmp_path / "ray" / name).array, tdvideo.load(tmp_path / "local" / name).array, rtol=1e-6, atol=1e-7)


def test_a_passing_5xx_mid_video_is_tried_again(clips: dict[str, Clip], tmp_path: Path) -> None:
    root = video_tree(tmp_path / "served", {"v.mp4": clips["long_gop"].path})
    port, log = _free_port(), tmp_path / "requests.log"
    server = subprocess.Popen([sys.executable, "-m", "tests.rangeserver", str(root), str(port), str(log), "0"], cwd=ROOT)
    try:
        _wait_for(port, server)
        done = tdvideo_cli("extract", f"http://127.0.0.1:{port}/v.mp4", "-o", str(tmp_path / "out"), cwd=tmp_path)
    finally:
        server.kill()
        server.wait()
    assert done.returncode == 0, done.stderr
    assert "503" in log.read_text()  # the store failed a read part-way, and the read was made again
    assert len(tdvideo.load(tmp_path / "out" / "v")) == 200
