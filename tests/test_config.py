"""Config presets, precedence, --print-config, and the input options of the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tdvideo
from tdvideo.cli import app
from tdvideo.config import DEFAULTS, load_config, resolve, to_toml
from tdvideo.errors import UsageError

from .conftest import Clip

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
runner = CliRunner()


def print_config(*args: str) -> str:
    result = runner.invoke(app, ["extract", "--print-config", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("preset", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_presets_load_and_name_real_models(preset: Path) -> None:
    settings = resolve(load_config(preset))
    assert settings["model"] in tdvideo.list_models()
    tdvideo.Sampling(**{k: settings[k] for k in ("fps", "stride", "num_frames", "start", "end", "clip_len", "clip_stride")})


def test_required_presets_exist() -> None:
    presets = {p.stem: load_config(p) for p in CONFIGS.glob("*.toml")}
    assert "default" in presets
    assert any(c.get("weights") == "DEFAULT" and c.get("fps", 99) <= 2 for c in presets.values())
    assert any("clip_len" in c for c in presets.values())


def test_flags_override_the_file_which_overrides_defaults(tmp_path: Path) -> None:
    preset = tmp_path / "p.toml"
    preset.write_text('model = "thumbnail"\nfps = 3.0\nbatch_size = 16\nsize = [32, 48]\n')
    settings = resolve(load_config(preset), {"fps": 5.0, "model": None})
    assert settings["model"] == "thumbnail" and settings["fps"] == 5.0 and settings["batch_size"] == 16
    assert settings["size"] == (32, 48) and settings["format"] == DEFAULTS["format"]
    text = print_config("--config", str(preset), "--fps", "5", "--format", "pt")
    assert 'model = "thumbnail"' in text and "fps = 5.0" in text and 'format = "pt"' in text and "batch_size = 16" in text


def test_print_config_round_trips(tmp_path: Path) -> None:
    first = print_config("--config", str(CONFIGS / "clips.toml"), "--size", "120x160", "--ext", "mp4", "--ext", "mkv", "--overwrite")
    saved = tmp_path / "saved.toml"
    saved.write_text(first)
    assert print_config("--config", str(saved)) == first
    assert resolve(load_config(saved)) == resolve(load_config(saved), {})
    assert load_config(saved)["size"] == (120, 160) and load_config(saved)["ext"] == ["mp4", "mkv"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("modle = 'x'", "unknown setting 'modle'"),
        ("fps = 'fast'", "fps must be int or float, got 'fast'"),
        ("batch_size = true", "batch_size must be int, got True"),
        ("size = [1, 2, 3]", r"size must be a positive integer or \[height, width\]"),
        ("size = [0, 0]", r"size must be a positive integer or \[height, width\] of positive integers, got \[0, 0\]"),
        ('format = "xyz"', "format must be one of npy, npz, pt; got 'xyz'"),
        ('precision = "fp8"', "precision must be one of fp32, fp16, bf16"),
        ("batch_size = 0", "batch_size must be a positive integer, got 0"),
        ("fps = ", "not valid TOML"),
    ],
)
def test_bad_config_files_are_usage_errors(tmp_path: Path, text: str, message: str) -> None:
    preset = tmp_path / "bad.toml"
    preset.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_config(preset)
    result = runner.invoke(app, ["extract", "x.mp4", "--config", str(preset)])
    assert result.exit_code == 2 and str(preset) in result.stderr


def test_config_that_is_a_folder_or_not_text(tmp_path: Path) -> None:
    binary = tmp_path / "latin1.toml"
    binary.write_bytes('model = "caf\xe9"\n'.encode("latin-1"))
    for preset, message in ((tmp_path, "is a folder, not a TOML config file"), (binary, "not UTF-8 text")):
        with pytest.raises(UsageError, match=message):
            load_config(preset)
        result = runner.invoke(app, ["extract", "x.mp4", "--config", str(preset)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr


def test_to_toml_leaves_unset_keys_out() -> None:
    assert "weights" not in to_toml(DEFAULTS) and 'model = "colorhist"' in to_toml(DEFAULTS)


def test_from_list_ext_and_glob(clips: dict[str, Clip], tmp_path: Path) -> None:
    src = tmp_path / "videos"
    (src / "cam1").mkdir(parents=True)
    (src / "cam2").mkdir()
    shutil.copy(clips["h264"].path, src / "cam1" / "a.mp4")
    shutil.copy(clips["vp9"].path, src / "cam1" / "b.webm")
    shutil.copy(clips["mpeg4"].path, src / "cam2" / "c.avi")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# videos to do\n{src / 'cam1' / 'a.mp4'}\n\n{src / 'cam2'}\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", "--from-list", str(listing), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.npy")) == ["a.npy", "c.npy"]
    out2 = tmp_path / "out2"
    result = runner.invoke(app, ["extract", str(src), "-o", str(out2), "-q", "--ext", "webm", "--ext", ".avi"])
    assert sorted(p.relative_to(out2).as_posix() for p in out2.rglob("*.npy")) == ["cam1/b.npy", "cam2/c.npy"]
    out3 = tmp_path / "out3"
    result = runner.invoke(app, ["extract", str(src), "-o", str(out3), "-q", "--glob", "cam1/*"])
    assert sorted(p.relative_to(out3).as_posix() for p in out3.rglob("*.npy")) == ["cam1/a.npy", "cam1/b.npy"]
    result = runner.invoke(app, ["extract", "--from-list", "-", "-o", str(tmp_path / "out4"), "-q"], input=f"{src / 'cam1' / 'b.webm'}\n")
    assert result.exit_code == 0 and (tmp_path / "out4" / "b.npy").exists()
    result = runner.invoke(app, ["extract", "-o", str(tmp_path / "out5")])
    assert result.exit_code == 2 and "no inputs" in result.stderr
