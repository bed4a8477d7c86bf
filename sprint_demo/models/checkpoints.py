"""ControlNet checkpoints: NVlabs ``.pth`` key conversion (both directions) and the one loading path.

NVlabs saves the whole ``SanaMSControlNet`` (base weights included) under its own names, with fused q/k/v and
k/v projections; diffusers-format folders use this package's names already. ``load_controlnet`` takes either,
local or from the hub, and returns the model with a ``LoadReport``; ``sprint_demo.models.loading`` plugs it into a
pipeline. Key names follow diffusers ``scripts/convert_sana_controlnet_to_diffusers.py`` and
``convert_sana_to_diffusers.py`` (read, not copied).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import settings
from .controlnet import NUM_LAYERS, SANA10_TIMESTEP_SCALE, WIRINGS, SanaSprintControlNetModel

# (blocks, inner width) of NVlabs' released HED ControlNets: 600M (36 x 32 heads) and 1600M (70 x 32). A stock
# diffusers SanaControlNetModel of one of these layouts holds their weights, converted one to one by diffusers'
# convert_sana_controlnet_to_diffusers.py (diffusers has no Sana ControlNet trainer).
NVLABS_RELEASED_LAYOUTS = ((NUM_LAYERS, 1152), (NUM_LAYERS, 2240))

# --- Key conversion (NVlabs names <-> ours) ------------------------------------------------------------

_EMBEDDER_KEYS = {  # NVlabs name -> ours; time-embedding names depend on the family (Sprint or Sana 1.0)
    "x_embedder.proj.weight": "patch_embed.proj.weight",
    "x_embedder.proj.bias": "patch_embed.proj.bias",
    "y_embedder.y_proj.fc1.weight": "caption_projection.linear_1.weight",
    "y_embedder.y_proj.fc1.bias": "caption_projection.linear_1.bias",
    "y_embedder.y_proj.fc2.weight": "caption_projection.linear_2.weight",
    "y_embedder.y_proj.fc2.bias": "caption_projection.linear_2.bias",
    "t_block.1.weight": "time_embed.linear.weight",
    "t_block.1.bias": "time_embed.linear.bias",
    "attention_y_norm.weight": "caption_norm.weight",
    "controlnet.0.before_proj.weight": "input_block.weight",
    "controlnet.0.before_proj.bias": "input_block.bias",
}
_BLOCK_KEYS = {  # NVlabs copied_block suffix -> ours (inside transformer_blocks.{i}); q/k/v splits handled apart
    "scale_shift_table": "scale_shift_table",
    "attn.proj.weight": "attn1.to_out.0.weight",
    "attn.proj.bias": "attn1.to_out.0.bias",
    "attn.q_norm.weight": "attn1.norm_q.weight",
    "attn.k_norm.weight": "attn1.norm_k.weight",
    "mlp.inverted_conv.conv.weight": "ff.conv_inverted.weight",
    "mlp.inverted_conv.conv.bias": "ff.conv_inverted.bias",
    "mlp.depth_conv.conv.weight": "ff.conv_depth.weight",
    "mlp.depth_conv.conv.bias": "ff.conv_depth.bias",
    "mlp.point_conv.conv.weight": "ff.conv_point.weight",
    "cross_attn.q_linear.weight": "attn2.to_q.weight",
    "cross_attn.q_linear.bias": "attn2.to_q.bias",
    "cross_attn.q_norm.weight": "attn2.norm_q.weight",
    "cross_attn.k_norm.weight": "attn2.norm_k.weight",
    "cross_attn.proj.weight": "attn2.to_out.0.weight",
    "cross_attn.proj.bias": "attn2.to_out.0.bias",
}
# Keys of the base model that an NVlabs ControlNet checkpoint also carries; they are not ControlNet weights.
_BASE_ONLY = re.compile(r"^(blocks\.|final_layer\.|pos_embed|y_embedder\.y_embedding|logvar_linear\.)")


# NVlabs fuses projections that diffusers keeps apart: (NVlabs suffix, our suffix pattern, parts), per block.
_FUSED_KEYS = (
    ("attn.qkv.weight", "attn1.to_{}.weight", "qkv"),
    ("cross_attn.kv_linear.weight", "attn2.to_{}.weight", "kv"),
    ("cross_attn.kv_linear.bias", "attn2.to_{}.bias", "kv"),
)


def _renames(depth: int, sprint: bool) -> list[tuple[str, str]]:
    """(NVlabs name, our name) for every one-to-one key of a ``depth``-block ControlNet of either family."""
    time_prefix = "time_embed." if sprint else "time_embed.emb."
    pairs = list(_EMBEDDER_KEYS.items())
    for layer, linear in (("0", "linear_1"), ("2", "linear_2")):
        for kind in ("weight", "bias"):
            pairs.append((f"t_embedder.mlp.{layer}.{kind}", f"{time_prefix}timestep_embedder.{linear}.{kind}"))
            if sprint:
                pairs.append((f"cfg_embedder.mlp.{layer}.{kind}", f"time_embed.guidance_embedder.{linear}.{kind}"))
    for d in range(depth):
        pairs += [(f"controlnet.{d}.copied_block.{t}", f"transformer_blocks.{d}.{o}") for t, o in _BLOCK_KEYS.items()]
        pairs += [(f"controlnet.{d}.after_proj.{kind}", f"controlnet_blocks.{d}.{kind}")
                  for kind in ("weight", "bias")]
    return pairs


def _count(state: dict, pattern: str) -> int:
    depth = 0
    while pattern.format(depth) in state:
        depth += 1
    return depth


def nvlabs_to_diffusers_state_dict(nvlabs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Renames an NVlabs ControlNet state dict to this model's names. Returns (converted, ignored base keys).

    Raises ValueError naming any key it does not know, so a format change cannot load silently wrong."""
    source = dict(nvlabs)
    ignored = sorted(k for k in source if _BASE_ONLY.match(k))
    for key in ignored:
        source.pop(key)
    depth = _count(source, "controlnet.{}.after_proj.weight")
    out = {ours: source.pop(theirs) for theirs, ours in _renames(depth, "cfg_embedder.mlp.0.weight" in source)
           if theirs in source}
    for d in range(depth):
        for theirs, ours, parts in _FUSED_KEYS:
            chunks = torch.chunk(source.pop(f"controlnet.{d}.copied_block.{theirs}"), len(parts), dim=0)
            out.update({f"transformer_blocks.{d}.{ours.format(part)}": c for part, c in zip(parts, chunks)})
    if source:
        raise ValueError(f"unknown keys in the NVlabs ControlNet checkpoint: {sorted(source)[:10]}")
    return out, ignored


def diffusers_to_nvlabs_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse renaming: writes our weights under NVlabs key names (for tests and for exporting)."""
    state = dict(state)
    depth = _count(state, "controlnet_blocks.{}.weight")
    sprint = "time_embed.guidance_embedder.linear_1.weight" in state
    out = {theirs: state.pop(ours) for theirs, ours in _renames(depth, sprint) if ours in state}
    for d in range(depth):
        for theirs, ours, parts in _FUSED_KEYS:
            fused = [state.pop(f"transformer_blocks.{d}.{ours.format(part)}") for part in parts]
            out[f"controlnet.{d}.copied_block.{theirs}"] = torch.cat(fused)
    if state:
        raise ValueError(f"keys with no NVlabs name: {sorted(state)[:10]}")
    return out


def config_from_nvlabs(state: dict[str, torch.Tensor], base_config: dict | None = None) -> dict:
    """Infers the ControlNet config from converted weights (+ the base transformer's head layout)."""
    inner_dim, in_channels = state["patch_embed.proj.weight"].shape[:2]
    num_layers = sum(1 for k in state if k.startswith("controlnet_blocks.") and k.endswith(".weight"))
    sprint = "time_embed.guidance_embedder.linear_1.weight" in state
    base = dict(base_config or {})
    head_dim = base.get("attention_head_dim", 32)  # Sana's linear attention uses 32-wide heads
    cross_heads = base.get("num_cross_attention_heads") or {1152: 16, 2240: 20}.get(inner_dim, inner_dim // 72)
    return dict(
        in_channels=in_channels,
        num_attention_heads=inner_dim // head_dim,
        attention_head_dim=head_dim,
        num_layers=num_layers,
        num_cross_attention_heads=cross_heads,
        cross_attention_head_dim=inner_dim // cross_heads,
        cross_attention_dim=inner_dim,
        caption_channels=state["caption_projection.linear_1.weight"].shape[1],
        sample_size=base.get("sample_size", 32),
        qk_norm="rms_norm_across_heads" if "transformer_blocks.0.attn1.norm_q.weight" in state else None,
        guidance_embeds=sprint,
        timestep_scale=1.0 if sprint else SANA10_TIMESTEP_SCALE,
        wiring="nvlabs",
    )


# --- Loading ------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What loading a ControlNet checkpoint did; the UI shows ``description``. Loads are strict: a checkpoint
    with a missing or unexpected ControlNet weight is refused (ValueError naming the keys), so there are none to
    report; the base-model weights that NVlabs checkpoints also carry are skipped and listed."""

    source: str
    family: str  # "sprint" or "sana-1.0"
    wiring: str  # the wiring it runs with
    ignored_base_keys: list[str] = field(default_factory=list)
    trained_wiring: str | None = None  # the wiring its weights were trained with, where that is known

    @property
    def warning(self) -> str | None:
        """Why the frames are not what the weights were trained to give, when the wiring differs from training's."""
        if self.trained_wiring is None or self.trained_wiring == self.wiring:
            return None
        later = "later" if self.trained_wiring == "nvlabs" else "earlier"
        return (f"these weights were trained with the {self.trained_wiring} wiring but run with the {self.wiring} "
                f"wiring, so each residual enters the base one block {later} than in training; "
                f"--controlnet-wiring {self.trained_wiring} (env SPRINT_CONTROLNET_WIRING) runs them as trained")

    @property
    def description(self) -> str:
        if self.family == "sprint":
            text = f"Sprint-native ControlNet ({self.wiring} wiring) from {self.source}"
        else:
            text = (f"experimental: Sana 1.0 HED ControlNet ({self.wiring} wiring) from {self.source}, paired with "
                    "the Sprint base it was not trained with; no Sprint ControlNet checkpoint is public")
        return text if self.warning is None else f"{text}. ⚠️ Warning: {self.warning}"


def load_controlnet(
    source: str | Path,
    base_config: dict | None = None,
    dtype: torch.dtype | None = None,
    wiring: str = "auto",
) -> tuple[SanaSprintControlNetModel, LoadReport]:
    """The one way a ControlNet is loaded: ``source`` is an NVlabs ``.pth`` file (local, or ``owner/repo/path.pth``
    on the hub), a diffusers folder, or a hub repo holding either (an NVlabs repo keeps its weights at
    ``settings.SANA10_HED_CONTROLNET_FILE``).
    ``base_config`` is the base transformer's config (NVlabs files do not store the head layout). ``wiring``:
    "auto" takes the checkpoint's own convention, "nvlabs" for an NVlabs
    ``.pth`` (what those were trained with), the folder's ``config.wiring`` for ours, "diffusers" for a stock
    ``SanaControlNetModel`` (as diffusers' SanaControlNetPipeline runs it); "nvlabs" or "diffusers" forces one.
    ``LoadReport.warning`` says when the weights run with another wiring than they were trained with. Raises
    OSError when the files cannot be found or fetched and ValueError when they do not fit (or a bad ``wiring``)."""
    if wiring != "auto" and wiring not in WIRINGS:
        raise ValueError(f"ControlNet wiring must be auto, {' or '.join(WIRINGS)}, got {wiring!r}")
    forced = None if wiring == "auto" else wiring
    source = str(source)
    if source.endswith(".pth"):
        path = source if Path(source).exists() else _hub_file(source)
        return load_nvlabs_checkpoint(path, base_config, dtype, forced)
    if Path(source).is_dir() or _hub_has_diffusers_config(source):
        return load_diffusers_controlnet(source, dtype, forced)
    path = _hub_file(f"{source}/{settings.SANA10_HED_CONTROLNET_FILE}")
    return load_nvlabs_checkpoint(path, base_config, dtype, forced)


def load_nvlabs_checkpoint(
    path: str | Path, base_config: dict | None = None, dtype: torch.dtype | None = None, wiring: str | None = None
) -> tuple[SanaSprintControlNetModel, LoadReport]:
    """Loads an NVlabs ``.pth`` ControlNet (Sprint-native or Sana 1.0 HED), converting names on load, with the
    NVlabs wiring its weights were trained with (or ``wiring``, when given)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    nvlabs = checkpoint.get("state_dict", checkpoint)
    state, ignored = nvlabs_to_diffusers_state_dict(nvlabs)
    config = config_from_nvlabs(state, base_config) | ({} if wiring is None else {"wiring": wiring})
    model = SanaSprintControlNetModel(**config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    _refuse_misfit(path, missing, unexpected)
    if dtype is not None:
        model = model.to(dtype)
    family = "sprint" if config["guidance_embeds"] else "sana-1.0"
    return model.eval(), LoadReport(str(path), family, model.config.wiring, ignored_base_keys=ignored,
                                    trained_wiring="nvlabs")


def load_diffusers_controlnet(
    path_or_id: str, dtype: torch.dtype | None = None, wiring: str | None = None, **hub_kwargs
) -> tuple[SanaSprintControlNetModel, LoadReport]:
    """Loads a diffusers-format ControlNet folder or hub repo: ours, run with the wiring their config records, or a
    stock ``SanaControlNetModel`` (Sana 1.0 shapes), run with the diffusers wiring that diffusers' own
    SanaControlNetPipeline uses; ``wiring``, when given, instead. A stock one that holds NVlabs' released weights
    (``nvlabs_conversion``) was trained with the NVlabs wiring: its report warns when it runs with the other."""
    config = SanaSprintControlNetModel.load_config(path_or_id, **hub_kwargs)
    overrides, stock = {}, config.get("_class_name") == "SanaControlNetModel"
    if stock:
        overrides = dict(qk_norm=None, guidance_embeds=False, timestep_scale=SANA10_TIMESTEP_SCALE, wiring="diffusers")
        trained = "nvlabs" if nvlabs_conversion(path_or_id, config) else None
    else:
        trained = config.get("wiring", "nvlabs")  # ours: trained with the wiring it records (the class default)
    if wiring is not None:
        overrides["wiring"] = wiring
    model, info = SanaSprintControlNetModel.from_pretrained(
        path_or_id, dtype=dtype, output_loading_info=True, **overrides, **hub_kwargs
    )
    _refuse_misfit(path_or_id, info["missing_keys"], info["unexpected_keys"])
    family = "sprint" if model.config.guidance_embeds else "sana-1.0"
    return model.eval(), LoadReport(path_or_id, family, model.config.wiring, trained_wiring=trained)


def nvlabs_conversion(source: str | Path, config: dict) -> bool:
    """Whether a stock diffusers ``SanaControlNetModel`` folder holds NVlabs' released HED weights: it is one of the
    known copies (``settings.NVLABS_CONVERTED_CONTROLNETS``, matched by name, so a downloaded folder of the same name
    counts) or has the layout of a released one (``NVLABS_RELEASED_LAYOUTS``)."""
    names = {Path(known).name for known in settings.NVLABS_CONVERTED_CONTROLNETS}
    layout = (config.get("num_layers"), config.get("num_attention_heads", 0) * config.get("attention_head_dim", 0))
    return any(name in str(source) for name in names) or layout in NVLABS_RELEASED_LAYOUTS


def _refuse_misfit(source: str | Path, missing: list[str], unexpected: list[str]) -> None:
    if missing or unexpected:
        raise ValueError(f"{source}: ControlNet weights do not fit: missing {list(missing)[:8]}, "
                         f"unexpected {list(unexpected)[:8]}")


def _hub_file(spec: str) -> str:
    """"owner/repo/path/in/repo.pth" -> local path, downloaded (or found in the cache)."""
    from huggingface_hub import hf_hub_download

    owner, repo, *rest = spec.split("/")
    if not rest:
        raise ValueError(f"{spec!r}: expected owner/repo/path/to/file.pth or a local file")
    return hf_hub_download(f"{owner}/{repo}", "/".join(rest))


def _hub_has_diffusers_config(repo_id: str) -> bool:
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo_id, "config.json")
        return True
    except Exception:  # offline, missing repo or missing file: fall through to the NVlabs layout
        return False
