"""The models people extract with: timm, torchvision video models on windows, layers, your own module, plugins.

CPU only, random weights, no network: weights files are made here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import tdvideo
from tdvideo.cli import app
from tdvideo.errors import ModelError, UsageError, WeightsError
from tdvideo.models import Preprocessing, layer_names, list_models, model_entry

from .conftest import Clip

runner = CliRunner()
random_weights = pytest.mark.filterwarnings("ignore:model .* RANDOM weights")

CLIP_B16 = "timm:vit_base_patch16_clip_224.openai"
DINOV2_S14 = "timm:vit_small_patch14_dinov2.lvd142m"


def normalized(frames: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 (T, C, H, W) frames as the model sees them."""
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (frames.float() / 255 - mean) / std


# -- timm --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


@random_weights
@pytest.mark.parametrize(
    ("name", "shape", "embedding"),
    [
        (CLIP_B16, (512,), "image-text"),  # the joint image-text space, as encode_image gives
        ("timm:vit_base_patch16_siglip_224.webli", (768,), "image-text"),
        (DINOV2_S14, (384,), "pre-logits"),
        ("timm:vit_tiny_patch16_224.augreg_in21k", (192,), "pre-logits"),
    ],
)
def test_timm_models_extract_their_embedding(timm, clips: dict[str, Clip], name: str, shape: tuple[int, ...], embedding: str) -> None:
    features = tdvideo.Extractor(model=name, weights="none", num_frames=2).extract(clips["h264"].path)
    assert features.array.shape == (2, *shape)
    assert features.metadata["embedding"] == embedding
    assert tdvideo.models.describe_model(name)["feature_shape"] == list(shape)


@random_weights
def test_timm_pool_none_gives_the_tokens(timm, clips: dict[str, Clip]) -> None:
    features = tdvideo.Extractor(model=CLIP_B16, weights="none", num_frames=1, pool="none").extract(clips["h264"].path)
    assert features.array.shape == (1, 197, 768)  # class token + 14 x 14 patches


@pytest.mark.parametrize("name", [CLIP_B16, DINOV2_S14, "timm:convnext_tiny.fb_in22k", "timm:resnet50.a1_in1k"])
def test_recorded_preprocessing_is_timms_own_data_config(timm, name: str) -> None:
    model_name = name.removeprefix("timm:")
    expected = timm.data.resolve_model_data_config(timm.create_model(model_name, pretrained=False))
    entry = model_entry(name)
    recorded = entry.details(None)["timm_data_config"]
    assert recorded == json.loads(json.dumps(expected))
    pre = entry.preprocessing(None)
    _, h, w = expected["input_size"]
    assert pre.crop == h == w
    assert pre.size == int(h / expected["crop_pct"])  # timm's eval resize: floor(size / crop_pct)
    assert pre.mean == pytest.approx(expected["mean"]) and pre.std == pytest.approx(expected["std"])
    assert pre.interpolation == expected["interpolation"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_weights_from_a_file_give_timms_own_features(timm, clips: dict[str, Clip], tmp_path: Path, suffix: str) -> None:
    model_name = "vit_tiny_patch16_224.augreg_in21k"
    reference = timm.create_model(model_name, pretrained=False).eval()
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    reference.load_state_dict(state)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)

    extractor = tdvideo.Extractor(model=f"timm:{model_name}", weights=str(path), num_frames=3)
    features = extractor.extract(clips["h264"].path)

    pre = extractor.backbone.preprocessing
    clip = tdvideo.read_video(clips["h264"].path, num_frames=3, size=pre.size, crop=pre.crop, interpolation=pre.interpolation)
    reference.reset_classifier(0)  # timm's pre-logits features
    with torch.inference_mode():
        expected = reference(normalized(clip.frames, pre))
    torch.testing.assert_close(torch.from_numpy(features.array), expected, rtol=1e-4, atol=1e-4)
    assert features.metadata["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_vit_takes_another_patch_aligned_size_as_timm_resizes_it(timm, clips: dict[str, Clip], tmp_path: Path) -> None:
    """DINOv2's config says 518; --size 256 --crop 224 runs it at 224, its position
    embeddings resampled once as timm's dynamic_img_size resamples them on every call."""
    model_name = DINOV2_S14.removeprefix("timm:")
    reference = timm.create_model(model_name, pretrained=False, dynamic_img_size=True).eval()
    state = {k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    reference.load_state_dict(state)
    reference.reset_classifier(0)
    path = tmp_path / "dino.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(path))
    extractor = tdvideo.Extractor(model=DINOV2_S14, weights=str(path), size=256, crop=224, num_frames=3)
    features = extractor.extract(clips["h264"].path)

    pre = extractor.backbone.preprocessing
    clip = tdvideo.read_video(clips["h264"].path, num_frames=3, size=256, crop=224, interpolation=pre.interpolation)
    assert tuple(clip.frames.shape[-2:]) == (224, 224)
    with torch.inference_mode():
        expected = reference(normalized(clip.frames, pre))
    torch.testing.assert_close(torch.from_numpy(features.array), expected, rtol=1e-4, atol=1e-4)
    assert features.metadata["input_resized"]["from"] == [518, 518]
    assert features.metadata["input_resized"]["to"] == [224, 224]

    tokens = tdvideo.Extractor(model=DINOV2_S14, weights=str(path), size=256, crop=224, num_frames=2, pool="none")
    assert tokens.extract(clips["h264"].path).array.shape == (2, 1 + 16 * 16, 384)


def test_a_size_off_the_patch_grid_is_one_line(timm, clips: dict[str, Clip], tmp_path: Path) -> None:
    result = runner.invoke(app, ["extract", str(clips["h264"].path), "-o", str(tmp_path / "out"), "--model", DINOV2_S14,
                                 "--weights", "none", "--size", "256", "--crop", "225"])
    assert result.exit_code == 2
    assert "does not take 225x225 frames: 225x225 is not a multiple of its patch size 14x14" in result.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.npy"))


def test_models_says_which_sizes_a_vit_takes(timm) -> None:
    result = runner.invoke(app, ["models", DINOV2_S14])
    assert result.exit_code == 0, result.output
    assert "input: 518x518 (its config), or any multiple of 14 with --size/--crop" in result.output


@random_weights
def test_a_map_at_another_size_has_that_sizes_shape(clips: dict[str, Clip]) -> None:
    extractor = tdvideo.Extractor(model="resnet18", weights="none", pool="none", size=96, crop=96, num_frames=2)
    assert extractor.backbone.feature_shape == (512, 3, 3)
    assert extractor.extract(clips["h264"].path).array.shape == (2, 512, 3, 3)


def test_timm_weights_offline_say_where_they_are_looked_for(timm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as caught:
        tdvideo.build_backbone("timm:vit_tiny_patch16_224.augreg_in21k")
    message = str(caught.value)
    assert "\n" not in message and "weights=PATH" in message and "--weights" not in message and str(tmp_path / "hub") in message


@pytest.mark.parametrize("proxy", [False, True])
def test_timm_weights_with_the_hub_unreachable_fail_without_retrying(timm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy: bool) -> None:
    """No HF_HUB_OFFLINE set, and nothing listens where the Hub (or its proxy) should be: the
    refusal names that connection (the Hub client, which would retry, is never asked)."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy:
        monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    else:
        monkeypatch.setattr(constants, "ENDPOINT", f"https://127.0.0.1:{port}")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Hub client was asked")

    monkeypatch.setattr("timm.models._hub.download_from_hf", never)
    with pytest.raises(WeightsError, match=rf"cannot connect to {'the proxy ' if proxy else ''}127\.0\.0\.1:{port}"):
        tdvideo.build_backbone("timm:vit_tiny_patch16_224.augreg_in21k")


def test_timm_weights_from_the_hugging_face_cache(timm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DEFAULT weights already in the cache load with no network, and their sha256 is recorded."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    model_name = "vit_tiny_patch16_224.augreg_in21k"
    cache = tmp_path / "hub"
    snapshot = cache / "models--timm--vit_tiny_patch16_224.augreg_in21k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (cache / "models--timm--vit_tiny_patch16_224.augreg_in21k" / "refs").mkdir()
    (cache / "models--timm--vit_tiny_patch16_224.augreg_in21k" / "refs" / "main").write_text("0" * 40)
    save_file(timm.create_model(model_name, pretrained=False).state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    backbone = tdvideo.build_backbone(f"timm:{model_name}")
    assert backbone.weights == model_name and not backbone.random_weights
    assert backbone.weights_sha256 == hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()


def test_a_timm_name_without_timm_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    for call in (lambda: model_entry("timm:never_built_here.tag"), lambda: list_models("timm:*clip*")):
        with pytest.raises(ModelError, match=r"needs timm: pip install 'tdvideo\[timm\]'"):
            call()


def test_unknown_timm_names_get_close_matches(timm) -> None:
    with pytest.raises(ModelError, match="close: timm:vit_base_patch16_clip_224.openai"):
        model_entry("timm:vit_base_patch16_clip_224.opena")


def test_listing_timm_models(timm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tdvideo.models import _catalog

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_catalog, "_timm", None)  # as in a fresh process
    monkeypatch.setattr(_catalog, "SHIPPED_TIMM", tmp_path / "none.json")  # as with another timm version
    monkeypatch.setattr(_catalog, "_shipped_timm", None)
    result = runner.invoke(app, ["models", "timm:vit_base_patch16_clip_224.*", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows[CLIP_B16]["feature_shape"] == [512]
    assert list(tmp_path.glob("tdvideo/models-timm-*.json"))  # described once, then kept
    assert "timm:" not in " ".join(list_models())  # only a timm: pattern lists them


# -- torchvision video models over windows ------------------------------------------------------


@random_weights
@pytest.mark.parametrize(("name", "dim", "options"), [("r3d_18", 512, {"size": 64, "crop": 64, "clip_len": 8}), ("s3d", 1024, {"clip_len": 16})])
def test_video_models_give_one_vector_per_window(clips: dict[str, Clip], name: str, dim: int, options: dict) -> None:
    extractor = tdvideo.Extractor(model=name, weights="none", clip_stride=options["clip_len"], end=1.3, **options)
    features = extractor.extract(clips["long_gop"].path)
    windows = int(1.3 * 25) // options["clip_len"]
    assert features.array.shape == (windows, dim)
    assert features.timestamps.shape == (windows, options["clip_len"])
    assert features.metadata["features_per"] == "window"
    assert features.metadata["sampling"]["clip_len"] == options["clip_len"]


@random_weights
@pytest.mark.parametrize("fmt", ["npy", "npz", "pt"])
def test_window_features_are_written_and_loaded_back(clips: dict[str, Clip], tmp_path: Path, fmt: str) -> None:
    options = {"model": "r3d_18", "weights": "none", "size": 32, "crop": 32, "clip_len": 8, "clip_stride": 8}
    [result] = tdvideo.Extractor(**options).run([clips["long_gop"].path], out=tmp_path, format=fmt, progress=False)
    loaded = tdvideo.load(result.output)
    assert loaded.array.shape == (25, 512) and loaded.timestamps.shape == (25, 8)
    [again] = tdvideo.Extractor(**options).run([clips["long_gop"].path], out=tmp_path, format=fmt, progress=False)
    assert again.status == "skipped"


@random_weights
def test_a_video_model_takes_its_weights_frames_per_window_by_default(clips: dict[str, Clip]) -> None:
    extractor = tdvideo.Extractor(model="r3d_18", weights="none", size=32, crop=32)
    assert extractor.sampling.clip_len == 16  # torchvision's docs for KINETICS400_V1: clip_len=16
    pre = model_entry("r3d_18").preprocessing(None)
    assert (pre.size, pre.crop) == ((128, 171), 112)  # the weights' own VideoClassification transform
    features = extractor.extract(clips["long_gop"].path)
    assert features.array.shape[1:] == (512,) and features.timestamps.shape[1:] == (16,)


def test_windows_go_through_the_model_in_batches(clips: dict[str, Clip], tmp_path: Path) -> None:
    """Many windows, few per forward pass: the features are those of one window at a time."""
    import torchvision

    torch.save(torchvision.models.video.r3d_18().state_dict(), tmp_path / "r3d.pth")
    options = {"model": "r3d_18", "weights": str(tmp_path / "r3d.pth"), "size": 32, "crop": 32, "clip_len": 4, "clip_stride": 4}
    batched = tdvideo.Extractor(batch_size=8, **options).extract(clips["long_gop"].path)
    alone = tdvideo.Extractor(batch_size=4, **options).extract(clips["long_gop"].path)
    assert batched.array.shape == (50, 512)
    torch.testing.assert_close(torch.from_numpy(batched.array), torch.from_numpy(alone.array), rtol=1e-4, atol=1e-4)


# -- intermediate layers ------------------------------------------------------------------------


@random_weights
@pytest.mark.parametrize(
    ("layer", "pool", "shape"),
    [("layer3", None, (256, 14, 14)), ("layer3.1.relu_1", None, (256, 14, 14)), ("layer2", "avg", (128,)), ("flatten", None, (512,))],
)
def test_a_layer_gives_its_nodes_shape(clips: dict[str, Clip], layer: str, pool: str | None, shape: tuple[int, ...]) -> None:
    extractor = tdvideo.Extractor(model="resnet18", weights="none", layer=layer, pool=pool, num_frames=2)
    features = extractor.extract(clips["h264"].path)
    assert features.array.shape == (2, *shape)
    assert features.metadata["layer"] == layer and features.metadata["feature_shape"] == list(shape)


@random_weights
def test_a_layer_holds_the_checkpoints_weights(clips: dict[str, Clip], tmp_path: Path) -> None:
    import torchvision

    model = torchvision.models.resnet18()
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    extractor = tdvideo.Extractor(model="resnet18", weights=str(tmp_path / "r18.pth"), layer="layer1", num_frames=1)
    features = extractor.extract(clips["h264"].path)
    pre = extractor.backbone.preprocessing
    clip = tdvideo.read_video(clips["h264"].path, num_frames=1, size=pre.size, crop=pre.crop, interpolation=pre.interpolation)
    trunk = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1).eval()
    with torch.inference_mode():
        expected = trunk(normalized(clip.frames, pre))
    torch.testing.assert_close(torch.from_numpy(features.array), expected, rtol=1e-4, atol=1e-4)


@random_weights
def test_timm_layers(timm, clips: dict[str, Clip]) -> None:
    names = layer_names(CLIP_B16)
    assert "blocks.5" in names or any(n.startswith("blocks.5.") for n in names)
    features = tdvideo.Extractor(model=CLIP_B16, weights="none", layer="blocks.5", num_frames=1).extract(clips["h264"].path)
    assert features.array.shape == (1, 197, 768)


@random_weights
def test_unknown_layers_and_unpoolable_ones_are_errors() -> None:
    with pytest.raises(ModelError, match="no layer 'layer9' in ResNet; close: layer"):
        tdvideo.Extractor(model="resnet18", weights="none", layer="layer9")
    with pytest.raises(ModelError, match=r"gives \(512,\), not a \(C, H, W\) map"):
        tdvideo.Extractor(model="resnet18", weights="none", layer="flatten", pool="avg")


@random_weights
def test_the_layer_is_part_of_the_resume_key(clips: dict[str, Clip], tmp_path: Path) -> None:
    options = {"model": "resnet18", "weights": "none", "num_frames": 1}
    run = lambda extractor: [r.status for r in extractor.run([clips["h264"].path], out=tmp_path, progress=False)]
    assert run(tdvideo.Extractor(layer="layer4", **options)) == ["done"]
    assert run(tdvideo.Extractor(layer="layer4", **options)) == ["skipped"]
    with pytest.raises(UsageError, match=r"made with other settings: .*layer \(1\)"):
        run(tdvideo.Extractor(layer="layer3", **options))
    assert [r.status for r in tdvideo.Extractor(layer="layer3", **options).run(
        [clips["h264"].path], out=tmp_path, progress=False, overwrite=True)] == ["done"]


def test_listing_layers_from_the_command_line() -> None:
    result = runner.invoke(app, ["models", "resnet18", "--layers"])
    assert result.exit_code == 0, result.output
    names = result.stdout.split()
    assert names[:3] == ["x", "conv1", "bn1"] and "layer4.1.relu_1" in names and names[-1] == "fc"


# -- your own module ---------------------------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


def test_a_module_from_python(clips: dict[str, Clip], tmp_path: Path) -> None:
    module = TinyNet()
    pre = Preprocessing(size=32, crop=24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    extractor = tdvideo.Extractor(model=module, preprocessing=pre, model_name="tiny-v1", num_frames=3)
    features = extractor.extract(clips["h264"].path)
    clip = tdvideo.read_video(clips["h264"].path, num_frames=3, size=32, crop=24)
    with torch.inference_mode():
        expected = module(normalized(clip.frames, pre))
    torch.testing.assert_close(torch.from_numpy(features.array), expected, rtol=1e-5, atol=1e-5)
    assert features.metadata["model"] == "tiny-v1"
    assert features.metadata["module_class"] == f"{__name__}.TinyNet"

    # The user's name is part of the resume key: another name is another model.
    run = lambda name, **kw: [r.status for r in tdvideo.Extractor(model=module, preprocessing=pre, model_name=name).run(
        [clips["h264"].path], out=tmp_path, progress=False, **kw)]
    assert run("tiny-v1") == ["done"] and run("tiny-v1") == ["skipped"]
    with pytest.raises(UsageError, match=r"made with other settings: model \(1\)"):
        run("tiny-v2")
    assert run("tiny-v2", overwrite=True) == ["done"]


def test_a_module_needs_its_preprocessing() -> None:
    with pytest.raises(UsageError, match="needs preprocessing=tdvideo.Preprocessing"):
        tdvideo.Extractor(model=TinyNet())
    with pytest.raises(ModelError, match="a name or a torch.nn.Module, got int"):
        tdvideo.Extractor(model=3, preprocessing=Preprocessing(size=32))
    with pytest.raises(UsageError, match="go with model=<an nn.Module>"):
        tdvideo.Extractor(preprocessing=Preprocessing(size=32))


# -- plugins -----------------------------------------------------------------------------------

PLUGIN = '''
import torch
from torch import nn
from tdvideo.models import Preprocessing, custom_model


class Means(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


def entry():
    return custom_model("ignored", build=Means, preprocessing=Preprocessing(size=16), description="channel means")
'''


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution installed into a folder on sys.path: a module and its entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tdv_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "tdv_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tdv-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tdvideo.models]\nchannel-means = tdv_test_plugin:entry\n")
    monkeypatch.syspath_prepend(str(site))
    # Each test a fresh process as far as the plugin goes: not imported, not looked up yet.
    from tdvideo.models import _registry

    monkeypatch.setattr(_registry, "_FOUND", {})
    monkeypatch.delitem(sys.modules, "tdv_test_plugin", raising=False)
    return site


def test_a_plugin_is_listed_and_extracts(plugin_path: Path, clips: dict[str, Clip]) -> None:
    assert "channel-means" in list_models()
    features = tdvideo.Extractor(model="channel-means", num_frames=2).extract(clips["h264"].path)
    assert features.array.shape == (2, 3) and features.metadata["model"] == "channel-means"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run([sys.executable, "-m", "tdvideo", "models", "channel-*"], capture_output=True, text=True, env=env, check=False)
    assert listed.returncode == 0, listed.stderr
    assert "channel-means" in listed.stdout and "channel means" in listed.stdout


def test_a_broken_plugin_is_named(plugin_path: Path) -> None:
    (plugin_path / "tdv_test_plugin.py").write_text("raise RuntimeError('no GPU found')\n")
    with pytest.raises(ModelError, match=r"plugin 'channel-means' \(tdv_test_plugin:entry\) failed to load: RuntimeError: no GPU found"):
        model_entry("channel-means")


def test_array_of_a_plugin_is_the_modules_output(plugin_path: Path, clips: dict[str, Clip]) -> None:
    features = tdvideo.Extractor(model="channel-means", num_frames=1).extract(clips["h264"].path)
    clip = tdvideo.read_video(clips["h264"].path, num_frames=1, size=16)
    np.testing.assert_allclose(features.array, clip.frames.float().div(255).mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)


@random_weights
def test_a_frame_size_the_model_cannot_take_is_refused_before_any_work(timm, clips: dict[str, Clip]) -> None:
    """A size off DINOv2's 14-pixel patch grid, or one a module of fixed input refuses: a
    usage error up front, with the model's own reason."""
    with pytest.raises(ModelError, match=r"does not take 224x231 frames: 224x231 is not a multiple of its patch size 14x14"):
        tdvideo.Extractor(model=DINOV2_S14, weights="none", size=256, crop=(224, 231))

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch._assert(x.shape[-1] == 64, "this module takes 64 pixels wide frames")
            return x.mean((2, 3))

    with pytest.raises(ModelError, match=r"does not take 100x100 frames: this module takes 64 pixels wide frames"):
        tdvideo.Extractor(model=Fixed(), preprocessing=Preprocessing(size=(64, 64)), size=100, crop=100)
    features = tdvideo.Extractor(model="resnet18", weights="none", size=100, crop=100, num_frames=1).extract(clips["h264"].path)
    assert features.array.shape == (1, 512)  # a CNN takes any size


def test_a_models_own_input_check_during_a_run_is_one_error(clips: dict[str, Clip]) -> None:
    """A module that asserts on its input mid-run: one TdvideoError naming the model, no traceback."""

    class Picky(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch._assert(x.shape[0] < 3, "at most 2 frames at a time")
            return x.mean((2, 3))

    extractor = tdvideo.Extractor(model=Picky(), preprocessing=Preprocessing(size=16), num_frames=4)
    with pytest.raises(tdvideo.TdvideoError, match="model Picky failed on frames of shape .*: at most 2 frames at a time"):
        extractor.extract(clips["h264"].path)


# -- what the newcomer and attacker pass found ---------------------------------------------------


def test_a_broken_plugin_is_a_warning_in_the_listing(plugin_path: Path) -> None:
    (plugin_path / "tdv_test_plugin.py").write_text("raise RuntimeError('no GPU found')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run([sys.executable, "-m", "tdvideo", "models"], capture_output=True, text=True, env=env, check=False)
    assert listed.returncode == 0, listed.stderr
    assert "colorhist" in listed.stdout and "channel-means" not in listed.stdout
    assert listed.stderr.strip() == (
        "warning: plugin 'channel-means' (tdv_test_plugin:entry) failed to load: RuntimeError: no GPU found"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "nosuch", "--layers"], "error: unknown model 'nosuch'"),
        (["models", "colorhist", "--layers"], "error: model colorhist: its graph cannot be traced"),
    ],
)
def test_layer_listing_errors_are_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.output


@random_weights
def test_nodes_that_give_no_per_frame_tensor_are_refused() -> None:
    with pytest.raises(ModelError, match="does not give one tensor per frame"):
        tdvideo.Extractor(model="conv2d", layer="weight")
    with pytest.raises(ModelError, match="ColorHistogram: its graph cannot be traced"):
        tdvideo.Extractor(model="colorhist", layer="x")


def test_a_module_that_drops_frames_is_one_error(clips: dict[str, Clip]) -> None:
    class FirstOnly(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:1].mean((2, 3))  # one output for the whole batch

    extractor = tdvideo.Extractor(model=FirstOnly(), preprocessing=Preprocessing(size=16), num_frames=4)
    with pytest.raises(tdvideo.TdvideoError, match=r"model FirstOnly (failed on|gave) "):
        extractor.extract(clips["h264"].path)

    class Growing(nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Growing.calls += 1
            return x.mean((2, 3)).repeat(1, Growing.calls)  # a wider output on every call

    extractor = tdvideo.Extractor(model=Growing(), preprocessing=Preprocessing(size=16), num_frames=4)
    with pytest.raises(tdvideo.TdvideoError, match=r"model Growing gave \(1, 4, 6\) .* expected \(1, 4, 3\)"):
        extractor.extract(clips["h264"].path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": -1}, "size must be a positive integer or"),
        ({"size": "abc"}, "size must be a positive integer or"),
        ({"size": 32, "std": (0, 0, 0)}, "std must be 3 positive numbers"),
        ({"size": 32, "mean": (0.5, 0.5)}, "mean must be 3 numbers"),
        ({"size": 32, "interpolation": "cubic"}, "interpolation must be one of"),
    ],
)
def test_preprocessing_is_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Preprocessing(**kwargs)


def test_settings_that_do_not_apply_to_a_module_are_refused() -> None:
    pre = Preprocessing(size=16)
    with pytest.raises(UsageError, match="layer, weights apply to models by name"):
        tdvideo.Extractor(model=TinyNet(), preprocessing=pre, weights="w.pth", layer="conv")
    with pytest.raises(UsageError, match="preprocessing and model_name go with model=<an nn.Module>"):
        tdvideo.Extractor(model="resnet18", weights="none", preprocessing=pre)
    with pytest.raises(UsageError, match="model_name must be a non-empty string"):
        tdvideo.Extractor(model=TinyNet(), preprocessing=pre, model_name="")


def test_custom_model_checks_what_it_is_given() -> None:
    from tdvideo.models import custom_model

    with pytest.raises(TypeError, match="preprocessing must be a tdvideo.Preprocessing, got NoneType"):
        custom_model("x", build=TinyNet, preprocessing=None)  # type: ignore[arg-type]
    entry = custom_model("x", build=lambda: 42, preprocessing=Preprocessing(size=16))
    from tdvideo.models._modules import build_module

    with pytest.raises(ModelError, match="model x: its build gave int, not a torch.nn.Module"):
        build_module(entry, None, None, "avg")


@random_weights
def test_a_safetensors_file_is_read_whatever_its_name(clips: dict[str, Clip], tmp_path: Path) -> None:
    import torchvision
    from safetensors.torch import save_file

    model = torchvision.models.resnet18()
    save_file(model.state_dict(), str(tmp_path / "weights.PTH"))
    backbone = tdvideo.build_backbone("resnet18", weights=tmp_path / "weights.PTH")
    assert backbone.weights_sha256 == hashlib.sha256((tmp_path / "weights.PTH").read_bytes()).hexdigest()


@random_weights
def test_clip_stride_alone_takes_the_video_models_window(clips: dict[str, Clip]) -> None:
    extractor = tdvideo.Extractor(model="r3d_18", weights="none", size=32, crop=32, clip_stride=8, end=1.0)
    assert (extractor.sampling.clip_len, extractor.sampling.clip_stride) == (16, 8)
    with pytest.raises(UsageError, match="clip_stride needs clip_len"):
        tdvideo.Extractor(clip_stride=8)  # a frame model has no window of its own


def test_the_shipped_timm_catalog_answers_without_importing_timm_or_torch(timm) -> None:
    """``models 'timm:*clip*'`` from the catalog made for this timm; its rows say what
    building the models says (a sample of tags checked live)."""
    from tdvideo.models._catalog import SHIPPED_TIMM
    from tdvideo.models._modules import describe_live

    script = (
        "import sys; from tdvideo.models import list_models, describe_model; "
        "rows = [describe_model(n) for n in list_models('timm:*clip*')]; "
        "print(len(rows), sorted(m for m in ('timm', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    count, imported = done.stdout.split(maxsplit=1)
    assert int(count) > 100 and imported.strip() == "[]"
    shipped = json.loads(SHIPPED_TIMM.read_text())
    assert shipped["timm"] == timm.__version__
    for name in (CLIP_B16, DINOV2_S14, "timm:convnext_tiny.fb_in22k", "timm:resnet50.a1_in1k"):
        live = describe_live(model_entry(name))
        assert shipped["models"][name]["feature_shape"] == list(live["feature_shape"])
    unknown = {n: r for n, r in shipped["models"].items() if r["feature_shape"] is None}
    assert all(r.get("reason") for r in unknown.values())  # each tag without a vector says why
