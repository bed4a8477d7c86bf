"""The Gradio interface: ``create_demo(engine) -> gr.Blocks`` with a Sketch tab and a Playground tab.

Refresh semantics (measured in headless Chromium: ``trigger_mode="once"`` left stale final images, ``"multiple"``
fell over a second behind): a tab's queued frames come from ONE ``gr.on`` with ``trigger_mode="always_last"``,
hidden progress and the shared ``"gpu"`` concurrency id. So at most one frame per tab is in the queue, requests
that arrive meanwhile collapse into the newest one, and the final image is always made from the final inputs;
the Sketch tab's ``CanvasGate`` keeps the same rule for the frames the canvas sends past the queue. Identical
inputs cost nothing: the engine returns its recent frame for them (``Frame.reused``).

The Sketch tab is live (``sprint_demo.web.live``): while the pen moves the canvas sends draft frames through its server
function ``draft_frame`` (with the tiny decoder where the engine has one); when the pen lifts, and when the prompt
and sliders have been still for ``settings.SETTLE_MS`` (a client-side event copies them into the canvas, which
keeps the time), it asks its server function ``final_frame`` for the final frame (the decoder chosen for final
frames, full by default). Both pass a ``CanvasGate``, the queue's stand-in; the queue's own event makes the frames
the canvas does not ask for (page load, a photo's edge map) and any final the gate turns away. The "Live drafts"
switch turns drafts off: then every change asks for its final frame at once. Frames travel inline (JPEG data
URLs), not as files to fetch. Phones get one column with the picture pinned above the canvas (``NARROW_PX``).

Public API (``gradio_client``; names checked by tests/test_app_api.py):

* ``/sketch_to_image(sketch, prompt, steps, seed, guidance_scale, control_strength, thickness, decoder)``
  -> ``(image_path, latency_markdown)``; ``sketch`` is a PNG data URL string (``""`` = no sketch).
* ``/text_to_image(prompt, steps, seed, guidance_scale, width, height, decoder)`` -> ``(image_path,
  latency_markdown)``.

``decoder`` (last, so positional calls written before it existed still work) is ``"full"`` (default: the DC-AE)
or ``"tiny"`` (the tiny autoencoder: much faster, less fine detail); the latency readout names the one used. A
server without a tiny autoencoder offers only ``"full"`` and says why under the choice.

The Sketch tab's page frames are private events, not API endpoints; ``/sketch_to_image`` has no trigger in the page.
Images are JPEG (``settings.JPEG_QUALITY``, encoded here by ``encode_frame``; drafts at
``settings.DRAFT_JPEG_QUALITY``). Bad input raises ``gr.Error`` with
the ``InputError`` message; model faults raise ``gr.Error`` naming the fault; the server keeps serving.
Layout and wiring only: the engine does validation, caching and the model work (the UI never touches torch).
"""

from __future__ import annotations

import hashlib
import html
import itertools
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

from .. import inputs, settings
from ..frames import DEFAULT_DECODER
from ..inputs import InputError
from .canvas import SketchCanvas, sketch_value
from .live import CanvasGate, GateFull, LiveImage, encode_jpeg, frame_value, sketch_digest

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
GPU = "gpu"  # concurrency id shared by every event that runs the model: one GPU, one queue
FRAME_FILES_KEPT = 256  # JPEGs kept in our own folder; Gradio copies each into its cache before we drop it
OUTPUT_MAX_HEIGHT = 640  # CSS px of the output image box; the canvas's CSS max-width (canvas.py) matches it
DECODER_LABELS = {"full": "full", "tiny": "tiny (fast, for slow machines)"}

# The client-side half of the Sketch tab's wiring: whenever one of the tab's inputs changes, the canvas gets them
# all (no server round trip), so a frame it asks for carries them and it can tell when they have settled.
MIRROR_INPUTS_JS = """(...values) => {
  const root = document.querySelector('#sketch .sc-root');
  if (root && root.setInputs) root.setInputs(values);
  return [];
}"""
NARROW_PX = 720  # below this width the Sketch tab stacks: the image above the canvas, pinned while drawing

CSS = """
#banner { background: #fff4d6; border: 1px solid #e6c35c; border-radius: 8px; padding: 4px 12px; }
#banner summary { cursor: pointer; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#banner p { margin: 4px 0 0; font-size: 0.9em; }
#controlnet_note { color: #7a5b00; font-size: 0.9em; }
#t2i_latency { font-family: ui-monospace, monospace; font-size: 0.85em; min-height: 3em; }
#sketch_output img, #t2i_output img { object-fit: contain; }
/* The example gallery: Gradio gives a gallery without a pixel height a box of at least 320 px (450 px on wide
   screens), most of it empty under one row of thumbnails; here the box follows its thumbnails, which wrap into
   rows on a narrow screen instead of scrolling sideways, below the gallery's label rather than under it. */
#sketch_examples .grid-wrap { min-height: 0; max-height: none; overflow-y: auto; }
#sketch_examples .grid-container { grid-template-columns: repeat(auto-fit, minmax(88px, 1fr)); padding-top: 24px; }
/* Phones: one column, the picture first and pinned to the top of the screen (at most 36% of its height) while the
   canvas is in view, so a person drawing sees it change; the readout, switch and examples below the canvas, so
   nothing above the canvas changes height (the page would jump under the finger). The columns dissolve
   (display: contents) so their blocks can be ordered. The Gradio container clips its overflow instead of hiding
   it: "hidden" makes it a scroll box, and the pinned picture would stick to it instead of to the screen (a rule
   at the top level: Gradio keeps those as written, rules inside @media only under its own container). */
.gradio-container { overflow: clip !important; }
@media (max-width: NARROW_PXpx) {
  #sketch_row { flex-direction: column; flex-wrap: nowrap; }
  #sketch_view, #sketch_draw { display: contents; }
  #sketch_output { order: -1; position: sticky; top: 0; z-index: 10; padding: 4px 0;
                   background: var(--background-fill-primary, #fff); }
  #sketch_output .lv-img { max-height: 36vh !important; }
  #sketch_output .lv-readout { height: 2.6em; min-height: 0; overflow: hidden; font-size: 0.75em; }
  #sketch .sc-canvas { scroll-margin-top: calc(36vh + 96px); }  /* scrolled into view: below the picture + tools */
  #sketch { order: 0; }
  #live_drafts { order: 1; }
  #sketch_examples { order: 3; }
}
""".replace("NARROW_PX", str(NARROW_PX))


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
    """A frame -> the JPEG bytes the app serves for final frames (deterministic for identical pixels)."""
    return encode_jpeg(image, settings.JPEG_QUALITY)


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


def format_latency(frame: Any, extra_notices: tuple[str, ...] = (), markdown: bool = True) -> str:
    """The readout: total, then the per-stage split, then reuse and notices; Markdown (the API's latency text)
    or plain lines (the Sketch tab's readout)."""
    timings = frame.timings_ms
    total = f"{timings.get('total', 0.0):.0f} ms"
    head = f"{f'**{total}**' if markdown else total} total · decoder: {frame.decoder}"
    if frame.reused:
        head += " (same inputs as a recent frame: reused, no model work)"
    elif frame.batch_size > 1:
        head += f" (batch of {frame.batch_size}: made together with frames of other users)"
    split = " · ".join(f"{stage} {timings[stage]:.1f}" for stage in settings.FRAME_STAGES if stage in timings)
    lines = [head, f"{split} (ms)" if split else ""]
    lines += [f"ℹ️ {notice}" for notice in (*frame.notices, *extra_notices)]
    return ("  \n" if markdown else "\n").join(line for line in lines if line)


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


def _banner_html(banner: str) -> str:
    """One line (the banner's first sentence, cut to the width by CSS); the whole text, reason included, behind a
    disclosure."""
    headline = banner.split(". ")[0].rstrip(".")
    return f"<details><summary>⚠️ {html.escape(headline)}</summary><p>{html.escape(banner)}</p></details>"


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
    gate = CanvasGate(settings.MAX_WAITING_FRAMES, slots=concurrency_limit)
    # Drafts ask for the tiny decoder only where the engine has one; else they are full frames, sent smaller.
    draft_decoder = settings.DRAFT_DECODER if engine.has_tiny_decoder else DEFAULT_DECODER
    nonces = itertools.count(1)
    text_frame = _on_gpu(engine.text_to_image)
    photo_map_fn = _on_gpu(engine.photo_to_control_map)
    size = int(engine.size)
    sketch_examples = _examples("examples.json")
    photo_examples = _examples("photo_examples.json")

    def sketch_frame_for(picture, prompt, steps, seed, guidance_scale, control_strength, thickness,
                         control_map=None, markdown=False, **options):
        """The Sketch tab's frame and its readout (plain lines for the page, Markdown for the API); every sketch
        frame is made here."""
        extra: tuple[str, ...] = ()
        if control_map is not None:
            extra = ("using the uploaded photo's edge map; clear the photo to draw again",)
        frame = _run(sketch_frame, picture, prompt, steps=steps, seed=seed, guidance_scale=guidance_scale,
                     control_strength=control_strength, thickness=thickness, control_map=control_map, **options)
        return frame, format_latency(frame, extra, markdown=markdown)

    def through_gate(request: dict, final: bool) -> dict:
        """A frame the canvas asked for through its server function ``draft_frame`` or ``final_frame``:
        ``{png, inputs: [prompt, steps, seed, guidance, control strength, thickness], seq, tab}`` (and
        ``decoder`` for a final) -> ``frame_value`` (``{src, digest, seq, nonce, readout}``); ``{seq, dropped:
        true}`` when a newer frame of the tab took its place in the gate; ``{seq, busy: true}`` when too many tabs
        wait; ``{seq, error}`` for bad input or a model fault. Never raises: the canvas asks the queue for a final
        frame the gate did not make, and the queue shows the error."""
        try:
            seq, tab = int(request["seq"]), str(request["tab"])[:64]
            prompt, steps, seed, guidance_scale, control_strength, thickness = request["inputs"]
            picture = inputs.decode_image(request["png"], what="sketch")
            decoder = (request.get("decoder") or DEFAULT_DECODER) if final else draft_decoder
        except InputError as error:
            return {"seq": None, "error": str(error)}
        except (KeyError, TypeError, ValueError, AttributeError):
            return {"seq": None, "error": "a canvas frame request is {png, inputs: [6 values], seq, tab}"}
        try:
            made = gate.run(tab, lambda: sketch_frame_for(picture, prompt, steps, seed, guidance_scale,
                                                          control_strength, thickness, decoder=decoder),
                            final=final)
        except GateFull:
            return {"seq": seq, "busy": True}
        except gr.Error as error:
            return {"seq": seq, "error": error.message}
        if made is None:
            return {"seq": seq, "dropped": True}
        frame, readout = made
        jpeg = encode_frame(frame.image) if final else encode_jpeg(frame.image, settings.DRAFT_JPEG_QUALITY)
        return frame_value(jpeg, sketch_digest(picture), seq, next(nonces), readout)

    def draft_frame(request: dict) -> dict:
        """The canvas's server function for draft frames (see ``through_gate``)."""
        return through_gate(request, final=False)

    def final_frame(request: dict) -> dict:
        """The canvas's server function for final frames (see ``through_gate``)."""
        return through_gate(request, final=True)

    with gr.Blocks(title="SANA-Sprint Live Sketch", delete_cache=settings.FRAME_CACHE_PRUNE_S) as demo:
        gr.Markdown("# SANA-Sprint Live Sketch\nDraw on the canvas: the image follows your pen while you draw and "
                    "is redrawn in full when you lift it, by a one-step diffusion model steered by your sketch "
                    "(ControlNet).")
        if engine.banner:
            gr.HTML(_banner_html(engine.banner), elem_id="banner", padding=False)
        if engine.controlnet_note:
            gr.Markdown(f"ControlNet: {engine.controlnet_note}", elem_id="controlnet_note")

        with gr.Tabs():
            # --- Sketch tab -----------------------------------------------------------------------------
            with gr.Tab("Sketch", id="sketch_tab"):
                prompt = gr.Textbox("", label="Prompt", elem_id="prompt", lines=2, max_lines=4,
                                    max_length=settings.MAX_PROMPT_CHARS,
                                    placeholder="what the sketch should become, e.g. 'a cottage in a forest'")
                with gr.Row(equal_height=False, elem_id="sketch_row"):
                    with gr.Column(elem_id="sketch_draw"):
                        sketch = SketchCanvas("", size=size, elem_id="sketch", label="Sketch",
                                              output_id="sketch_output", server_functions=[draft_frame, final_frame])
                        live = gr.Checkbox(settings.LIVE_DRAFTS, label="Live drafts (frames while you draw)",
                                           elem_id="live_drafts", container=False)
                        if sketch_examples:
                            gallery = gr.Gallery(
                                value=[(str(ASSETS / e["file"]), e["prompt"]) for e in sketch_examples],
                                label="Example sketches (click one to load it)", elem_id="sketch_examples",
                                columns=len(sketch_examples), height="auto", allow_preview=False,
                                show_label=True, interactive=False, object_fit="contain",
                            )
                    with gr.Column(elem_id="sketch_view"):
                        output = LiveImage(max_height=min(size, OUTPUT_MAX_HEIGHT), elem_id="sketch_output")
                # /sketch_to_image's outputs: the API returns a JPEG file, the page shows frames inline instead
                api_image = gr.Image(format="jpeg", type="filepath", visible=False, elem_id="sketch_api_image")
                api_latency = gr.Markdown(visible=False)
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
        # The canvas asks for its frames through its server functions (draft_frame, final_frame; defined above the
        # layout, which needs them). The queue makes the rest: page load, a photo's edge map (held in session state),
        # and a final the gate turned away ('final': the canvas asks). The frame travels inline, as LiveImage's value.
        def sketch_final(sketch: str, prompt: str, steps: int, seed: int, guidance_scale: float,
                         control_strength: float, thickness: int, control_map, decoder: str, event: gr.EventData):
            asked = getattr(event, "_data", None) or {}
            if asked.get("tab"):
                gate.drop(str(asked["tab"]))  # this tab's waiting frame is older than this picture
            picture = _run(inputs.decode_image, sketch or None, what="sketch") if control_map is None else None
            frame, readout = sketch_frame_for(picture, prompt, steps, seed, guidance_scale, control_strength,
                                              thickness, control_map, decoder=decoder)
            seq = asked.get("seq")
            return frame_value(encode_frame(frame.image), sketch_digest(picture),
                               int(seq) if isinstance(seq, int) else None, next(nonces), readout)

        gr.on(
            triggers=[demo.load, sketch.final, photo_map_view.change],
            fn=sketch_final,
            inputs=[sketch, prompt, steps, seed, guidance, control_strength, thickness, photo_map, decoder],
            outputs=[output],
            api_visibility="private",
            trigger_mode="always_last", show_progress="hidden", concurrency_limit=concurrency_limit,
            concurrency_id=GPU,
        )
        gr.on(
            triggers=[demo.load, prompt.change, steps.change, seed.change, guidance.change, control_strength.change,
                      thickness.change, live.change, photo_map_view.change, decoder.change],
            fn=None,
            inputs=[prompt, steps, seed, guidance, control_strength, thickness, live, photo_map_view, decoder],
            js=MIRROR_INPUTS_JS,
        )

        def sketch_to_image(sketch: str, prompt: str, steps: int, seed: int, guidance_scale: float,
                            control_strength: float, thickness: int, decoder: str = DEFAULT_DECODER):
            frame, text = sketch_frame_for(sketch or None, prompt, steps, seed, guidance_scale, control_strength,
                                           thickness, markdown=True, decoder=decoder)
            return frames.write(frame.image), text

        gr.on(
            triggers=[],
            fn=sketch_to_image,
            inputs=[sketch, prompt, steps, seed, guidance, control_strength, thickness, decoder],
            outputs=[api_image, api_latency],
            api_name="sketch_to_image",
            api_description="Sketch (PNG data URL) + prompt -> (JPEG image, latency markdown).",
            concurrency_id=GPU, concurrency_limit=concurrency_limit,
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
