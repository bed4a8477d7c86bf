"""``TinyAutoencoder``: TAESANA, a tiny autoencoder for Sana's 32-channel, 32x-compressed latent space.

TAESANA (``taesana_encoder.pth`` / ``taesana_decoder.pth`` in the MIT-licensed ``madebyollin/taesd`` repository)
is distilled from the DC-AE ``dc-ae-f32c32-sana-1.0``. It is plain 3x3 convolutions with ReLU residual blocks,
a small fraction of the DC-AE's arithmetic (``sprint_demo.tools.autoencoder_bench.component_flops`` counts both;
figures: docs/PERFORMANCE.md, "The tiny autoencoder lane"). It trades fine detail for speed: right while a stroke
is being drawn, wrong for the frame a user keeps.

Architecture (as the published state dicts show it; the idea adapted from ``taesd.py`` in ``madebyollin/taesd``,
the code written here). No diffusers class represents it: ``AutoencoderTiny``'s encoder starts with a stride-1
convolution and compresses 8x, while this one starts with a 32x stem of two stride-2 convolutions.

* ``ResidualBlock(n)``: ``relu(conv(relu(conv(relu(conv(x))))) + x)``, all 3x3, n -> n channels.
* Encoder: conv(3->32, stride 2), ReLU, conv(32->64, stride 2), ReLU, block(64), then three times
  [conv(64->64, stride 2, no bias), block(64) x 3], then conv(64->32): (B, 3, H, W) -> (B, 32, H/32, W/32).
* Decoder: ``tanh(z / 3) * 3``, conv(32->256), ReLU, then five stages [block x 3, 2x nearest upsample,
  conv (no bias)] through 256 -> 128 -> 64 -> 64 -> 64 -> 64 channels, then block(64), conv(64->3).
* ``.encoder`` and ``.decoder`` are ``nn.Sequential``s whose state dict keys are exactly the published files'
  (``0.weight``, ``4.conv.2.bias``, ...): they load them with ``strict=True``.

Interface: diffusers' ``AutoencoderTiny`` conventions. Images are in [-1, 1] in and out (TAESD itself works on
[0, 1]; the conversion is inside); ``encode(x).latents`` and ``decode(z).sample``; ``config.scaling_factor`` is
1.0, so a caller that multiplies encoder output by the scaling factor (and divides before decoding), as it does
for the DC-AE (``vae.encode(x).latent * scaling_factor``), gets the same latent space from both.

Latent convention: TAESANA latents are the transformer's latents, i.e. DC-AE latents already multiplied by the
DC-AE's ``scaling_factor`` (0.41407), with no offset; ``config.scaling_factor`` is therefore 1.0. That is TAESD's
documented convention (its latents are the big VAE's latents times that VAE's scaling factor), and the published
weights agree with it: their latents have about unit variance, where unscaled DC-AE latents would spread about
1 / 0.41407 = 2.4 times wider, and the decoder's input soft clamp (``tanh(z / 3) * 3``) squashes only their
tails. The measurements behind this, and what is not yet checked (element-wise agreement with the DC-AE's scaled
latents, and the Sana 1.1 DC-AE of SANA-Sprint sharing the Sana 1.0 latent space): docs/PERFORMANCE.md,
"The tiny autoencoder's latent convention".
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import urllib.parse
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTinyOutput
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

log = logging.getLogger(__name__)

# The files as published (madebyollin/taesd at the commit that added them), and their git blob ids in that
# commit: a download that does not hash to its id (an error page, a truncated file) is refused.
PUBLISHED_COMMIT = "2a1b4149efda2cb6da482e8d3ff017bdb4f98fc3"
PUBLISHED_ENCODER_URL = f"https://raw.githubusercontent.com/madebyollin/taesd/{PUBLISHED_COMMIT}/taesana_encoder.pth"
PUBLISHED_DECODER_URL = f"https://raw.githubusercontent.com/madebyollin/taesd/{PUBLISHED_COMMIT}/taesana_decoder.pth"
_PUBLISHED_GIT_BLOBS = {
    PUBLISHED_ENCODER_URL: "7e6354ea9e818c2fe56d3e80070a9e5e8a37be2f",
    PUBLISHED_DECODER_URL: "aa645f9d0a0a1c6b5ed1fc5b446e764af4843a9f",
}
RANDOM_SEED = 0  # the random variants' weights: fixed, so every run sees the same model


class TinyAutoencoderLoadError(OSError):
    """A TAESANA weights file could not be found, downloaded or loaded; the message names it and says what to do."""


# --- Architecture ---------------------------------------------------------------------------------------------

def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class ResidualBlock(nn.Module):
    """Three 3x3 convolutions with ReLUs between them, added to the input, then a ReLU. The convolutions sit at
    ``conv.0``, ``conv.2`` and ``conv.4``: the published key names."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv3x3(channels, channels), nn.ReLU(), _conv3x3(channels, channels), nn.ReLU(),
            _conv3x3(channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + x)


class SoftClamp(nn.Module):
    """``tanh(z / 3) * 3``: latents pass nearly unchanged in [-2, 2] and are bounded by +-3."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / 3) * 3


def build_encoder(latent_channels: int = 32, stem_channels: int = 32, channels: int = 64,
                  blocks_per_stage: int = 3) -> nn.Sequential:
    """[0, 1] image (B, 3, H, W) -> latents (B, latent_channels, H/32, W/32): a 4x stem, then three 2x stages."""
    layers: list[nn.Module] = [
        _conv3x3(3, stem_channels, stride=2), nn.ReLU(), _conv3x3(stem_channels, channels, stride=2), nn.ReLU(),
        ResidualBlock(channels),
    ]
    for _ in range(3):
        layers.append(_conv3x3(channels, channels, stride=2, bias=False))
        layers.extend(ResidualBlock(channels) for _ in range(blocks_per_stage))
    layers.append(_conv3x3(channels, latent_channels))
    return nn.Sequential(*layers)


def build_decoder(latent_channels: int = 32, channels: tuple[int, ...] = (256, 128, 64, 64, 64, 64),
                  blocks_per_stage: int = 3) -> nn.Sequential:
    """Latents (B, latent_channels, h, w) -> [0, 1]-ish image (B, 3, 32h, 32w): five 2x stages."""
    if len(channels) != 6:
        raise ValueError(f"the decoder has five upsampling stages, so channels needs 6 widths, got {channels!r}")
    layers: list[nn.Module] = [SoftClamp(), _conv3x3(latent_channels, channels[0]), nn.ReLU()]
    for width, next_width in itertools.pairwise(channels):
        layers.extend(ResidualBlock(width) for _ in range(blocks_per_stage))
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv3x3(width, next_width, bias=False)]
    layers += [ResidualBlock(channels[-1]), _conv3x3(channels[-1], 3)]
    return nn.Sequential(*layers)


def tiny_autoencoder_config(size: str) -> dict:
    """``"full"``: the published TAESANA shapes. ``"preview"``: the same structure (32x, 32 latent channels), a
    few channels and one block per stage, for the CPU preview model."""
    if size == "full":
        return dict(latent_channels=32, encoder_stem_channels=32, encoder_channels=64, encoder_blocks_per_stage=3,
                    decoder_channels=(256, 128, 64, 64, 64, 64), decoder_blocks_per_stage=3)
    if size == "preview":
        return dict(latent_channels=32, encoder_stem_channels=8, encoder_channels=16, encoder_blocks_per_stage=1,
                    decoder_channels=(32, 16, 8, 8, 8, 8), decoder_blocks_per_stage=1)
    raise ValueError(f"size must be 'full' or 'preview', got {size!r}")


# --- The model ----------------------------------------------------------------------------------------------

class TinyAutoencoder(ModelMixin, ConfigMixin):
    """TAESANA with diffusers' ``AutoencoderTiny`` interface (module docstring). Either half may be absent
    (``from_files(decoder=None)``): ``has_encoder`` / ``has_decoder`` say which, and using an absent half raises
    a ``RuntimeError`` that says how to load it."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 32,
        encoder_stem_channels: int = 32,
        encoder_channels: int = 64,
        encoder_blocks_per_stage: int = 3,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 64, 64, 64),
        decoder_blocks_per_stage: int = 3,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        self.encoder = build_encoder(latent_channels, encoder_stem_channels, encoder_channels,
                                     encoder_blocks_per_stage)
        self.decoder = build_decoder(latent_channels, tuple(decoder_channels), decoder_blocks_per_stage)

    @property
    def has_encoder(self) -> bool:
        return self.encoder is not None

    @property
    def has_decoder(self) -> bool:
        return self.decoder is not None

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderTinyOutput | tuple[torch.Tensor]:
        """Images (B, 3, H, W) in [-1, 1] -> ``.latents`` (B, 32, H/32, W/32), the transformer's latents."""
        if self.encoder is None:
            raise RuntimeError("this TinyAutoencoder was loaded without an encoder: pass the encoder's path or URL "
                               "to TinyAutoencoder.from_files(encoder=...) to encode images")
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"encode expects a (B, 3, H, W) image tensor in [-1, 1], got {_describe(x)}")
        latents = self.encoder(x.add(1).div(2))  # TAESD works on [0, 1] images
        return AutoencoderTinyOutput(latents=latents) if return_dict else (latents,)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Latents (B, 32, h, w) -> ``.sample`` images (B, 3, 32h, 32w), clamped to [-1, 1]."""
        if self.decoder is None:
            raise RuntimeError("this TinyAutoencoder was loaded without a decoder: pass the decoder's path or URL "
                               "to TinyAutoencoder.from_files(decoder=...) to decode latents")
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"decode expects (B, {self.config.latent_channels}, h, w) latents, got {_describe(z)}")
        image = self.decoder(z).mul(2).sub(1).clamp(-1, 1)  # [0, 1] -> [-1, 1]; TAESD's reference clamps too
        return DecoderOutput(sample=image) if return_dict else (image,)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Encode then decode (a round trip through the latent space)."""
        return self.decode(self.encode(sample).latents, return_dict=return_dict)

    # --- Construction ---------------------------------------------------------------------------------------

    @classmethod
    def build_random(cls, size: str = "full", seed: int = RANDOM_SEED) -> TinyAutoencoder:
        """Random weights of the ``"full"`` (published) or ``"preview"`` shapes, deterministic for a seed (on the
        CPU; the global RNG is left as it was). Build under ``with torch.device(...)`` to build on a device."""
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = cls(**tiny_autoencoder_config(size))
        finally:
            torch.random.set_rng_state(state)
        return model.eval()

    @classmethod
    def from_files(
        cls,
        encoder: str | Path | None = PUBLISHED_ENCODER_URL,
        decoder: str | Path | None = PUBLISHED_DECODER_URL,
        *,
        cache_dir: str | Path | None = None,
    ) -> TinyAutoencoder:
        """The published TAESANA halves (the defaults: their URLs), or local paths / other URLs. A URL is
        downloaded once into ``cache_dir`` (default: torch.hub's ``<hub dir>/checkpoints``) and read from there
        afterwards (found by file name, as torch.hub does): ``resolve_weights_file``. ``None`` leaves that half out.
        Weights load with ``strict=True`` into float32 modules on the CPU (``.to()`` moves them). Raises
        ``TinyAutoencoderLoadError``."""
        if encoder is None and decoder is None:
            raise ValueError("from_files needs an encoder, a decoder or both; both were None")
        model = cls(**tiny_autoencoder_config("full"))  # every weight is overwritten below or dropped
        for name, source in (("encoder", encoder), ("decoder", decoder)):
            if source is None:
                setattr(model, name, None)
                continue
            path = resolve_weights_file(source, cache_dir=cache_dir)
            try:
                state_dict = torch.load(path, map_location="cpu", weights_only=True)
                getattr(model, name).load_state_dict(state_dict, strict=True)
            except Exception as error:  # unpickling and key/shape mismatches raise several types
                raise TinyAutoencoderLoadError(
                    f"{path} is not a TAESANA {name} state dict ({type(error).__name__}: "
                    f"{str(error).splitlines()[0][:300] if str(error) else ''})"
                ) from error
        return model.eval()


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"


# --- Weights files ------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """Where downloaded weights are kept: torch.hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights_file(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local path as is; an http(s) URL -> its copy in the cache folder, downloaded if absent (``_download``). A
    published file must hash to its published git blob id."""
    text = str(source)
    if urllib.parse.urlparse(text).scheme not in ("http", "https"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise TinyAutoencoderLoadError(
                f"TAESANA weights {text!r}: no such file (pass a local .pth path or an http(s) URL)")
        return path
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = Path(urllib.parse.urlparse(text).path).name
    if not name:
        raise TinyAutoencoderLoadError(f"TAESANA weights URL {text!r} does not end in a file name")
    destination = folder / name
    if destination.is_file():
        return destination
    folder.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", text, destination)
    try:
        _download(text, destination)
    except Exception as error:  # offline, HTTP errors, a stalled connection (timeout), a full disk...
        raise TinyAutoencoderLoadError(
            f"could not download the TAESANA weights {text!r} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Offline: download "
            f"the file on a machine with network, copy it here and pass its path, or put it at {destination}."
        ) from error
    expected = _PUBLISHED_GIT_BLOBS.get(text)
    if expected is not None and _git_blob_id(destination) != expected:
        destination.unlink()
        raise TinyAutoencoderLoadError(f"the file downloaded from {text!r} is not the published one "
                                       f"(git blob id differs from {expected}); it was removed, try again")
    return destination


def _download(url: str, destination: Path) -> None:
    """``url`` -> ``destination`` through huggingface_hub's downloader (``http_get``), into a temporary file renamed
    at the end (an interrupted download leaves no partial file to be taken for the weights). The files are on
    GitHub, not the Hub, so the Hub's own ``hf_hub_download`` does not apply; ``http_get`` brings its progress bar
    (``HF_HUB_DISABLE_PROGRESS_BARS`` hides it), resumes a dropped connection a few times, and gives up on a
    connection that sends nothing for ``HF_HUB_DOWNLOAD_TIMEOUT`` seconds (default 10) at each try: a start-up
    never waits forever (torch.hub's downloader would)."""
    from huggingface_hub.file_download import http_get

    partial = destination.with_name(destination.name + ".partial")
    try:
        with open(partial, "wb") as file:
            http_get(url, file, displayed_filename=destination.name)
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)


def _git_blob_id(path: Path) -> str:
    """The id git gives a file's contents: sha1 of ``b"blob <size>\\0"`` + the bytes."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
