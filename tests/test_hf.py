"""Hugging Face transformers models (``hf:ORG/NAME``): tiny random models built from configs
here, saved as save_pretrained saves them, no network; tdvideo's features against the model
run by hand on the same frames."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import tdvideo
from tdvideo.cli import app
from tdvideo.errors import ModelError, WeightsError
from tdvideo.models import list_models, model_entry

from .conftest import Clip

transformers = pytest.importorskip("transformers")
runner = CliRunner()
random_weights = pytest.mark.filterwarnings("ignore:model .* RANDOM weights")

TINY = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
TEXT = {**TINY, "vocab_size": 99, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}


def saved(folder: Path, model: torch.nn.Module, processor: object) -> Path:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # away from the init, so that a model left random would differ
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


def frames_as_model_sees(clip: Clip, extractor: tdvideo.Extractor, **sampling: object) -> torch.Tensor:
    pre = extractor.backbone.preprocessing
    video = tdvideo.read_video(clip.path, size=extractor.size, crop=extractor.crop, interpolation=pre.interpolation, **sampling)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (video.frames.float() / 255 - mean) / std


def pooled(value: object) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else value.pooler_output  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = transformers.CLIPConfig(text_config=TEXT, vision_config={**TINY, "image_size": 32, "patch_size": 8}, projection_dim=24)
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    folder = saved(tmp_path_factory.mktemp("clip"), transformers.CLIPModel(config).eval(), processor)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer of a few words: what AutoTokenizer loads from a saved folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "a", "dog", "red", "car", "on", "the", "beach"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]", model_max_length=16
    )


def test_clip_gives_its_image_text_embedding(clips: dict[str, Clip], clip_model: Path) -> None:
    extractor = tdvideo.Extractor(model="hf:openai/clip-tiny", weights=str(clip_model), num_frames=3)
    features = extractor.extract(clips["h264"].path)

    pre = extractor.backbone.preprocessing
    assert (pre.size, pre.crop, pre.interpolation) == (36, 32, "bicubic")  # the processor config's
    assert pre.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    reference = transformers.CLIPModel.from_pretrained(clip_model).eval()
    with torch.inference_mode():
        expected = pooled(reference.get_image_features(pixel_values=frames_as_model_sees(clips["h264"], extractor, num_frames=3)))
    assert features.array.shape == (3, 24)
    torch.testing.assert_close(torch.from_numpy(features.array), expected, rtol=1e-4, atol=1e-4)
    meta = features.metadata
    assert meta["embedding"] == "image-text" and meta["hf_model_type"] == "clip" and not meta["random_weights"]
    assert meta["hf_processor"]["size"] == {"shortest_edge": 36}


def test_siglip_with_a_height_width_processor(clips: dict[str, Clip], tmp_path: Path) -> None:
    config = transformers.SiglipConfig(text_config={**TEXT, "bos_token_id": None}, vision_config={**TINY, "image_size": 32, "patch_size": 8})
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32}, resample=2)
    folder = saved(tmp_path / "siglip", transformers.SiglipModel(config).eval(), processor)
    extractor = tdvideo.Extractor(model="hf:google/siglip-tiny", weights=str(folder), num_frames=2)
    features = extractor.extract(clips["h264"].path)
    assert (extractor.size, extractor.crop, extractor.interpolation) == ((32, 32), None, "bilinear")
    reference = transformers.SiglipModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        expected = pooled(reference.get_image_features(pixel_values=frames_as_model_sees(clips["h264"], extractor, num_frames=2)))
    torch.testing.assert_close(torch.from_numpy(features.array), expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def dinov2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = transformers.Dinov2Config(**TINY, image_size=28, patch_size=7)
    processor = transformers.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}, do_center_crop=True)
    return saved(tmp_path_factory.mktemp("dinov2"), transformers.Dinov2Model(config).eval(), processor)


def test_dinov2_pooled_and_its_tokens_at_another_size(clips: dict[str, Clip], dinov2: Path) -> None:
    reference = transformers.Dinov2Model.from_pretrained(dinov2).eval()
    extractor = tdvideo.Extractor(model="hf:facebook/dinov2-tiny", weights=str(dinov2), num_frames=2)
    with torch.inference_mode():
        expected = reference(pixel_values=frames_as_model_sees(clips["h264"], extractor, num_frames=2)).pooler_output
    torch.testing.assert_close(torch.from_numpy(extractor.extract(clips["h264"].path).array), expected, rtol=1e-4, atol=1e-4)

    # 42 = 6 patches of 7: DINOv2 interpolates its position embeddings itself.
    tokens = tdvideo.Extractor(model="hf:facebook/dinov2-tiny", weights=str(dinov2), size=48, crop=42, num_frames=2, pool="none")
    with torch.inference_mode():
        expected = reference(pixel_values=frames_as_model_sees(clips["h264"], tokens, num_frames=2)).last_hidden_state
    features = tokens.extract(clips["h264"].path)
    assert features.array.shape == (2, 1 + 6 * 6, 32)
    torch.testing.assert_close(torch.from_numpy(features.array), expected, rtol=1e-4, atol=1e-4)


def test_a_vit_at_another_size_interpolates_its_position_embeddings(clips: dict[str, Clip], clip_model: Path) -> None:
    """CLIP's vision tower refuses another size unless asked to interpolate: tdvideo asks."""
    extractor = tdvideo.Extractor(model="hf:openai/clip-tiny", weights=str(clip_model), size=48, crop=40, num_frames=2)
    features = extractor.extract(clips["h264"].path)
    reference = transformers.CLIPModel.from_pretrained(clip_model).eval()
    with torch.inference_mode():
        frames = frames_as_model_sees(clips["h264"], extractor, num_frames=2)
        expected = pooled(reference.get_image_features(pixel_values=frames, interpolate_pos_encoding=True))
    torch.testing.assert_close(torch.from_numpy(features.array), expected, rtol=1e-4, atol=1e-4)
    assert features.metadata["input_resized"]["to"] == [40, 40]
    with pytest.raises(ModelError, match="does not take 36x36 frames: 36x36 is not a multiple of its patch size 8x8"):
        tdvideo.Extractor(model="hf:openai/clip-tiny", weights=str(clip_model), size=40, crop=36)


def video_folder(tmp_path: Path, model: torch.nn.Module) -> Path:
    processor = transformers.VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return saved(tmp_path, model.eval(), processor)


@pytest.mark.parametrize("family", ["videomae", "timesformer", "vivit", "xclip"])
def test_video_models_give_one_vector_per_window(clips: dict[str, Clip], tmp_path: Path, family: str) -> None:
    video = {**TINY, "image_size": 32, "patch_size": 8, "num_frames": 4}
    if family == "videomae":
        model = transformers.VideoMAEModel(transformers.VideoMAEConfig(**video, tubelet_size=2))
    elif family == "timesformer":
        model = transformers.TimesformerModel(transformers.TimesformerConfig(**video))
    elif family == "vivit":
        model = transformers.VivitModel(transformers.VivitConfig(**{**video, "patch_size": None}, tubelet_size=[2, 8, 8]))
    else:
        vision = {**video, "mit_hidden_size": 32, "mit_intermediate_size": 37, "mit_num_attention_heads": 4}
        model = transformers.XCLIPModel(transformers.XCLIPConfig(text_config=TEXT, vision_config=vision, projection_dim=32, prompt_layers=1))
    folder = video_folder(tmp_path / family, model)
    extractor = tdvideo.Extractor(model=f"hf:org/{family}-tiny", weights=str(folder))
    features = extractor.extract(clips["h264"].path)
    assert extractor.sampling.clip_len == 4  # the config's num_frames
    frames = frames_as_model_sees(clips["h264"], extractor)
    windows = frames[: len(frames) // 4 * 4].reshape(-1, 4, *frames.shape[1:])
    reference = type(model).from_pretrained(folder).eval()
    with torch.inference_mode():
        if family == "xclip":
            expected = pooled(reference.get_video_features(pixel_values=windows))
        else:
            tokens = reference(pixel_values=windows).last_hidden_state
            expected = tokens.mean(1) if family == "videomae" else tokens[:, 0]
    assert features.metadata["features_per"] == "window"
    assert features.metadata["embedding"] == {"videomae": "mean-tokens", "xclip": "video-text"}.get(family, "class-token")
    torch.testing.assert_close(torch.from_numpy(features.array), expected, rtol=1e-4, atol=1e-4)


def test_vjepa2_windows(clips: dict[str, Clip], tmp_path: Path) -> None:
    config = transformers.VJEPA2Config(
        crop_size=32, patch_size=8, frames_per_clip=4, tubelet_size=2, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=4,
    )
    folder = video_folder(tmp_path / "vjepa2", transformers.VJEPA2Model(config))
    extractor = tdvideo.Extractor(model="hf:facebook/vjepa2-tiny", weights=str(folder), num_frames=8)
    features = extractor.extract(clips["h264"].path)
    frames = frames_as_model_sees(clips["h264"], extractor, num_frames=8).reshape(2, 4, 3, 32, 32)
    reference = transformers.VJEPA2Model.from_pretrained(folder).eval()
    with torch.inference_mode():
        expected = reference(pixel_values_videos=frames, skip_predictor=True).last_hidden_state.mean(1)
    torch.testing.assert_close(torch.from_numpy(features.array), expected, rtol=1e-4, atol=1e-4)


# -- weights and names --------------------------------------------------------------------------


def cache_with(tmp_path: Path, repo: str, folder: Path) -> Path:
    """A Hugging Face cache holding ``folder``'s files as the snapshot of ``repo``."""
    cache = tmp_path / "hub"
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("1" * 40)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    return cache


def test_default_weights_from_the_hugging_face_cache(clips: dict[str, Clip], dinov2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_with(tmp_path, "facebook/dinov2-tiny", dinov2)))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    extractor = tdvideo.Extractor(model="hf:facebook/dinov2-tiny", num_frames=2)
    local = tdvideo.Extractor(model="hf:facebook/dinov2-tiny", weights=str(dinov2), num_frames=2)
    torch.testing.assert_close(extractor.extract(clips["h264"].path).array, local.extract(clips["h264"].path).array)
    meta = extractor.describe()
    assert meta["weights"] == "facebook/dinov2-tiny" and meta["hf_revision"] == "1" * 40 and not meta["random_weights"]


def test_offline_and_not_cached_is_one_line_without_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"https://127.0.0.1:{port}")
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["extract", "x.mp4", "--model", "hf:facebook/dinov2-small"])
    assert result.exit_code == 2
    assert f"cannot connect to 127.0.0.1:{port}" in result.output and "--weights FOLDER" in result.output
    assert "Traceback" not in result.output


def test_random_weights_from_the_config(dinov2: Path) -> None:
    """``none`` with the config from a saved model's folder: the weights stay the config's init."""
    entry = model_entry("hf:facebook/dinov2-tiny", weights=str(dinov2))
    module = entry.build(None)
    reference = transformers.Dinov2Model.from_pretrained(dinov2)
    assert type(module) is type(reference)
    assert not torch.equal(module.embeddings.cls_token, reference.embeddings.cls_token)


def test_what_is_not_supported_is_one_line(tmp_path: Path, dinov2: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="model type 'bert' is not one tdvideo runs; it runs clip, dinov2"):
        tdvideo.build_backbone("hf:google/bert", weights=str(folder))
    with pytest.raises(ModelError, match="is not a Hugging Face model name"):
        model_entry("hf:../../etc")
    with pytest.raises(WeightsError, match="takes weights=DEFAULT, none, or a saved model's FOLDER; got 'IMAGENET1K_V1'"):
        model_entry("hf:facebook/dinov2-tiny", weights=str(dinov2)).named_weights("IMAGENET1K_V1")  # type: ignore[misc]


def test_listing_hf_models_names_an_example_per_architecture() -> None:
    names = list_models("hf:*")
    assert {"hf:facebook/dinov2-small", "hf:MCG-NJU/videomae-base", "hf:openai/clip-vit-base-patch32"} <= set(names)
    assert list_models("hf:*clip*") == ["hf:microsoft/xclip-base-patch32", "hf:openai/clip-vit-base-patch32"]
    result = runner.invoke(app, ["models", "hf:*"])  # no config fetched: the architectures are known
    assert result.exit_code == 0, result.output
    assert "hf:facebook/dinov2-small" in result.output and "any dinov2 checkpoint" in result.output


def test_an_hf_name_without_transformers_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    for call in (lambda: model_entry("hf:facebook/dinov2-small"), lambda: list_models("hf:*")):
        with pytest.raises(ModelError, match=r"needs transformers: pip install 'tdvideo\[transformers\]'"):
            call()


def test_search_by_text_uses_the_same_models_text_tower(clips: dict[str, Clip], clip_model: Path, tmp_path: Path) -> None:
    for clip in ("h264", "vp9"):
        result = runner.invoke(app, ["extract", str(clips[clip].path), "-o", str(tmp_path / "out" / clip), "-q",
                                     "--model", "hf:openai/clip-tiny", "--weights", str(clip_model)])
        assert result.exit_code == 0, result.output
    # The two runs wrote two folders: each is searched as its own.
    result = runner.invoke(app, ["search", str(tmp_path / "out" / "h264"), "a red car on the beach", "-k", "4", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)

    reference = transformers.CLIPModel.from_pretrained(clip_model).eval()
    tokens = transformers.AutoTokenizer.from_pretrained(clip_model)(["a red car on the beach"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        text = pooled(reference.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))[0]
    features = tdvideo.load(tmp_path / "out" / "h264" / "idx")
    rows = torch.from_numpy(features.array)
    scores = torch.nn.functional.cosine_similarity(rows, text[None], dim=1)
    best = torch.sort(scores, descending=True).values[:4].tolist()
    assert [m["score"] for m in found] == pytest.approx(best, abs=1e-5)  # rows of equal scores may come in either order
    assert [m["score"] for m in found] == pytest.approx([float(scores[m["row"]]) for m in found], abs=1e-5)


def test_show_plots_the_similarity_to_a_sentence(clips: dict[str, Clip], clip_model: Path, tmp_path: Path) -> None:
    """tdvideo show --query: the same text tower and scores as search, one output's worth."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", str(clips["h264"].path), "-o", str(out), "-q", "--model", "hf:openai/clip-tiny", "--weights", str(clip_model)])
    assert result.exit_code == 0, result.output
    drawn: list[Figure] = []
    save = Figure.savefig
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", lambda self, *a, **kw: (drawn.append(self), save(self, *a, **kw))[1])
        shown = runner.invoke(app, ["show", str(out / "idx"), "--query", "a red car on the beach", "-k", "2"])
    assert shown.exit_code == 0, shown.output
    [ax] = [ax for ax in drawn[0].axes if ax.get_title().startswith("similarity to \u201ca red car on the beach\u201d")]
    marked = [float(line.get_ydata()[0]) for line in ax.get_lines() if line.get_marker() == "^"]
    found = tdvideo.search(out, "a red car on the beach", k=2)
    assert marked == pytest.approx([m.score for m in found], abs=1e-6)


def test_siglip_search_with_its_own_sentencepiece_tokenizer(clips: dict[str, Clip], tmp_path: Path) -> None:
    """SigLIP's tokenizer is a SentencePiece model (what google/siglip-* ship): one trained
    here on a few sentences, saved as save_pretrained saves it, loaded by AutoTokenizer; text
    padded to the full length, as SigLIP was trained."""
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a dog catching a frisbee\na red car on the beach\nthe cat sleeps on a sofa\n" * 20)
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=40, model_type="unigram",
        pad_id=1, eos_id=2, unk_id=0, bos_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    tokenizer = transformers.SiglipTokenizer(vocab_file=str(tmp_path / "spiece.model"), model_max_length=32)
    text = {**TEXT, "vocab_size": len(tokenizer), "max_position_embeddings": 32, "bos_token_id": None, "pad_token_id": 1, "eos_token_id": 2}
    config = transformers.SiglipConfig(text_config=text, vision_config={**TINY, "image_size": 32, "patch_size": 8})
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    folder = saved(tmp_path / "siglip", transformers.SiglipModel(config).eval(), processor)
    tokenizer.save_pretrained(folder)
    result = runner.invoke(app, ["extract", str(clips["h264"].path), "-o", str(tmp_path / "out"), "-q",
                                 "--model", "hf:google/siglip-tiny", "--weights", str(folder)])
    assert result.exit_code == 0, result.output

    found = tdvideo.search(tmp_path / "out", "a dog catching a frisbee", k=3)
    reference = transformers.SiglipModel.from_pretrained(folder).eval()
    tokens = transformers.AutoTokenizer.from_pretrained(folder)(["a dog catching a frisbee"], padding="max_length", return_tensors="pt")
    assert tokens["input_ids"].shape == (1, 32) and tokens["input_ids"][0, -1] == tokenizer.pad_token_id and len(set(tokens["input_ids"][0].tolist())) > 2  # words, then padding
    with torch.inference_mode():
        query = pooled(reference.get_text_features(input_ids=tokens["input_ids"]))[0]
    rows = torch.from_numpy(tdvideo.load(tmp_path / "out" / "idx").array)
    scores = torch.nn.functional.cosine_similarity(rows, query[None], dim=1)
    assert [m.score for m in found] == pytest.approx(torch.sort(scores, descending=True).values[:3].tolist(), abs=1e-5)

    # Without SentencePiece (an install without the extra): one line saying what to install.
    script = (
        "import sys; sys.modules['sentencepiece'] = None\n"
        "import tdvideo\n"
        f"tdvideo.search({str(tmp_path / 'out')!r}, 'a dog')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].endswith("its tokenizer needs SentencePiece: pip install 'tdvideo[transformers]'")
