"""The app's defaults held against SANA-Sprint 0.6B's published recipe: NVlabs' training config and inference code
(values copied, with their sources, into tests/data/published_configs.json), diffusers' conversion script (what
wrote the hub folder), and diffusers' pipelines and transformer (read from the installed package). Each test names
where its value comes from; where the app deviates on purpose, the test says why.

Deliberate deviations, each written beside its setting:

* drafts (frames while the pen moves) and camera frames run 1 step, not the authors' 2: shown for a moment, they
  must keep up (``settings.DRAFT_STEPS``, ``CAMERA_STEPS``); every frame a user keeps runs 2;
* the preview model (tiny random weights on a CPU) runs at 512 px without resolution binning: it has no trained
  aspect ratios to respect (``Renderer.use_resolution_binning``);
* DC-AE-Lite is not the full lane's decoder by default (``settings.VAE_LITE``): NVlabs' own Sprint 0.6B config and
  the diffusers folder decode with DC-AE 1.1, and NVlabs publishes DC-AE-Lite as a faster option beside it.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path

import pytest
import torch
from diffusers import SanaSprintImg2ImgPipeline, SanaSprintPipeline, SanaTransformer2DModel

from sprint_demo import settings
from sprint_demo.engine import Engine
from sprint_demo.models import pipeline as pipeline_module
from sprint_demo.models.controlnet import SANA10_TIMESTEP_SCALE
from sprint_demo.models.loading import (
    LoadedPipeline,
    build_random_pipeline,
    dc_ae_config,
    load_pipeline,
    sprint_transformer_config,
)
from sprint_demo.models.pipeline import SanaSprintControlNetImg2ImgPipeline, SanaSprintControlNetPipeline

PUBLISHED = json.loads((Path(__file__).parent / "data" / "published_configs.json").read_text(encoding="utf-8"))
NVLABS = PUBLISHED["values"]["nvlabs_config"]  # NVlabs' Sprint 0.6B training config
NVLABS_INFERENCE = PUBLISHED["values"]["nvlabs_inference"]  # NVlabs' SanaSprintPipeline (app/sana_sprint_pipeline.py)
NVLABS_DOC = PUBLISHED["values"]["nvlabs_sprint_doc"]  # NVlabs' Sprint inference examples
CONVERTED = PUBLISHED["values"]["diffusers_convert"]  # what diffusers' conversion wrote into the hub folder
PIPELINES = [(SanaSprintControlNetPipeline, SanaSprintPipeline),
             (SanaSprintControlNetImg2ImgPipeline, SanaSprintImg2ImgPipeline)]


def default(function, name: str):
    return inspect.signature(function).parameters[name].default


def test_every_value_names_its_source():
    assert set(PUBLISHED["values"]) <= set(PUBLISHED["sources"])
    for source in PUBLISHED["sources"].values():
        assert source["repo"] and source["path"] and ("commit" in source or "note" in source)


@pytest.mark.parametrize("ours,theirs", PIPELINES, ids=["text-to-image", "image-to-image"])
def test_our_pipelines_default_every_argument_as_diffusers_does(ours, theirs):
    """Each argument of diffusers' ``__call__`` is ours too, in the same order, with the same default (the prompt
    instruction included: ours a tuple, so that no caller can change it, diffusers' a list)."""
    mine, published = inspect.signature(ours.__call__).parameters, inspect.signature(theirs.__call__).parameters
    assert [name for name in mine if name in published] == list(published)
    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    assert {name: plain(mine[name].default) for name in published} == {
        name: published[name].default for name in published}


def test_diffusers_instruction_is_nvlabs_chi_prompt():
    """The instruction Sprint was distilled with (NVlabs' ``text_encoder.chi_prompt``) is the one diffusers
    prepends, but for the quotes around Enhanced prompt: NVlabs writes "Enhanced prompt", diffusers 'Enhanced
    prompt' (one token of the instruction's 8 lines)."""
    theirs = default(SanaSprintPipeline.__call__, "complex_human_instruction")
    assert len(theirs) == len(NVLABS["text_encoder.chi_prompt"]) == 8
    assert [line.replace('"Enhanced prompt"', "'Enhanced prompt'") for line in NVLABS["text_encoder.chi_prompt"]] \
        == theirs


def test_guidance_and_its_embedding_scale():
    """Guidance 4.5 (diffusers' default, NVlabs' example, inside NVlabs' training range) enters the transformer's
    guidance embedding times 0.1 (NVlabs ``cfg_embed_scale``, diffusers ``guidance_embeds_scale``)."""
    assert settings.DEFAULT_GUIDANCE == NVLABS_DOC["guidance_scale"] == 4.5
    assert min(NVLABS["train.scm_cfg_scale"]) <= settings.DEFAULT_GUIDANCE <= max(NVLABS["train.scm_cfg_scale"])
    for _, theirs in PIPELINES:
        assert default(theirs.__call__, "guidance_scale") == settings.DEFAULT_GUIDANCE
    full = sprint_transformer_config("full")
    assert full["guidance_embeds"] is NVLABS["model.cfg_embed"] is CONVERTED["transformer.guidance_embeds"] is True
    assert full["guidance_embeds_scale"] == NVLABS["model.cfg_embed_scale"] == 0.1
    assert default(SanaTransformer2DModel.__init__, "guidance_embeds_scale") == 0.1  # the hub folder sets none


def test_the_schedule():
    """Sampling starts at TrigFlow time 1.57080 (NVlabs ``largest_timestep`` and inference ``max_timesteps``), the
    2-step schedule passes 1.3, ``sigma_data`` is 0.5; the finals' 2 steps are NVlabs' examples' and diffusers'."""
    assert pipeline_module.MAX_TIMESTEPS == NVLABS["train.largest_timestep"] == NVLABS_INFERENCE[
        "SanaSprintInference.max_timesteps"] == 1.5708
    assert pipeline_module.TWO_STEP_INTERMEDIATE_TIMESTEPS == NVLABS_INFERENCE[
        "SanaSprintInference.intermediate_timesteps"] == 1.3
    for _, theirs in PIPELINES:
        assert default(theirs.__call__, "max_timesteps") == pipeline_module.MAX_TIMESTEPS
        assert default(theirs.__call__, "intermediate_timesteps") == pipeline_module.TWO_STEP_INTERMEDIATE_TIMESTEPS
        assert default(theirs.__call__, "num_inference_steps") == settings.DEFAULT_STEPS
    assert settings.DEFAULT_STEPS == NVLABS_DOC["num_inference_steps"] == 2
    assert settings.DRAFT_STEPS == settings.CAMERA_STEPS == 1  # deliberate: see the module docstring
    scheduler = build_random_pipeline("preview").scheduler.config
    assert (scheduler.prediction_type, scheduler.sigma_data) == (CONVERTED["scheduler.prediction_type"],
                                                                  CONVERTED["scheduler.sigma_data"])
    assert scheduler.sigma_data == NVLABS["scheduler.sigma_data"] == 0.5


def test_the_text_encoder_keeps_300_tokens():
    assert pipeline_module.MAX_SEQUENCE_LENGTH == NVLABS["text_encoder.model_max_length"] == 300
    for ours, theirs in PIPELINES:
        assert default(ours.__call__, "max_sequence_length") == default(theirs.__call__, "max_sequence_length") \
            == pipeline_module.MAX_SEQUENCE_LENGTH


def test_the_transformer_normalises_queries_and_keys_in_both_attentions():
    """NVlabs ``qk_norm`` (self-attention) and ``cross_norm`` (cross-attention) are both on; diffusers writes them
    as ``qk_norm="rms_norm_across_heads"``, which gives both attentions their norms."""
    config = sprint_transformer_config("full")
    assert NVLABS["model.qk_norm"] is NVLABS["model.cross_norm"] is True
    assert config["qk_norm"] == CONVERTED["transformer.qk_norm"] == "rms_norm_across_heads"
    assert config["sample_size"] == CONVERTED["transformer.sample_size"] == NVLABS["model.image_size"] // 32
    assert config["interpolation_scale"] is CONVERTED["transformer.interpolation_scale"]
    assert config["mlp_ratio"] == NVLABS["model.mlp_ratio"]
    assert config["attention_head_dim"] == NVLABS["model.linear_head_dim"]
    block = SanaTransformer2DModel(**sprint_transformer_config("preview")).transformer_blocks[0]
    assert block.attn1.norm_q is not None and block.attn2.norm_q is not None


@torch.no_grad()
def test_time_and_guidance_reach_the_time_embedding_as_nvlabs_gives_them(preview):
    """NVlabs: ``SanaMSCM`` turns TrigFlow time t into flow time s = sin t / (cos t + sin t) and passes s * 1000;
    ``SanaMS`` divides by ``timestep_norm_scale_factor`` (1000), so the time embedding sees s in [0, 1]. diffusers'
    Sprint transformer has ``timestep_scale`` 1 and is handed s. Ours hands it s at each step, and the guidance
    4.5 * 0.1. (The released Sana 1.0 HED ControlNet was trained on flow time 0..1000, what SanaMSCM's 1000 * s
    gives a model whose scale factor is 1: ``SANA10_TIMESTEP_SCALE``.)"""
    assert PUBLISHED["values"]["nvlabs_model"]["SanaMSCM.pretrain_timestep_scale"] == NVLABS[
        "scheduler.timestep_norm_scale_factor"] == 1000 == SANA10_TIMESTEP_SCALE
    pipe = preview.pipe
    assert pipe.transformer.config.timestep_scale == default(SanaTransformer2DModel.__init__, "timestep_scale") == 1
    seen = []
    hook = pipe.transformer.time_embed.register_forward_pre_hook(
        lambda _module, args, kwargs: seen.append((args[0].clone(), kwargs["guidance"].clone())), with_kwargs=True)
    try:
        pipe(prompt="a cat", num_inference_steps=2, height=256, width=256, output_type="latent",
             use_resolution_binning=False, complex_human_instruction=None)
    finally:
        hook.remove()
    times = torch.tensor([pipeline_module.MAX_TIMESTEPS, pipeline_module.TWO_STEP_INTERMEDIATE_TIMESTEPS])
    flow = torch.sin(times) / (torch.cos(times) + torch.sin(times))
    assert [float(t) for t, _ in seen] == [float(s) for s in flow]
    assert math.isclose(float(flow[0]), 1.0, abs_tol=1e-5) and 0 < float(flow[1]) < 1
    assert [float(g) for _, g in seen] == [float(torch.tensor(settings.DEFAULT_GUIDANCE) * 0.1)] * 2


def test_the_dc_ae_and_its_scaling_factor():
    """Sprint 0.6B decodes with DC-AE 1.1 (NVlabs ``vae_pretrained``, and the VAE diffusers' conversion put in the
    hub folder), latents scaled by 0.41407. NVlabs' turbo / lite configs change only the VAE, in the same latent
    space (same scale factor): DC-AE-Lite is an opt-in decoder (``--vae-lite``), not the default."""
    assert NVLABS["vae.vae_pretrained"] == CONVERTED["vae"] == "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"
    assert dc_ae_config("full")["scaling_factor"] == dc_ae_config("preview")["scaling_factor"] == NVLABS[
        "vae.scale_factor"] == 0.41407
    assert dc_ae_config("full")["latent_channels"] == NVLABS["vae.vae_latent_dim"] == 32
    turbo = PUBLISHED["values"]["nvlabs_config_dc_ae_turbo"]
    assert turbo["vae.scale_factor"] == NVLABS["vae.scale_factor"]
    assert settings.VAE_LITE_ID == "mit-han-lab/dc-ae-lite-f32c32-sana-1.1-diffusers"  # NVlabs' DC-AE-Lite news
    assert settings.VAE_LITE == (os.getenv("SPRINT_VAE_LITE") or None)  # unset: off
    assert default(load_pipeline, "vae_lite") is settings.VAE_LITE
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"  - {NVLABS['vae.vae_pretrained']}\n" in readme  # the Space preloads the recipe's VAE


def test_real_weights_run_with_resolution_binning_at_1024_and_the_preview_without(preview):
    """NVlabs bins sizes to the 1024 px model's aspect ratios (``aspect_ratio_type`` ASPECT_RATIO_1024; inference
    ``use_resolution_binning`` on), as diffusers' pipelines do by default. The engine bins for every model but the
    preview, whose random weights have no trained aspect ratios (and which runs at 512 px to stay fast on a CPU)."""
    assert NVLABS["model.aspect_ratio_type"] == "ASPECT_RATIO_1024"
    assert NVLABS_INFERENCE["SanaSprintPipeline.forward.use_resolution_binning"] is True
    for _, theirs in PIPELINES:
        assert default(theirs.__call__, "use_resolution_binning") is True
    real = Engine(LoadedPipeline(pipe=preview.pipe, model_name=settings.SPRINT_MODEL_ID, controlnet_report=None))
    own = Engine(preview)
    try:
        binning = real.renderer.use_resolution_binning
        assert binning and real.size == settings.DEFAULT_SIZE == NVLABS["model.image_size"]
        assert not own.renderer.use_resolution_binning and own.size == settings.PREVIEW_SIZE
        assert real.renderer.pipe.resolution(720, 1280, binning) == (768, 1344)  # the 16:9 bin
    finally:
        real.close()
        own.close()
