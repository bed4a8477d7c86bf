"""Stop points inside a frame's forward passes: ``add_stop_points(pipe, tiny, check)``.

The renderer checks between stages and denoising steps whether anyone still waits for its batch; on a CPU one stage
of a draft is tens of milliseconds that a final frame would otherwise wait for, so it also checks before each
transformer block (the ControlNet's too) and each decoder layer. ``check`` raises to stop the batch there.

Not for compiled models: a hook inside a compiled region breaks its graph (and compiled stages take milliseconds
anyway).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def stop_point_layers(pipe, tiny=None) -> list[torch.nn.Module]:
    """The layers a stop point goes before: each block of the transformer and of the ControlNet (when there is
    one), each layer of the DC-AE's decoder and of the tiny autoencoder's (when it has one); a layer that is a
    ModuleList or Sequential counts by its children."""
    modules = [pipe.transformer.transformer_blocks, pipe.vae.decoder]
    if pipe.controlnet is not None:
        modules.append(pipe.controlnet.transformer_blocks)
    if tiny is not None and tiny.has_decoder:
        modules.append(tiny.decoder)
    layers = []
    for module in modules:
        for layer in module.children():
            grouped = isinstance(layer, (torch.nn.ModuleList, torch.nn.Sequential))
            layers.extend(layer.children() if grouped else [layer])
    return layers


def add_stop_points(pipe, tiny, check: Callable[[], None]) -> list[torch.utils.hooks.RemovableHandle]:
    """Calls ``check()`` before every layer of ``stop_point_layers``; returns the hooks' handles."""

    def before_layer(*_hook_args) -> None:
        check()

    return [layer.register_forward_pre_hook(before_layer) for layer in stop_point_layers(pipe, tiny)]
