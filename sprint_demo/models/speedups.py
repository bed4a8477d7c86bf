"""GPU speed-ups a user can switch on and off; each one is measured by ``sprint_demo.tools.bench``, not assumed.

* ``tf32``: float32 matmuls on tensor cores (only matters for float32 runs).
* ``channels_last``: NHWC memory layout for the autoencoders' convolutions. On the CPU only the tiny autoencoder's
  (measured on this project's 2-core CPU: its decode 1.4x faster at the published shapes and 2x at the preview's,
  its encode 1.5x; the DC-AE's unchanged), so full-lane CPU frames keep their pixels.
* ``compile``: ``torch.compile`` of every transformer / ControlNet block and of the DC-AE encoder and decoder.
  Blocks, not whole models, are compiled so the same compiled code serves both the stock diffusers forward
  (text-to-image) and our ControlNet forward, and compile time stays one block's worth (the blocks repeat).
* ``cuda_graphs``: with ``compile``, mode "reduce-overhead" (CUDA graphs) instead of the default mode; shapes
  must repeat, which they do for a fixed canvas size. (No autotuning mode: minutes of start-up for a demo.)
* ``compile_scope``: ``"blocks"`` (measured, the default: see docs/PERFORMANCE.md) compiles each block apart;
  ``"step"`` compiles the whole transformer forward, with the ControlNet branch, as one region per denoising
  step, so that CUDA graphs replay one graph instead of 35 with Python between them. It is the candidate fix for
  the H100 ControlNet frame (denoise 31.7 ms against 16.8 on the H200); tested for correctness on the CPU,
  **not yet timed on a GPU**. Inside that graph each block is a nested compile region, compiled once and stamped
  out for the other blocks: the 28-block transformer compiled in 43 s instead of 122 s (torch 2.14) and 74 s
  instead of 102 s (torch 2.11, what the GPU machines run), inductor on a 2-core CPU.

bf16 is the default dtype on CUDA (``models.parse_dtype``); fused attention is already what diffusers runs
(SDPA for cross-attention, Sana's linear attention for self-attention), so there is no switch for it.
Settings come from the environment (``SPRINT_COMPILE=1`` ...) or the command line of ``app.py`` / ``bench``.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)


COMPILE_SCOPES = ("blocks", "step")


def _env_flag(name: str, default: bool) -> bool:
    return os.getenv(name, "1" if default else "0") == "1"


@dataclass(frozen=True)
class SpeedOptions:
    tf32: bool = _env_flag("SPRINT_TF32", True)
    channels_last: bool = _env_flag("SPRINT_CHANNELS_LAST", True)
    compile: bool = _env_flag("SPRINT_COMPILE", False)  # minutes of compile at start: opt in
    cuda_graphs: bool = _env_flag("SPRINT_CUDA_GRAPHS", False)
    compile_scope: str = os.getenv("SPRINT_COMPILE_SCOPE", "blocks")  # blocks | step

    def describe(self) -> str:
        on = [name for name, value in vars(self).items() if value is True]
        if self.compile:
            on.append(f"compile scope {self.compile_scope}")
        return ", ".join(on) if on else "none"


def apply_speedups(pipe, options: SpeedOptions, tiny=None) -> SpeedOptions:
    """Applies what the device supports, to the pipeline and to the tiny autoencoder ``tiny`` when given (the
    engine's "tiny" lane: convolutions like the DC-AE's); returns the options actually in effect."""
    import torch  # here, not at module level: app.py reads SpeedOptions before anything heavy is imported
    cuda = pipe._execution_device.type == "cuda"
    if not cuda:  # GPU switches, but for the tiny autoencoder's layout (see the module docstring)
        channels_last = options.channels_last and tiny is not None
        if channels_last:
            tiny.to(memory_format=torch.channels_last)
        return replace(options, tf32=False, channels_last=channels_last, compile=False, cuda_graphs=False)
    torch.backends.cuda.matmul.allow_tf32 = options.tf32
    torch.backends.cudnn.allow_tf32 = options.tf32
    torch.backends.cudnn.benchmark = True  # fixed canvas sizes: let cuDNN pick the fastest convolution once
    autoencoders = [pipe.vae] + ([tiny] if tiny is not None else [])
    if options.channels_last:
        for autoencoder in autoencoders:
            autoencoder.to(memory_format=torch.channels_last)
    if options.compile:
        compile_models(pipe, options.compile_scope, "reduce-overhead" if options.cuda_graphs else "default",
                       autoencoders=autoencoders)
    return replace(options, cuda_graphs=options.cuda_graphs and options.compile)


def compile_models(pipe, scope: str, mode: str = "default", backend: str = "inductor", autoencoders=None) -> None:
    """torch.compile the denoiser (per block, or per step) and the encoder and decoder of each autoencoder (default:
    the pipeline's DC-AE), in place."""
    import torch

    if scope not in COMPILE_SCOPES:
        raise ValueError(f"compile_scope must be one of {COMPILE_SCOPES}, got {scope!r}")
    options = dict(backend=backend, dynamic=False) | ({"mode": mode} if backend == "inductor" else {})
    blocks = list(pipe.transformer.transformer_blocks)
    if pipe.controlnet is not None:
        blocks += list(pipe.controlnet.transformer_blocks)
    if scope == "blocks":
        for block in blocks:
            block.compile(**options)
    else:  # one region per denoising step: the stock forward (text-to-image) and ours with the ControlNet
        for block in blocks:
            block.__class__ = _nested_region_class(type(block))
        pipe.transformer.compile(**options)
        pipe.controlled_forward = _strength_as_tensor(torch.compile(pipe.controlled_forward, **options))
    for autoencoder in autoencoders or [pipe.vae]:
        autoencoder.decoder.compile(**options)
        autoencoder.encoder.compile(**options)
    log.info("torch.compile (%s, %s) per %s and %d autoencoder(s)", backend, mode, scope, len(autoencoders or [1]))


@functools.cache  # one subclass per block class: the region is shared by every block of that class
def _nested_region_class(block_class: type) -> type:
    """A subclass of ``block_class`` whose forward is a ``torch.compiler.nested_compile_region``: within a compiled
    step, dynamo and inductor compile a block once and reuse that code for every block of the same shapes (a no-op
    outside torch.compile). A subclass, not a per-instance wrapper: a region bound to each block with
    ``types.MethodType`` gave every block the first block's weights under torch 2.14 (2.11 got it right): wrong
    images. As a method of the class, each block's parameters are inputs of the shared region in both. The
    subclass keeps the base class's name, which diffusers and accelerate look blocks up by."""
    import torch

    forward = torch.compiler.nested_compile_region(block_class.forward)
    return type(block_class.__name__, (block_class,), {"forward": forward, "__qualname__": block_class.__qualname__})


def _strength_as_tensor(compiled_forward):
    """Dynamo specialises on Python floats: with the ControlNet strength inside the compiled step as a float,
    every new slider position compiled the step again (tests/test_engine.py fails on any recompile). As a 0-dim
    tensor it is an input like the latents, and one graph serves every strength. Per-row strengths (a batch) are a
    tensor already, in the transformer's dtype, and stay so (as float32 they would promote the residuals)."""
    import torch

    def controlled_forward(transformer, hidden_states, *args, control, **kwargs):
        scale = control.scale
        if not isinstance(scale, torch.Tensor):
            scale = torch.as_tensor(scale, dtype=torch.float32, device=hidden_states.device)
        return compiled_forward(transformer, hidden_states, *args, control=replace(control, scale=scale), **kwargs)

    return controlled_forward
