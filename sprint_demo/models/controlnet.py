"""A ControlNet for the SANA-Sprint transformer, with both published wirings (checkpoints: ``checkpoints.py``).

diffusers ships ``SanaControlNetModel`` for the Sana 1.0 bases only: its blocks have no qk_norm and its time
embedding has no guidance term, so a Sprint-native ControlNet cannot load into it. This model keeps the
diffusers parameter names (so diffusers-format ControlNet folders load unchanged) and adds:

* ``qk_norm`` and the Sprint time embedding (SCM time in [0, 1] plus the guidance embedding), or the Sana 1.0
  time embedding (flow time on 0..1000 via ``timestep_scale=1000``, no guidance) for the released HED models;
* ``wiring``: which of the two published ways the residuals enter the base transformer:

  - ``"nvlabs"`` (NVlabs ``diffusion/model/nets/sana_multi_scale_controlnet.py``, what the released HED
    checkpoints were trained with): base block 0 runs first; the control branch starts from its output plus
    ``input_block(patch_embed(control))``; skip ``i`` is added *before* base block ``i + 1`` (i = 0..6).
  - ``"diffusers"`` (diffusers ``controlnet_sana.py`` + ``sana_transformer.py``): the control branch starts from
    ``patch_embed(x) + input_block(patch_embed(control))``; residual ``i`` is added *after* base block
    ``i + 1``.

The two differ only in where the branch starts and where each residual lands; the released Sana 1.0 HED
checkpoints were trained with the NVlabs one, so running them with the diffusers wiring shifts every residual by
one block. Adapted from: NVlabs/Sana ``sana_multi_scale_controlnet.py`` (wiring, zero-initialised projections).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import SanaTransformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import PatchEmbed, PixArtAlphaTextProjection
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormSingle, RMSNorm
from diffusers.models.transformers.sana_transformer import (
    SanaCombinedTimestepGuidanceEmbeddings,
    SanaTransformerBlock,
)
from diffusers.utils import apply_lora_scale
from torch import nn

from .. import settings

WIRINGS = settings.CONTROLNET_WIRINGS
NUM_LAYERS = 7  # the released HED ControlNets copy base blocks 0..6
SANA10_TIMESTEP_SCALE = 1000.0  # Sana 1.0 flow models take t in 0..1000; Sprint's SCM time is s in [0, 1]


class SanaSprintControlNetModel(ModelMixin, ConfigMixin):
    """Copies of the first ``num_layers`` base blocks plus zero-initialised input/output projections."""

    _supports_gradient_checkpointing = False
    _no_split_modules = ["SanaTransformerBlock", "PatchEmbed"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 32,
        num_attention_heads: int = 36,
        attention_head_dim: int = 32,
        num_layers: int = NUM_LAYERS,
        num_cross_attention_heads: int = 16,
        cross_attention_head_dim: int = 72,
        cross_attention_dim: int = 1152,
        caption_channels: int = 2304,
        mlp_ratio: float = 2.5,
        attention_bias: bool = False,
        sample_size: int = 32,
        patch_size: int = 1,
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        interpolation_scale: int | None = None,
        qk_norm: str | None = "rms_norm_across_heads",
        guidance_embeds: bool = True,
        timestep_scale: float = 1.0,
        wiring: str = "nvlabs",
    ) -> None:
        super().__init__()
        if wiring not in WIRINGS:
            raise ValueError(f"wiring must be one of {WIRINGS}, got {wiring!r}")
        inner_dim = num_attention_heads * attention_head_dim
        self.patch_embed = PatchEmbed(
            height=sample_size,
            width=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=inner_dim,
            interpolation_scale=interpolation_scale,
            pos_embed_type="sincos" if interpolation_scale is not None else None,
        )
        self.time_embed = (
            SanaCombinedTimestepGuidanceEmbeddings(inner_dim) if guidance_embeds else AdaLayerNormSingle(inner_dim)
        )
        self.caption_projection = PixArtAlphaTextProjection(in_features=caption_channels, hidden_size=inner_dim)
        self.caption_norm = RMSNorm(inner_dim, eps=1e-5, elementwise_affine=True)
        self.transformer_blocks = nn.ModuleList(
            [
                SanaTransformerBlock(
                    inner_dim,
                    num_attention_heads,
                    attention_head_dim,
                    num_cross_attention_heads=num_cross_attention_heads,
                    cross_attention_head_dim=cross_attention_head_dim,
                    cross_attention_dim=cross_attention_dim,
                    attention_bias=attention_bias,
                    norm_elementwise_affine=norm_elementwise_affine,
                    norm_eps=norm_eps,
                    mlp_ratio=mlp_ratio,
                    qk_norm=qk_norm,
                )
                for _ in range(num_layers)
            ]
        )
        # NVlabs: controlnet.0.before_proj and controlnet.i.after_proj; zero so training starts from the base.
        self.input_block = _zeroed(nn.Linear(inner_dim, inner_dim))
        self.controlnet_blocks = nn.ModuleList([_zeroed(nn.Linear(inner_dim, inner_dim)) for _ in range(num_layers)])

    @classmethod
    def from_transformer(
        cls,
        transformer: SanaTransformer2DModel,
        num_layers: int = NUM_LAYERS,
        wiring: str = "nvlabs",
    ) -> SanaSprintControlNetModel:
        """Start a ControlNet the way they are trained: blocks 0..num_layers-1 and the embeddings copied from the
        base, input and output projections zero, so the base's output is unchanged at any scale."""
        base = transformer.config
        if num_layers > base.num_layers - 1:
            raise ValueError(f"num_layers must be below the base's {base.num_layers} layers, got {num_layers}")
        # every shape setting the two classes share comes from the base (the time scale included)
        shared = {k: v for k, v in base.items() if k in inspect.signature(cls.__init__).parameters}
        controlnet = cls(**(shared | dict(num_layers=num_layers, wiring=wiring)))
        for name in ("patch_embed", "time_embed", "caption_projection", "caption_norm"):
            getattr(controlnet, name).load_state_dict(getattr(transformer, name).state_dict())
        for block, base_block in zip(controlnet.transformer_blocks, transformer.transformer_blocks):
            block.load_state_dict(base_block.state_dict())
        controlnet = controlnet.to(transformer.device)
        return controlnet if transformer.dtype == controlnet.dtype else controlnet.to(transformer.dtype)

    def embed_conditions(
        self,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        guidance: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Own time and caption embeddings: a Sana 1.0 ControlNet was trained with its own, on flow time."""
        batch_size = encoder_hidden_states.shape[0]
        timestep = timestep * self.config.timestep_scale
        if self.config.guidance_embeds:
            if guidance is None:
                raise ValueError("this ControlNet has a guidance embedding: pass guidance, got None")
            time_mod, _ = self.time_embed(timestep, guidance=guidance, hidden_dtype=dtype)
        else:
            time_mod, _ = self.time_embed(timestep, batch_size=batch_size, hidden_dtype=dtype)
        captions = self.caption_projection(encoder_hidden_states)
        captions = self.caption_norm(captions.view(batch_size, -1, captions.shape[-1]))
        return time_mod, captions

    @apply_lora_scale("attention_kwargs")  # as diffusers' SanaControlNetModel.forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        control_latents: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        guidance: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        conditioning_scale: float = 1.0,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> list[torch.Tensor]:
        """Residuals, one per block, already multiplied by ``conditioning_scale``.

        hidden_states: (B, N, D) tokens the branch starts from (base block 0's output for the NVlabs wiring,
        ``patch_embed`` of the noisy latent for the diffusers wiring); control_latents: (B, C, h, w) the VAE
        latent of the control map; encoder_hidden_states: (B, L, caption_channels) raw prompt embeddings;
        encoder_attention_mask: (B, L) 1 = keep, or an additive bias (B, 1, L); attention_kwargs: a LoRA
        ``scale`` for this model's LoRA layers during the call (with PEFT), as diffusers' models take it.
        """
        height, width = control_latents.shape[-2:]
        p = self.config.patch_size
        dtype = hidden_states.dtype
        encoder_attention_mask = attention_bias(encoder_attention_mask, dtype)
        time_mod, captions = self.embed_conditions(timestep, encoder_hidden_states, guidance, dtype)
        hidden = hidden_states + self.input_block(self.patch_embed(control_latents.to(dtype)))  # (B, N, D)
        residuals = []
        for block, projection in zip(self.transformer_blocks, self.controlnet_blocks):
            hidden = block(hidden, None, captions, encoder_attention_mask, time_mod, height // p, width // p)
            residuals.append(projection(hidden) * conditioning_scale)
        return residuals


def _zeroed(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def attention_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, L) keep-mask -> (B, 1, L) additive bias, exactly as SanaTransformer2DModel.forward converts it."""
    if mask is None or mask.ndim != 2:
        return mask
    return ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)


# --- Running the base transformer with control ----------------------------------------------------------


@dataclass
class ControlInputs:
    """What the ControlNet needs at one denoising step, beside the base transformer's own inputs."""

    controlnet: SanaSprintControlNetModel
    latents: torch.Tensor  # (B, C, h, w) VAE latent of the control map
    scale: float | torch.Tensor = 1.0  # a 0-dim tensor under the per-step compile (speedups.py), (B, 1, 1) per row


def sana_transformer_forward(
    transformer: SanaTransformer2DModel,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    guidance: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    control: ControlInputs | None = None,
    attention_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """SanaTransformer2DModel.forward (diffusers 0.42), step for step, with ControlNet residuals added where the
    ControlNet's wiring says. With ``control=None`` this is bit-identical to ``transformer(...)``, and with the
    diffusers wiring to ``transformer(..., controlnet_block_samples=residuals)`` (both tested).

    ``attention_kwargs`` as the transformer's forward takes them: their LoRA ``scale`` applies to the
    transformer's LoRA layers during the call (diffusers' ``apply_lora_scale``, with PEFT), and the ControlNet is
    handed the same dict, as diffusers' SanaControlNetPipeline hands both models."""
    # the decorator hands the forward a copy without "scale": the ControlNet gets the caller's dict
    return _scaled_forward(
        transformer, hidden_states, encoder_hidden_states, timestep, guidance, encoder_attention_mask, control,
        attention_kwargs=attention_kwargs, controlnet_attention_kwargs=attention_kwargs,
    )


@apply_lora_scale("attention_kwargs")  # what SanaTransformer2DModel.forward does with them
def _scaled_forward(
    transformer: SanaTransformer2DModel,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    guidance: torch.Tensor | None,
    encoder_attention_mask: torch.Tensor | None,
    control: ControlInputs | None,
    attention_kwargs: dict[str, Any] | None = None,
    controlnet_attention_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    batch_size, _, height, width = hidden_states.shape  # (B, C, h, w) latent
    p = transformer.config.patch_size
    post_h, post_w = height // p, width // p
    raw_prompt_embeds = encoder_hidden_states
    mask_bias = attention_bias(encoder_attention_mask, hidden_states.dtype)

    hidden = transformer.patch_embed(hidden_states)  # (B, N, D)
    if guidance is not None:
        time_mod, embedded_timestep = transformer.time_embed(timestep, guidance=guidance, hidden_dtype=hidden.dtype)
    else:
        time_mod, embedded_timestep = transformer.time_embed(
            timestep, batch_size=batch_size, hidden_dtype=hidden.dtype
        )
    captions = transformer.caption_projection(encoder_hidden_states)
    captions = transformer.caption_norm(captions.view(batch_size, -1, hidden.shape[-1]))

    add_residual = _residual_schedule(
        control, hidden_states, raw_prompt_embeds, timestep, guidance, encoder_attention_mask,
        controlnet_attention_kwargs,
    )
    for index, block in enumerate(transformer.transformer_blocks):
        hidden = block(hidden, None, captions, mask_bias, time_mod, post_h, post_w)
        hidden = add_residual(index, hidden)

    hidden = transformer.norm_out(hidden, embedded_timestep, transformer.scale_shift_table)
    hidden = transformer.proj_out(hidden)
    hidden = hidden.reshape(batch_size, post_h, post_w, p, p, -1).permute(0, 5, 1, 3, 2, 4)
    return hidden.reshape(batch_size, -1, post_h * p, post_w * p)


def _residual_schedule(
    control: ControlInputs | None,
    latent_input: torch.Tensor,
    prompt_embeds: torch.Tensor,
    timestep: torch.Tensor,
    guidance: torch.Tensor | None,
    encoder_attention_mask: torch.Tensor | None,
    attention_kwargs: dict[str, Any] | None = None,
) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """Returns add(index, hidden): what to add after base block ``index``."""
    if control is None:
        return lambda index, hidden: hidden
    cn = control.controlnet
    residuals: list[torch.Tensor] = []

    def run_branch(start_tokens: torch.Tensor) -> None:
        residuals.extend(
            cn(
                start_tokens, control.latents, prompt_embeds, timestep, guidance, encoder_attention_mask,
                control.scale, attention_kwargs=attention_kwargs,
            )
        )

    if cn.config.wiring == "diffusers":
        run_branch(cn.patch_embed(latent_input))  # the branch starts from its own embedding of the input
        return lambda index, hidden: hidden + residuals[index - 1] if 0 < index <= len(residuals) else hidden

    def add_nvlabs(index: int, hidden: torch.Tensor) -> torch.Tensor:
        if index == 0:
            run_branch(hidden)  # the branch starts from base block 0's output
        return hidden + residuals[index] if index < len(residuals) else hidden

    return add_nvlabs
