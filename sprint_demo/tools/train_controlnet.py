"""Train a SANA-Sprint-native HED ControlNet with ``accelerate``: ``python -m sprint_demo.tools.train_controlnet``.

Only the ControlNet trains; the Sprint transformer, the text encoder and the autoencoder are frozen. The loss is
one SCM step of the frozen student at the times its sampler visits (``predict_batch``), regressed on the paired
image's latent (``latent_loss``). Each sample's noise and time come from a generator keyed by (seed, epoch, sample
id), so a sample gets the same noise whichever rank, batch or restart it lands in (``sample_key``,
``EpochSampler``). The result is a diffusers-format folder the app loads with ``--controlnet DIR``.

The objective and why, data layout, multi-GPU and multi-node runs, resuming and a compute estimate:
docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from .. import settings
from ..conditioning import load_hed_detector, photo_to_control_map
from ..models.controlnet import ControlInputs, SanaSprintControlNetModel
from ..models.pipeline import MAX_TIMESTEPS, TWO_STEP_INTERMEDIATE_TIMESTEPS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CHECKPOINTS = "checkpoints"  # under --output: step_000100/ ... (accelerator.save_state folders)
TRAINER_STATE = "trainer_state.json"  # in each checkpoint folder: step, epoch, batches consumed
LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "train_summary.json"


# --- The one-step prediction ------------------------------------------------------------------------------

def predict_clean_latent(
    pipe,
    x_t: torch.Tensor,
    t: torch.Tensor,
    prompt_embeds: torch.Tensor,
    prompt_attention_mask: torch.Tensor,
    guidance: torch.Tensor | None,
    control: ControlInputs | None,
) -> torch.Tensor:
    """TrigFlow latent ``x_t`` (B, C, h, w) at TrigFlow times ``t`` (B,) -> predicted clean latent (TrigFlow scale,
    float32): the pipeline's own model evaluation (``predict_velocity``, which carries no ``no_grad``) and
    SCMScheduler's trigflow estimate ``cos t * x_t - sin t * velocity``."""
    velocity = pipe.predict_velocity(x_t, t, prompt_embeds, prompt_attention_mask, guidance, control)
    t = t.view(-1, 1, 1, 1)
    return torch.cos(t) * x_t - torch.sin(t) * velocity


class _Branch:
    """What ``ControlInputs.controlnet`` is called as during training: the config and patch embedding of the
    ControlNet, the forward through its (possibly DistributedDataParallel) wrapper so gradients are synced."""

    def __init__(self, wrapped: torch.nn.Module, model: SanaSprintControlNetModel) -> None:
        self.wrapped, self.config, self.patch_embed = wrapped, model.config, model.patch_embed

    def __call__(self, *args, **kwargs):
        return self.wrapped(*args, **kwargs)


def sample_key(seed: int, epoch: int, sample_id: str) -> int:
    digest = hashlib.sha256(f"{seed}/{epoch}/{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def draw_noise_and_times(
    keys: Sequence[int], shape: tuple[int, ...], times: Sequence[float], probs: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample noise (B, *shape) and TrigFlow times (B,), each from a generator seeded by the sample's key."""
    noises, picked = [], []
    cumulative = np.cumsum(probs) / np.sum(probs)
    for key in keys:
        generator = torch.Generator().manual_seed(key)
        u = torch.rand((), generator=generator).item()
        picked.append(times[min(int(np.searchsorted(cumulative, u, side="right")), len(times) - 1)])
        noises.append(torch.randn(shape, generator=generator))
    return torch.stack(noises), torch.tensor(picked, dtype=torch.float32)


@torch.no_grad()
def encode_batch(pipe, batch: dict, cache: dict | None = None) -> tuple[torch.Tensor, ...]:
    """The frozen encoders on one batch -> (image latents, control latents, prompt embeddings, prompt mask), the
    latents as ``prepare_control_latents`` (the app's own encode) returns them. With ``cache`` (a dict), each
    sample's latents and each caption's embeddings are computed once and kept (small data sets, many epochs)."""
    device = pipe._execution_device
    height, width = batch["image"].shape[-2:]
    ids, captions = list(batch["id"]), list(batch["caption"])
    cache = {} if cache is None else cache
    todo = [i for i, sample_id in enumerate(ids) if ("latents", sample_id) not in cache]
    if todo:
        pixels = torch.cat([batch["image"][todo], batch["control"][todo]]).to(device)
        latents = pipe.prepare_control_latents(pixels, height, width)
        for n, i in enumerate(todo):
            cache["latents", ids[i]] = (latents[n], latents[len(todo) + n])
    for caption in sorted({c for c in captions if ("caption", c) not in cache}):
        encoded = pipe.prompt_encoder(caption)  # as the app's engine encodes prompts: the trained instruction first
        cache["caption", caption] = (encoded.embeds[0], encoded.mask[0])
    images, controls = (torch.stack(parts) for parts in zip(*(cache["latents", i] for i in ids)))
    embeds, mask = (torch.stack(parts) for parts in zip(*(cache["caption", c] for c in captions)))
    return images, controls, embeds, mask


def predict_batch(
    pipe,
    controlnet: SanaSprintControlNetModel | _Branch,
    batch: dict,
    keys: Sequence[int],
    times: Sequence[float] = (MAX_TIMESTEPS, TWO_STEP_INTERMEDIATE_TIMESTEPS),
    probs: Sequence[float] | None = None,
    guidance_scale: float = settings.DEFAULT_GUIDANCE,
    shuffle_control: bool = False,
    cache: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noises one batch (images and control maps in [-1, 1], captions) at its samples' times and predicts the
    clean latent with the ControlNet steering. Returns (prediction, target), TrigFlow scale. ``shuffle_control``
    rolls the control latents by one within the batch, so each image gets another image's map."""
    device = pipe._execution_device
    sigma_data = pipe.scheduler.config.sigma_data
    image_latents, control_latents, embeds, mask = encode_batch(pipe, batch, cache)
    x0 = image_latents.float() * sigma_data
    if shuffle_control:
        control_latents = control_latents.roll(1, dims=0)
    noise, t = draw_noise_and_times(keys, tuple(x0.shape[1:]), times, probs or [1.0] * len(times))
    noise, t = noise.to(device), t.to(device)
    x_t = torch.cos(t).view(-1, 1, 1, 1) * x0 + torch.sin(t).view(-1, 1, 1, 1) * noise * sigma_data
    guidance = None
    if pipe.transformer.config.guidance_embeds:
        guidance = torch.full((x0.shape[0],), guidance_scale, device=device, dtype=embeds.dtype)
        guidance = guidance * pipe.transformer.config.guidance_embeds_scale
    control = ControlInputs(controlnet, control_latents, 1.0)
    return predict_clean_latent(pipe, x_t, t, embeds, mask, guidance, control), x0


def latent_loss(prediction: torch.Tensor, target: torch.Tensor, sigma_data: float, per_sample: bool = False):
    """MSE in VAE-latent units (the TrigFlow latents divided by sigma_data)."""
    error = ((prediction - target) / sigma_data) ** 2
    return error.mean(dim=(1, 2, 3)) if per_sample else error.mean()


def control_loss(pipe, controlnet, batch: dict, keys: Sequence[int], per_sample: bool = False, **kwargs):
    """The default training loss of one batch (``predict_batch`` keyword arguments pass through)."""
    prediction, target = predict_batch(pipe, controlnet, batch, keys, **kwargs)
    return latent_loss(prediction, target, pipe.scheduler.config.sigma_data, per_sample)


# --- ControlNet initialisation -------------------------------------------------------------------------------

def init_controlnet(pipe, init: str, wiring: str) -> tuple[SanaSprintControlNetModel, str]:
    """``zero``: the base's first blocks copied, projections zero. Otherwise a ControlNet loaded through the
    app's loader (hub id, diffusers folder or NVlabs .pth) and adapted to the Sprint base. Returns (model, note)."""
    transformer = pipe.transformer
    if init == "zero":
        model = SanaSprintControlNetModel.from_transformer(transformer, wiring=wiring)
        return model.float(), f"zero-initialised from the first {model.config.num_layers} base blocks ({wiring})"
    from ..models.loading import load_controlnet

    loaded, report = load_controlnet(init, transformer.config, torch.float32)
    model, copied = adapt_to_sprint(loaded, transformer)
    return model, f"{report.description}; {copied}"


def adapt_to_sprint(
    loaded: SanaSprintControlNetModel, transformer
) -> tuple[SanaSprintControlNetModel, str]:
    """A loaded ControlNet made to fit the Sprint base: a Sprint-native one is kept as is; a Sana 1.0 one (no
    qk_norm, flow time, no guidance) keeps its blocks, input and output projections, and gets the Sprint time
    embedding and the base's qk norms (its own time embedding was trained on another time scale)."""
    base = transformer.config
    inner = loaded.config.num_attention_heads * loaded.config.attention_head_dim
    base_inner = base.num_attention_heads * base.attention_head_dim
    if inner != base_inner or loaded.config.caption_channels != base.caption_channels:
        raise ValueError(
            f"the ControlNet (width {inner}, caption channels {loaded.config.caption_channels}) does not fit the "
            f"base transformer (width {base_inner}, caption channels {base.caption_channels})"
        )
    sprint_like = (
        loaded.config.guidance_embeds == base.guidance_embeds
        and loaded.config.qk_norm == base.qk_norm
        and loaded.config.timestep_scale == 1.0
    )
    if sprint_like:
        return loaded.float(), "kept as is (Sprint-native)"
    model = SanaSprintControlNetModel.from_transformer(
        transformer, num_layers=loaded.config.num_layers, wiring=loaded.config.wiring
    ).float()
    target = model.state_dict()
    copied = {k: v for k, v in loaded.state_dict().items()
              if not k.startswith("time_embed.") and k in target and target[k].shape == v.shape}
    model.load_state_dict(copied, strict=False)
    note = f"adapted to Sprint: {len(copied)} of {len(target)} tensors from the checkpoint, the rest from the base"
    return model, note


def enable_gradient_checkpointing(*block_lists: torch.nn.ModuleList) -> None:
    """Recompute each block's activations in the backward pass (ControlNet blocks and the frozen base blocks
    the gradient flows back through). Patches the instances' forward: parameter names do not change."""
    for blocks in block_lists:
        for block in blocks:
            forward = block.forward

            def checkpointed(*args, _forward=forward, **kwargs):
                if not torch.is_grad_enabled():
                    return _forward(*args, **kwargs)
                return activation_checkpoint(_forward, *args, use_reentrant=False, **kwargs)

            block.forward = checkpointed


# --- Data -----------------------------------------------------------------------------------------------------

def square_image(image: Image.Image, resolution: int) -> Image.Image:
    """Centre crop to a square, then resize to ``resolution``."""
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image if side == resolution else image.resize((resolution, resolution), Image.Resampling.LANCZOS)


def to_model_range(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 in [-1, 1] (x / 255 * 2 - 1, as the pipeline's preprocessing)."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0 * 2.0 - 1.0).permute(2, 0, 1).contiguous()


class ControlPairs:
    """Turns (id, PIL image, caption) into a training sample with the app's own control map, optionally cached."""

    def __init__(self, resolution: int, thickness: int, detector_mode: str, cache_dir: str | None) -> None:
        self.resolution, self.thickness, self.detector_mode = resolution, thickness, detector_mode
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._detector = None

    @property
    def detector(self):
        if self._detector is None:
            self._detector = load_hed_detector(self.detector_mode)
        return self._detector

    def control_map(self, sample_id: str, image: Image.Image) -> Image.Image:
        cached = None
        if self.cache_dir is not None:
            key = hashlib.sha1(f"{sample_id}|{self.resolution}|{self.thickness}|{self.detector_mode}".encode())
            cached = self.cache_dir / f"{key.hexdigest()}.png"
            if cached.exists():
                return Image.open(cached).convert("RGB")
        control = photo_to_control_map(image, self.thickness, (self.resolution, self.resolution), self.detector)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial_file = cached.with_suffix(f".{os.getpid()}.tmp")
            control.save(partial_file, format="PNG")
            os.replace(partial_file, cached)  # atomic: ranks may write the same file
        return control

    def sample(self, index: int, sample_id: str, image: Image.Image, caption: str) -> dict:
        image = square_image(image, self.resolution)
        control = self.control_map(sample_id, image)
        return {"index": index, "id": sample_id, "image": to_model_range(image), "control": to_model_range(control),
                "caption": caption}


class FolderDataset(torch.utils.data.Dataset):
    """``folder/**/name.png`` (or .jpg/.jpeg/.webp) with ``folder/**/name.txt`` holding its caption."""

    def __init__(self, folder: str | Path, pairs: ControlPairs) -> None:
        self.folder, self.pairs = Path(folder), pairs
        if not self.folder.is_dir():
            raise ValueError(f"--data {str(folder)!r} is not a folder (and not a dataset id)")
        self.files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"--data {str(folder)!r} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        missing = [str(p) for p in self.files if not p.with_suffix(".txt").exists()]
        if missing:
            raise ValueError(f"{len(missing)} images have no same-named .txt caption, e.g. {missing[0]!r}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        sample_id = str(path.relative_to(self.folder).with_suffix(""))
        caption = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
        with Image.open(path) as image:
            return self.pairs.sample(index, sample_id, image, caption)


def _import_datasets():
    try:
        import datasets
    except ImportError as error:
        raise SystemExit(
            "--data names a Hugging Face dataset, which needs the optional `datasets` package: "
            "python3 -m pip install datasets (or pass a folder of images with same-named .txt captions)"
        ) from error
    return datasets


class HubDataset(torch.utils.data.Dataset):
    """A ``datasets`` dataset (map-style) with an image column and a caption column."""

    def __init__(self, data, pairs: ControlPairs, image_column: str, caption_column: str) -> None:
        for column in (image_column, caption_column):
            if column not in data.column_names:
                raise ValueError(f"the dataset has no column {column!r} (columns: {data.column_names})")
        self.data, self.pairs, self.image_column, self.caption_column = data, pairs, image_column, caption_column

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        row = self.data[int(index)]
        return self.pairs.sample(index, str(index), row[self.image_column], str(row[self.caption_column]))


class StreamingDataset(torch.utils.data.IterableDataset):
    """A streaming ``datasets`` dataset (large sets, webdataset shards): read in order, shuffled in a buffer."""

    def __init__(self, data, pairs: ControlPairs, image_column: str, caption_column: str, seed: int) -> None:
        self.data, self.pairs, self.image_column, self.caption_column = data, pairs, image_column, caption_column
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        stream = self.data.shuffle(seed=self.seed + self.epoch, buffer_size=1000)
        for index, row in enumerate(stream):
            yield self.pairs.sample(index, f"{self.epoch}/{index}", row[self.image_column],
                                    str(row[self.caption_column]))


class EpochSampler(torch.utils.data.Sampler):
    """A permutation seeded by (seed, epoch), the same on every rank, cut to a multiple of ``multiple`` (the
    global batch times the accumulation steps) so every rank sees whole batches and no batch wraps around."""

    def __init__(self, size: int, seed: int, multiple: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.multiple, self.shuffle, self.epoch = size, seed, multiple, shuffle, 0
        if size < multiple:
            raise ValueError(
                f"the data set has {size} samples, fewer than one step needs (batch size x processes x "
                f"accumulation = {multiple})"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.multiple * self.multiple

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(len(self)))
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return iter(order[: len(self)].tolist())


def build_dataset(args, pairs: ControlPairs):
    if Path(args.data).exists():
        return FolderDataset(args.data, pairs)
    datasets = _import_datasets()
    data = datasets.load_dataset(args.data, args.dataset_config, split=args.split, streaming=args.streaming)
    if args.streaming:
        return StreamingDataset(data, pairs, args.image_column, args.caption_column, args.seed)
    return HubDataset(data, pairs, args.image_column, args.caption_column)


# --- A small generated data set ------------------------------------------------------------------------------

_BACKGROUNDS = {"white": (245, 245, 240), "grey": (200, 200, 200), "yellow": (245, 230, 150), "blue": (170, 200, 240)}
_COLOURS = {"red": (200, 30, 30), "blue": (30, 60, 200), "green": (30, 140, 50), "black": (20, 20, 20),
            "orange": (230, 120, 20), "purple": (120, 40, 160)}
_SHAPES = ("circle", "square", "triangle")


def make_demo_data(folder: str | Path, count: int, size: int = 256, seed: int = 0) -> list[Path]:
    """Writes ``count`` images of one to three dark, outlined shapes on a light background, each with a caption
    saying what is where ("a red circle at the top left and a blue square on a white background"). The shapes
    are darker than every background, so their outlines (what the control map keeps) say where the image
    changes and in which direction: a ControlNet can learn from a few dozen pairs. Deterministic."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written = []
    for number in range(count):
        background = rng.choice(list(_BACKGROUNDS))
        image = Image.new("RGB", (size, size), _BACKGROUNDS[background])
        draw = ImageDraw.Draw(image)
        parts = []
        for _ in range(rng.randint(1, 3)):
            colour, shape = rng.choice(list(_COLOURS)), rng.choice(_SHAPES)
            radius = rng.randint(size // 8, size // 4)
            cx, cy = rng.randint(radius, size - radius), rng.randint(radius, size - radius)
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            style = dict(fill=_COLOURS[colour], outline=(0, 0, 0), width=max(1, size // 128))
            if shape == "circle":
                draw.ellipse(box, **style)
            elif shape == "square":
                draw.rectangle(box, **style)
            else:
                draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], **style)
            where = ("top" if cy < size / 3 else "bottom" if cy > 2 * size / 3 else "middle") + " " + (
                "left" if cx < size / 3 else "right" if cx > 2 * size / 3 else "centre")
            parts.append(f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape} at the {where}")
        path = folder / f"shape_{number:05d}.png"
        image.save(path)
        caption = " and ".join(parts) + f" on a {background} background\n"
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
        written.append(path)
    return written


# --- Validation images ---------------------------------------------------------------------------------------

@torch.no_grad()
def validation_grid(pipe, samples: list[dict], guidance_scale: float, seed: int) -> Image.Image:
    """One row per sample: control map | 1-step image | 2-step image | the training image."""
    rows = []
    for sample in samples:
        res = sample["image"].shape[-1]
        control_latents = pipe.prepare_control_latents(sample["control"][None], res, res)
        row = [_to_pil(sample["control"])]
        for steps in (1, 2):
            row.append(pipe(
                prompt=sample["caption"], num_inference_steps=steps, height=res, width=res,
                guidance_scale=guidance_scale, use_resolution_binning=False,
                generator=torch.Generator().manual_seed(seed), control_latents=control_latents,
            ).images[0])
        row.append(_to_pil(sample["image"]))
        rows.append(row)
    side = rows[0][0].width
    grid = Image.new("RGB", (side * 4, side * len(rows)))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid.paste(image.resize((side, side)), (c * side, r * side))
    return grid


def _to_pil(tensor: torch.Tensor) -> Image.Image:
    array = ((tensor.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


# --- Training ------------------------------------------------------------------------------------------------

def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def latest_checkpoint(output: Path) -> Path:
    folders = sorted((output / CHECKPOINTS).glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    folders = [p for p in folders if (p / TRAINER_STATE).exists()]
    if not folders:
        raise SystemExit(f"--resume latest: no checkpoint in {output / CHECKPOINTS}")
    return folders[-1]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sprint_demo.tools.train_controlnet",
                                description=__doc__.split("\n")[0])
    p.add_argument("--model", default=settings.PREVIEW_MODEL, help="preview, or Sprint weights (hub id / folder)")
    p.add_argument("--init", default="zero", help="zero, or a ControlNet: hub id, diffusers folder or NVlabs .pth")
    p.add_argument("--wiring", choices=("nvlabs", "diffusers"), default="nvlabs", help="for --init zero")
    p.add_argument("--data", help="folder of images with same-named .txt captions, or a datasets id")
    p.add_argument("--dataset-config", default=None, help="datasets: configuration name")
    p.add_argument("--split", default="train", help="datasets: split")
    p.add_argument("--streaming", action="store_true", help="datasets: stream (large sets, webdataset shards)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--caption-column", default="text")
    p.add_argument("--make-demo-data", nargs=2, metavar=("DIR", "N"), help="write N generated pairs to DIR")
    p.add_argument("--output", help="where the ControlNet, log, validation images and checkpoints go")
    p.add_argument("--max-steps", type=int, default=1000, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=4, help="per process")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--resolution", type=int, default=settings.DEFAULT_SIZE)
    p.add_argument("--learning-rate", type=float, default=1e-4, help="NVlabs' Sana ControlNet config uses 1e-4")
    p.add_argument("--lr-warmup-steps", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="0 = no clipping")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=None,
                   help="default: what `accelerate config` says (no when unset)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--times", default=f"{MAX_TIMESTEPS},{TWO_STEP_INTERMEDIATE_TIMESTEPS}",
                   help="TrigFlow times trained on (comma list); default the 1-step and 2-step times")
    p.add_argument("--time-probs", default=None, help="probabilities of --times (comma list; default equal)")
    p.add_argument("--guidance-scale", type=float, default=settings.DEFAULT_GUIDANCE)
    p.add_argument("--decoded-loss", choices=("l1", "lpips"), default="l1")
    p.add_argument("--decoded-loss-weight", type=float, default=0.0, help="0 = off (the default)")
    p.add_argument("--thickness", type=int, default=settings.DEFAULT_THICKNESS, help="control map line thickness")
    p.add_argument("--detector", choices=("auto", "hed", "classical"), default=settings.HED_DETECTOR)
    p.add_argument("--cache-dir", default=None, help="keep computed control maps here (PNG)")
    p.add_argument("--cache-latents", action="store_true",
                   help="keep each sample's latents and each caption's embeddings in memory (small data sets)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--no-shuffle", action="store_true", help="read the data in order (tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validate-every", type=int, default=0, help="steps between validation grids (0 = off)")
    p.add_argument("--num-validation", type=int, default=4)
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between accelerate checkpoints (0 = off)")
    p.add_argument("--resume", default=None, help="a checkpoint folder, or `latest` in --output")
    p.add_argument("--log-every", type=int, default=1)
    args = p.parse_args(argv)
    if args.make_demo_data is None:
        for name in ("data", "output"):
            if getattr(args, name) is None:
                p.error(f"--{name} is required")
    args.times = [float(v) for v in args.times.split(",")]
    args.time_probs = [float(v) for v in args.time_probs.split(",")] if args.time_probs else [1.0] * len(args.times)
    if len(args.time_probs) != len(args.times) or min(args.time_probs) < 0 or sum(args.time_probs) <= 0:
        p.error(f"--time-probs {args.time_probs} must be {len(args.times)} non-negative numbers, not all zero")
    for t in args.times:
        if not 0 < t <= MAX_TIMESTEPS:
            p.error(f"--times values must be in (0, {MAX_TIMESTEPS}], got {t}")
    for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.resolution % settings.SIZE_MULTIPLE or not settings.MIN_SIZE <= args.resolution <= settings.MAX_SIZE:
        p.error(f"--resolution must be a multiple of {settings.SIZE_MULTIPLE} in [{settings.MIN_SIZE}, "
                f"{settings.MAX_SIZE}], got {args.resolution}")
    return args


def decoded_loss_fn(kind: str):
    if kind == "l1":
        return lambda a, b: (a - b).abs().mean()
    try:
        import lpips
    except ImportError as error:
        raise SystemExit("--decoded-loss lpips needs the `lpips` package (and its backbone weights)") from error
    metric = lpips.LPIPS(net="vgg").eval().requires_grad_(False)
    return lambda a, b: metric.to(a.device)(a.float(), b.float()).mean()


def train(args: argparse.Namespace) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import gather_object, set_seed

    from ..models.loading import load_pipeline

    output = Path(args.output)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        project_dir=str(output),
    )
    set_seed(args.seed)
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
    device = accelerator.device

    # Frozen parts: the whole pipeline. The preview is built on the CPU and moved.
    pipe = load_pipeline(args.model, device=str(device), dtype=weight_dtype).pipe
    for module in (pipe.transformer, pipe.text_encoder, pipe.vae):
        module.requires_grad_(False).eval()
    controlnet, init_note = init_controlnet(pipe, args.init, args.wiring)
    controlnet = controlnet.to(device).train()
    pipe.register_modules(controlnet=controlnet)  # validation images run through the app's own pipeline
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(controlnet.transformer_blocks, pipe.transformer.transformer_blocks)

    pairs = ControlPairs(args.resolution, args.thickness, args.detector, args.cache_dir)
    dataset = build_dataset(args, pairs)
    global_batch = args.batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    sampler = None if iterable else EpochSampler(len(dataset), args.seed, global_batch, not args.no_shuffle)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True, num_workers=args.num_workers,
    )
    validation = [dataset[i] for i in range(min(args.num_validation, len(dataset)))] if not iterable else []

    optimizer = torch.optim.AdamW(
        controlnet.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay, betas=(0.9, 0.999)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / args.lr_warmup_steps) if args.lr_warmup_steps else 1.0
    )
    wrapped, optimizer, loader = accelerator.prepare(controlnet, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)  # stepped here once per optimiser step, not per process
    branch = _Branch(wrapped, controlnet)
    decoded_loss = decoded_loss_fn(args.decoded_loss) if args.decoded_loss_weight else None
    sigma_data = pipe.scheduler.config.sigma_data
    cache = {} if args.cache_latents else None  # this process's samples' latents and captions' embeddings

    step, epoch, batches_done = 0, 0, 0
    if args.resume:
        folder = latest_checkpoint(output) if args.resume == "latest" else Path(args.resume)
        if not (folder / TRAINER_STATE).exists():
            raise SystemExit(f"--resume {args.resume!r}: {folder} is not a checkpoint (no {TRAINER_STATE})")
        accelerator.load_state(str(folder))
        state = json.loads((folder / TRAINER_STATE).read_text())
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_in_epoch"]
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        accelerator.print(f"ControlNet: {init_note}; {sum(p.numel() for p in controlnet.parameters()):,} "
                          f"trainable parameters; {accelerator.num_processes} processes; global batch {global_batch}")
    initial = {k: v.detach().clone() for k, v in controlnet.state_dict().items()} if step == 0 else None

    started = time.perf_counter()
    window_losses: list[float] = []
    window_ids: list[str] = []
    while step < args.max_steps:
        epoch_loader = loader
        if batches_done:
            epoch_loader = accelerator.skip_first_batches(loader, batches_done)
        epoch_loader.set_epoch(epoch)
        for batch in epoch_loader:
            keys = [sample_key(args.seed, epoch, sample_id) for sample_id in batch["id"]]
            with accelerator.accumulate(wrapped), accelerator.autocast():
                prediction, target = predict_batch(
                    pipe, branch, batch, keys, args.times, args.time_probs, args.guidance_scale, cache=cache)
                loss = latent_loss(prediction, target, sigma_data)
                if decoded_loss is not None:
                    loss = loss + args.decoded_loss_weight * decoded_loss(
                        _decode(pipe, prediction), batch["image"].to(device).float())
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(controlnet.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            batches_done += 1
            window_losses.append(loss.detach().float().item())
            window_ids.extend(batch["id"])
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            mean_loss = accelerator.reduce(torch.tensor(np.mean(window_losses), device=device), "mean").item()
            if step % args.log_every == 0 or step == args.max_steps:
                per_rank = gather_object([window_ids])
                if accelerator.is_main_process:
                    record = {"step": step, "loss": mean_loss, "num_processes": accelerator.num_processes,
                              "epoch": epoch, "lr": scheduler.get_last_lr()[0], "samples_per_rank": per_rank,
                              "elapsed_s": round(time.perf_counter() - started, 3)}
                    with open(output / LOG_FILE, "a", encoding="utf-8") as log:
                        log.write(json.dumps(record) + "\n")
            window_losses, window_ids = [], []
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                folder = output / CHECKPOINTS / f"step_{step:06d}"
                accelerator.save_state(str(folder))
                if accelerator.is_main_process:
                    (folder / TRAINER_STATE).write_text(json.dumps(
                        {"step": step, "epoch": epoch, "batches_in_epoch": batches_done}))
                accelerator.wait_for_everyone()
            if args.validate_every and step % args.validate_every == 0 and accelerator.is_main_process and validation:
                _save_validation(pipe, controlnet, validation, args, output, step, accelerator)
            if step >= args.max_steps:
                break
        else:
            epoch, batches_done = epoch + 1, 0
            continue
        break

    accelerator.wait_for_everyone()
    digests = gather_object([weights_digest(controlnet)])
    summary = {"steps": step, "num_processes": accelerator.num_processes, "global_batch": global_batch,
               "weight_sha256_per_rank": digests, "init": init_note, "train_seconds": time.perf_counter() - started}
    if initial is not None:
        summary["max_change_from_init"] = max(
            (v.float() - initial[k].float()).abs().max().item() for k, v in controlnet.state_dict().items())
    if accelerator.is_main_process:
        accelerator.unwrap_model(wrapped).save_pretrained(output)
        (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary


def _decode(pipe, prediction: torch.Tensor) -> torch.Tensor:
    """TrigFlow clean latent -> image in [-1, 1], differentiable (the pipeline's decode_latents is no_grad)."""
    latents = prediction / pipe.scheduler.config.sigma_data / pipe.vae.config.scaling_factor
    return pipe.vae.decode(latents.to(pipe.vae.dtype)).sample.float()


def _save_validation(pipe, controlnet, samples, args, output: Path, step: int, accelerator) -> None:
    controlnet.eval()
    try:
        with accelerator.autocast():
            grid = validation_grid(pipe, samples, args.guidance_scale, args.seed)
    finally:
        controlnet.train()
    folder = output / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    grid.save(folder / f"step_{step:06d}.png")


def main(argv: Sequence[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.make_demo_data is not None:
        folder, count = args.make_demo_data
        if not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--make-demo-data N must be a positive integer, got {count!r}")
        make_demo_data(folder, int(count), size=args.resolution if args.resolution <= 512 else 256, seed=args.seed)
        print(f"wrote {count} image/caption pairs to {folder}")
        if args.data is None or args.output is None:
            return None
    return train(args)


if __name__ == "__main__":
    main()
