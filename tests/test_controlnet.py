"""SanaSprintControlNetModel: zero-init behaviour, the two wirings against references written here from their
published descriptions (NVlabs: branch from base block 0's output, skip i before base block i + 1; diffusers:
branch from its own patch embedding, residual i after base block i + 1), and checkpoint loading."""

from __future__ import annotations

import pytest
import torch
from diffusers import SanaControlNetModel, SanaTransformer2DModel

from sprint_demo.models.checkpoints import (
    diffusers_to_nvlabs_state_dict,
    load_diffusers_controlnet,
    load_nvlabs_checkpoint,
)
from sprint_demo.models.controlnet import (
    ControlInputs,
    SanaSprintControlNetModel,
    attention_bias,
    sana_transformer_forward,
)
from sprint_demo.models.loading import sprint_transformer_config


def tiny_transformer(seed: int = 0, **overrides) -> SanaTransformer2DModel:
    torch.manual_seed(seed)
    return SanaTransformer2DModel(**(sprint_transformer_config("preview") | overrides)).eval()


def randomise(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Every parameter random (a trained ControlNet has non-zero projections)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.3)
    return module


def step_inputs(transformer, batch=1, h=8, w=6, seed=2):
    g = torch.Generator().manual_seed(seed)
    config = transformer.config
    return dict(
        hidden_states=torch.randn(batch, config.in_channels, h, w, generator=g),
        encoder_hidden_states=torch.randn(batch, 5, config.caption_channels, generator=g),
        encoder_attention_mask=torch.tensor([[1, 1, 1, 0, 0]] * batch),
        timestep=torch.full((batch,), 0.7),
        guidance=torch.full((batch,), 0.45) if config.guidance_embeds else None,
    )


def control_latents(transformer, h=8, w=6, seed=3):
    return torch.randn(1, transformer.config.in_channels, h, w, generator=torch.Generator().manual_seed(seed))


def base_embeddings(model, inputs):
    """patch tokens, time modulation, embedded timestep, captions, mask bias: what every block needs."""
    x = model.patch_embed(inputs["hidden_states"])
    if inputs["guidance"] is not None:
        t_mod, t_emb = model.time_embed(inputs["timestep"] * getattr(model.config, "timestep_scale", 1.0),
                                        guidance=inputs["guidance"], hidden_dtype=x.dtype)
    else:
        t_mod, t_emb = model.time_embed(inputs["timestep"] * getattr(model.config, "timestep_scale", 1.0),
                                        batch_size=x.shape[0], hidden_dtype=x.dtype)
    y = model.caption_norm(model.caption_projection(inputs["encoder_hidden_states"]))
    return x, t_mod, t_emb, y, attention_bias(inputs["encoder_attention_mask"], x.dtype)


def finish(transformer, x, t_emb, h, w):
    x = transformer.proj_out(transformer.norm_out(x, t_emb, transformer.scale_shift_table))
    return x.reshape(1, h, w, 1, 1, -1).permute(0, 5, 1, 3, 2, 4).reshape(1, -1, h, w)


def nvlabs_reference(transformer, controlnet, inputs, cond, scale):
    """NVlabs sana_multi_scale_controlnet.py, from its description: base block 0 first; ControlNet block 0 gets
    x + before_proj(x_embedder(cond)) with x = base block 0's output; skip i-1 added before base block i."""
    h, w = inputs["hidden_states"].shape[-2:]
    x, t_mod, t_emb, y, mask = base_embeddings(transformer, inputs)
    _, c_mod, _, c_y, _ = base_embeddings(controlnet, inputs)
    blocks = transformer.transformer_blocks
    x = blocks[0](x, None, y, mask, t_mod, h, w)
    signal = controlnet.input_block(controlnet.patch_embed(cond))
    for i in range(1, len(controlnet.transformer_blocks) + 1):
        block_input = x + signal if i == 1 else signal
        signal = controlnet.transformer_blocks[i - 1](block_input, None, c_y, mask, c_mod, h, w)
        skip = controlnet.controlnet_blocks[i - 1](signal) * scale
        x = blocks[i](x + skip, None, y, mask, t_mod, h, w)
    for block in blocks[len(controlnet.transformer_blocks) + 1:]:
        x = block(x, None, y, mask, t_mod, h, w)
    return finish(transformer, x, t_emb, h, w)


def diffusers_reference(transformer, controlnet, inputs, cond, scale):
    """diffusers controlnet_sana.py + sana_transformer.py, from their description: the ControlNet gets
    patch_embed(x) + input_block(patch_embed(cond)); residual i-1 is added after base block i."""
    h, w = inputs["hidden_states"].shape[-2:]
    x, t_mod, t_emb, y, mask = base_embeddings(transformer, inputs)
    c, c_mod, _, c_y, _ = base_embeddings(controlnet, inputs)
    c = c + controlnet.input_block(controlnet.patch_embed(cond))
    residuals = []
    for block, projection in zip(controlnet.transformer_blocks, controlnet.controlnet_blocks):
        c = block(c, None, c_y, mask, c_mod, h, w)
        residuals.append(projection(c) * scale)
    for i, block in enumerate(transformer.transformer_blocks):
        x = block(x, None, y, mask, t_mod, h, w)
        if 1 <= i <= len(residuals):
            x = x + residuals[i - 1]
    return finish(transformer, x, t_emb, h, w)


@torch.no_grad()
def test_forward_without_control_is_the_stock_forward():
    transformer = tiny_transformer()
    inputs = step_inputs(transformer)
    stock = transformer(**inputs, return_dict=False)[0]
    assert torch.equal(sana_transformer_forward(transformer, **inputs), stock)


@torch.no_grad()
@pytest.mark.parametrize("wiring", ["nvlabs", "diffusers"])
def test_from_transformer_changes_nothing_at_any_scale(wiring):
    transformer = tiny_transformer()
    controlnet = SanaSprintControlNetModel.from_transformer(transformer, num_layers=7, wiring=wiring).eval()
    assert controlnet.config.qk_norm == "rms_norm_across_heads" and controlnet.config.guidance_embeds
    inputs = step_inputs(transformer)
    stock = transformer(**inputs, return_dict=False)[0]
    for scale in (0.0, 1.0, 7.5):
        control = ControlInputs(controlnet, control_latents(transformer), scale)
        assert torch.equal(sana_transformer_forward(transformer, **inputs, control=control), stock)


@torch.no_grad()
def test_zeroed_control_gives_the_base_block_activations():
    transformer = tiny_transformer()
    inputs = step_inputs(transformer)
    h, w = inputs["hidden_states"].shape[-2:]
    base_outputs = []
    hooks = [b.register_forward_hook(lambda m, a, out: base_outputs.append(out))
             for b in transformer.transformer_blocks]
    transformer(**inputs, return_dict=False)
    for hook in hooks:
        hook.remove()
    zero = torch.zeros_like(control_latents(transformer))

    # diffusers wiring: ControlNet block i sees exactly what base block i saw, so its activations match.
    controlnet = SanaSprintControlNetModel.from_transformer(transformer, wiring="diffusers").eval()
    randomise(controlnet.input_block)  # even a trained input projection sees a zero control signal...
    controlnet.input_block.bias.zero_()  # ...as zero, since it is linear without bias on zeros
    c, c_mod, _, c_y, mask = base_embeddings(controlnet, inputs)
    c = c + controlnet.input_block(controlnet.patch_embed(zero) - controlnet.patch_embed.proj.bias.view(1, 1, -1))
    for i, block in enumerate(controlnet.transformer_blocks):
        c = block(c, None, c_y, mask, c_mod, h, w)
        assert torch.equal(c, base_outputs[i]), f"block {i}"

    # NVlabs wiring: the branch starts from base block 0's output; with zero control its block i equals base
    # block i applied to that sequence.
    controlnet = SanaSprintControlNetModel.from_transformer(transformer, wiring="nvlabs").eval()
    _, t_mod, _, y, mask = base_embeddings(transformer, inputs)
    expected = base_outputs[0]
    trace = []
    hooks = [b.register_forward_hook(lambda m, a, out: trace.append(out)) for b in controlnet.transformer_blocks]
    sana_transformer_forward(transformer, **inputs, control=ControlInputs(controlnet, zero, 1.0))
    for hook in hooks:
        hook.remove()
    for i, block in enumerate(transformer.transformer_blocks[:7]):
        expected = block(expected, None, y, mask, t_mod, h, w)
        assert torch.allclose(trace[i], expected, atol=1e-6), f"block {i}"


@torch.no_grad()
@pytest.mark.parametrize("wiring,reference", [("nvlabs", nvlabs_reference), ("diffusers", diffusers_reference)])
@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_wiring_matches_its_reference(wiring, reference, scale):
    transformer = tiny_transformer()
    controlnet = randomise(SanaSprintControlNetModel.from_transformer(transformer, wiring=wiring)).eval()
    inputs = step_inputs(transformer)
    cond = control_latents(transformer)
    ours = sana_transformer_forward(transformer, **inputs, control=ControlInputs(controlnet, cond, scale))
    expected = reference(transformer, controlnet, inputs, cond, scale)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    other = diffusers_reference if reference is nvlabs_reference else nvlabs_reference
    assert (other(transformer, controlnet, inputs, cond, scale) - ours).abs().max() > 1e-3  # the two differ


@torch.no_grad()
def test_diffusers_wiring_equals_stock_sana_controlnet_and_transformer():
    """A Sana 1.0-shaped ControlNet (no qk_norm, no guidance) in our class gives the same residuals as
    diffusers' SanaControlNetModel with the same weights, and our forward equals the stock forward with them."""
    transformer = tiny_transformer(qk_norm=None, guidance_embeds=False)
    ours = randomise(SanaSprintControlNetModel.from_transformer(transformer, wiring="diffusers")).eval()
    stock = SanaControlNetModel(
        in_channels=32, out_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=7,
        num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=32,
    ).eval()
    missing, unexpected = stock.load_state_dict(ours.state_dict(), strict=True)
    assert not missing and not unexpected
    inputs = step_inputs(transformer)
    cond = control_latents(transformer)
    stock_residuals = stock(inputs["hidden_states"], inputs["encoder_hidden_states"], inputs["timestep"], cond,
                            conditioning_scale=0.8, encoder_attention_mask=inputs["encoder_attention_mask"],
                            return_dict=False)[0]
    our_residuals = ours(ours.patch_embed(inputs["hidden_states"]), cond, inputs["encoder_hidden_states"],
                         inputs["timestep"], None, inputs["encoder_attention_mask"], 0.8)
    for a, b in zip(our_residuals, stock_residuals, strict=True):
        assert torch.equal(a, b)
    stock_output = transformer(**inputs, controlnet_block_samples=stock_residuals, return_dict=False)[0]
    ours_output = sana_transformer_forward(transformer, **inputs, control=ControlInputs(ours, cond, 0.8))
    torch.testing.assert_close(ours_output, stock_output, rtol=0, atol=1e-6)


# Key names of one NVlabs ControlNet block, written out from diffusers' convert_sana_controlnet_to_diffusers.py and
# convert_sana_to_diffusers.py (the qk_norm keys exist for Sprint-native checkpoints only).
NVLABS_BLOCK_KEYS = {
    "scale_shift_table", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias",
    "mlp.inverted_conv.conv.weight", "mlp.inverted_conv.conv.bias", "mlp.depth_conv.conv.weight",
    "mlp.depth_conv.conv.bias", "mlp.point_conv.conv.weight", "cross_attn.q_linear.weight",
    "cross_attn.q_linear.bias", "cross_attn.kv_linear.weight", "cross_attn.kv_linear.bias", "cross_attn.proj.weight",
    "cross_attn.proj.bias",
}
NVLABS_QK_NORM_KEYS = {"attn.q_norm.weight", "attn.k_norm.weight", "cross_attn.q_norm.weight",
                       "cross_attn.k_norm.weight"}
NVLABS_EMBEDDER_KEYS = {
    "x_embedder.proj.weight", "x_embedder.proj.bias", "y_embedder.y_proj.fc1.weight", "y_embedder.y_proj.fc1.bias",
    "y_embedder.y_proj.fc2.weight", "y_embedder.y_proj.fc2.bias", "t_embedder.mlp.0.weight", "t_embedder.mlp.0.bias",
    "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias", "t_block.1.weight", "t_block.1.bias",
    "attention_y_norm.weight",
}
NVLABS_GUIDANCE_KEYS = {"cfg_embedder.mlp.0.weight", "cfg_embedder.mlp.0.bias", "cfg_embedder.mlp.2.weight",
                        "cfg_embedder.mlp.2.bias"}


def test_exported_nvlabs_names_are_exactly_the_published_ones():
    for sprint in (True, False):
        transformer = tiny_transformer() if sprint else tiny_transformer(qk_norm=None, guidance_embeds=False)
        controlnet = SanaSprintControlNetModel.from_transformer(transformer)
        keys = set(diffusers_to_nvlabs_state_dict(controlnet.state_dict()))
        block = NVLABS_BLOCK_KEYS | (NVLABS_QK_NORM_KEYS if sprint else set())
        expected = NVLABS_EMBEDDER_KEYS | (NVLABS_GUIDANCE_KEYS if sprint else set())
        expected |= {"controlnet.0.before_proj.weight", "controlnet.0.before_proj.bias"}
        for d in range(7):
            expected |= {f"controlnet.{d}.copied_block.{k}" for k in block}
            expected |= {f"controlnet.{d}.after_proj.weight", f"controlnet.{d}.after_proj.bias"}
        assert keys == expected


def nvlabs_checkpoint(controlnet: SanaSprintControlNetModel, transformer) -> dict:
    """A synthetic NVlabs-format checkpoint with the real key names, base-model keys included (as NVlabs saves
    the whole SanaMSControlNet)."""
    state = diffusers_to_nvlabs_state_dict(controlnet.state_dict())
    state["blocks.0.attn.qkv.weight"] = torch.zeros(3)  # base weights ride along and must be ignored
    state["final_layer.linear.weight"] = torch.zeros(3)
    state["pos_embed"] = torch.zeros(3)
    return {"state_dict": state}


@torch.no_grad()
@pytest.mark.parametrize("family", ["sprint", "sana-1.0"])
def test_nvlabs_checkpoint_loads_every_weight(tmp_path, family):
    if family == "sprint":
        transformer = tiny_transformer()
        original = randomise(SanaSprintControlNetModel.from_transformer(transformer)).eval()
    else:
        transformer = tiny_transformer(qk_norm=None, guidance_embeds=False)
        original = SanaSprintControlNetModel(**(dict(SanaSprintControlNetModel.from_transformer(transformer).config)
                                                | dict(timestep_scale=1000.0)))
        original = randomise(original).eval()
    checkpoint = nvlabs_checkpoint(original, transformer)
    keys = checkpoint["state_dict"].keys()
    assert "controlnet.0.before_proj.weight" in keys and "controlnet.6.after_proj.bias" in keys
    assert ("cfg_embedder.mlp.0.weight" in keys) == (family == "sprint")
    assert ("controlnet.0.copied_block.attn.q_norm.weight" in keys) == (family == "sprint")
    path = tmp_path / "controlnet.pth"
    torch.save(checkpoint, path)

    loaded, report = load_nvlabs_checkpoint(path, dict(transformer.config))
    assert report.ignored_base_keys == ["blocks.0.attn.qkv.weight", "final_layer.linear.weight", "pos_embed"]
    assert report.family == family and report.wiring == "nvlabs"
    assert loaded.config.timestep_scale == (1.0 if family == "sprint" else 1000.0)
    assert ("experimental" in report.description) == (family == "sana-1.0")
    inputs = step_inputs(transformer)
    cond = control_latents(transformer)
    expected = sana_transformer_forward(transformer, **inputs, control=ControlInputs(original, cond, 1.0))
    got = sana_transformer_forward(transformer, **inputs, control=ControlInputs(loaded, cond, 1.0))
    assert torch.equal(got, expected)


def test_unknown_and_missing_nvlabs_keys_are_refused(tmp_path):
    """Loads are strict: a checkpoint with a weight the model lacks, or without one it needs, is refused by name
    (so a LoadReport never describes a partly loaded ControlNet)."""
    transformer = tiny_transformer()
    checkpoint = nvlabs_checkpoint(SanaSprintControlNetModel.from_transformer(transformer), transformer)
    checkpoint["state_dict"]["controlnet.0.mystery.weight"] = torch.zeros(1)
    torch.save(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="controlnet.0.mystery.weight"):
        load_nvlabs_checkpoint(tmp_path / "bad.pth", dict(transformer.config))
    del checkpoint["state_dict"]["controlnet.0.mystery.weight"]
    del checkpoint["state_dict"]["controlnet.3.copied_block.mlp.point_conv.conv.weight"]
    torch.save(checkpoint, tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"missing \['transformer_blocks.3.ff.conv_point.weight'\]"):
        load_nvlabs_checkpoint(tmp_path / "short.pth", dict(transformer.config))


@torch.no_grad()
def test_sana10_time_embedding_uses_flow_time():
    """The Sana 1.0 ControlNet was trained on flow time 0..1000: SCM time s must reach it as 1000 * s."""
    transformer = tiny_transformer(qk_norm=None, guidance_embeds=False)
    controlnet = SanaSprintControlNetModel(**(dict(SanaSprintControlNetModel.from_transformer(transformer).config)
                                              | dict(timestep_scale=1000.0)))
    captions = torch.randn(1, 4, 32)
    time_mod, _ = controlnet.embed_conditions(torch.tensor([0.25]), captions, None, torch.float32)
    expected, _ = controlnet.time_embed(torch.tensor([250.0]), batch_size=1, hidden_dtype=torch.float32)
    assert torch.equal(time_mod, expected)


@torch.no_grad()
def test_diffusers_folders_load(tmp_path):
    transformer = tiny_transformer()
    ours = randomise(SanaSprintControlNetModel.from_transformer(transformer)).eval()
    ours.save_pretrained(tmp_path / "ours")
    loaded, report = load_diffusers_controlnet(str(tmp_path / "ours"))
    assert report.wiring == "nvlabs" and report.family == "sprint"
    for (name, a), (_, b) in zip(ours.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    # the wiring is the checkpoint's own: a folder of ours records it in its config
    SanaSprintControlNetModel.from_transformer(transformer, wiring="diffusers").save_pretrained(tmp_path / "ours-d")
    assert load_diffusers_controlnet(str(tmp_path / "ours-d"))[1].wiring == "diffusers"

    # a stock diffusers SanaControlNetModel folder (e.g. the community conversion of the Sana 1.0 HED model)
    base10 = tiny_transformer(qk_norm=None, guidance_embeds=False)
    stock = SanaControlNetModel(
        in_channels=32, out_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=7,
        num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=32,
    )
    randomise(stock).save_pretrained(tmp_path / "stock")
    loaded, report = load_diffusers_controlnet(str(tmp_path / "stock"))
    assert report.family == "sana-1.0" and report.wiring == "diffusers"
    assert loaded.config.timestep_scale == 1000.0 and loaded.config.qk_norm is None
    inputs = step_inputs(base10)
    cond = control_latents(base10)
    residuals = stock(inputs["hidden_states"], inputs["encoder_hidden_states"], inputs["timestep"] * 1000, cond,
                      encoder_attention_mask=inputs["encoder_attention_mask"], return_dict=False)[0]
    ours_residuals = loaded(loaded.patch_embed(inputs["hidden_states"]), cond, inputs["encoder_hidden_states"],
                            inputs["timestep"], None, inputs["encoder_attention_mask"])
    for a, b in zip(ours_residuals, residuals, strict=True):  # flow time 700 feeds sinusoids: float32 rounding
        assert (a - b).norm() / b.norm() < 1e-5


def test_bad_wiring_is_refused():
    with pytest.raises(ValueError, match="'sideways'"):
        SanaSprintControlNetModel(wiring="sideways")
