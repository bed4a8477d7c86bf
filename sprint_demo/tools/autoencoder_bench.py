"""The autoencoders' cost: the full-size DC-AE against the tiny autoencoder (TAESANA), encode and decode.

``python -m sprint_demo.tools.bench --mode components`` prints ``benchmark_components``' table: both with random
weights of the real shapes, timed in the same run (so the ratio holds when the machine's speed drifts), with the GFLOP
of each call counted on the meta device. What is encoded is a control map (a stroke drawing's, as the app makes it):
the encode every new stroke costs, since control maps go through the DC-AE's encoder in both lanes.
``--parts encode`` times the encodes alone (a DC-AE decode at 1024 px takes minutes on a CPU).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from diffusers import AutoencoderDC
from torch import nn

from ..conditioning import sketch_to_control_map
from ..models.loading import dc_ae_config, default_device, parse_dtype
from ..models.tiny_autoencoder import RANDOM_SEED, TinyAutoencoder
from ..sketches import stroke_sketch

PARTS = ("encode", "decode")
CONTROL_STROKES = 8  # strokes of the stroke drawing whose control map is encoded


def _component_calls(dc_ae: nn.Module, tiny: TinyAutoencoder, image: torch.Tensor, latents: torch.Tensor,
                     parts: tuple[str, ...] = PARTS) -> dict[str, Callable[[], torch.Tensor]]:
    calls = {
        "dc_ae_encode": lambda: dc_ae.encode(image).latent,
        "dc_ae_decode": lambda: dc_ae.decode(latents).sample,
        "tiny_encode": lambda: tiny.encode(image).latents,
        "tiny_decode": lambda: tiny.decode(latents).sample,
    }
    return {name: call for name, call in calls.items() if name.rsplit("_", 1)[1] in parts}


def control_map_tensor(size: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: the control map of ``stroke_sketch(size, CONTROL_STROKES)``, as the pipeline
    hands it to an encoder."""
    grey = torch.from_numpy(np.asarray(sketch_to_control_map(stroke_sketch(size, CONTROL_STROKES), 2,
                                                             (size, size)))[..., 0].copy())
    image = grey.to(device=device, dtype=torch.float32) / 127.5 - 1.0
    return image.expand(1, 3, size, size).contiguous().to(dtype)


def _full_size_components(device: torch.device | str, dtype: torch.dtype) -> tuple[nn.Module, TinyAutoencoder]:
    with torch.device(device):
        dc_ae = AutoencoderDC(**dc_ae_config("full")).eval()
        tiny = TinyAutoencoder.build_random("full")
    if dtype != torch.float32:  # (ModelMixin.to warns on every dtype cast)
        dc_ae, tiny = dc_ae.to(dtype), tiny.to(dtype)
    return dc_ae, tiny


@torch.no_grad()
def component_flops(size: int = 1024) -> dict[str, float]:
    """Convolution and matmul GFLOP of one encode and one decode of a ``size`` x ``size`` image, for the full-size
    DC-AE (the real config) and TAESANA, counted by ``torch.utils.flop_counter`` on the meta device (no memory,
    no weights)."""
    from torch.utils.flop_counter import FlopCounterMode

    _check_size(size)
    dc_ae, tiny = _full_size_components("meta", torch.float32)
    image = torch.empty(1, 3, size, size, device="meta")
    latents = torch.empty(1, 32, size // 32, size // 32, device="meta")
    flops = {}
    for name, call in _component_calls(dc_ae, tiny, image, latents).items():
        counter = FlopCounterMode(display=False)
        with counter:
            call()
        flops[name] = round(counter.get_total_flops() / 1e9, 1)
    return flops


@torch.no_grad()
def benchmark_components(size: int = 512, device: str | None = None, dtype: str | torch.dtype | None = None,
                         repeat: int = 3, parts: tuple[str, ...] = PARTS) -> dict:
    """Times the full-size DC-AE (random weights, the real config) and the full-size tiny autoencoder (random
    weights, the published shapes) encoding one ``size`` x ``size`` control map and decoding its latents on
    ``device``, in the same run: one untimed round of the calls, then ``repeat`` timed rounds. ``parts``: "encode",
    "decode" or both. Returns median milliseconds, the
    DC-AE / tiny time ratios and the GFLOP of each call. On CUDA both use channels-last, as the app does for the
    DC-AE. ``dtype`` as ``models.parse_dtype`` takes it (default bf16 on CUDA, float32 on the CPU). On the CPU
    the result also has the process's CPU time per call (``median_cpu_ms``, ``speedup_cpu_time``): on cores that
    other processes share, wall time depends on their load and CPU time much less."""
    _check_size(size)
    if not parts or not set(parts) <= set(PARTS):
        raise ValueError(f"parts must be some of {', '.join(PARTS)}, got {parts!r}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}")
    device = torch.device(device or default_device())
    dtype = parse_dtype(dtype, device.type)
    dc_ae, tiny = _full_size_components(device, dtype)
    if device.type == "cuda":
        dc_ae.to(memory_format=torch.channels_last)
        tiny.to(memory_format=torch.channels_last)
    generator = torch.Generator(device).manual_seed(RANDOM_SEED)
    image = control_map_tensor(size, device, dtype)
    latents = torch.randn(1, 32, size // 32, size // 32, generator=generator, device=device, dtype=dtype)
    calls = _component_calls(dc_ae, tiny, image, latents, parts)
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(repeat + 1):  # the first round warms up kernels and allocator pools: not counted
        for name, call in calls.items():  # interleaved, so a busy spell on a shared machine hits them all
            _synchronize(device)
            began, began_cpu = time.perf_counter(), time.process_time()
            call()
            _synchronize(device)
            if i:
                wall[name].append((time.perf_counter() - began) * 1000)
                cpu[name].append((time.process_time() - began_cpu) * 1000)
    times_ms = _medians(wall)
    result = {
        "size": size,
        "device": _device_label(device),
        "dtype": str(dtype).removeprefix("torch."),
        "repeat": repeat,
        "median_ms": times_ms,
        "speedup": {part: round(times_ms["dc_ae_" + part] / times_ms["tiny_" + part], 1) for part in parts},
        "gflop": {name: value for name, value in component_flops(size).items() if name in calls},
    }
    if device.type == "cpu":  # CPU time of this process: the work done, even when other processes share the cores
        cpu_ms = _medians(cpu)
        result["median_cpu_ms"] = cpu_ms
        result["speedup_cpu_time"] = {part: round(cpu_ms["dc_ae_" + part] / cpu_ms["tiny_" + part], 1)
                                      for part in parts}
    return result


def _medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.median(values), 2) for name, values in samples.items()}


def format_components(result: dict) -> str:
    """``benchmark_components``' result as a small table."""
    ms, gflop = result["median_ms"], result["gflop"]
    title = (f"# components at {result['size']}x{result['size']} on {result['device']}, {result['dtype']}, "
             f"median of {result['repeat']}")
    lines = [title, f"{'':>7} {'DC-AE ms':>10} {'tiny ms':>9} {'speed-up':>9} {'DC-AE GFLOP':>12} {'tiny GFLOP':>11}"]
    cpu_ms = result.get("median_cpu_ms")
    if cpu_ms:
        lines[1] += f" {'DC-AE CPU ms':>13} {'tiny CPU ms':>12} {'CPU-time ratio':>15}"
    for part in result["speedup"]:
        full, tiny = "dc_ae_" + part, "tiny_" + part
        line = (f"{part:>7} {ms[full]:>10.1f} {ms[tiny]:>9.1f} {result['speedup'][part]:>8.1f}x "
                f"{gflop[full]:>12.1f} {gflop[tiny]:>11.1f}")
        if cpu_ms:
            line += f" {cpu_ms[full]:>13.1f} {cpu_ms[tiny]:>12.1f} {result['speedup_cpu_time'][part]:>14.1f}x"
        lines.append(line)
    return "\n".join(lines)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 32:
        raise ValueError(f"size must be a positive multiple of 32 (the autoencoders compress 32x), got {size!r}")


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
