"""GPU speed-ups a user can switch on and off; ``sprint_demo.tools.bench`` measures each one (figures:
docs/PERFORMANCE.md).

* ``tf32``: float32 matmuls on tensor cores (only matters for float32 runs).
* ``channels_last``: NHWC memory layout for the autoencoders' convolutions. On the CPU it applies to the tiny
  autoencoder only, where it is faster, and not to the DC-AE, where it gains nothing, so full-lane CPU frames keep
  their pixels (docs/PERFORMANCE.md, "CPU: the preview model").
* ``compile``: ``torch.compile`` of every transformer / ControlNet block and of the DC-AE encoder and decoder.
  Blocks, not whole models, are compiled so the same compiled code serves both the stock diffusers forward
  (text-to-image) and our ControlNet forward, and compile time stays one block's worth (the blocks repeat).
* ``cuda_graphs``: with ``compile``, mode "reduce-overhead" (CUDA graphs) instead of the default mode; shapes
  must repeat, which they do for a fixed canvas size. (No autotuning mode: minutes of start-up for a demo.)
* ``compile_scope``: ``"blocks"`` (the default, the scope the GPU figures were measured with) compiles each block
  apart; ``"step"`` compiles the whole transformer forward, with the ControlNet branch, as one region per
  denoising step, so that CUDA graphs replay one graph instead of 35 with Python between them. Inside that graph
  each block is a nested compile region, compiled once and stamped out for the other blocks, which shortens the
  compile. Its status, compile times and the frame it is meant to speed up: docs/PERFORMANCE.md, "Where the
  ControlNet frame's time goes".

bf16 is the default dtype on CUDA (``models.parse_dtype``); fused attention is already what diffusers runs
(SDPA for cross-attention, Sana's linear attention for self-attention), so there is no switch for it.
``SpeedOptions()`` takes its defaults from ``sprint_demo.settings`` (``TF32``, ``CHANNELS_LAST``, ``COMPILE``,
``CUDA_GRAPHS``, ``COMPILE_SCOPE``: environment ``SPRINT_*``); ``app.py`` and ``bench`` override them from their
command lines.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace

from .. import settings

log = logging.getLogger(__name__)


COMPILE_SCOPES = settings.COMPILE_SCOPES  # what --compile-scope offers (app.py, bench)


@dataclass(frozen=True)
class SpeedOptions:
    tf32: bool = settings.TF32
    channels_last: bool = settings.CHANNELS_LAST
    compile: bool = settings.COMPILE
    cuda_graphs: bool = settings.CUDA_GRAPHS
    compile_scope: str = settings.COMPILE_SCOPE  # one of COMPILE_SCOPES

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
    outside torch.compile). A subclass, not a per-instance wrapper: under torch 2.14 a region bound to each block
    with ``types.MethodType`` gives every block the first block's weights (wrong images), while as a method of the
    class each block's parameters are inputs of the shared region. The subclass keeps the base class's name, which
    diffusers and accelerate look blocks up by."""
    import torch

    forward = torch.compiler.nested_compile_region(block_class.forward)
    return type(block_class.__name__, (block_class,), {"forward": forward, "__qualname__": block_class.__qualname__})


def _strength_as_tensor(compiled_forward):
    """Dynamo specialises on Python floats: with the ControlNet strength inside the compiled step as a float,
    every new slider position would compile the step again (tests/test_engine.py fails on any recompile). As a
    0-dim tensor it is an input like the latents, and one graph serves every strength. Per-row strengths (a batch)
    are a tensor already, in the transformer's dtype, and stay so (as float32 they would promote the residuals)."""
    import torch

    def controlled_forward(transformer, hidden_states, *args, control, **kwargs):
        scale = control.scale
        if not isinstance(scale, torch.Tensor):
            scale = torch.as_tensor(scale, dtype=torch.float32, device=hidden_states.device)
        return compiled_forward(transformer, hidden_states, *args, control=replace(control, scale=scale), **kwargs)

    return controlled_forward
