"""SANA-Sprint Live Sketch: a real-time sketch-, paint- and camera-to-image app around NVIDIA's SANA-Sprint.

The package is laid out by layer; each imports only its own layer and those below it (``tests/test_layout.py``):

* ``sprint_demo.settings`` -- every default and limit, read by all layers;
* ``sprint_demo.models`` -- the pipelines, the ControlNet, the tiny autoencoder, loading and speed-ups (torch and
  diffusers; no app code);
* the core, ``sprint_demo.{frames, inputs, conditioning, sketches, renderer, engine, batcher}`` -- requests, input
  checks, control maps, the renderer that turns a batch of requests into frames, and the engine that serves sessions
  with them on its one model thread (no Gradio);
* ``sprint_demo.web`` -- the Gradio app: layout, frame handlers, the canvas, live-image and camera components,
  launch;
* ``sprint_demo.tools`` -- command-line tools: bench, loadtest, generate, serve_ray, train_controlnet.

The public names are importable from here (``from sprint_demo import Engine``); each is imported on first use,
so ``import sprint_demo.settings`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "SanaSprintControlNetPipeline": "sprint_demo.models.pipeline",
    "SanaSprintControlNetImg2ImgPipeline": "sprint_demo.models.pipeline",
    "SanaSprintControlNetModel": "sprint_demo.models.controlnet",
    "TinyAutoencoder": "sprint_demo.models.tiny_autoencoder",
    "load_pipeline": "sprint_demo.models.loading",
    "build_byte_tokenizer": "sprint_demo.models.loading",
    "Engine": "sprint_demo.engine",
    "load_engine": "sprint_demo.engine",
    "FrameRequest": "sprint_demo.frames",
    "Frame": "sprint_demo.frames",
    "FrameSource": "sprint_demo.frames",
    "InputError": "sprint_demo.inputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sprint_demo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next lookup skips this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
