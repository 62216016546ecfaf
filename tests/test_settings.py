"""The settings record: presets, precedence, --print-config, the CLI options made from it, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import tdvideo
from tdvideo.cli import app
from tdvideo.errors import UsageError
from tdvideo.models import model_entry
from tdvideo.settings import Settings, load_toml

from .conftest import Clip, video_tree

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
runner = CliRunner()


def print_config(*args: str) -> str:
    result = runner.invoke(app, ["extract", "--print-config", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("preset", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_presets_load_and_name_real_models(preset: Path) -> None:
    settings = Settings.from_mapping(load_toml(preset))
    assert model_entry(settings.model).name == settings.model  # a known model, timm's included
    assert isinstance(settings.sampling(), tdvideo.Sampling)


def test_required_presets_exist() -> None:
    presets = {p.stem: load_toml(p) for p in CONFIGS.glob("*.toml")}
    assert "default" in presets
    assert any(c.get("weights") == "DEFAULT" and c.get("fps", 99) <= 2 for c in presets.values())
    assert any("clip_len" in c for c in presets.values())


def test_flags_override_the_file_which_overrides_defaults(tmp_path: Path) -> None:
    preset = tmp_path / "p.toml"
    preset.write_text('model = "thumbnail"\nfps = 3.0\nbatch_size = 16\nsize = [32, 48]\n')
    settings = Settings.from_mapping({**load_toml(preset), "fps": 5.0})
    assert settings.model == "thumbnail" and settings.fps == 5.0 and settings.batch_size == 16
    assert settings.size == (32, 48) and settings.format == Settings().format
    text = print_config("--config", str(preset), "--fps", "5", "--format", "pt")
    assert 'model = "thumbnail"' in text and "fps = 5.0" in text and 'format = "pt"' in text and "batch_size = 16" in text


def test_print_config_round_trips(tmp_path: Path) -> None:
    first = print_config("--config", str(CONFIGS / "clips.toml"), "--size", "120x160", "--ext", "mp4", "--ext", "mkv", "--overwrite")
    saved = tmp_path / "saved.toml"
    saved.write_text(first)
    assert print_config("--config", str(saved)) == first
    loaded = Settings.from_mapping(load_toml(saved))
    assert loaded.size == (120, 160) and loaded.ext == ("mp4", "mkv") and loaded.overwrite is True


@pytest.mark.parametrize(
    "text, message",
    [
        ("modle = 'x'", r"unknown setting\(s\) 'modle' \(did you mean model\?\)"),
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
        load_toml(preset)
    result = runner.invoke(app, ["extract", "x.mp4", "--config", str(preset)])
    assert result.exit_code == 2 and str(preset) in result.stderr


def test_config_that_is_a_folder_or_not_text(tmp_path: Path) -> None:
    binary = tmp_path / "latin1.toml"
    binary.write_bytes('model = "caf\xe9"\n'.encode("latin-1"))
    for preset, message in ((tmp_path, "is a folder, not a TOML config file"), (binary, "not UTF-8 text")):
        with pytest.raises(UsageError, match=message):
            load_toml(preset)
        result = runner.invoke(app, ["extract", "x.mp4", "--config", str(preset)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr


def test_print_config_lists_every_setting_and_documents_itself() -> None:
    text = Settings().to_toml()
    for name in Settings.__dataclass_fields__:
        assert f"\n{name} = " in text or f"\n# {name} =" in text, name
    assert "\n# fps =\n" in text and 'model = "colorhist"' in text  # unset ones commented out
    assert "# Keep frames on a grid of this many per second. Unset: every frame." in text
    assert Settings.from_mapping(load_toml_text(text)) == Settings()


def load_toml_text(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def test_every_setting_reaches_the_command_line_and_toml(tmp_path: Path) -> None:
    """One record: each field is an option of `tdvideo extract` and a key of a preset."""
    help_text = runner.invoke(app, ["extract", "--help"], terminal_width=200).stdout
    for name, f in Settings.__dataclass_fields__.items():
        spelled = f.metadata["spec"].flag
        flag = spelled[0].split("/")[0] if spelled else "--" + name.replace("_", "-")
        assert flag in help_text, flag
    preset = tmp_path / "all.toml"
    preset.write_text('interpolation = "area"\nthreads = 2\nworkers = 0\n')
    text = print_config("--config", str(preset), "--threads", "3")
    assert 'interpolation = "area"' in text and "threads = 3" in text and "workers = 0" in text


def test_the_readme_documents_every_option_of_extract() -> None:
    import re

    import typer.main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("## Options of `tdvideo extract`")[1].split("\n## ")[0]
    documented = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", table))
    command = typer.main.get_command(app).commands["extract"]
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")}
    options -= {"--help", "--skip-finished", "--all-frames", "--no-compile"}  # the "off" halves of on/off flags
    assert options - documented == set(), "options missing from the README's table"
    assert documented - options == set(), "the README's table names options that do not exist"


def test_unknown_settings_name_the_close_matches() -> None:
    with pytest.raises(UsageError, match=r"unknown setting\(s\) 'fsp' \(did you mean fps\?\)"):
        tdvideo.Extractor(fsp=2)
    with pytest.raises(UsageError, match="must be a positive integer, got 0"):
        tdvideo.Extractor(batch_size=0)
    with pytest.raises(UsageError, match="shape the features: give them to Extractor"):
        list(tdvideo.Extractor().run([], fps=3))


def test_none_leaves_an_optional_setting_unset() -> None:
    # Scripts forward their own optional arguments: None means "not given".
    assert tdvideo.Extractor(workers=None, fps=None).settings == Settings()
    with pytest.raises(UsageError, match="batch_size must be int, got None"):
        tdvideo.Extractor(batch_size=None)


def test_from_list_ext_and_glob(clips: dict[str, Clip], tmp_path: Path) -> None:
    files = {"cam1/a.mp4": clips["h264"].path, "cam1/b.webm": clips["vp9"].path, "cam2/c.avi": clips["mpeg4"].path}
    src = video_tree(tmp_path / "videos", files)
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
