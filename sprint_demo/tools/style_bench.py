"""What styles cost, on the preview model: ``python -m sprint_demo.tools.style_bench``.

Three measurements, each against a baseline taken in the same run (docs/PERFORMANCE.md, "Styles"):

* a style switch: a preset costs one text encoding of the styled prompt (the frame after it: none, cached);
* an adapter swap: ``LoraAdapters.activate`` eager (a flag per layer) and under ``torch.compile`` with hotswap (the
  next adapter's weights copied into the slot), and the compiled frames that followed it, counting Dynamo's
  compiles (``torch._dynamo.utils.counters["stats"]["unique_graphs"]``): a swap must add none;
* 4 users in 2 LoRA styles: two batches of 2 rows (one per adapter, what the engine does) against one batch of 4
  rows with per-row adapters (PEFT's mixed-adapter batch: each LoRA layer gets ``adapter_names`` per row), frames/s.

The LoRAs are random, made on the model's shapes as diffusers' Sana LoRA script makes them (to_q/to_k/to_v, rank 4).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from contextlib import contextmanager

import torch

from .. import inputs, settings
from ..engine import load_engine
from ..renderer import Renderer


def random_lora_state_dict(transformer, seed: int, rank: int = 4) -> dict[str, torch.Tensor]:
    """A LoRA as diffusers' train_dreambooth_lora_sana.py makes one for ``transformer``'s shapes (PEFT's LoraConfig on
    to_q/to_k/to_v, Gaussian init, lora_alpha = rank), its up-projections random so that it changes the image (a
    trained one's start at 0)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    model = copy.deepcopy(transformer)
    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                 target_modules=["to_k", "to_q", "to_v"]))
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.2
    return get_peft_model_state_dict(model)


def random_lora(transformer, seed: int, rank: int = 4) -> str:
    """A folder holding ``random_lora_state_dict`` as the training script saves it (diffusers' Sana LoRA format)."""
    from diffusers import SanaPipeline

    folder = tempfile.mkdtemp(prefix="style-bench-lora-")
    SanaPipeline.save_lora_weights(folder, transformer_lora_layers=random_lora_state_dict(transformer, seed, rank))
    return folder


@contextmanager
def mixed_adapters(transformer, adapter_names: list[str]):
    """Every LoRA layer of ``transformer`` runs each row with its own adapter (PEFT's ``adapter_names`` forward
    argument, "__base__" for none) while inside."""
    from peft.tuners.lora import LoraLayer

    def pass_names(_module, args, kwargs):
        return args, {**kwargs, "adapter_names": adapter_names}

    hooks = [module.register_forward_pre_hook(pass_names, with_kwargs=True)
             for module in transformer.modules() if isinstance(module, LoraLayer)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def _requests(size: int, steps: int, styles: list[str], round_: int):
    return [inputs.text_request(f"user {i} round {round_}", steps, 100 * round_ + i, settings.DEFAULT_GUIDANCE, size,
                                size, style=style) for i, style in enumerate(styles)]


def users_in_two_styles(renderer: Renderer, size: int, steps: int, rounds: int) -> dict:
    """4 users, 2 LoRA styles: separate batches per adapter against one mixed batch, each round alternating."""
    styles = ["ink", "ink", "glow", "glow"]
    separate, mixed, difference = [], [], 0.0
    for round_ in range(rounds):
        requests = _requests(size, steps, styles, round_)
        for request in requests:  # prompts encoded before timing: both ways share the cache
            renderer.request_embeddings(request)
        for way in ("separate", "mixed") if round_ % 2 == 0 else ("mixed", "separate"):  # neither always first
            if way == "separate":
                began = time.perf_counter()
                apart = renderer.render(requests[:2], [0.0] * 2) + renderer.render(requests[2:], [0.0] * 2)
                separate.append(time.perf_counter() - began)
            else:
                together, seconds = _mixed_batch(renderer, requests, styles)
                mixed.append(seconds)
        difference = max(difference, *(_max_pixel_difference(a[0].image, b[0].image)
                                         for a, b in zip(apart, together)))
    return {"separate_frames_per_s": round(4 / statistics.median(separate), 3),
            "mixed_frames_per_s": round(4 / statistics.median(mixed), 3),
            "separate_ms": [round(s * 1000, 1) for s in separate], "mixed_ms": [round(s * 1000, 1) for s in mixed],
            "mixed_vs_separate_max_pixel_difference": difference}


def _mixed_batch(renderer: Renderer, requests: list, styles: list[str]) -> tuple[list, float]:
    """One batch of every request, each row with its own adapter (both adapters enabled at scale 1)."""
    adapters = renderer.adapters
    adapters.activate("ink")
    select, adapters.select = adapters.select, lambda _name, _scale: None  # the rows choose their own
    try:
        began = time.perf_counter()
        with mixed_adapters(renderer.pipe.transformer, styles):
            frames = renderer.render(requests, [0.0] * len(requests))
        return frames, time.perf_counter() - began
    finally:
        adapters.select = select


def _max_pixel_difference(a, b) -> int:
    import numpy as np

    return int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())


def swap_ms(renderer: Renderer, rounds: int) -> float:
    """Median ms of one adapter switch (ink <-> glow)."""
    times = []
    for i in range(rounds):
        began = time.perf_counter()
        renderer.adapters.activate("glow" if i % 2 == 0 else "ink")
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 3)


def style_switch(engine, size: int, steps: int) -> dict:
    """A preset switch: the first frame in the new style encodes the styled prompt once, the next one does not."""
    base = dict(steps=steps, seed=1, guidance_scale=settings.DEFAULT_GUIDANCE, width=size, height=size)
    engine.render(inputs.text_request("a harbour at dawn", **base))
    first = engine.render(inputs.text_request("a harbour at dawn", **base, style="watercolour"))
    again = engine.render(inputs.text_request("a harbour at dawn", **(base | {"seed": 2}), style="watercolour"))
    return {"first_frame_text_encode_ms": first.timings_ms["text_encode"], "first_frame_total_ms":
            first.timings_ms["total"], "next_frame_text_encode_ms": again.timings_ms["text_encode"],
            "next_frame_total_ms": again.timings_ms["total"]}


def compiled_swaps(size: int, steps: int, rounds: int, backend: str, scope: str) -> dict:
    """Hotswap under torch.compile (the preview transformer compiled whole, on this device): compiles counted
    before and after adapter swaps, and the swap's ms."""
    from torch._dynamo.utils import counters

    engine = load_engine(settings.PREVIEW_MODEL, device="cpu", warmup=False, size=size, tiny_autoencoder="off",
                         loras=())
    renderer = engine.renderer
    renderer.adapters.hotswap = True  # as a compiled renderer has it (compile is GPU-only in the app)
    transformer = renderer.pipe.transformer
    for name, seed in (("ink", 1), ("glow", 2)):
        engine.load_lora(f"{name}={random_lora(transformer, seed)}")
    if scope == "blocks":  # as the app compiles (speedups.compile_models), the autoencoders left out
        for block in transformer.transformer_blocks:
            block.compile(backend=backend, dynamic=False)
    else:  # one region per denoising step (the transformer's forward, LoRA scaling included)
        transformer.compile(backend=backend, dynamic=False)

    engine.render(inputs.text_request("a kite", steps, 0, settings.DEFAULT_GUIDANCE, size, size, style="ink"))
    compiled = counters["stats"]["unique_graphs"]
    swaps, frames, each = [], [], []
    for i in range(rounds):  # ink, glow, none (zeros in the slot), then ink at half strength, ...
        style, scale = (("glow", 1.0), ("none", 1.0), ("ink", 0.5), ("ink", 1.0))[i % 4]
        began = time.perf_counter()
        engine.on_model_thread(lambda style=style, scale=scale: renderer.adapters.select(
            None if style == "none" else style, scale))
        swaps.append((time.perf_counter() - began) * 1000)
        before = counters["stats"]["unique_graphs"]
        frames.append(engine.render(inputs.text_request("a kite", steps, i + 1, settings.DEFAULT_GUIDANCE, size,
                                                        size, style=style, style_scale=scale)).timings_ms["total"])
        each.append(f"{style}@{scale}: +{counters['stats']['unique_graphs'] - before}")
    result = {"backend": backend, "scope": scope, "graphs_compiled_before_swaps": compiled, "graphs_per_switch": each,
              "graphs_compiled_by_swaps": counters["stats"]["unique_graphs"] - compiled,
              "hotswap_ms_median": round(statistics.median(swaps), 2),
              "compiled_frame_ms_median": round(statistics.median(frames), 1)}
    engine.close()
    return result


def eager(size: int, steps: int, rounds: int, model: str = settings.PREVIEW_MODEL, device: str = "cpu") -> dict:
    """The eager measurements: a preset switch, adapter swaps, 4 users in 2 styles."""
    engine = load_engine(model, device=device, warmup=False, size=size, loras=())
    transformer = engine.renderer.pipe.transformer
    for name, seed in (("ink", 1), ("glow", 2)):
        engine.load_lora(f"{name}={random_lora(transformer, seed)}")
    try:
        return {"style_switch": style_switch(engine, size, steps),
                "eager_swap_ms_median": engine.on_model_thread(lambda: swap_ms(engine.renderer, 21)),
                "four_users_two_styles": engine.on_model_thread(
                    lambda: users_in_two_styles(engine.renderer, size, steps, rounds))}
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=settings.PREVIEW_MODEL, help="the eager part's model (or random-full)")
    parser.add_argument("--device", default="cpu", help="the eager part's device (the compiled part: the CPU)")
    parser.add_argument("--size", type=int, default=settings.PREVIEW_SIZE)
    parser.add_argument("--steps", type=int, default=settings.DEFAULT_STEPS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend of the hotswap check")
    parser.add_argument("--compile-scope", default="blocks", choices=("blocks", "step"))
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-eager", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    report = {} if args.skip_eager else eager(args.size, args.steps, args.rounds, args.model, args.device)
    if not args.skip_compile:
        report["compiled_hotswap"] = compiled_swaps(args.size, args.steps, args.rounds, args.backend,
                                                    args.compile_scope)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
