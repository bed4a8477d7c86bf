"""Servers for the tests: the app in this process on the preview engine, and ``python app.py`` processes shared
between test files. Both start the app through ``sprint_demo.web.launch``, as ``app.py`` does.

The suite's shared server runs with a stand-in safety checker (``refuse_blocked_test_word``: the server finds this
module as ``support`` through ``PYTHONPATH``) and a canary value in its environment, so the tests can check the
safety hook end to end and that no route leaks ``/proc/self/environ``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from sprint_demo import inputs, settings
from sprint_demo.frames import DEFAULT_DECODER, Frame
from sprint_demo.tools.app_process import REPO_ROOT, AppProcess, free_port
from sprint_demo.tools.loadtest import TOLERANCE_LEVELS as SERVED_TOLERANCE_LEVELS
from sprint_demo.web.launch import launch

REPO = REPO_ROOT
TEST_ENV = {"HF_HUB_OFFLINE": "1"}  # test servers never reach the hub
BLOCKED_TEST_WORD = "zyzzogeton"  # the stand-in safety checker below refuses prompts holding this word
CANARY_ENV = "SPRINT_TEST_CANARY"  # a secret-like value put in the suite server's environment
CANARY = f"canary-{os.getpid()}-{time.time_ns()}"


# --- Images made by other CPU kernels ---------------------------------------------------------------------------
# The same model on the same inputs gives bit-equal images only where the same kernels run on the same tensors.
# Another thread count, a batch of several rows, weights at other memory addresses (save_pretrained then
# from_pretrained) or another CPU's instruction set sums float32 products in another order, and the last bits
# differ. Comparisons across those boundaries use the bounds below; within one process on shared tensors they stay
# exact. Measured with the preview model on a 2-core AMD EPYC with AVX-512, each condition against the same call
# in a 2-thread process: torch.set_num_threads(1); every weight copied 4 or 12 bytes off its address
# (misaligned_weights); a save_pretrained / from_pretrained round trip; a process with ATEN_CPU_CAPABILITY=avx2
# MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 (a CPU without AVX-512), at 1 and 2 threads; a process
# with ATEN_CPU_CAPABILITY=default (no vector kernels); a row of a 3-row batch.

# Float images (0..1) of a 64x64 two-step call: at most 2.2e-6 apart (no vector kernels; AVX2 1.9e-6, misaligned
# weights 1.5e-6, round trip 1.3e-6, one thread 9.5e-7). The bound is 9x that. guidance_scale +0.05 moves them by
# 6.0e-4 or more, one control-map pixel by 2.1e-2.
KERNEL_NOISE_MAX_ABS = 2e-5

# Prompt embeddings of the prefix-cached encode (models/prompt_encoder.py) against diffusers' full encode_prompt: the
# same arithmetic in another order. Largest difference measured (values spread about 1): 0 on the preview; on
# Gemma-2-2B's shapes with random weights 0 with 1 layer, 1.9e-6 with 2, 4.7e-6 with all 26. The bound is 21x that;
# one changed character of the prompt moves them by 0.30 or more (preview), 3.9 or more (Gemma-2-2B's shapes).
PREFIX_CACHE_MAX_ABS = 1e-4


@dataclass(frozen=True)
class PixelDifference:
    """How two uint8 images of one shape differ: the largest difference and how many values differ at all."""

    max_levels: int
    differing: int  # values (pixel channels) that differ
    values: int

    @property
    def fraction(self) -> float:
        return self.differing / self.values

    def __str__(self) -> str:
        return f"{self.differing} of {self.values} values ({self.fraction:.3%}) differ, by up to {self.max_levels}"


@dataclass(frozen=True)
class PixelTolerance:
    """Two uint8 images count as the same frame when no value differs by more than ``max_levels`` and at most
    ``max_fraction`` of the values differ at all."""

    max_levels: int
    max_fraction: float

    def admits(self, difference: PixelDifference) -> bool:
        return difference.max_levels <= self.max_levels and difference.fraction <= self.max_fraction

    def __str__(self) -> str:
        return f"up to {self.max_levels} levels in at most {self.max_fraction:.3%} of the values"


# uint8 frames, lossless: float noise of ~1e-5 moves a value only where it lies that close to a rounding boundary,
# and then by one level. Measured on 256x256 full-lane frames (196,608 values) under each condition above: one
# level in at most 9 values (4.6e-5); reference frames written on another machine differed here in 3-7
# values. A 512x512 frame from a 3-row batch: 17 values. The bound: one level in at most 5e-4 of the values (98 at
# 256x256), 11x the worst. guidance_scale +0.05 changes 846 values or more (4.3e-3), one erased stroke pixel 4,549
# or more by up to 3 levels; other sessions' images differ by 20 levels or more on average.
KERNEL_NOISE = PixelTolerance(max_levels=1, max_fraction=5e-4)
BATCHED_ROW_TOLERANCE_LEVELS = KERNEL_NOISE.max_levels  # a batched row runs other kernels: the same noise

# JPEG frames as the app serves them (settings.JPEG_QUALITY): JPEG spreads a one-level change over its 8x8 block.
# Measured on a 512x512 frame (786,432 values) under each condition above: up to 10 levels in up to 1,922 values
# (0.24%); 150 trials of 5-200 random one-level changes to the frame before encoding: up to 11 levels in up to
# 1.2%. The bound: loadtest.TOLERANCE_LEVELS (16) levels in at most 2% of the values. guidance_scale +0.05
# changes 13.7% of the values (by up to 14 levels); another session's sketch, prompt or seed moves values by 61
# levels or more.
SERVED_FRAME_TOLERANCE = PixelTolerance(max_levels=SERVED_TOLERANCE_LEVELS, max_fraction=0.02)


def pixel_difference(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> PixelDifference:
    """The difference of two uint8 images of one shape (PIL images are compared as RGB)."""
    a, b = (np.asarray(x.convert("RGB") if isinstance(x, Image.Image) else x, dtype=np.int16) for x in (a, b))
    assert a.shape == b.shape, f"shapes differ: {a.shape} and {b.shape}"
    difference = np.abs(a - b)
    return PixelDifference(int(difference.max()), int(np.count_nonzero(difference)), difference.size)


def max_abs_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest absolute difference of two float tensors of one shape."""
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}"
    return float((a.double() - b.double()).abs().max())


def misaligned_weights(module: torch.nn.Module, offset: int = 1) -> torch.nn.Module:
    """``module`` with every parameter and buffer moved to a copy ``offset`` elements past an allocation's start,
    the same values at an address the CPU kernels handle differently (as weights loaded from a file can be)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        storage = torch.empty(tensor.numel() + offset, dtype=tensor.dtype, device=tensor.device)
        storage[offset:].copy_(tensor.detach().reshape(-1))
        tensor.data = storage[offset:].view(tensor.shape)
    return module


def refuse_blocked_test_word(prompt: str) -> str | None:
    """Stand-in safety checker: refuses prompts that contain ``BLOCKED_TEST_WORD`` and accepts everything else, so
    the tests can check the hook end to end without a real classifier."""
    return f"contains the blocked test word {BLOCKED_TEST_WORD!r}" if BLOCKED_TEST_WORD in prompt.lower() else None


# --- Frames from raw values, as the page's handlers build them ----------------------------------------------------
# The engine takes clean FrameRequests only (sprint_demo.inputs builds them); these build one from raw values with
# the app's defaults and render it, so that a test reads as the frame it asks for. prep_ms: what building it took.
def sketch_frame(engine: Any, sketch: Any, prompt: str, steps: Any = settings.DEFAULT_STEPS,
                 seed: Any = settings.DEFAULT_SEED, guidance_scale: Any = settings.DEFAULT_GUIDANCE,
                 control_strength: Any = settings.DEFAULT_CONTROL_STRENGTH,
                 thickness: Any = settings.DEFAULT_THICKNESS, control_map: Any = None, decoder: Any = DEFAULT_DECODER,
                 size: tuple[int, int] | None = None, **render: Any) -> Frame:
    """A sketch's frame (None or blank: no control; or a ready ``control_map``) at ``size`` (default the engine's
    square)."""
    began = time.perf_counter()
    request = inputs.sketch_request(sketch, prompt, steps, seed, guidance_scale, control_strength, thickness,
                                    size or (engine.size, engine.size), control_map=control_map, decoder=decoder)
    return engine.render(request, prep_ms=(time.perf_counter() - began) * 1000, **render)


def text_frame(engine: Any, prompt: str, steps: Any = settings.DEFAULT_STEPS, seed: Any = settings.DEFAULT_SEED,
               guidance_scale: Any = settings.DEFAULT_GUIDANCE, width: Any = None, height: Any = None,
               decoder: Any = DEFAULT_DECODER, style: Any = settings.DEFAULT_STYLE, **render: Any) -> Frame:
    """A prompt's frame of width x height (default the engine's square), in ``style``."""
    request = inputs.text_request(prompt, steps, seed, guidance_scale, width or engine.size, height or engine.size,
                                  decoder, style)
    return engine.render(request, **render)


def image_frame(engine: Any, image: Any, prompt: str, strength: Any = settings.DEFAULT_API_STRENGTH,
                steps: Any = settings.DEFAULT_STEPS, seed: Any = settings.DEFAULT_SEED,
                guidance_scale: Any = settings.DEFAULT_GUIDANCE, decoder: Any = DEFAULT_DECODER,
                **options: Any) -> Frame:
    """A picture redrawn from ``strength``, its long side the engine's size; ``options``: ``image_request``'s
    (``edges``, ``control_strength``, ``thickness``, ``control_map``)."""
    began = time.perf_counter()
    request = inputs.image_request(image, prompt, strength, steps, seed, guidance_scale, engine.size, decoder,
                                   **options)
    return engine.render(request, prep_ms=(time.perf_counter() - began) * 1000)


# --- The app in this process ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def preview_engine() -> Any:
    """One preview engine per test process (thread-safe), shared by the API and browser test modules."""
    from sprint_demo.engine import load_engine

    return load_engine(settings.PREVIEW_MODEL)


@contextlib.contextmanager
def live_app(engine: Any = None) -> Iterator[tuple[str, Any, Any]]:
    """``launch(engine)`` in this process on a free loopback port; yields (url, engine, demo)."""
    engine = preview_engine() if engine is None else engine
    port = free_port()
    demo = launch(engine, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}", engine, demo
    finally:
        demo.close()


# --- python app.py in a process of its own ---------------------------------------------------------------------
def start_app(args: list[str], env: dict[str, str] | None = None, **kwargs: Any) -> AppProcess:
    """``AppProcess`` with the tests' environment (offline) plus ``env``."""
    return AppProcess(args, env={**TEST_ENV, **(env or {})}, **kwargs)


_shared_servers: dict[tuple, AppProcess] = {}
_shared_lock = threading.Lock()


def shared_server(args: list[str], env: dict[str, str] | None = None, wait: bool = True) -> AppProcess:
    """One server per distinct (args, env) for the whole test process, stopped at exit; ready unless ``wait=False``.

    Several test files share one ``python app.py`` start (20-40 s of imports and model building on 2 busy cores)
    instead of paying for one each; ``wait=False`` starts it early, in the background.
    """
    key = (tuple(args), tuple(sorted((env or {}).items())))
    with _shared_lock:
        server = _shared_servers.get(key)
        if server is None or server.process.poll() is not None:
            server = start_app(args, env)
            _shared_servers[key] = server
            atexit.register(server.stop)
    return server.wait_ready() if wait else server


def suite_server(wait: bool = True) -> AppProcess:
    """The preview-model server the test files share: started as a user would (no --host, no --share), with the
    stand-in safety checker on and the canary in its environment."""
    python_path = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    return shared_server(["--model", settings.PREVIEW_MODEL], wait=wait, env={
        "SPRINT_SAFETY_CHECKER": "support:refuse_blocked_test_word",
        "PYTHONPATH": python_path,
        CANARY_ENV: CANARY,
    })
