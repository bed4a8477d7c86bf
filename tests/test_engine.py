"""The frame engine: one frame path through the pipeline's stages, caches, frame reuse, timings, validation, and
the benchmark's smoke run."""

from __future__ import annotations

import json
from unittest import mock

import pytest
import support
import torch
from PIL import Image

from sprint_demo import settings
from sprint_demo.engine import load_engine
from sprint_demo.inputs import InputError
from sprint_demo.renderer import STAGES, to_pil
from sprint_demo.sketches import stroke_sketch
from sprint_demo.tools import bench
from sprint_demo.web import messages


def canvas(strokes: int, size: int = 512) -> Image.Image:
    return stroke_sketch(size, strokes)


@pytest.fixture()
def engine():
    return load_engine("preview", device="cpu", warmup=False)


def count_calls(module):
    """Wraps module.forward so that real calls are counted (and still happen)."""
    return mock.patch.object(module, "forward", wraps=module.forward)


def test_same_prompt_and_canvas_do_not_call_the_text_encoder_or_vae_encoder_again(engine):
    """The first prompt runs the text encoder twice (the instruction's tokens, once per engine, then the prompt's),
    every new prompt once more."""
    pipe = engine.renderer.pipe
    with count_calls(pipe.text_encoder) as text_encoder, mock.patch.object(
        pipe.vae, "encode", wraps=pipe.vae.encode
    ) as vae_encode:
        first = support.sketch_frame(engine, canvas(2), "a castle", seed=1)
        assert text_encoder.call_count == 2 and vae_encode.call_count == 1
        second = support.sketch_frame(engine, canvas(2), "a castle", seed=2)  # new seed: a new frame, same inputs
        assert text_encoder.call_count == 2 and vae_encode.call_count == 1
        assert not second.reused and second.image.tobytes() != first.image.tobytes()
        assert second.timings_ms["text_encode"] < 1.0 and second.timings_ms["control_encode"] < 1.0
        support.sketch_frame(engine, canvas(3), "a castle", seed=2)  # a new stroke: one encode, no text
        assert text_encoder.call_count == 2 and vae_encode.call_count == 2
        support.sketch_frame(engine, canvas(3), "a castle at night", seed=2)  # typing: text only
        assert text_encoder.call_count == 3 and vae_encode.call_count == 2


def test_cache_counts_count_each_lookup_of_the_prompt_and_control_caches(engine):
    """``Engine.cache_counts``, which the Ray replicas report for the session-affinity figures: one hit or miss per
    frame made in each cache; a reused frame looks up neither."""
    engine.clear_caches()
    engine.cache_counts.clear()
    support.sketch_frame(engine, canvas(2), "a castle", seed=1)
    support.sketch_frame(engine, canvas(2), "a castle", seed=2)  # new seed: both cached
    support.sketch_frame(engine, canvas(2), "a castle", seed=2)  # equal inputs: the frame is reused
    support.sketch_frame(engine, canvas(3), "a castle", seed=2)  # a new stroke
    support.text_frame(engine, "a castle at night", seed=2)  # no control map
    assert engine.cache_counts == {"prompt_miss": 2, "prompt_hit": 2, "control_miss": 2, "control_hit": 1}


def test_identical_inputs_return_the_last_frame_without_work(engine):
    first = support.sketch_frame(engine, canvas(1), "a boat", seed=3)
    no_work = AssertionError("no work expected")
    with mock.patch.object(engine.renderer.pipe, "denoise", side_effect=no_work), \
            mock.patch.object(engine.renderer.pipe, "decode_latents", side_effect=no_work):
        again = support.sketch_frame(engine, canvas(1), "a boat", seed=3)
    assert again.reused and again.image.tobytes() == first.image.tobytes()


def test_frames_carry_every_stage_and_a_consistent_total(engine):
    frame = support.sketch_frame(engine, canvas(2), "a tree", seed=4)
    assert set(frame.timings_ms) == {*STAGES, "total"}
    parts = sum(v for k, v in frame.timings_ms.items() if k != "total")
    assert 0 < parts <= frame.timings_ms["total"] + 1.0
    assert frame.image.size == (engine.size, engine.size)
    assert frame.control_map is not None and frame.control_map.size == frame.image.size


def test_blank_canvas_means_no_control_and_matches_text_to_image(engine):
    blank = support.sketch_frame(engine, Image.new("RGB", (512, 512), "white"), "a tree", seed=5)
    plain = support.text_frame(engine, "a tree", seed=5)
    assert blank.control_map is None
    assert blank.image.tobytes() == plain.image.tobytes()


def test_strokes_change_the_image(engine):
    a = support.sketch_frame(engine, canvas(1), "a tree", seed=5)
    b = support.sketch_frame(engine, canvas(3), "a tree", seed=5)
    assert a.image.tobytes() != b.image.tobytes()


def test_text_to_image_sizes_and_prompt_token_notice(engine):
    """The notice counts the prompt's tokens as the encoder sees them: after the instruction, 298 fit in the
    window (the byte tokenizer: one per letter here); a prompt within it gets no notice."""
    frame = support.text_frame(engine, "a dog", width=384, height=256)
    assert frame.image.size == (384, 256) and not frame.notices
    assert not support.text_frame(engine, "x" * 298).notices
    cut = support.text_frame(engine, "X" * 300)  # lower-cased before it is tokenised: 300 tokens
    assert cut.notices == ("prompt cut to the text encoder's window: 298 of its 300 tokens kept, the last 2 dropped",)
    assert support.text_frame(engine, "X" * 300, seed=9).notices == cut.notices  # from the prompt cache too


def test_the_engines_prompt_embeddings_are_the_instruction_encode_within_the_bound(engine):
    """The engine encodes with the trained instruction (prefix-cached): diffusers' encode_prompt with the
    instruction within support.PREFIX_CACHE_MAX_ABS where the mask keeps them (the padding is left zero: nothing
    reads it, tests/test_prompt_encoder.py); one changed character is far beyond it."""
    import support

    from sprint_demo.models.pipeline import COMPLEX_HUMAN_INSTRUCTION

    pipe = engine.renderer.pipe
    for prompt in ("a castle on a hill", "  A Castle On A Hill!"):
        embeds, mask, _ = engine.renderer.prompt_embeddings(prompt)
        with torch.no_grad():
            full, full_mask = pipe.encode_prompt(prompt, device="cpu",
                                                 complex_human_instruction=COMPLEX_HUMAN_INSTRUCTION)
        assert torch.equal(mask, full_mask)
        assert support.max_abs_difference(embeds, full * full_mask[..., None]) <= support.PREFIX_CACHE_MAX_ABS
    assert pipe.prompt_encoder.prefix_runs == 2
    before, after = (engine.renderer.prompt_embeddings(p)[0] for p in ("a castle on a hill", "a castle on a hull"))
    assert support.max_abs_difference(before, after) > 1000 * support.PREFIX_CACHE_MAX_ABS


@pytest.mark.parametrize(
    "kwargs", [dict(steps=0), dict(steps=5), dict(seed=-1), dict(guidance_scale=float("nan")),
               dict(control_strength=9.0), dict(thickness=0)]
)
def test_bad_values_are_refused_by_name_and_the_engine_keeps_working(engine, kwargs):
    with pytest.raises(InputError):
        support.sketch_frame(engine, canvas(1), "x", **kwargs)
    assert support.sketch_frame(engine, canvas(1), "x").image.size == (engine.size, engine.size)


def test_an_error_inside_the_model_leaves_the_engine_serving(engine):
    with mock.patch.object(type(engine.renderer.pipe), "denoise", side_effect=RuntimeError("CUDA out of memory")):
        with pytest.raises(RuntimeError):
            support.text_frame(engine, "a cat", seed=11)
    assert support.text_frame(engine, "a cat", seed=11).image is not None


@pytest.mark.parametrize("binning", [False, True])
@pytest.mark.parametrize("control", [False, True])
def test_an_engine_frame_is_the_pipeline_call_for_the_same_inputs(engine, binning, control):
    """One frame path: the engine runs the pipeline's own stages, so a frame is ``__call__``'s image for the same
    inputs, with and without control, and with resolution binning (the real model's setting: 256 px frames run at
    the 1024 px bin and are cropped back) as without. ``__call__`` at its default prompt encoding (the instruction,
    encoded in full) gives the frame within kernel noise (measured here: the same bytes); given the engine's own
    prompt embeddings (the instruction's tokens cached), the same bytes."""
    import support

    engine.size = 256
    engine.renderer.use_resolution_binning = binning
    prompt = "a tree by a lake"
    frame = support.sketch_frame(engine, canvas(2, 256) if control else None, prompt, steps=2, seed=8,
                                 guidance_scale=3.0, control_strength=0.7)
    assert (frame.control_map is not None) == control
    extra = dict(control_image=frame.control_map, controlnet_conditioning_scale=0.7) if control else {}
    same = dict(num_inference_steps=2, guidance_scale=3.0, height=256, width=256, use_resolution_binning=binning,
                output_type="pt", **extra)
    images = engine.renderer.pipe(prompt=prompt, generator=torch.Generator().manual_seed(8), **same).images
    assert support.KERNEL_NOISE.admits(support.pixel_difference(frame.image, to_pil(images)))
    encoded = engine.renderer.pipe.prompt_encoder(prompt)
    images = engine.renderer.pipe(prompt_embeds=encoded.embeds, prompt_attention_mask=encoded.mask,
                         generator=torch.Generator().manual_seed(8), **same).images
    assert frame.image.tobytes() == to_pil(images).tobytes()


def test_the_photo_edge_detector_runs_on_the_engine_device(engine, monkeypatch):
    """The HED net is moved to the engine's device before it runs (it holds the GPU lock while it does)."""
    import numpy as np
    import torch

    from sprint_demo import conditioning

    events = []

    class RecordingDetector:
        name, needs_nms = "recording", False

        def to(self, device):
            events.append(("to", device))
            return self

        def __call__(self, rgb):
            events.append(("run",))
            return np.zeros(rgb.shape[:2], dtype=np.uint8)

    monkeypatch.setattr(conditioning, "load_hed_detector", lambda mode=None: RecordingDetector())
    engine.renderer.torch_device = torch.device("cuda", 3)  # only the detector sees it: a device no default picks
    engine.photo_to_control_map(Image.new("RGB", (300, 200), "grey"))
    assert events == [("to", torch.device("cuda", 3)), ("run",)]


def test_photo_values_are_refused_by_name(engine):
    with pytest.raises(InputError, match="photo is empty"):
        engine.photo_to_control_map(None)
    with pytest.raises(InputError, match="thickness"):
        engine.photo_to_control_map(Image.new("RGB", (64, 64)), thickness=9)


def test_the_tiny_lane_renders_with_and_without_control(engine):
    """decoder="tiny": the tiny autoencoder decodes the frame and the DC-AE does not; the control map is encoded by
    the DC-AE's encoder, the only one the ControlNet has seen line maps through, and never by the tiny one; its
    images go through the same postprocess as the full lane's (uint8 RGB at the requested size)."""
    import numpy as np

    vae, tiny = engine.renderer.pipe.vae, engine.renderer.tiny
    with mock.patch.object(vae, "decode", side_effect=AssertionError("the tiny lane decodes itself")), \
            mock.patch.object(vae, "encode", wraps=vae.encode) as dc_ae_encode, \
            count_calls(tiny.encoder) as tiny_encoder, count_calls(tiny.decoder) as tiny_decoder:
        plain = support.text_frame(engine, "a lighthouse", width=256, height=256, decoder="tiny")
        drawn = support.sketch_frame(engine, canvas(4), "a lighthouse", decoder="tiny")
    assert dc_ae_encode.call_count == 1 and tiny_encoder.call_count == 0 and tiny_decoder.call_count == 2
    assert plain.decoder == drawn.decoder == "tiny" and plain.image.size == (256, 256) and drawn.image.mode == "RGB"
    blank = support.sketch_frame(engine, None, "a lighthouse", decoder="tiny")
    pixels = [np.asarray(frame.image, dtype=np.int16) for frame in (drawn, blank)]
    assert np.abs(pixels[0] - pixels[1]).mean() > 2  # the strokes steer the tiny lane's image too
    assert pixels[1].std() > 10  # an image, not a flat colour
    full = support.sketch_frame(engine, None, "a lighthouse")
    assert full.decoder == "full" and full.image.tobytes() != blank.image.tobytes()


def test_one_dc_ae_control_latent_serves_both_lanes(engine):
    """Control maps take the DC-AE's encoder in both lanes: one encode per map, cached without the lane, and the
    tiny lane's control latent is the full lane's (the same tensor); the tiny encoder is never asked."""
    pipe, tiny = engine.renderer.pipe, engine.renderer.tiny
    with mock.patch.object(pipe.vae, "encode", wraps=pipe.vae.encode) as dc_ae_encode, \
            mock.patch.object(tiny, "encode", wraps=tiny.encode) as tiny_encode, \
            mock.patch.object(pipe, "denoise", wraps=pipe.denoise) as denoise:
        for seed, decoder in enumerate(["full", "tiny", "full", "tiny", "tiny"]):
            support.sketch_frame(engine, canvas(2), "a castle", seed=seed, decoder=decoder)
        assert dc_ae_encode.call_count == 1 and tiny_encode.call_count == 0
        support.sketch_frame(engine, canvas(3), "a castle", decoder="tiny")  # a new stroke: one more DC-AE encode
        assert dc_ae_encode.call_count == 2 and tiny_encode.call_count == 0
    used = [call.kwargs["control_latents"] for call in denoise.call_args_list]
    assert all(latents is used[0] for latents in used[:5])  # full and tiny frames of one map: one latent
    assert not torch.equal(used[5], used[0])
    assert {len(key) for key in engine.renderer.controls} == {3}  # (map, height, width): no lane in the key
    # the latent is the DC-AE's own encoding of the map
    request_map = support.sketch_frame(engine, canvas(2), "a castle", seed=9, decoder="tiny").control_map
    direct = engine.renderer.pipe.prepare_control_latents(request_map, 512, 512, vae=engine.renderer.pipe.vae)
    assert torch.equal(direct, used[0])


def test_a_canny_stand_in_for_hed_is_logged_at_load_and_refused_when_hed_is_asked_for(monkeypatch, caplog):
    """With a model other than the preview, the photos' edge detector loads with the engine: the classical Canny
    detector standing in for HED (here: HED's loading fails) is a warning in the log and a fact of the engine that
    the page words (``messages.edges_note``); with SPRINT_HED_DETECTOR=hed the engine refuses to start, saying why."""
    import logging
    from dataclasses import replace

    from sprint_demo import conditioning
    from sprint_demo import engine as engine_module
    from sprint_demo.models.loading import ModelLoadError, load_pipeline

    def failing_hed():
        raise OSError("no ControlNetHED.pth here")

    monkeypatch.setattr(conditioning, "_load_hed", failing_hed)
    monkeypatch.setattr(conditioning, "_detectors", {})
    preview = load_engine("preview", device="cpu", warmup=False)  # the preview: Canny without a word
    preview.photo_to_control_map(Image.new("RGB", (64, 64), "grey"))
    assert preview.renderer.edge_detector().name.startswith("classical") and preview.edges_fallback is None
    assert messages.edges_note(preview) is None
    preview.close()

    weights = replace(load_pipeline("preview", device="cpu"), model_name="/weights/sprint")  # not the preview
    monkeypatch.setattr(engine_module, "load_pipeline", lambda *args, **kwargs: weights)
    with caplog.at_level(logging.WARNING, logger="sprint_demo"):
        engine = load_engine("/weights/sprint", device="cpu", warmup=False)
    assert "could not load: OSError: no ControlNetHED.pth here" in engine.edges_fallback
    assert "the classical Canny detector stands in for HED" in caplog.text and "no ControlNetHED" in caplog.text
    note = messages.edges_note(engine)
    assert note.startswith("photo edges by the classical Canny detector, not HED") and "no ControlNetHED" in note
    engine.close()

    monkeypatch.setattr(settings, "HED_DETECTOR", "hed")
    with pytest.raises(ModelLoadError, match="SPRINT_HED_DETECTOR=hed asks for the HED annotator for photos, and it "
                                             "could not load: OSError: no ControlNetHED.pth here"):
        load_engine("/weights/sprint", device="cpu", warmup=False)


def test_without_tiny_weights_the_full_lane_works_and_a_tiny_request_says_why(tmp_path, caplog):
    missing = f"{tmp_path}/taesana_encoder.pth,{tmp_path}/taesana_decoder.pth"
    with caplog.at_level("WARNING"):
        engine = load_engine("preview", device="cpu", warmup=False, tiny_autoencoder=missing)
    assert engine.decoders == ("full",) and not engine.has_tiny_decoder
    assert "the tiny autoencoder is not available" in engine.tiny_note and "no such file" in engine.tiny_note
    assert engine.tiny_note in caplog.text
    assert support.sketch_frame(engine, canvas(1), "a cat").decoder == "full"
    with pytest.raises(InputError, match=r"decoder 'tiny' is not available on this server: the tiny autoencoder "
                                         r"is not available: .*no such file.*use decoder 'full'"):
        support.text_frame(engine, "a cat", decoder="tiny")
    with pytest.raises(InputError, match="decoder must be one of full, tiny, got 'huge'"):
        support.sketch_frame(engine, canvas(1), "a cat", decoder="huge")
    assert load_engine("preview", device="cpu", warmup=False, tiny_autoencoder="off").decoders == ("full",)


def test_vae_lite_puts_its_decoder_in_the_full_lane(tmp_path, preview):
    """--vae-lite with a local diffusers AutoencoderDC folder: the full lane decodes with its decoder and still
    encodes control maps with the model's own encoder."""
    import torch
    from diffusers import AutoencoderDC

    from sprint_demo.models.loading import ModelLoadError, dc_ae_config

    torch.manual_seed(5)
    lite = AutoencoderDC(**dc_ae_config("preview") | dict(decoder_layers_per_block=(1, 1, 1, 1, 1, 2))).eval()
    lite.save_pretrained(tmp_path / "lite")
    engine = load_engine("preview", device="cpu", warmup=False, vae_lite=str(tmp_path / "lite"))
    vae = engine.renderer.pipe.vae
    assert tuple(vae.config.decoder_layers_per_block) == (1, 1, 1, 1, 1, 2)
    for name, tensor in lite.decoder.state_dict().items():
        assert torch.equal(vae.decoder.state_dict()[name], tensor)
    for name, tensor in preview.pipe.vae.encoder.state_dict().items():
        assert torch.equal(vae.encoder.state_dict()[name], tensor)
    with count_calls(vae.decoder) as lite_decoder:
        frame = support.sketch_frame(engine, canvas(2, 256), "a tree")
    assert lite_decoder.call_count == 1
    latents = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = lite.decode(latents / lite.config.scaling_factor).sample
        got = engine.renderer.pipe.decode_latents(latents, output_type="pt")
    assert torch.equal(got, engine.renderer.pipe.image_processor.postprocess(expected, output_type="pt"))
    assert frame.decoder == "full" and frame.image.size == (engine.size, engine.size)

    AutoencoderDC(**dc_ae_config("preview") | dict(scaling_factor=1.0)).save_pretrained(tmp_path / "other")
    with pytest.raises(ModelLoadError, match="scaling_factor 1.0"):
        load_engine("preview", device="cpu", warmup=False, vae_lite=str(tmp_path / "other"))
    with pytest.raises(ModelLoadError, match="DC-AE-Lite"):
        load_engine("preview", device="cpu", warmup=False, vae_lite=str(tmp_path / "missing"))


@pytest.mark.slow
def test_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--model", "preview", "--size", "256", "--steps", "1,2", "--mode",
                       "t2i,controlnet,controlnet-warm", "--repeat", "2", "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["mode"], r["steps"]) for r in runs] == [
        (m, s) for m in ("t2i", "controlnet", "controlnet-warm") for s in (1, 2)
    ]
    for run in runs:
        assert {"mode", "steps", "height", "width", "device", "model", "stages_ms", "total_ms",
                "p90_total_ms"} <= set(run)
        assert set(run["stages_ms"]) == set(STAGES) and run["height"] == run["width"] == 256
        assert run["p90_total_ms"] >= run["total_ms"] > 0
    new_canvas = [r for r in runs if r["mode"] == "controlnet"]
    warm = [r for r in runs if r["mode"] == "controlnet-warm"]
    assert all(r["stages_ms"]["control_encode"] > 0.5 for r in new_canvas)  # a real encode every frame
    assert all(r["stages_ms"]["control_encode"] < 0.5 and r["stages_ms"]["text_encode"] < 0.5 for r in warm)
    assert "control_encode" in capsys.readouterr().out
    assert json.loads(out.read_text())["meta"]["compiled_vs_eager"] == {"max_levels": 0, "mean_levels": 0.0}


@pytest.mark.slow
def test_an_eager_engine_bypasses_compiled_code_and_draws_what_it_draws():
    """The benchmark's correctness check of compiled variants (``bench.compiled_vs_eager``) relies on
    ``Renderer.eager`` running frames without the compiled code, even on a warm engine (whose frames otherwise run
    under the "eager_on_recompile" stance)."""
    import torch

    calls = []

    def counting(graph_module, example_inputs):
        def run(*args):
            calls.append(1)
            return graph_module.forward(*args)
        return run

    engine = _warm_compiled_engine(backend=counting)
    calls.clear()
    assert bench.compiled_vs_eager(engine) == {"max_levels": 0, "mean_levels": 0.0}  # the eager backend: same
    assert len(calls) == 3  # the compiled frame: control encode, step, decode; the eager frame: none
    assert not engine.renderer.eager
    torch._dynamo.reset()


def test_device_side_rounding_gives_diffusers_pixels(preview):
    import torch

    pixels = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    pixels[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.5 / 255, 254.5 / 255])  # edges and rounding ties
    processor = preview.pipe.image_processor
    expected = processor.numpy_to_pil(processor.pt_to_numpy(pixels))[0]
    assert to_pil(pixels).tobytes() == expected.tobytes()


def test_auto_uses_real_weights_and_survives_a_missing_controlnet(tmp_path, monkeypatch, preview):
    """--model auto: real weights (a saved folder stands in for the hub repo); a ControlNet that cannot load
    leaves the real model running without one, with a note, rather than falling back to the preview."""
    import torch
    from diffusers import SanaSprintPipeline

    from sprint_demo.models.checkpoints import diffusers_to_nvlabs_state_dict

    pipe = preview.pipe
    SanaSprintPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler).save_pretrained(
        tmp_path / "sprint")
    monkeypatch.setattr(settings, "SPRINT_MODEL_ID", str(tmp_path / "sprint"))
    monkeypatch.setattr(settings, "SANA10_HED_CONTROLNET_ID", str(tmp_path / "missing.pth"))
    engine = load_engine("auto", None, device="cpu", dtype="fp32", warmup=False, tiny_autoencoder="off")
    assert engine.model_name == str(tmp_path / "sprint") and messages.banner(engine) is None
    assert engine.renderer.pipe.controlnet is None and "No ControlNet" in messages.controlnet_note(engine)
    assert support.sketch_frame(engine, canvas(2), "a tree").image.size == (settings.DEFAULT_SIZE,) * 2

    torch.save({"state_dict": diffusers_to_nvlabs_state_dict(pipe.controlnet.state_dict())}, tmp_path / "cn.pth")
    engine = load_engine("auto", str(tmp_path / "cn.pth"), device="cpu", dtype="fp32", warmup=False,
                         tiny_autoencoder="off")
    assert engine.has_controlnet and "Sprint-native ControlNet" in messages.controlnet_note(engine)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["blocks", "step"])
def test_compiled_denoiser_traces_and_gives_the_same_images(scope):
    """torch.compile per block or per denoising step (dynamo + AOT autograd, no code generation, so it runs in
    seconds on a CPU): the same pixels as eager, with and without control."""
    import torch

    from sprint_demo.models.loading import build_random_pipeline
    from sprint_demo.models.speedups import compile_models

    torch._dynamo.reset()
    eager = build_random_pipeline("preview")
    compiled = build_random_pipeline("preview")
    compile_models(compiled, scope, backend="aot_eager")
    control = canvas(3, 256).convert("L").point(lambda v: 255 - v).convert("RGB")  # white lines on black
    for kwargs in ({}, {"control_image": control}):
        images = [
            pipe(prompt="a bridge", num_inference_steps=2, height=256, width=256, use_resolution_binning=False,
                 generator=torch.Generator().manual_seed(1), output_type="pt", **kwargs).images
            for pipe in (eager, compiled)
        ]
        torch.testing.assert_close(images[1], images[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="'sideways'"):
        compile_models(compiled, "sideways")


@pytest.mark.slow
def test_the_step_scope_traces_a_block_once_and_reuses_it_for_the_others():
    """Compile time of the one-graph-per-step scope: every block of the transformer and of the ControlNet inlined
    took 122 s for the real transformer alone (inductor, torch 2.14, 2 cores), a nested compile region per block
    43 s. The graphs dynamo hands the compiler must call one shared block subgraph for (all but at most one of) the
    blocks."""
    import torch

    from sprint_demo.models.loading import build_random_pipeline
    from sprint_demo.models.speedups import compile_models

    graphs = []

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    pipe = build_random_pipeline("preview")
    compile_models(pipe, "step", backend=capture)
    control = Image.new("RGB", (256, 256), "black")
    for kwargs, blocks in (({}, 8), ({"control_image": control}, 8 + 7)):  # text-to-image, then with control
        graphs.clear()
        pipe(prompt="a bridge", num_inference_steps=1, height=256, width=256, use_resolution_binning=False,
             output_type="pt", **kwargs)
        step = [g for g in graphs if any(n.target is torch.ops.higher_order.invoke_subgraph for n in g.graph.nodes)]
        assert len(step) == 1  # the encoder and decoder graphs have no blocks
        calls = [n for n in step[0].graph.nodes if n.target is torch.ops.higher_order.invoke_subgraph]
        assert len({call.args[0].target for call in calls}) == 1 and len(calls) >= blocks - 1
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["blocks", "step"])
def test_compiled_denoiser_does_not_recompile_when_the_user_moves_a_slider(scope):
    """A recompile costs ~a minute on the GPU (and dynamo gives up after 8): after one frame with and one without
    control, new strengths, step counts, guidance, seeds, prompts and canvases must reuse the compiled code."""
    import torch

    from sprint_demo.models.speedups import compile_models

    torch._dynamo.reset()
    engine = load_engine("preview", device="cpu", warmup=False)
    compile_models(engine.renderer.pipe, scope, backend="eager")  # dynamo only: what recompiles is decided here
    support.sketch_frame(engine, canvas(1, 256), "a boat", control_strength=1.0)
    support.text_frame(engine, "a boat")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i, (strength, steps, guidance) in enumerate([(0.35, 1, 4.5), (0.8, 2, 4.5), (1.6, 4, 2.0)]):
            support.sketch_frame(engine, canvas(2 + i, 256), f"a boat {i}", steps=steps, seed=i,
                                 guidance_scale=guidance, control_strength=strength)
            support.text_frame(engine, f"a boat {i}", steps=steps, seed=i, guidance_scale=guidance)
    torch._dynamo.reset()


@pytest.mark.parametrize("graphs", [False, True])
def test_warmup_runs_each_path_a_user_can_take_and_forgets_its_frames(engine, graphs):
    """Uncompiled: one frame with and one without control, at the finals' step count. With CUDA graphs (a new path
    of graphs to record per step count): every step count for both. Then an image-to-image frame at the canvas size
    per lane and step count (compiled, also at the camera's shapes: the CPU never compiles, so not here). The
    warm-up's prompt, canvas and pictures leave nothing in the caches."""
    from dataclasses import replace

    engine.renderer.speed = replace(engine.speed, cuda_graphs=graphs)  # the CPU turns graphs off; choice tested
    calls = []
    real = engine.render

    def record(request, **kwargs):
        calls.append((request.decoder, request.control_key is not None, request.steps, request.init_key is not None,
                      request.width, request.height))
        return real(request, **kwargs)

    with mock.patch.object(engine, "render", side_effect=record):
        assert engine.warmup() > 0
    steps = range(settings.MIN_STEPS, settings.MAX_STEPS + 1) if graphs else [settings.DEFAULT_STEPS]
    size = engine.size
    assert engine.decoders == ("full", "tiny")  # both lanes are paths a user can take
    assert calls == [(d, c, s, False, size, size) for d in ("full", "tiny") for c in (False, True) for s in steps] + [
        (d, False, s, True, size, size) for d in ("full", "tiny") for s in steps]
    renderer = engine.renderer
    assert not renderer.prompts and not renderer.controls and not renderer.pictures and not engine.recent_frames


def test_a_compiled_engine_s_warmup_also_makes_the_camera_s_common_shapes(engine):
    """Compiled, a shape the warm-up did not see runs uncompiled: the camera's 4:3 and 16:9 frames are warmed, and
    every frame at each step count users get by default (drafts and camera frames at 1 step, finals at 2). The
    switch is set by hand: on this CPU nothing compiles, so only which frames the warm-up makes is tested."""
    from dataclasses import replace

    engine.renderer.speed = replace(engine.speed, compile=True, cuda_graphs=False)
    sizes, text_steps = [], set()
    real = engine.render

    def record(request, **kwargs):
        if request.init_key is not None:
            sizes.append((request.decoder, request.width, request.height, request.steps))
        else:
            text_steps.add(request.steps)
        return real(request, **kwargs)

    with mock.patch.object(engine, "render", side_effect=record), torch.compiler.set_stance("force_eager"):
        engine.warmup()
    camera = settings.CAMERA_CAPTURE_SIZE
    users_steps = [settings.DRAFT_STEPS, settings.DEFAULT_STEPS]
    assert users_steps == [1, 2] and settings.CAMERA_STEPS == 1
    assert text_steps == set(users_steps)
    assert sizes == [(d, w, h, s) for d in ("full", "tiny")
                     for w, h in ((engine.size, engine.size), (camera, camera * 3 // 4), (camera, camera * 9 // 16))
                     for s in users_steps]


@pytest.mark.slow
def test_a_warm_compiled_engine_runs_new_sizes_eagerly_instead_of_compiling():
    """After the warm-up (which compiles the canvas size), a frame at a size it did not see must not compile: on a
    GPU that is a minute with the model thread held and every user waiting. It runs eagerly and is still right."""
    import torch
    from torch._dynamo.utils import counters

    engine = _warm_compiled_engine(backend="eager")
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    wide = support.text_frame(engine, "a harbour", width=384, height=256)
    assert wide.image.size == (384, 256)
    support.sketch_frame(engine, canvas(2, 256), "a harbour")  # the warmed size: compiled code, still no new graph
    assert counters["stats"]["unique_graphs"] == graphs
    pipe = engine.renderer.pipe
    encoded = pipe.prompt_encoder("a harbour")  # the engine's encoding, so that the images are comparable
    with torch.compiler.set_stance("force_eager"):
        eager = pipe(prompt_embeds=encoded.embeds, prompt_attention_mask=encoded.mask, width=384, height=256,
                     num_inference_steps=settings.DEFAULT_STEPS,
                     generator=torch.Generator().manual_seed(settings.DEFAULT_SEED), output_type="pt",
                     use_resolution_binning=False).images
    assert wide.image == Image.fromarray((eager[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    torch._dynamo.reset()


def _warm_compiled_engine(backend):
    """A preview engine at 256 px, compiled per step with ``backend`` and warmed up as the app does on a GPU (the
    full lane only: the tiny lane's autoencoder is not compiled here)."""
    from dataclasses import replace

    import torch

    from sprint_demo.models.speedups import compile_models

    torch._dynamo.reset()
    engine = load_engine("preview", device="cpu", warmup=False, tiny_autoencoder="off")
    engine.size = 256
    compile_models(engine.renderer.pipe, "step", backend=backend)
    engine.renderer.speed = replace(engine.speed, compile=True)  # the CPU turns compile off; here it is on by hand
    engine.warmup()
    return engine


def test_auto_falls_back_to_the_preview_model_and_the_page_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "SPRINT_MODEL_ID", str(tmp_path / "no-weights-here"))
    engine = load_engine("auto", None, device="cpu", warmup=False, tiny_autoencoder="off")
    assert engine.is_preview and "no-weights-here" in engine.fallback_reason
    banner = messages.banner(engine)
    assert banner.startswith("Preview mode: the SANA-Sprint weights could not be loaded here")
    assert engine.fallback_reason[:60] in banner
    engine.close()


def test_the_page_s_sentences_follow_the_engine_s_facts():
    from types import SimpleNamespace

    facts = dict(fallback_reason=None, is_preview=False, model_name="random-full", has_controlnet=True,
                 controlnet_description=None, has_tiny_decoder=False, tiny_note="its files are unreachable")
    engine = SimpleNamespace(**facts)
    assert messages.banner(engine).startswith("Benchmark model: real SANA-Sprint shapes")
    assert messages.controlnet_note(engine).startswith("ControlNet with random weights")
    assert messages.decoder_info(engine) == "Only the full decoder here: its files are unreachable."
    engine = SimpleNamespace(**facts | dict(model_name="/weights/sprint", controlnet_description="Sprint-native x",
                                            has_tiny_decoder=True))
    assert messages.banner(engine) is None and messages.controlnet_note(engine) == "Sprint-native x"
    assert messages.decoder_info(engine) is None
    assert messages.controlnet_note(SimpleNamespace(**facts | dict(has_controlnet=False))).startswith("No ControlNet")
