"""GPU speed-ups a user can switch on and off; each one is measured by ``sprint_demo.bench``, not assumed.

* ``tf32``: float32 matmuls on tensor cores (only matters for float32 runs).
* ``channels_last``: NHWC memory layout for the DC-AE convolutions.
* ``compile``: ``torch.compile`` of every transformer / ControlNet block and of the DC-AE encoder and decoder.
  Blocks, not whole models, are compiled so the same compiled code serves both the stock diffusers forward
  (text-to-image) and our ControlNet forward, and compile time stays one block's worth (the blocks repeat).
* ``cuda_graphs``: with ``compile``, mode "reduce-overhead" (CUDA graphs) instead of the default mode; shapes
  must repeat, which they do for a fixed canvas size. (No autotuning mode: minutes of start-up for a demo.)

bf16 is the default dtype on CUDA (``models.parse_dtype``); fused attention is already what diffusers runs
(SDPA for cross-attention, Sana's linear attention for self-attention), so there is no switch for it.
Settings come from the environment (``SPRINT_COMPILE=1`` ...) or the command line of ``app.py`` / ``bench``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)


def _env_flag(name: str, default: bool) -> bool:
    return os.getenv(name, "1" if default else "0") == "1"


@dataclass(frozen=True)
class SpeedOptions:
    tf32: bool = _env_flag("SPRINT_TF32", True)
    channels_last: bool = _env_flag("SPRINT_CHANNELS_LAST", True)
    compile: bool = _env_flag("SPRINT_COMPILE", False)  # minutes of compile at start: opt in
    cuda_graphs: bool = _env_flag("SPRINT_CUDA_GRAPHS", False)

    def describe(self) -> str:
        on = [name for name, value in vars(self).items() if value]
        return ", ".join(on) if on else "none"


def apply_speedups(pipe, options: SpeedOptions) -> SpeedOptions:
    """Applies what the device supports; returns the options actually in effect."""
    import torch  # here, not at module level: app.py reads SpeedOptions before anything heavy is imported
    cuda = pipe._execution_device.type == "cuda"
    if not cuda:  # every switch here is a GPU switch; on the CPU they cost start-up time for nothing
        return SpeedOptions(tf32=False, channels_last=False, compile=False, cuda_graphs=False)
    torch.backends.cuda.matmul.allow_tf32 = options.tf32
    torch.backends.cudnn.allow_tf32 = options.tf32
    torch.backends.cudnn.benchmark = True  # fixed canvas sizes: let cuDNN pick the fastest convolution once
    if options.channels_last:
        pipe.vae.to(memory_format=torch.channels_last)
    if options.compile:
        mode = "reduce-overhead" if options.cuda_graphs else "default"
        blocks = list(pipe.transformer.transformer_blocks)
        if pipe.controlnet is not None:
            blocks += list(pipe.controlnet.transformer_blocks)
        for block in blocks:
            block.compile(mode=mode, dynamic=False)
        pipe.vae.decoder.compile(mode=mode, dynamic=False)
        pipe.vae.encoder.compile(mode=mode, dynamic=False)
        log.info("torch.compile (%s) on %d blocks and the DC-AE", mode, len(blocks))
    return replace(options, cuda_graphs=options.cuda_graphs and options.compile)
