"""Building and loading pipelines: the preview model, the full shapes, real-weight folders and checkpoints."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderDC, SanaSprintPipeline, SanaTransformer2DModel
from PIL import Image, ImageDraw
from transformers import Gemma2Model, GemmaTokenizer

from sprint_demo import settings
from sprint_demo.models.checkpoints import diffusers_to_nvlabs_state_dict
from sprint_demo.models.controlnet import NUM_LAYERS, SanaSprintControlNetModel
from sprint_demo.models.loading import (
    ModelLoadError,
    build_byte_tokenizer,
    build_random_pipeline,
    dc_ae_config,
    gemma_config,
    load_pipeline,
    sprint_transformer_config,
)


def frame(pipe, **kwargs) -> torch.Tensor:
    return pipe(prompt="a lighthouse at dusk", num_inference_steps=1, height=256, width=256, output_type="pt",
                generator=torch.Generator().manual_seed(5), use_resolution_binning=False, **kwargs).images


def stroke_map(size=256) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).line([(20, 200), (200, 30)], fill="white", width=6)
    return image


def test_preview_is_deterministic_and_offline():
    a, b = build_random_pipeline("preview"), build_random_pipeline("preview")
    for name in ("transformer", "vae", "text_encoder", "controlnet"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    # the preview ControlNet's projections are non-zero so that strokes visibly change the image
    assert a.controlnet.input_block.weight.abs().sum() > 0
    assert all(block.weight.abs().sum() > 0 for block in a.controlnet.controlnet_blocks)


def test_building_the_preview_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_random_pipeline("preview")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("text", ["a cat", "", "🐱🚀 émoji", "مرحبا بالعالم", "日本語のテキスト", "nul\x00char",
                                  "x" * 2000])
def test_byte_tokenizer_handles_any_unicode(text):
    tokenizer = build_byte_tokenizer()
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True).replace("\u2581", " ").strip() == text.strip()


def test_byte_tokenizer_pads_on_the_right_after_a_save_and_load(tmp_path):
    """A saved preview pipeline (a training run's, a test's) must load padding prompts as Sana does."""
    build_byte_tokenizer().save_pretrained(tmp_path)
    loaded = GemmaTokenizer.from_pretrained(tmp_path)
    assert loaded.padding_side == "right"
    assert loaded("a cat", padding="max_length", max_length=32).input_ids[-1] == loaded.pad_token_id


def test_preview_pipeline_makes_images_of_the_requested_size(preview):
    image = preview.pipe(prompt="a cat", num_inference_steps=1, height=256, width=384,
                         use_resolution_binning=False).images[0]
    assert image.size == (384, 256)


def test_random_full_has_the_real_shapes():
    """Built on the meta device: the real parameter counts without allocating gigabytes."""
    with torch.device("meta"):
        transformer = SanaTransformer2DModel(**sprint_transformer_config("full"))
        controlnet = SanaSprintControlNetModel(num_layers=NUM_LAYERS)
        vae = AutoencoderDC(**dc_ae_config("full"))
        text_encoder = Gemma2Model(gemma_config("full", 0))

    def millions(model):
        return sum(p.numel() for p in model.parameters()) / 1e6

    assert millions(transformer) == pytest.approx(593.5, abs=0.5)  # the published 0.6B Sprint transformer
    assert millions(controlnet) == pytest.approx(170, rel=0.05)
    assert millions(vae) == pytest.approx(312, rel=0.05)
    assert millions(text_encoder) == pytest.approx(2614, rel=0.02)  # Gemma-2-2B decoder
    assert transformer.config.qk_norm == "rms_norm_across_heads" and transformer.config.guidance_embeds
    assert vae.config.latent_channels == 32 and len(vae.config.encoder_block_out_channels) == 6  # 32x


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory, preview):
    """The preview components saved as a diffusers SanaSprintPipeline folder: what the real weights look like."""
    folder = tmp_path_factory.mktemp("sprint")
    pipe = preview.pipe
    stock = SanaSprintPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler)
    stock.save_pretrained(folder)
    return folder


def test_real_weights_load_from_a_diffusers_folder(weights_folder, preview):
    loaded = load_pipeline(str(weights_folder), device="cpu", dtype="fp32")
    assert loaded.model_name == str(weights_folder) and not loaded.is_preview
    assert loaded.pipe.controlnet is None
    for name in ("transformer", "vae", "text_encoder"):
        ours, theirs = getattr(loaded.pipe, name).state_dict(), getattr(preview.pipe, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    # Same weights; loaded tensors may sit differently in memory, so CPU kernels may round differently.
    torch.testing.assert_close(frame(loaded.pipe), frame(preview.pipe), rtol=0, atol=1e-5)


@pytest.mark.parametrize("format", ["nvlabs-pth", "diffusers-folder"])
def test_controlnet_checkpoints_load_with_the_real_weights(weights_folder, preview, tmp_path, format):
    controlnet = preview.pipe.controlnet
    if format == "nvlabs-pth":
        source = tmp_path / "Sprint_ControlNet_HED.pth"
        torch.save({"state_dict": diffusers_to_nvlabs_state_dict(controlnet.state_dict())}, source)
    else:
        source = tmp_path / "controlnet"
        controlnet.save_pretrained(source)
    loaded = load_pipeline(str(weights_folder), controlnet=str(source), device="cpu", dtype="fp32")
    report = loaded.controlnet_report
    assert report.family == "sprint" and report.wiring == "nvlabs" and str(source) in report.description
    assert all(torch.equal(a, b) for a, b in zip(loaded.pipe.controlnet.state_dict().values(),
                                                 controlnet.state_dict().values(), strict=True))
    with_control = frame(loaded.pipe, control_image=stroke_map())
    torch.testing.assert_close(with_control, frame(preview.pipe, control_image=stroke_map()), rtol=0, atol=1e-5)
    assert (with_control - frame(loaded.pipe)).abs().mean() > 1e-3  # the loaded ControlNet steers the image


def test_unreachable_weights_fail_with_a_message_that_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as error:
        load_pipeline(settings.SPRINT_MODEL_ID, device="cpu")
    message = str(error.value)
    assert settings.SPRINT_MODEL_ID in message and "tried" in message
    assert "--local-dir" in message and "--model preview" in message
    with pytest.raises(ModelLoadError, match="'/nonexistent/sprint-weights': that local path does not exist"):
        load_pipeline("/nonexistent/sprint-weights", device="cpu")


def test_missing_controlnet_file_fails_clearly(weights_folder, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="ControlNet"):
        load_pipeline(str(weights_folder), controlnet="/nonexistent/controlnet.pth", device="cpu")


def test_bad_dtype_and_controlnet_on_random_models_are_refused():
    with pytest.raises(ValueError, match="'fp12'"):
        load_pipeline("preview", dtype="fp12")
    with pytest.raises(ModelLoadError, match="needs real weights"):
        load_pipeline("random-full", controlnet="x.pth")


def test_the_tiny_autoencoder_for_each_kind_of_model(monkeypatch):
    """Random weights for the built-in models (no file needed, offline); the published files for real weights;
    the two files named by "ENCODER,DECODER" otherwise."""
    from sprint_demo.models.loading import load_tiny_autoencoder
    from sprint_demo.models.tiny_autoencoder import TinyAutoencoder

    asked = []
    monkeypatch.setattr(TinyAutoencoder, "from_files", classmethod(lambda cls, *files: asked.append(files) or "files"))
    preview = load_tiny_autoencoder("preview")
    assert isinstance(preview, TinyAutoencoder) and preview.config.encoder_channels == 16 and not asked
    assert load_tiny_autoencoder("Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers") == "files"
    assert asked == [()]  # from_files' defaults: the published URLs
    assert load_tiny_autoencoder("sprint", " enc.pth, https://host/dec.pth") == "files"
    assert asked[-1] == ("enc.pth", "https://host/dec.pth")
    with pytest.raises(ValueError, match="auto, off or 'ENCODER,DECODER'.*got 'enc.pth'"):
        load_tiny_autoencoder("sprint", "enc.pth")
