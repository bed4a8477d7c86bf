"""Building pipelines: the tiny offline preview, the full-size random model, and the real weights.

``load_pipeline(model, controlnet=None, device=None, dtype=None)``:

* ``"preview"``: tiny random components built in code (tokenizer included), deterministic, fast on a CPU.
* ``"random-full"``: the real SANA-Sprint 0.6B / 7-block ControlNet / DC-AE f32c32 / Gemma-2-2B shapes with
  random weights, for GPU benchmarks (shapes from the models' published hub configs).
* anything else: a hub id or local folder of the Sprint weights in diffusers format, with ``controlnet`` a hub
  id, a diffusers folder, or an NVlabs ``.pth`` converted on load (``sprint_demo.models.checkpoints``).

Beside the pipeline, ``load_pipeline`` loads the tiny autoencoder of the "tiny" decoder lane
(``load_tiny_autoencoder``; a failure leaves the full lane working and says why in ``LoadedPipeline.tiny_note``)
and, with ``vae_lite``, swaps DC-AE-Lite's decoder into the pipeline's DC-AE (``swap_in_lite_decoder``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderDC, SanaSprintPipeline, SanaTransformer2DModel, SCMScheduler
from transformers import Gemma2Config, Gemma2Model, GemmaTokenizer

from .. import settings
from . import checkpoints
from .checkpoints import LoadReport
from .controlnet import SanaSprintControlNetModel
from .pipeline import SanaSprintControlNetPipeline
from .tiny_autoencoder import TinyAutoencoder, TinyAutoencoderLoadError

log = logging.getLogger(__name__)

PREVIEW_SEED = 0  # the preview's random weights: fixed, so every run and every test sees the same model


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what was tried and what to do."""


@dataclass
class LoadedPipeline:
    pipe: SanaSprintControlNetPipeline
    model_name: str  # "preview", "random-full" or the weights' id / folder
    controlnet_report: LoadReport | None  # None when the ControlNet was built in code (preview, random-full)
    tiny_autoencoder: TinyAutoencoder | None = None  # the "tiny" lane's autoencoder, on the pipeline's device
    tiny_note: str | None = None  # why there is no tiny autoencoder (None when there is one, or it is switched off)

    @property
    def is_preview(self) -> bool:
        return self.model_name == settings.PREVIEW_MODEL


# --- Tokenizer built in code ----------------------------------------------------------------------------

_WORDS = (
    "a an the of in on with and at by to from sky sea tree house cat dog city night day sun moon mountain lake "
    "river forest flower red blue green yellow black white golden small big old new photo painting sketch "
    "portrait landscape water fire snow cloud light dark street car boat bird fish cup coffee rocket space star"
).split()


def build_byte_tokenizer() -> GemmaTokenizer:
    """A Gemma-style tokenizer with byte fallback: any unicode text tokenises, no download needed."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for word in _WORDS:
        vocab.setdefault("\u2581" + word, len(vocab))  # SentencePiece marks a word start with U+2581
    # padding_side as an argument, not an attribute set afterwards: only arguments are saved with the tokenizer,
    # and a saved preview pipeline must load padding on the right, as the Sprint pipeline expects of Gemma
    return GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=True, padding_side="right")


# --- Component configs ------------------------------------------------------------------------------------

def sprint_transformer_config(size: str) -> dict:
    if size == "full":  # Sana_Sprint_0.6B_1024px transformer/config.json
        return dict(
            in_channels=32, out_channels=32, num_attention_heads=36, attention_head_dim=32, num_layers=28,
            num_cross_attention_heads=16, cross_attention_head_dim=72, cross_attention_dim=1152,
            caption_channels=2304, mlp_ratio=2.5, attention_bias=False, sample_size=32, patch_size=1,
            norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None,
            qk_norm="rms_norm_across_heads", guidance_embeds=True, guidance_embeds_scale=0.1,
        )
    # preview: 8 blocks so the 7-block ControlNet has a block after each residual; 32 wide
    return dict(
        in_channels=32, out_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=8,
        num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=32,
        mlp_ratio=2.5, attention_bias=False, sample_size=32, patch_size=1, norm_elementwise_affine=False,
        norm_eps=1e-6, interpolation_scale=None, qk_norm="rms_norm_across_heads", guidance_embeds=True,
        guidance_embeds_scale=0.1,
    )  # (the DC-AE, at full image resolution, is what costs time on a CPU: see dc_ae_config)


def dc_ae_config(size: str) -> dict:
    stages = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
    common = dict(
        in_channels=3, latent_channels=32, attention_head_dim=32 if size == "full" else 8,
        encoder_block_types=stages, decoder_block_types=stages,
        encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        upsample_block_type="interpolate", downsample_block_type="conv", decoder_norm_types="rms_norm",
        decoder_act_fns="silu", scaling_factor=0.41407,
    )
    if size == "full":  # mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers
        channels = (128, 256, 512, 512, 1024, 1024)
        return common | dict(
            encoder_block_out_channels=channels, decoder_block_out_channels=channels,
            encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
        )
    # preview: the real 6 stages (32x compression, 32 latent channels), a few channels each
    channels = (4, 4, 8, 8, 16, 32)  # the last width must be a multiple of the 32 latent channels
    return common | dict(
        encoder_block_out_channels=channels, decoder_block_out_channels=channels,
        encoder_layers_per_block=(1, 1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1, 1),
    )


def gemma_config(size: str, vocab_size: int) -> Gemma2Config:
    if size == "full":  # Gemma-2-2B-IT decoder
        return Gemma2Config(
            vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
            num_attention_heads=8, num_key_value_heads=4, head_dim=256, max_position_embeddings=8192,
        )
    # preview: positions for the instruction + 300 tokens in bytes (1,674 with the byte tokenizer); RoPE has no
    # weights, so the length changes none of the preview's weights
    return Gemma2Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=2048,
    )


def build_random_pipeline(size: str, seed: int = PREVIEW_SEED, device: str = "cpu") -> SanaSprintControlNetPipeline:
    """Random components of the preview or full shapes. Deterministic: the same seed gives the same weights
    (on a given device). Built directly on ``device``: initialising 3.7B full-size weights on a CPU takes minutes."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        tokenizer = build_byte_tokenizer()
        with torch.device(device):
            text_encoder, transformer, vae, controlnet = _random_models(size, len(tokenizer))
    finally:
        torch.random.set_rng_state(generator_state)
    scheduler = SCMScheduler(prediction_type="trigflow", sigma_data=0.5)
    return SanaSprintControlNetPipeline(tokenizer, text_encoder, vae, transformer, scheduler, controlnet=controlnet)


def _random_models(size: str, vocab_size: int):
    text_encoder = Gemma2Model(gemma_config(size, vocab_size)).eval()
    transformer = SanaTransformer2DModel(**sprint_transformer_config(size)).eval()
    vae = AutoencoderDC(**dc_ae_config(size)).eval()
    controlnet = SanaSprintControlNetModel.from_transformer(transformer).eval()
    # A freshly "trained-from" ControlNet is a no-op (zero projections); give the random one non-zero
    # projections so that strokes visibly change the picture, as a trained one would.
    with torch.no_grad():
        for projection in [controlnet.input_block, *controlnet.controlnet_blocks]:
            projection.weight.normal_(0.0, 0.5 / projection.weight.shape[1] ** 0.5)
    return text_encoder, transformer, vae, controlnet


# --- Loading --------------------------------------------------------------------------------------------

def parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


def component_dtypes(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype of each component for a run in ``dtype``: ``"default"`` (the transformer and the ControlNet) and,
    where they differ from it, ``"text_encoder"`` and ``"vae"`` (a dict ``from_pretrained`` takes as ``dtype``).
    float16 keeps the text encoder and the VAE in ``settings.FP16_TEXT_ENCODER_DTYPE`` / ``FP16_VAE_DTYPE``
    (diffusers' SANA-Sprint docs: fp16 is for the transformer weights; Gemma-2 must stay bf16, the DC-AE bf16 or
    fp32); any other dtype is the same for all."""
    if dtype != torch.float16:
        return {"default": dtype}
    return {"default": dtype, "text_encoder": parse_dtype(settings.FP16_TEXT_ENCODER_DTYPE, "cpu"),
            "vae": parse_dtype(settings.FP16_VAE_DTYPE, "cpu")}


def cast_components(pipe: SanaSprintControlNetPipeline, dtypes: dict[str, torch.dtype]) -> None:
    """Casts each model of ``pipe`` to its dtype in ``dtypes`` (``component_dtypes``), in place; a model already in
    its dtype is left alone (ModelMixin.to warns on every dtype cast, even a no-op one)."""
    for name in ("text_encoder", "transformer", "controlnet", "vae"):
        module, dtype = getattr(pipe, name, None), dtypes.get(name, dtypes["default"])
        if module is not None and module.dtype != dtype:
            module.to(dtype)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(
    model: str = settings.PREVIEW_MODEL,
    controlnet: str | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    tiny_autoencoder: str | None = settings.TINY_AUTOENCODER,
    vae_lite: str | None = settings.VAE_LITE,
    controlnet_wiring: str = settings.CONTROLNET_WIRING,
) -> LoadedPipeline:
    """Builds or loads a pipeline and moves it to ``device`` (default: cuda when present) in ``dtype`` (float16: the
    transformer and ControlNet only, ``component_dtypes``), with the tiny autoencoder ``tiny_autoencoder`` names
    (``load_tiny_autoencoder``; ``None`` or "off": none, else in the VAE's dtype) and, when ``vae_lite`` names one,
    DC-AE-Lite's decoder in place of the DC-AE's. ``controlnet_wiring``: how ``controlnet`` is wired
    (``attach_controlnet``)."""
    device = device or default_device()
    dtypes = component_dtypes(parse_dtype(dtype, device))
    if model in (settings.PREVIEW_MODEL, settings.RANDOM_FULL_MODEL):
        if controlnet is not None and model == settings.RANDOM_FULL_MODEL:
            raise ModelLoadError(f"--controlnet {controlnet!r} needs real weights, not --model {model}")
        full = model == settings.RANDOM_FULL_MODEL
        pipe = build_random_pipeline("full" if full else "preview", device=device if full else "cpu")
    else:
        pipe = _load_sprint_weights(model, dtypes)
    if vae_lite is not None:
        swap_in_lite_decoder(pipe, vae_lite)
    pipe = pipe.to(device)
    cast_components(pipe, dtypes)
    pipe.set_progress_bar_config(disable=True)
    loaded = LoadedPipeline(pipe=pipe, model_name=model, controlnet_report=None)
    if controlnet is not None:
        attach_controlnet(loaded, controlnet, controlnet_wiring)
    if tiny_autoencoder not in (None, "off"):
        try:
            tiny = load_tiny_autoencoder(model, tiny_autoencoder)
        except (TinyAutoencoderLoadError, ValueError) as error:
            loaded.tiny_note = f"the tiny autoencoder is not available: {str(error).splitlines()[0][:300]}"
            log.warning("%s; frames use the full DC-AE only", loaded.tiny_note)
        else:
            tiny = tiny.to(pipe.vae.device)
            # (ModelMixin.to warns on every dtype cast, even a no-op one)
            loaded.tiny_autoencoder = tiny if pipe.vae.dtype == torch.float32 else tiny.to(pipe.vae.dtype)
    return loaded


def load_tiny_autoencoder(model: str, source: str = "auto") -> TinyAutoencoder:
    """The tiny autoencoder for ``model``'s latent space, float32 on the CPU. ``source``: ``"auto"`` (deterministic
    random weights of the preview's small shapes for ``preview``, of the published shapes for ``random-full``;
    the published TAESANA files for real weights, downloaded once into the cache) or ``"ENCODER,DECODER"``, the two
    ``.pth`` files as local paths or URLs. Raises ``TinyAutoencoderLoadError`` (a file that cannot be had) or
    ``ValueError`` (a malformed ``source``)."""
    if source == "auto":
        if model in (settings.PREVIEW_MODEL, settings.RANDOM_FULL_MODEL):
            return build_random_tiny_autoencoder("preview" if model == settings.PREVIEW_MODEL else "full")
        return TinyAutoencoder.from_files()
    parts = [part.strip() for part in source.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"the tiny autoencoder must be auto, off or 'ENCODER,DECODER' (two paths or URLs), "
                         f"got {source!r}")
    return TinyAutoencoder.from_files(*parts)


@torch.no_grad()
def build_random_tiny_autoencoder(size: str, seed: int = PREVIEW_SEED) -> TinyAutoencoder:
    """``TinyAutoencoder.build_random(size)`` with its output layers rescaled to a trained one's ranges: as drawn,
    its latents spread about 0.05 (a trained encoder's about 1) and its images sit at 0 +- 0.08 in [0, 1], black
    once mapped to [-1, 1] and clamped. Rescaled on fixed inputs, latents spread about 1 (strokes reach the
    ControlNet as strongly as in the full lane) and each colour of an image about mid-grey +- 0.2.
    Deterministic for a seed."""
    tiny = TinyAutoencoder.build_random(size, seed)
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, 256, 256, generator=generator) * 2 - 1
    latents = torch.randn(1, tiny.config.latent_channels, 8, 8, generator=generator)
    encoder_out, decoder_out = tiny.encoder[-1], tiny.decoder[-1]  # the last convolutions
    spread = tiny.encode(image).latents.std()
    encoder_out.weight.div_(spread)
    encoder_out.bias.div_(spread)
    pixels = tiny.decoder(latents)  # [0, 1] space, before the mapping to [-1, 1]
    # per colour channel: the spread over the image, not the channels' offsets from each other, becomes 0.2
    gain = 0.2 / pixels.std(dim=(0, 2, 3))
    decoder_out.weight.mul_(gain[:, None, None, None])
    decoder_out.bias.mul_(gain).add_(0.5 - pixels.mean(dim=(0, 2, 3)) * gain)
    return tiny


def swap_in_lite_decoder(pipe: SanaSprintControlNetPipeline, source: str) -> None:
    """DC-AE-Lite keeps the DC-AE's encoder and publishes a lighter decoder: load its ``AutoencoderDC`` (hub id or
    diffusers folder) and put its decoder in the pipeline's DC-AE, whose config then describes it. Raises
    ModelLoadError when it cannot load or does not share the pipeline's latent space."""
    try:
        lite = AutoencoderDC.from_pretrained(source, torch_dtype=pipe.vae.dtype)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_offline_help(source, error, "DC-AE-Lite")) from error
    vae = pipe.vae
    for key in ("latent_channels", "scaling_factor"):
        if lite.config[key] != vae.config[key]:
            raise ModelLoadError(f"the DC-AE-Lite {source!r} has {key} {lite.config[key]}, the model's DC-AE "
                                 f"{vae.config[key]}: it does not decode this model's latents")
    vae.decoder = lite.decoder
    vae.register_to_config(**{key: value for key, value in lite.config.items() if key.startswith("decoder_")})
    log.info("full-lane decoder: DC-AE-Lite from %s", source)


def attach_controlnet(loaded: LoadedPipeline, source: str, wiring: str = settings.CONTROLNET_WIRING) -> None:
    """Loads a ControlNet in the transformer's dtype, on its device, and plugs it in (raises ModelLoadError).
    ``wiring``: "auto" (the checkpoint's own) or one of ``settings.CONTROLNET_WIRINGS``; weights run with another
    wiring than they were trained with are logged as a warning (and the UI's ControlNet note says it)."""
    pipe = loaded.pipe
    controlnet, report = load_controlnet(source, pipe.transformer.config, pipe.transformer.dtype, wiring)
    if report.warning is not None:
        log.warning("ControlNet %s: %s", source, report.warning)
    base, config = pipe.transformer.config, controlnet.config  # e.g. one trained on the preview (train_controlnet)
    if (config.num_attention_heads * config.attention_head_dim, config.caption_channels) != (
        base.num_attention_heads * base.attention_head_dim, base.caption_channels
    ):
        raise ModelLoadError(f"the ControlNet {source!r} does not fit the {loaded.model_name} transformer's shapes")
    pipe.register_modules(controlnet=controlnet.to(pipe.transformer.device))
    loaded.controlnet_report = report


def load_controlnet(source: str, base_config, dtype: torch.dtype, wiring: str = settings.CONTROLNET_WIRING
                    ) -> tuple[SanaSprintControlNetModel, LoadReport]:
    """``checkpoints.load_controlnet`` (an NVlabs ``.pth``, a diffusers folder or a hub id), its failures turned
    into a ModelLoadError that says what to do."""
    try:
        return checkpoints.load_controlnet(source, dict(base_config), dtype, wiring)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_offline_help(source, error, "ControlNet")) from error


def _load_sprint_weights(model: str, dtypes: dict[str, torch.dtype]) -> SanaSprintControlNetPipeline:
    try:  # each component loaded in its own dtype: bf16 weights never pass through fp16
        base = SanaSprintPipeline.from_pretrained(model, dtype=dtypes)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_offline_help(model, error, "SANA-Sprint")) from error
    components = {k: v for k, v in base.components.items() if k in ("tokenizer", "text_encoder", "vae",
                                                                        "transformer", "scheduler")}
    components["tokenizer"].padding_side = "right"  # Sana pads Gemma prompts on the right
    return SanaSprintControlNetPipeline(**components)


def _offline_help(source: str, error: Exception, what: str) -> str:
    if source.startswith(("/", "./", "../", "~")) or Path(source).suffix == ".pth":
        state = "exists but could not be read" if Path(source).expanduser().exists() else "does not exist"
        return (
            f"could not load the {what} weights {source!r}: that local path {state} "
            f"({type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}). Pass a folder in "
            f"diffusers format (or a .pth file for a ControlNet), a hub id, or --model {settings.PREVIEW_MODEL}."
        )
    offline = os.getenv("HF_HUB_OFFLINE") == "1"
    tried = ("a local folder/file and the Hugging Face cache" if offline
             else "a local folder/file, the cache and the hub")
    return (
        f"could not load the {what} weights {source!r} (tried {tried}): {type(error).__name__}: "
        f"{str(error).splitlines()[0][:300] if str(error) else ''}\n"
        f"To run offline, download them on a machine with network (`hf download {source} --local-dir DIR`), "
        f"copy DIR here and pass its path, or set HF_HUB_OFFLINE=1 with a filled cache; "
        f"or run the CPU preview model with --model {settings.PREVIEW_MODEL}."
    )
