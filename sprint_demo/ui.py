"""The Gradio interface: ``create_demo(engine) -> gr.Blocks`` with a Sketch tab and a Playground tab.

Refresh semantics (measured in headless Chromium: ``trigger_mode="once"`` left stale final images, ``"multiple"``
fell over a second behind): every input of a tab feeds ONE ``gr.on`` with ``trigger_mode="always_last"``, hidden
progress and the shared ``"gpu"`` concurrency id. So at most one frame per tab is in flight, inputs that arrive
meanwhile collapse into the newest one (Gradio then runs only the latest pending event), and the final image is
always made from the final inputs. Identical inputs cost nothing: the engine returns its recent frame for them
(``Frame.reused``), and an identical JPEG keeps the same URL, so the browser does not even reload it.

Public API (``gradio_client``; names checked by tests/test_app_api.py):

* ``/sketch_to_image(sketch, prompt, steps, seed, guidance_scale, control_strength, thickness, decoder)``
  -> ``(image_path, latency_markdown)``; ``sketch`` is a PNG data URL string (``""`` = no sketch).
* ``/text_to_image(prompt, steps, seed, guidance_scale, width, height, decoder)`` -> ``(image_path,
  latency_markdown)``.

``decoder`` (last, so positional calls written before it existed still work) is ``"full"`` (default: the DC-AE)
or ``"tiny"`` (the tiny autoencoder: much faster, less fine detail); the latency readout names the one used. A
server without a tiny autoencoder offers only ``"full"`` and says why under the choice.

Images are JPEG (``settings.JPEG_QUALITY``, encoded here by ``encode_frame``). Bad input raises ``gr.Error`` with
the ``InputError`` message; model faults raise ``gr.Error`` naming the fault; the server keeps serving.
Layout and wiring only: the engine does validation, caching and the model work (the UI never touches torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from . import settings
from .canvas import SketchCanvas, sketch_value
from .frames import DEFAULT_DECODER
from .inputs import InputError

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
GPU = "gpu"  # concurrency id shared by every event that runs the model: one GPU, one queue
FRAME_FILES_KEPT = 256  # JPEGs kept in our own folder; Gradio copies each into its cache before we drop it
OUTPUT_MAX_HEIGHT = 640  # CSS px of the output image box; the canvas's CSS max-width (canvas.py) matches it
DECODER_LABELS = {"full": "full", "tiny": "tiny (fast, for slow machines)"}

CSS = """
#banner { background: #fff4d6; border: 1px solid #e6c35c; border-radius: 8px; padding: 4px 12px; }
#controlnet_note { color: #7a5b00; font-size: 0.9em; }
#latency, #t2i_latency { font-family: ui-monospace, monospace; font-size: 0.85em; min-height: 3em; }
#sketch_output img, #t2i_output img { object-fit: contain; }
/* The example gallery: Gradio gives a gallery without a pixel height a box of at least 320 px (450 px on wide
   screens), most of it empty under one row of thumbnails; here the box follows its thumbnails, which wrap into
   rows on a narrow screen instead of scrolling sideways, below the gallery's label rather than under it. */
#sketch_examples .grid-wrap { min-height: 0; max-height: none; overflow-y: auto; }
#sketch_examples .grid-container { grid-template-columns: repeat(auto-fit, minmax(88px, 1fr)); padding-top: 24px; }
"""


# --- Components -----------------------------------------------------------------------------------------
def _engine_checked(component: Any) -> Any:
    """Let the engine range-check this slider / number box (``inputs.check_*``: the message names the field and
    the range). Gradio's own check would refuse first with "Value 9 is greater than maximum value 4.", naming
    neither, and print a traceback; here the value is passed through untouched. Done per instance, not by
    subclassing, because gradio writes a ``.pyi`` stub next to every module that subclasses a component."""
    component.preprocess = lambda payload: payload
    return component


# --- Frames ---------------------------------------------------------------------------------------------
def encode_frame(image: Image.Image) -> bytes:
    """A frame -> the JPEG bytes the app serves (deterministic for identical pixels)."""
    import io

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=settings.JPEG_QUALITY)
    return buffer.getvalue()


class _FrameFiles:
    """Content-addressed JPEG files for Gradio to serve. Gradio copies a returned file into its own cache, so
    only the newest ``FRAME_FILES_KEPT`` are kept here."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sprint-frames-"))
        self._recent: deque[Path] = deque()
        self._lock = threading.Lock()

    def write(self, image: Image.Image) -> str:
        data = encode_frame(image)
        path = self.folder / f"{hashlib.blake2b(data, digest_size=12).hexdigest()}.jpg"
        with self._lock:
            if not path.exists():
                path.write_bytes(data)
                self._recent.append(path)
                while len(self._recent) > FRAME_FILES_KEPT:
                    self._recent.popleft().unlink(missing_ok=True)
        return str(path)


def format_latency(frame: Any, extra_notices: tuple[str, ...] = ()) -> str:
    """Markdown readout: total, then the per-stage split, then reuse and notices."""
    timings = frame.timings_ms
    head = f"**{timings.get('total', 0.0):.0f} ms** total · decoder: {frame.decoder}"
    if frame.reused:
        head += " (same inputs as a recent frame: reused, no model work)"
    elif frame.batch_size > 1:
        head += f" (batch of {frame.batch_size}: made together with frames of other users)"
    split = " · ".join(f"{stage} {timings[stage]:.1f}" for stage in settings.FRAME_STAGES if stage in timings)
    lines = [head, f"{split} (ms)" if split else ""]
    lines += [f"ℹ️ {notice}" for notice in (*frame.notices, *extra_notices)]
    return "  \n".join(line for line in lines if line)


def _on_gpu(fn: Callable) -> Callable:
    """On ZeroGPU, ask for a GPU for the duration of ``fn``; everywhere else ``fn`` unchanged."""
    if not settings.ZERO_GPU:
        return fn
    import spaces  # preinstalled on Spaces; never needed elsewhere

    return spaces.GPU(duration=settings.ZERO_GPU_DURATION_S)(fn)


def _run(call: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call the engine; turn what goes wrong into a message for the user (the server keeps serving)."""
    try:
        return call(*args, **kwargs)
    except InputError as error:
        raise gr.Error(str(error), print_exception=False) from None
    except Exception as error:  # a model fault: log it whole, tell the user what happened in one line
        log.exception("frame failed")
        if type(error).__name__ == "OutOfMemoryError":
            message = ("The GPU ran out of memory on this frame; try fewer steps or a smaller size. "
                       "The server is still running.")
        else:
            message = f"The model failed on this frame ({type(error).__name__}: {str(error)[:200]}). Try again."
        raise gr.Error(message, print_exception=False) from None


def aspect_size(aspect: str, long_side: int) -> tuple[int, int]:
    """``"16:9"`` with a long side of 1024 -> (1024, 576); both sides multiples of ``settings.SIZE_MULTIPLE``."""
    a, b = (int(part) for part in aspect.split(":"))
    scale = long_side / max(a, b)
    snap = settings.SIZE_MULTIPLE

    def side(units: int) -> int:
        return max(settings.MIN_SIZE, int(round(units * scale / snap)) * snap)

    return side(a), side(b)


def _examples(name: str) -> list[dict[str, str]]:
    path = ASSETS / name
    if not path.exists():
        return []
    entries = json.loads(path.read_text())
    return [entry for entry in entries if (ASSETS / entry["file"]).exists()]


# --- The interface --------------------------------------------------------------------------------------
# The controls both tabs have, defined once; each tab gives its own element ids.
def _steps_slider(elem_id: str) -> gr.Slider:
    return gr.Slider(settings.MIN_STEPS, settings.MAX_STEPS, value=settings.DEFAULT_STEPS, step=1, label="Steps",
                     elem_id=elem_id)


def _seed_row(elem_id: str) -> tuple[gr.Number, gr.Button]:
    """The seed box and its dice button (``<elem_id>_random``) side by side."""
    with gr.Row():
        seed = gr.Number(value=settings.DEFAULT_SEED, precision=0, minimum=0, maximum=settings.MAX_SEED,
                         label="Seed", elem_id=elem_id)
        return seed, gr.Button("🎲 Random seed", elem_id=f"{elem_id}_random", scale=0)


def _guidance_slider(elem_id: str) -> gr.Slider:
    return gr.Slider(settings.MIN_GUIDANCE, settings.MAX_GUIDANCE, value=settings.DEFAULT_GUIDANCE, step=0.1,
                     label="Guidance", elem_id=elem_id)


def _decoder_radio(engine: Any, elem_id: str) -> gr.Radio:
    """Which autoencoder makes the tab's frames. Without a tiny autoencoder only "full" is offered, and the reason
    is shown under the choice."""
    choices = [(DECODER_LABELS[name], name) for name in engine.decoders]
    info = None if engine.has_tiny_decoder else f"Only the full decoder here: {engine.tiny_note or 'tiny is off'}."
    return _engine_checked(gr.Radio(choices, value=DEFAULT_DECODER, label="Decoder for final frames", info=info,
                                    elem_id=elem_id, interactive=engine.has_tiny_decoder))


def create_demo(engine: Any, concurrency_limit: int = 1) -> gr.Blocks:
    """The whole app around one loaded engine (``sprint_demo.engine.Engine``). ``concurrency_limit``: frames in
    flight at once over all users (the engine's ``max_batch_size`` on one GPU, so a batch can fill;
    ``serve_ray.RayEngine.concurrency`` for replicas)."""
    frames = _FrameFiles()
    sketch_frame = _on_gpu(engine.sketch_to_image)
    text_frame = _on_gpu(engine.text_to_image)
    photo_map_fn = _on_gpu(engine.photo_to_control_map)
    size = int(engine.size)
    sketch_examples = _examples("examples.json")
    photo_examples = _examples("photo_examples.json")

    with gr.Blocks(title="SANA-Sprint Live Sketch", delete_cache=settings.FRAME_CACHE_PRUNE_S) as demo:
        gr.Markdown("# SANA-Sprint Live Sketch\nDraw on the canvas: the image is redrawn after every stroke "
                    "by a one-step diffusion model steered by your sketch (ControlNet).")
        if engine.banner:
            gr.Markdown(f"⚠️ {engine.banner}", elem_id="banner")
        if engine.controlnet_note:
            gr.Markdown(f"ControlNet: {engine.controlnet_note}", elem_id="controlnet_note")

        with gr.Tabs():
            # --- Sketch tab -----------------------------------------------------------------------------
            with gr.Tab("Sketch", id="sketch_tab"):
                prompt = gr.Textbox("", label="Prompt", elem_id="prompt", lines=2, max_lines=4,
                                    max_length=settings.MAX_PROMPT_CHARS,
                                    placeholder="what the sketch should become, e.g. 'a cottage in a forest'")
                with gr.Row(equal_height=False):
                    with gr.Column():
                        sketch = SketchCanvas("", size=size, elem_id="sketch", label="Sketch")
                        if sketch_examples:
                            gallery = gr.Gallery(
                                value=[(str(ASSETS / e["file"]), e["prompt"]) for e in sketch_examples],
                                label="Example sketches (click one to load it)", elem_id="sketch_examples",
                                columns=len(sketch_examples), height="auto", allow_preview=False,
                                show_label=True, interactive=False, object_fit="contain",
                            )
                    with gr.Column():
                        output = gr.Image(label="Image", format="jpeg", type="filepath", interactive=False,
                                          elem_id="sketch_output", height=min(size, OUTPUT_MAX_HEIGHT))
                        latency = gr.Markdown(label="Latency", elem_id="latency")
                with gr.Row():
                    steps = _steps_slider("steps")
                    seed, seed_random = _seed_row("seed")
                with gr.Row():
                    guidance = _guidance_slider("guidance")
                    control_strength = gr.Slider(settings.MIN_CONTROL_STRENGTH, settings.MAX_CONTROL_STRENGTH,
                                                 value=settings.DEFAULT_CONTROL_STRENGTH, step=0.05,
                                                 label="Control strength", elem_id="control_strength")
                    thickness = gr.Slider(settings.MIN_THICKNESS, settings.MAX_THICKNESS,
                                          value=settings.DEFAULT_THICKNESS, step=1, label="Sketch thickness",
                                          elem_id="thickness")
                decoder = _decoder_radio(engine, "decoder")
                with gr.Accordion("Or start from a photo (its edge map replaces the sketch)", open=False):
                    with gr.Row():
                        photo = gr.Image(label="Photo", type="pil", sources=["upload", "clipboard"],
                                         elem_id="photo", height=320)
                        photo_map_view = gr.Image(label="Edge map the model sees", format="png",
                                                  interactive=False, elem_id="photo_map", height=320)
                    if photo_examples:
                        gr.Examples([[str(ASSETS / e["file"])] for e in photo_examples], inputs=[photo],
                                    label="Example photo")
                photo_map = gr.State(None)  # the exact edge map (PIL) for the frame function

            # --- Playground tab -------------------------------------------------------------------------
            with gr.Tab("Playground", id="playground_tab") as playground_tab:
                with gr.Row(equal_height=False):
                    with gr.Column():
                        t2i_prompt = gr.Textbox("", label="Prompt", elem_id="t2i_prompt", lines=3, max_lines=6,
                                                max_length=settings.MAX_PROMPT_CHARS,
                                                placeholder="type: the image refreshes as you write")
                        t2i_steps = _steps_slider("t2i_steps")
                        t2i_seed, t2i_seed_random = _seed_row("t2i_seed")
                        t2i_guidance = _guidance_slider("t2i_guidance")
                        t2i_decoder = _decoder_radio(engine, "t2i_decoder")
                        t2i_aspect = gr.Radio(list(settings.ASPECT_RATIOS), value=settings.ASPECT_RATIOS[0],
                                              label="Aspect", elem_id="t2i_aspect")
                        with gr.Row():
                            t2i_width = gr.Slider(settings.MIN_SIZE, settings.MAX_SIZE, value=size,
                                                  step=settings.SIZE_MULTIPLE, label="Width", elem_id="t2i_width")
                            t2i_height = gr.Slider(settings.MIN_SIZE, settings.MAX_SIZE, value=size,
                                                   step=settings.SIZE_MULTIPLE, label="Height",
                                                   elem_id="t2i_height")
                    with gr.Column():
                        t2i_output = gr.Image(label="Image", format="jpeg", type="filepath", interactive=False,
                                              elem_id="t2i_output")
                        t2i_latency = gr.Markdown(label="Latency", elem_id="t2i_latency")

        for component in (steps, seed, guidance, control_strength, thickness, t2i_steps, t2i_seed, t2i_guidance,
                          t2i_width, t2i_height):
            _engine_checked(component)

        # --- Wiring: the sketch tab -------------------------------------------------------------------
        def sketch_to_image(sketch: str, prompt: str, steps: int, seed: int, guidance_scale: float,
                            control_strength: float, thickness: int, control_map=None,
                            decoder: str = DEFAULT_DECODER):
            extra: tuple[str, ...] = ()
            if control_map is not None:
                extra = ("using the uploaded photo's edge map; clear the photo to draw again",)
            frame = _run(sketch_frame, sketch or None, prompt, steps=steps, seed=seed, guidance_scale=guidance_scale,
                         control_strength=control_strength, thickness=thickness, control_map=control_map,
                         decoder=decoder)
            return frames.write(frame.image), format_latency(frame, extra)

        gr.on(
            triggers=[demo.load, sketch.change, prompt.change, steps.change, seed.change, guidance.change,
                      control_strength.change, thickness.change, photo_map_view.change, decoder.change],
            fn=sketch_to_image,
            inputs=[sketch, prompt, steps, seed, guidance, control_strength, thickness, photo_map, decoder],
            outputs=[output, latency],
            api_name="sketch_to_image",
            api_description="Sketch (PNG data URL) + prompt -> (JPEG image, latency markdown).",
            trigger_mode="always_last", show_progress="hidden", concurrency_id=GPU,
            concurrency_limit=concurrency_limit,
        )

        def photo_to_map(photo, thickness):
            if photo is None:  # cleared: back to the sketch
                return None, None
            control = _run(photo_map_fn, photo, thickness)
            return control, control

        # Upload, clear, example click and thickness all recompute (or drop) the map; its change re-renders.
        gr.on(triggers=[photo.change, thickness.change], fn=photo_to_map, inputs=[photo, thickness],
              outputs=[photo_map_view, photo_map], api_visibility="private", trigger_mode="always_last",
              show_progress="minimal", concurrency_limit=concurrency_limit, concurrency_id=GPU)

        if sketch_examples:
            def load_example(event: gr.SelectData):
                entry = sketch_examples[event.index]
                return sketch_value(str(ASSETS / entry["file"]), size), entry["prompt"]

            gallery.select(load_example, outputs=[sketch, prompt], api_visibility="private", queue=False)

        def new_seed() -> int:
            return random.randint(0, settings.MAX_SEED)

        seed_random.click(new_seed, outputs=seed, api_visibility="private", queue=False)

        # --- Wiring: the playground tab ---------------------------------------------------------------
        def text_to_image(prompt: str, steps: int, seed: int, guidance_scale: float, width: int, height: int,
                          decoder: str = DEFAULT_DECODER):
            frame = _run(text_frame, prompt, steps=steps, seed=seed, guidance_scale=guidance_scale, width=width,
                         height=height, decoder=decoder)
            return frames.write(frame.image), format_latency(frame)

        gr.on(
            triggers=[playground_tab.select, t2i_prompt.change, t2i_steps.change, t2i_seed.change,
                      t2i_guidance.change, t2i_width.change, t2i_height.change, t2i_decoder.change],
            fn=text_to_image,
            inputs=[t2i_prompt, t2i_steps, t2i_seed, t2i_guidance, t2i_width, t2i_height, t2i_decoder],
            outputs=[t2i_output, t2i_latency],
            api_name="text_to_image",
            api_description="Prompt -> (JPEG image of width x height, latency markdown).",
            trigger_mode="always_last", show_progress="hidden", concurrency_id=GPU,
            concurrency_limit=concurrency_limit,
        )
        t2i_aspect.change(lambda aspect: aspect_size(aspect, size), inputs=t2i_aspect,
                          outputs=[t2i_width, t2i_height], api_visibility="private", queue=False)
        t2i_seed_random.click(new_seed, outputs=t2i_seed, api_visibility="private", queue=False)

    return demo
