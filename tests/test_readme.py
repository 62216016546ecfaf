"""The README's Python blocks, each run as a script the way a reader would: copied into a
file and run with ``python file.py`` (no ``__main__`` guard), beside small generated videos."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Clip

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, re.MULTILINE | re.DOTALL)

# The only change made to the README's code: pretrained weights cannot be downloaded here.
NO_DOWNLOAD = (('weights="DEFAULT"', 'weights="none"'), ('weights = "DEFAULT"', 'weights = "none"'))


def _offline(text: str) -> str:
    for old, new in NO_DOWNLOAD:
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Clip]) -> Path:
    """The files the README's examples name: clip.mp4, long.mp4, videos/ and configs/."""
    work = tmp_path_factory.mktemp("readme")
    shutil.copy(clips["h264"].path, work / "clip.mp4")
    shutil.copy(clips["long_gop"].path, work / "long.mp4")
    (work / "videos").mkdir()
    shutil.copy(clips["h264"].path, work / "videos" / "clip.mp4")
    shutil.copy(clips["vp9"].path, work / "videos" / "other.webm")
    (work / "configs").mkdir()
    for preset in (ROOT / "configs").glob("*.toml"):
        (work / "configs" / preset.name).write_text(_offline(preset.read_text()))
    return work


def test_every_python_block_is_found() -> None:
    assert len(BLOCKS) == README.count("```python") >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_a_readme_python_block_runs_as_a_script(index: int, workdir: Path) -> None:
    script = workdir / f"readme_block_{index}.py"
    script.write_text(_offline(BLOCKS[index]))
    done = subprocess.run([sys.executable, script.name], cwd=workdir, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr and "bootstrapping" not in done.stderr, done.stderr[-4000:]
    assert "failed" not in done.stdout, done.stdout
