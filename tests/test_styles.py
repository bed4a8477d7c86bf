"""Styles: prompt presets, LoRA adapters (loaded with diffusers' loader, equal to diffusers' pipeline with the same
adapter), prompt and seed travel, and the checks that refuse bad styles and values by name."""

from __future__ import annotations

import threading

import pytest
import support
import torch
from diffusers import SanaPipeline, SanaSprintPipeline

from sprint_demo import inputs, settings
from sprint_demo.engine import load_engine
from sprint_demo.inputs import InputError
from sprint_demo.renderer import slerp, to_pil
from sprint_demo.sketches import stroke_sketch
from sprint_demo.tools import style_bench

SIZE = 256


def save_lora(transformer, folder, seed: int) -> str:
    """The file the script writes: ``SanaPipeline.save_lora_weights(output_dir, transformer_lora_layers=...)``."""
    state = style_bench.random_lora_state_dict(transformer, seed)
    SanaPipeline.save_lora_weights(folder, transformer_lora_layers=state)
    return str(folder)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A preview engine with two LoRAs loaded by --lora's form, and one that does not fit (refused)."""
    base = load_engine("preview", device="cpu", warmup=False, loras=())
    transformer = base.renderer.pipe.transformer
    ink = save_lora(transformer, tmp_path_factory.mktemp("ink"), seed=1)
    glow = save_lora(transformer, tmp_path_factory.mktemp("glow"), seed=2)
    bad = tmp_path_factory.mktemp("bad")
    state = style_bench.random_lora_state_dict(transformer, 3)
    SanaPipeline.save_lora_weights(bad, transformer_lora_layers={
        k: torch.zeros(v.shape[0] + 1, v.shape[1]) if "lora_B" in k else v for k, v in state.items()})
    base.close()
    engine = load_engine("preview", device="cpu", warmup=False, size=SIZE,
                         loras=(f"ink={ink}", f"misfit={bad}", f"glow={glow}"))
    yield engine
    engine.close()


def text(engine, prompt="a lighthouse at dusk", **values):
    request = inputs.text_request(prompt, values.pop("steps", 2), values.pop("seed", 5), 4.5, SIZE, SIZE, **values)
    return engine.render(request)


def same(a, b) -> bool:
    return a.image.tobytes() == b.image.tobytes()


def test_a_lora_that_does_not_fit_is_refused_by_name_and_the_others_load(engine):
    assert engine.styles == (*settings.STYLE_PRESETS, "ink", "glow")
    assert len(engine.lora_refusals) == 1 and "'misfit'" in engine.lora_refusals[0]
    assert "size mismatch" in engine.lora_refusals[0]


def test_presets_change_the_image_and_none_is_the_prompt_as_typed(engine):
    plain = text(engine)
    assert same(text(engine, style="none"), plain)
    typed = text(engine, prompt=settings.STYLE_PRESETS["anime"].replace("{prompt}", "a lighthouse at dusk"))
    anime = text(engine, style="anime")
    assert same(anime, typed)  # the template is applied to the prompt, nothing else
    assert not same(anime, plain)
    assert not same(text(engine, style="cinematic"), plain)


def test_an_adapter_changes_the_image_and_scale_zero_is_no_adapter(engine):
    plain = text(engine)
    ink = text(engine, style="ink")
    assert support.pixel_difference(ink.image, plain.image).fraction > 0.5
    assert not same(text(engine, style="glow"), ink)
    assert same(text(engine, style="ink", style_scale=0), plain)
    assert not same(text(engine, style="ink", style_scale=0.5), ink)
    assert same(text(engine), plain)  # back to no adapter: nothing of the LoRA left behind


def test_two_sessions_with_different_styles_in_one_batch_window_each_get_their_own(engine):
    """Frames of two adapters, a preset and none waiting together: the adapters' frames run in batches of their
    own, the preset and none share one batch (row by row prompts); each frame is its alone-made frame (within the
    batched-row kernel noise, ``support.KERNEL_NOISE``), none takes another's style."""
    styles = ("none", "anime", "ink", "glow")
    alone = {style: text(engine, style=style, seed=11) for style in styles}
    assert len({frame.image.tobytes() for frame in alone.values()}) == len(styles)
    engine.clear_caches()
    results, barrier = {}, threading.Barrier(len(styles))

    def user(style):
        barrier.wait()
        results[style] = text(engine, style=style, seed=11)

    before = sum(engine.batch_sizes.values())
    threads = [threading.Thread(target=user, args=(style,)) for style in styles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for style, frame in alone.items():
        assert support.KERNEL_NOISE.admits(support.pixel_difference(results[style].image, frame.image)), style
    assert sum(engine.batch_sizes.values()) - before >= 3  # the two adapters never share a batch


@pytest.mark.parametrize("control", [False, True])
@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_with_an_adapter_our_pipeline_is_diffusers_bit_for_bit(engine, scale, control):
    """The adapter loaded into the shared transformer; ours with and without a control image at control scale 0
    against SanaSprintPipeline with the same components and LoRA scale: torch.equal."""
    pipe = engine.renderer.pipe
    engine.on_model_thread(lambda: engine.renderer.adapters.activate("ink"))
    reference = SanaSprintPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler)
    reference.set_progress_bar_config(disable=True)
    call = dict(prompt="a red house", num_inference_steps=2, height=SIZE, width=SIZE, output_type="pt",
                use_resolution_binning=False, attention_kwargs={"scale": scale})
    theirs = engine.on_model_thread(lambda: reference(generator=torch.Generator().manual_seed(3), **call).images)
    control_call = dict(control_image=stroke_sketch(SIZE, 3), controlnet_conditioning_scale=0.0) if control else {}
    ours = engine.on_model_thread(lambda: pipe(generator=torch.Generator().manual_seed(3), **call,
                                               **control_call).images)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_an_engine_frame_with_an_adapter_is_the_pipeline_call(engine, scale):
    frame = text(engine, prompt="a red house", style="ink", style_scale=scale, seed=4)
    pipe = engine.renderer.pipe
    encoded = pipe.prompt_encoder("a red house")

    def call():
        engine.renderer.adapters.activate("ink")
        return pipe(prompt_embeds=encoded.embeds, prompt_attention_mask=encoded.mask, num_inference_steps=2,
                    height=SIZE, width=SIZE, output_type="pt", use_resolution_binning=False,
                    generator=torch.Generator().manual_seed(4), attention_kwargs={"scale": scale}).images

    assert frame.image.tobytes() == to_pil(engine.on_model_thread(call)).tobytes()


def test_a_file_as_the_sana_lora_script_saves_it_loads(tmp_path):
    """The script's format (diffusers' "transformer."-prefixed PEFT keys in pytorch_lora_weights.safetensors),
    made on the preview shapes, loads through --lora and changes the frame."""
    engine = load_engine("preview", device="cpu", warmup=False, size=SIZE, loras=())
    try:
        folder = save_lora(engine.renderer.pipe.transformer, tmp_path, seed=9)
        assert (tmp_path / "pytorch_lora_weights.safetensors").exists()
        engine.load_lora(f"mine={folder}/pytorch_lora_weights.safetensors")
        assert "mine" in engine.styles and not same(text(engine, style="mine"), text(engine))
    finally:
        engine.close()


def test_prompt_blend_ends_are_the_single_prompts(engine):
    first, second = text(engine, prompt="a red house"), text(engine, prompt="a blue boat")
    request = inputs.text_request("a red house", 2, 5, 4.5, SIZE, SIZE, prompt_b="a blue boat", blend=1.0)
    assert same(engine.render(request), second)
    # blend 0 is no travel (the request equals the plain one); the renderer's lerp at 0 is the first prompt too
    assert inputs.text_request("a red house", 2, 5, 4.5, SIZE, SIZE, prompt_b="a blue boat", blend=0.0) == \
        inputs.text_request("a red house", 2, 5, 4.5, SIZE, SIZE)
    from dataclasses import replace
    assert same(engine.render(replace(request, blend=0.0)), first)
    middle = text(engine, prompt="a red house", prompt_b="a blue boat", blend=0.5)
    assert not same(middle, first) and not same(middle, second)


def test_seed_blend_ends_are_the_single_seeds_and_the_noise_keeps_its_norm(engine):
    from dataclasses import replace
    one, two = text(engine, seed=5), text(engine, seed=6)
    request = inputs.text_request("a lighthouse at dusk", 2, 5, 4.5, SIZE, SIZE, seed_b=6, seed_blend=1.0)
    assert same(engine.render(request), two)
    assert same(engine.render(replace(request, seed_blend=0.0)), one)
    middle = text(engine, seed=5, seed_b=6, seed_blend=0.5)
    assert not same(middle, one) and not same(middle, two)
    a, b = torch.randn(1, 32, 8, 8), torch.randn(1, 32, 8, 8)
    halfway = slerp(a, b, 0.5)
    # norms of two 2048-value draws differ by a few %; the slerp sits between them, a straight line ~30 % below
    assert min(a.norm(), b.norm()) * 0.99 < halfway.norm() < max(a.norm(), b.norm()) * 1.01
    assert (a + b).norm() / 2 < 0.8 * halfway.norm()


@pytest.mark.parametrize("values,needle", [
    (dict(style="oil"), "style must be one of"),
    (dict(style=""), "style must be"),
    (dict(style="ink", style_scale=2.5), "style_scale"),
    (dict(style_scale="x"), "style_scale"),
    (dict(blend=1.5, prompt_b="x"), "blend"),
    (dict(seed_blend=-0.1, seed_b=3), "seed_blend"),
    (dict(seed_b=-3, seed_blend=0.5), "seed_b"),
])
def test_bad_styles_and_values_are_refused_by_name_and_the_engine_keeps_serving(engine, values, needle):
    with pytest.raises(InputError, match=needle):
        text(engine, **values)
    assert text(engine).image.size == (SIZE, SIZE)


def test_lora_flags_are_repeatable_name_equals_source_and_a_bad_one_is_refused_by_name(capsys):
    from sprint_demo.web.launch import engine_options, parse_args

    args = parse_args(["--lora", "ink=some/folder", "--lora", "glow=owner/repo"])
    assert engine_options(args)["loras"] == ("ink=some/folder", "glow=owner/repo")
    assert parse_args([]).lora == settings.LORAS
    with pytest.raises(SystemExit):
        parse_args(["--lora", "no-equals-sign"])
    assert "'no-equals-sign'" in capsys.readouterr().err


def test_a_lora_named_like_a_preset_is_refused(engine):
    with pytest.raises(ValueError, match="'anime'.*preset"):
        engine.load_lora("anime=whatever")


def test_hotswap_frames_are_the_named_adapters_frames_and_none_is_no_adapter():
    """The compiled renderer's way (one slot, weights copied in; zeros for none) makes the frames the eager way
    makes within float reordering: the slot is padded to rank 128 with zeros, so each LoRA matmul sums in another
    order (measured here: at most 5 of 196608 values differ, by 1 level; a wrong adapter or scale moves most
    values). No adapter and scale 0 are the plain frame exactly (zeros add nothing)."""
    named = load_engine("preview", device="cpu", warmup=False, size=SIZE, loras=())
    hot = load_engine("preview", device="cpu", warmup=False, size=SIZE, loras=())
    try:
        hot.renderer.adapters.hotswap = True
        states = {name: style_bench.random_lora_state_dict(named.renderer.pipe.transformer, seed)
                  for name, seed in (("ink", 1), ("glow", 2))}
        for engine in (named, hot):
            for name, state in states.items():
                engine.on_model_thread(lambda engine=engine, name=name, state=state: engine.renderer.adapters.load(
                    name, {f"transformer.{k}": v for k, v in state.items()}))
        plain = text(named)
        for style, scale in (("glow", 1.0), ("none", 1.0), ("ink", 0.5), ("ink", 0.0), ("ink", 1.0)):
            ours, theirs = text(hot, style=style, style_scale=scale), text(named, style=style, style_scale=scale)
            difference = support.pixel_difference(ours.image, theirs.image)
            assert difference.max_levels <= 1 and difference.fraction < 1e-4, (style, scale, str(difference))
        assert same(text(hot), plain) and same(text(hot, style="ink", style_scale=0), plain)
    finally:
        named.close()
        hot.close()


@pytest.mark.parametrize("scope", ["blocks", "step"])
def test_switching_adapters_and_strengths_under_torch_compile_compiles_nothing(scope):
    """The compiled renderer's hotswap: Dynamo (its "eager" backend: the guards and graph breaks of any backend,
    without inductor's minutes on a CPU) compiles no graph for a switch of adapter, to none, or of strength
    (docs/PERFORMANCE.md has the inductor run)."""
    import torch._dynamo

    from sprint_demo.tools import style_bench

    torch._dynamo.reset()
    report = style_bench.compiled_swaps(SIZE, 1, 4, "eager", scope)
    assert report["graphs_compiled_before_swaps"] >= 1, report
    assert report["graphs_compiled_by_swaps"] == 0, report
