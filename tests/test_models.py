"""Backbones and weights: registry shapes, checkpoints by path, named weights offline, safety."""

from __future__ import annotations

import hashlib
import json
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tdvideo
from tdvideo.cli import app
from tdvideo.errors import ModelError, WeightsError
from tdvideo.models import _torchvision as tv
from tdvideo.models import build_backbone, describe_model, list_models

from .conftest import heavy_imports_after

REPRESENTATIVE = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "regnet_y_400mf", "vit_b_16"]
BUILTINS = ["colorhist", "thumbnail", "conv2d"]
SAMPLE = Path(__file__).resolve().parents[1] / "sample_videos" / "h264_scenes.mp4"


def frames_for(backbone: tdvideo.Backbone, n: int = 2) -> torch.Tensor:
    size = backbone.preprocessing.crop or backbone.preprocessing.size
    h, w = (size, size) if isinstance(size, int) else size
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.filterwarnings("ignore:model .* RANDOM weights")
@pytest.mark.parametrize("name", BUILTINS + REPRESENTATIVE)
def test_registry_shape_equals_the_real_output(name: str) -> None:
    backbone = build_backbone(name, weights="none")
    with torch.inference_mode():
        out = backbone.frame_model()(frames_for(backbone))
    assert tuple(out.shape[1:]) == backbone.feature_shape == tuple(describe_model(name)["feature_shape"])


def test_penultimate_embedding_sizes() -> None:
    expected = {"resnet50": [2048], "vit_b_16": [768], "convnext_tiny": [768], "efficientnet_b0": [1280],
                "mobilenet_v3_small": [576], "regnet_y_400mf": [440], "colorhist": [48]}
    assert {name: describe_model(name)["feature_shape"] for name in expected} == expected
    assert sorted(n for n in list_models() if n not in BUILTINS) == sorted(tv.classification_models() + tv.video_models())


@pytest.mark.filterwarnings("ignore:model .* RANDOM weights")
@pytest.mark.parametrize("name, shape", [("resnet18", (512, 7, 7)), ("convnext_tiny", (768, 7, 7)), ("mobilenet_v3_small", (576, 7, 7)), ("conv2d", (16, 62, 62))])
def test_pool_none_gives_the_spatial_map(name: str, shape: tuple[int, ...]) -> None:
    backbone = build_backbone(name, weights="none", pool="none")
    with torch.inference_mode():
        out = backbone.frame_model()(frames_for(backbone, 1))
    assert tuple(out.shape[1:]) == backbone.feature_shape == shape


def test_pool_none_without_a_spatial_map_is_an_error() -> None:
    with pytest.raises(ModelError, match="'vit_b_16' has no spatial feature map"):
        build_backbone("vit_b_16", weights="none", pool="none")
    with pytest.raises(ModelError, match="'colorhist' has no spatial feature map"):
        build_backbone("colorhist", pool="none")


def _save_random_classifier(name: str, path: Path, wrap=lambda sd: sd) -> torch.nn.Module:
    torch.manual_seed(1)
    model = tv.build(name, tv.resolve_weights(name, "DEFAULT")).eval()
    torch.save(wrap(model.state_dict()), path)
    return model


@pytest.mark.parametrize(
    "wrap",
    [lambda sd: sd, lambda sd: {"state_dict": sd}, lambda sd: {"model": sd, "epoch": 3},
     lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}],
    ids=["plain", "state_dict", "model", "module-prefix"],
)
def test_checkpoint_path_gives_the_in_memory_models_features(tmp_path: Path, wrap) -> None:
    path = tmp_path / "mobilenet.pt"
    model = _save_random_classifier("mobilenet_v3_small", path, wrap)
    backbone = build_backbone("mobilenet_v3_small", weights=path)
    assert backbone.weights == str(path) and len(backbone.weights_sha256) == 64 and not backbone.random_weights
    frames = frames_for(backbone)
    x = (frames.float() / 255 - torch.tensor(backbone.preprocessing.mean).view(1, 3, 1, 1)) / torch.tensor(
        backbone.preprocessing.std
    ).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = torch.flatten(model.avgpool(model.features(x)), 1)
        torch.testing.assert_close(backbone.frame_model()(frames), expected, rtol=1e-5, atol=1e-5)


def test_mismatched_checkpoint_names_the_first_keys(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pt"
    _save_random_classifier("resnet18", path)
    with pytest.raises(WeightsError, match=r"does not fit the model: missing keys: features.0.0.weight, .*; unexpected keys: conv1.weight, bn1.weight"):
        build_backbone("mobilenet_v3_small", weights=path)
    state = torch.load(path, weights_only=True)
    state["fc.weight"] = torch.zeros(10, 512)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"shape mismatch: fc.weight \(10, 512\) vs \(1000, 512\)"):
        build_backbone("resnet18", weights=path)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    with path.open("wb") as fh:
        pickle.dump({"state_dict": _Payload(marker)}, fh, protocol=2)
    with pytest.raises(WeightsError, match=r"evil.pt: refused, loading it would run code from the file \(it calls \w+\); nothing in it has run"):
        build_backbone("conv2d", weights=path)
    assert not marker.exists()
    # The same file through plain pickle would have run the payload: the test is real.
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_named_weights_load_from_the_torch_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = tv.resolve_weights("resnet18", "DEFAULT")
    cached = tv.cached_weights_file(weights)
    assert cached.parent == tmp_path / "torch" / "hub" / "checkpoints"
    cached.parent.mkdir(parents=True)
    _save_random_classifier("resnet18", cached)
    backbone = build_backbone("resnet18")  # DEFAULT when unset
    assert backbone.weights == "IMAGENET1K_V1" and not backbone.random_weights
    assert backbone.preprocessing.size == 256 and backbone.preprocessing.crop == 224
    with pytest.raises(WeightsError, match="unknown weights 'IMAGENET9K' for resnet18; choose one of DEFAULT, IMAGENET1K_V1") as info:
        build_backbone("resnet18", weights="IMAGENET9K")
    assert str(info.value).count("DEFAULT") == 1


def test_a_file_named_default_does_not_replace_the_default_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--weights DEFAULT`` means the same wherever the command runs; ``./DEFAULT`` is the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tv.cached_weights_file(tv.resolve_weights("resnet18", "DEFAULT"))
    cached.parent.mkdir(parents=True)
    _save_random_classifier("resnet18", cached)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DEFAULT").write_bytes(b"not a checkpoint")
    assert build_backbone("resnet18", weights="DEFAULT").weights == "IMAGENET1K_V1"
    with pytest.raises(WeightsError, match="DEFAULT: not a readable checkpoint"):
        build_backbone("resnet18", weights="./DEFAULT")


def test_weights_that_are_no_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="is a folder, not a checkpoint file"):
        build_backbone("conv2d", weights=tmp_path)
    with pytest.raises(WeightsError, match="does not exist"):
        build_backbone("conv2d", weights=tmp_path / "missing.pt")


def test_offline_default_weights_give_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    result = CliRunner().invoke(app, ["extract", str(SAMPLE), "-o", str(tmp_path / "out"), "--model", "resnet50"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    message = lines[0]
    assert "resnet50 weights IMAGENET1K_V2 are not cached and could not be downloaded" in message
    assert "resnet50-11ad3fa6.pth" in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "--weights PATH" in message
    assert not (tmp_path / "out").exists()
    # From Python, the same error names the argument, not the command line's flag.
    with pytest.raises(WeightsError) as caught:
        tdvideo.Extractor(model="resnet50")
    assert "weights=PATH" in str(caught.value) and "--weights" not in str(caught.value)


def test_random_weights_are_said_loudly(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["extract", str(SAMPLE), "-o", str(tmp_path), "-q", "--model", "resnet18", "--weights", "none", "--fps", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "warning: model resnet18 runs with RANDOM weights" in result.stderr
    meta = json.loads((tmp_path / "h264_scenes.json").read_text())
    assert meta["random_weights"] is True and meta["weights"] is None


@pytest.mark.parametrize("name, dim", [("resnet50", 2048), ("vit_b_16", 768)])
def test_end_to_end_with_a_checkpoint_path(tmp_path: Path, name: str, dim: int) -> None:
    path = tmp_path / f"{name}.pth"
    _save_random_classifier(name, path)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["extract", str(SAMPLE), "-o", str(out), "-q", "--model", name, "--weights", str(path), "--fps", "1"]
    )
    assert result.exit_code == 0, result.output
    feats = tdvideo.load(out / "h264_scenes.npy")
    assert feats.array.shape == (4, dim) and np.isfinite(feats.array).all()
    meta = feats.metadata
    assert meta["model"] == name and meta["weights"] == str(path)
    assert meta["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["feature_shape"] == [dim] and meta["preprocessing"]["crop"] == 224
    assert meta["resize"] == {"size": meta["preprocessing"]["size"], "crop": 224, "interpolation": meta["preprocessing"]["interpolation"]}


def test_colorhist_counts_every_pixel_once_in_the_right_bin() -> None:
    from tdvideo.models import ColorHistogram

    frames = torch.randint(0, 256, (5, 7, 9, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # channels_last
    hist = ColorHistogram(16)(frames)
    expected = torch.stack(
        [torch.cat([torch.bincount(f[c].flatten().long() // 16, minlength=16) for c in range(3)]) for f in frames]
    ).float() / (7 * 9)
    torch.testing.assert_close(hist, expected)
    torch.testing.assert_close(ColorHistogram(16)(frames.float() / 255), expected)
    assert torch.allclose(ColorHistogram(10)(frames).view(5, 3, 10).sum(-1), torch.ones(5, 3))


def test_the_shipped_catalog_matches_the_models() -> None:
    """``tdvideo models`` reads a stored catalog; it must say what building the models says."""
    from tdvideo.models._catalog import SHIPPED, build_catalog

    assert json.loads(SHIPPED.read_text()) == json.loads(json.dumps(build_catalog()))


def test_listing_models_and_help_import_no_torch() -> None:
    """`tdvideo models`, `--help` and `--version` answer at once: no torch, no torchvision."""
    script = (
        "from typer.testing import CliRunner\n"
        "from tdvideo.cli import app\n"
        "for args in (['models', '--json'], ['--help'], ['extract', '--help'], ['--version'], ['models', 'resnet*']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
    )
    assert heavy_imports_after(script) == []
