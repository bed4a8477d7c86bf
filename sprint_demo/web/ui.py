"""The Gradio interface: ``create_demo(engine) -> gr.Blocks``, layout and wiring only.

Tabs: Sketch (a live canvas steering the image through the ControlNet), Paint (a colour canvas redrawn by
image-to-image), Camera (a live camera, ``web.camera``) and Playground (text-to-image while you type). Each tab is
built by a function of its own, a control that several tabs show by one helper; the frame functions they wire live
in the handlers of each surface (``web.canvas_handlers``, ``web.camera_handlers``, ``web.api_handlers``), the
input checks in ``sprint_demo.inputs``, the words in ``web.messages``, the model work in the engine (the UI never
touches torch).

A canvas tab's frames come from its canvas's server functions (``draft_frame`` while the pen moves,
``final_frame`` when it lifts or the inputs settle for ``settings.SETTLE_MS``; the engine keeps one waiting frame
per tab, the newest), and the rest through the queue: ONE ``gr.on`` per tab with ``trigger_mode="always_last"``,
hidden progress and the shared ``"gpu"`` concurrency id, so at most one frame per tab is in the queue and the final
image is always made from the final inputs (docs/PERFORMANCE.md, "The app around the model", has the measurements
behind both choices). A client-side event mirrors the tab's inputs into the canvas by name
(``canvas_handlers.SKETCH_INPUTS``, ``PAINT_INPUTS``). The "Live drafts" switch turns drafts off. Frames travel
inline (JPEG data URLs). Phones get one column with the picture pinned above the canvas (``NARROW_PX``).

The Paint tab (``_paint_tab``) is the Sketch tab's machinery around the colour canvas (``SketchCanvas.for_paint``):
the painting is redrawn by image-to-image at the tab's strength, drafts while the brush moves and the final frame
when it lifts; "Paint over this" loads the frame on show back into the canvas, in the page.

The Camera tab (``_camera_tab``) is a ``CameraStream`` whose server functions (``CameraHandlers``) make every
frame; its inputs are mirrored into it by name (``camera_handlers.CAMERA_INPUTS``). On ZeroGPU it shows a note
instead: each frame would be a GPU allocation of its own.

Public API (``gradio_client``; names checked by tests/test_app_api.py):

* ``/sketch_to_image(sketch, prompt, steps, seed, guidance_scale, control_strength, thickness, decoder, style,
  style_scale)`` -> ``(image_path, latency_markdown)``; ``sketch`` is a PNG data URL string (``""`` = no sketch).
* ``/text_to_image(prompt, steps, seed, guidance_scale, width, height, decoder, style, style_scale, prompt_b, blend,
  seed_b, seed_blend)`` -> ``(image_path, latency_markdown)``.
* ``/image_to_image(image, prompt, strength, steps, seed, guidance_scale, decoder, style, style_scale)`` ->
  ``(image_path, latency_markdown)``; ``image`` is a PNG, JPEG or WebP data URL, and the result keeps its aspect
  ratio.

``style`` (a preset or a loaded LoRA's name, default "none") and ``style_scale`` (the LoRA's strength, 0-2,
default 1), and the Playground's travel (``prompt_b`` / ``blend``, ``seed_b`` / ``seed_blend``: blend 0 is no
travel), come after ``decoder`` for the same reason.

``decoder`` (last, so positional calls written before it existed still work) is ``"full"`` (default: the DC-AE)
or ``"tiny"`` (the tiny autoencoder: much faster, less fine detail); the latency readout names the one used. A
server without a tiny autoencoder offers only ``"full"`` and says why under the choice. The page's own frames are
private events, but for the Playground's, which is ``/text_to_image``; the other two endpoints have no trigger in
the page. Bad input raises ``gr.Error`` naming the value; model faults raise ``gr.Error`` naming the fault; the
server keeps serving.
"""


from __future__ import annotations

import html
import json
import random
from pathlib import Path
from string import Template
from typing import Any

import gradio as gr

from .. import settings
from ..frames import DEFAULT_DECODER, FrameSource
from . import messages
from .api_handlers import ApiHandlers
from .camera import CameraStream
from .camera_handlers import CAMERA_INPUTS, CameraHandlers
from .canvas import SketchCanvas, sketch_value
from .canvas_handlers import PAINT_INPUTS, SKETCH_INPUTS, CanvasHandlers
from .handlers import FrameMaker
from .live import LiveImage
from .page_files import page_file

ASSETS = Path(__file__).resolve().parents[2] / "assets"
GPU = "gpu"  # concurrency id shared by every event that runs the model: one GPU, one queue
OUTPUT_MAX_HEIGHT = 640  # CSS px of the output image box; the canvas's CSS max-width (canvas.py) matches it
DECODER_LABELS = {"full": "full", "tiny": "tiny (fast, for slow machines)"}
NARROW_PX = 720  # below this width a canvas tab stacks: the image above the canvas, pinned while drawing


MIRROR_TRIES = 50  # a tab's content mounts when the tab is first opened: try every 100 ms for up to 5 s


def mirror_inputs_js(root_selector: str, names: list[str]) -> str:
    """A client-side event function: the values of the wired components, in ``names``' order, handed to the
    component at ``root_selector`` as one object keyed by name (no server round trip); tried again for a while
    when the component is not in the page yet (Gradio mounts a tab's content when the tab is first opened)."""
    return (f"(...values) => {{ const names = {json.dumps(names)}; "
            "const inputs = Object.fromEntries(names.map((n, i) => [n, values[i]])); "
            "const hand = (tries) => { "
            f"const root = document.querySelector({json.dumps(root_selector)}); "
            "if (root && root.setInputs) root.setInputs(inputs); "
            "else if (tries > 0) setTimeout(() => hand(tries - 1), 100); }; "
            f"hand({MIRROR_TRIES}); return []; }}")


def canvas_tab_css(tab: str, below: list[str]) -> str:
    """The page CSS of the canvas tab whose canvas is ``#<tab>`` (``canvas_tab.css``: its output image kept square
    and, on a phone, one column with the picture pinned above the canvas); ``below``: the elem_ids of the blocks
    under the canvas on a phone, in order."""
    order = "\n".join(f"  #{elem_id} {{ order: {place}; }}" for place, elem_id in enumerate(below, start=1))
    return Template(page_file("canvas_tab.css")).substitute(tab=tab, narrow_px=NARROW_PX, below=order)


CSS = """
#banner { background: #fff4d6; border: 1px solid #e6c35c; border-radius: 8px; padding: 4px 12px; }
#banner summary { cursor: pointer; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#banner p { margin: 4px 0 0; font-size: 0.9em; }
#controlnet_note { color: #7a5b00; font-size: 0.9em; }
#t2i_latency { font-family: ui-monospace, monospace; font-size: 0.85em; min-height: 3em; }
#t2i_output img { object-fit: contain; }
/* The example gallery: Gradio gives a gallery without a pixel height a box of at least 320 px (450 px on wide
   screens), most of it empty under one row of thumbnails; here the box follows its thumbnails, which wrap into
   rows on a narrow screen instead of scrolling sideways, below the gallery's label rather than under it. */
#sketch_examples .grid-wrap { min-height: 0; max-height: none; overflow-y: auto; }
#sketch_examples .grid-container { grid-template-columns: repeat(auto-fit, minmax(88px, 1fr)); padding-top: 24px; }
/* The Gradio container clips its overflow instead of hiding it: "hidden" makes it a scroll box, and the canvas tabs'
   pinned picture (canvas_tab.css) would stick to it instead of to the screen on a phone (a rule at the top level:
   Gradio keeps those as written, rules inside @media only under its own container). */
.gradio-container { overflow: clip !important; }
""" + canvas_tab_css("sketch", ["live_drafts", "sketch_examples"]) + canvas_tab_css(
    "paint", ["paint_over", "paint_live_drafts"])


# --- Controls that several tabs show ---------------------------------------------------------------------------
def _no_gradio_range_check(component: Any) -> Any:
    """``component`` (a slider, number box or radio) with Gradio's own check of the value it receives turned off:
    the value reaches the handler untouched and the server's check words the refusal (``inputs.check_*``: the
    field, the range, the value). Gradio's would refuse first with "Value 9 is greater than maximum value 4.",
    naming neither, and print a traceback. Done per instance, not by subclassing, because gradio writes a ``.pyi``
    stub next to every module that subclasses a component."""
    component.preprocess = lambda payload: payload
    return component


def aspect_size(aspect: str, long_side: int) -> tuple[int, int]:
    """``"16:9"`` with a long side of 1024 -> (1024, 576); both sides multiples of ``settings.SIZE_MULTIPLE``."""
    a, b = (int(part) for part in aspect.split(":"))
    scale = long_side / max(a, b)
    snap = settings.SIZE_MULTIPLE

    def side(units: int) -> int:
        return max(settings.MIN_SIZE, int(round(units * scale / snap)) * snap)

    return side(a), side(b)


def banner_html(banner: str) -> str:
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


def _steps_slider(elem_id: str, value: int = settings.DEFAULT_STEPS, info: str | None = None) -> gr.Slider:
    return _no_gradio_range_check(gr.Slider(settings.MIN_STEPS, settings.MAX_STEPS, value=value, step=1,
                                            label="Steps", info=info, elem_id=elem_id))


def _seed_row(elem_id: str) -> gr.Number:
    """The seed box and its dice button (``<elem_id>_random``) side by side, wired."""
    with gr.Row():
        seed = _no_gradio_range_check(gr.Number(value=settings.DEFAULT_SEED, precision=0, minimum=0,
                                                maximum=settings.MAX_SEED, label="Seed", elem_id=elem_id))
        dice = gr.Button("🎲 Random seed", elem_id=f"{elem_id}_random", scale=0)
    dice.click(lambda: random.randint(0, settings.MAX_SEED), outputs=seed, api_visibility="private", queue=False)
    return seed


def _guidance_slider(elem_id: str) -> gr.Slider:
    return _no_gradio_range_check(gr.Slider(settings.MIN_GUIDANCE, settings.MAX_GUIDANCE,
                                            value=settings.DEFAULT_GUIDANCE, step=0.1, label="Guidance",
                                            elem_id=elem_id))


def _control_strength_slider(elem_id: str, when: str = "") -> gr.Slider:
    """How strongly the edges steer (``when``: a note on when they do, e.g. "edges mode")."""
    label = "Control strength: how strongly the edges steer" + (f" ({when})" if when else "")
    return _no_gradio_range_check(gr.Slider(
        settings.MIN_CONTROL_STRENGTH, settings.MAX_CONTROL_STRENGTH, value=settings.DEFAULT_CONTROL_STRENGTH,
        step=0.05, label=label, elem_id=elem_id))


def _strength_slider(elem_id: str, value: float, label: str, visible: bool = True) -> gr.Slider:
    """An image-to-image strength (the Paint tab's, the Sketch tab's photo restyle, the camera's image mode)."""
    return _no_gradio_range_check(gr.Slider(settings.MIN_UI_STRENGTH, 1.0, value=value, step=settings.STRENGTH_STEP,
                                            label=label, elem_id=elem_id, visible=visible))


def _decoder_radio(engine: FrameSource, elem_id: str, value: str = DEFAULT_DECODER,
                   label: str = "Decoder for final frames") -> gr.Radio:
    """Which autoencoder makes the tab's frames. Without a tiny autoencoder only "full" is offered, and the reason
    is shown under the choice."""
    choices = [(DECODER_LABELS[name], name) for name in engine.decoders]
    return _no_gradio_range_check(gr.Radio(choices, value=value, label=label, info=messages.decoder_info(engine),
                                           elem_id=elem_id, interactive=engine.has_tiny_decoder))


def camera_decoder(engine: FrameSource) -> str:
    """The lane camera frames use by default: the tiny autoencoder wherever there is one (every camera frame is a
    new picture, so it pays an encode as well as a decode; docs/PERFORMANCE.md, "Camera", has the figures)."""
    return "tiny" if engine.has_tiny_decoder else DEFAULT_DECODER


def _live_drafts_switch(elem_id: str, verb: str) -> gr.Checkbox:
    """A canvas tab's switch for drafts while the pen moves (``verb``: "draw", "paint")."""
    return gr.Checkbox(settings.LIVE_DRAFTS, label=f"Live drafts (frames while you {verb})", elem_id=elem_id,
                       container=False)


def _style_controls(engine: FrameSource, elem_id: str) -> dict[str, Any]:
    """The Style menu (the presets, then the LoRAs loaded) and its strength slider (``<elem_id>_scale``), by the
    names the request functions take them."""
    with gr.Row():
        style = _no_gradio_range_check(gr.Dropdown(list(engine.styles), value=settings.DEFAULT_STYLE, label="Style",
                                                   info=messages.style_info(engine), elem_id=elem_id))
        scale = _no_gradio_range_check(gr.Slider(settings.MIN_STYLE_SCALE, settings.MAX_STYLE_SCALE,
                                                 value=settings.DEFAULT_STYLE_SCALE, step=0.05, label="Style strength",
                                                 info=messages.STYLE_SCALE_INFO, elem_id=f"{elem_id}_scale"))
    return {"style": style, "style_scale": scale}


def _travel_controls() -> list:
    """The Playground's prompt and seed travel: a second prompt and seed, each with its blend slider (0: the first
    exactly, 1: the second), in ``ApiHandlers.text_to_image``'s order (prompt_b, blend, seed_b, seed_blend)."""
    with gr.Accordion("Travel between two prompts or two seeds", open=False):
        prompt_b = gr.Textbox("", label="Second prompt", elem_id="t2i_prompt_b", max_length=settings.MAX_PROMPT_CHARS,
                              placeholder="a second prompt to blend towards")
        blend = _no_gradio_range_check(gr.Slider(0.0, 1.0, value=settings.DEFAULT_BLEND, step=settings.BLEND_STEP,
                                                 label="Prompt blend (0: first prompt, 1: second)",
                                                 elem_id="t2i_blend"))
        seed_b = _no_gradio_range_check(gr.Number(value=settings.DEFAULT_SEED_B, precision=0, minimum=0,
                                                  maximum=settings.MAX_SEED, label="Second seed",
                                                  elem_id="t2i_seed_b"))
        seed_blend = _no_gradio_range_check(gr.Slider(0.0, 1.0, value=settings.DEFAULT_BLEND,
                                                      step=settings.BLEND_STEP,
                                                      label="Seed blend (0: first seed, 1: second)",
                                                      elem_id="t2i_seed_blend"))
    return [prompt_b, blend, seed_b, seed_blend]


def _prompt_box(elem_id: str, placeholder: str, lines: int = 2) -> gr.Textbox:
    return gr.Textbox("", label="Prompt", elem_id=elem_id, lines=lines, max_lines=2 * lines,
                      max_length=settings.MAX_PROMPT_CHARS, placeholder=placeholder)


def _mirror(triggers: list, named: dict[str, Any], root_selector: str) -> None:
    """Hand the components ``named`` to the component at ``root_selector`` by name at each of ``triggers`` and
    whenever one of them changes (``mirror_inputs_js``)."""
    gr.on(triggers=[*triggers, *(component.change for component in named.values())], fn=None,
          inputs=list(named.values()), js=mirror_inputs_js(root_selector, list(named)))


# --- The interface --------------------------------------------------------------------------------------
def create_demo(engine: FrameSource, concurrency_limit: int = 1) -> gr.Blocks:
    """The whole app around one loaded engine (``sprint_demo.engine.Engine``, or ``serve_ray.RayEngine``).
    ``concurrency_limit``: queued frame events in flight at once over all users (the engine's ``max_batch_size``
    on one GPU, so a batch can fill; ``RayEngine.concurrency`` for replicas)."""
    maker = FrameMaker(engine)
    canvases, api = CanvasHandlers(maker), ApiHandlers(maker)
    queued = dict(api_visibility="private", trigger_mode="always_last", show_progress="hidden",
                  concurrency_limit=concurrency_limit, concurrency_id=GPU)
    with gr.Blocks(title="SANA-Sprint Live Sketch", delete_cache=settings.FRAME_CACHE_PRUNE_S) as demo:
        gr.Markdown("# SANA-Sprint Live Sketch\nDraw, paint or point your camera: a one-step diffusion model "
                    "redraws the picture while you work (drafts while the pen moves, the full frame when it lifts).")
        if banner := messages.banner(engine):
            gr.HTML(banner_html(banner), elem_id="banner", padding=False)
        if note := messages.controlnet_note(engine):
            gr.Markdown(f"ControlNet: {note}", elem_id="controlnet_note")
        with gr.Tabs():
            with gr.Tab("Sketch", id="sketch_tab"):
                _sketch_tab(demo, engine, canvases, api, queued)
            with gr.Tab("Paint", id="paint_tab") as paint_tab:
                _paint_tab(paint_tab, demo, engine, canvases, queued)
            with gr.Tab("Camera", id="camera_tab") as camera_tab:
                _camera_tab(demo, camera_tab, engine, CameraHandlers(maker))
            with gr.Tab("Playground", id="playground_tab") as playground_tab:
                _playground_tab(playground_tab, engine, api, queued)
        _image_to_image_api(api, queued)
        gr.api(api.engine_stats, api_name="engine_stats", api_visibility="undocumented", queue=False)
    return demo


def _image_to_image_api(api: ApiHandlers, queued: dict) -> None:
    """``/image_to_image``: an endpoint with no trigger in the page (the Paint tab's frames are its own events).
    Its inputs are hidden components holding the parameters' defaults, in ``ApiHandlers.image_to_image``'s order."""
    hidden = {
        "image": gr.Textbox(None, visible=False),
        "prompt": gr.Textbox("", visible=False),
        **{name: _no_gradio_range_check(gr.Number(default, visible=False)) for name, default in (
            ("strength", settings.DEFAULT_API_STRENGTH), ("steps", settings.DEFAULT_STEPS),
            ("seed", settings.DEFAULT_SEED), ("guidance_scale", settings.DEFAULT_GUIDANCE))},
        "decoder": _no_gradio_range_check(gr.Textbox(DEFAULT_DECODER, visible=False)),
        "style": gr.Textbox(settings.DEFAULT_STYLE, visible=False),
        "style_scale": _no_gradio_range_check(gr.Number(settings.DEFAULT_STYLE_SCALE, visible=False)),
    }
    outputs = [gr.Image(format="jpeg", type="filepath", visible=False), gr.Markdown(visible=False)]
    gr.on(triggers=[], fn=api.image_to_image, inputs=list(hidden.values()), outputs=outputs, api_name="image_to_image",
          api_description="Picture (PNG/JPEG/WebP data URL) + prompt + strength in (0, 1] -> (JPEG image keeping the "
                          "picture's aspect ratio, latency markdown).",
          concurrency_id=GPU, concurrency_limit=queued["concurrency_limit"])


def _sketch_tab(demo: gr.Blocks, engine: FrameSource, canvases: CanvasHandlers, api: ApiHandlers,
                queued: dict) -> None:
    size = engine.size
    examples = _examples("examples.json")
    prompt = _prompt_box("prompt", "what the sketch should become, e.g. 'a cottage in a forest'")
    with gr.Row(equal_height=False, elem_id="sketch_row"):
        with gr.Column(elem_id="sketch_draw"):
            sketch = SketchCanvas("", size=size, elem_id="sketch", label="Sketch", output_id="sketch_output",
                                  server_functions=canvases.server_functions("sketch"))
            live = _live_drafts_switch("live_drafts", "draw")
            if examples:
                _example_gallery(examples, sketch, prompt, size)
        with gr.Column(elem_id="sketch_view"):
            output = LiveImage(max_height=min(size, OUTPUT_MAX_HEIGHT), elem_id="sketch_output")
    # /sketch_to_image's outputs: the API returns a JPEG file, the page shows frames inline instead
    api_image = gr.Image(format="jpeg", type="filepath", visible=False, elem_id="sketch_api_image")
    api_latency = gr.Markdown(visible=False)
    with gr.Row():
        steps = _steps_slider("steps", info=messages.CANVAS_STEPS_INFO)
        seed = _seed_row("seed")
    with gr.Row():
        guidance = _guidance_slider("guidance")
        control_strength = _control_strength_slider("control_strength")
        photo_strength = _strength_slider("photo_strength", settings.DEFAULT_RESTYLE_STRENGTH,
                                          "Photo strength: how far the photo is redrawn",
                                          visible=settings.DEFAULT_PHOTO_RESTYLE)
        thickness = _no_gradio_range_check(gr.Slider(
            settings.MIN_THICKNESS, settings.MAX_THICKNESS, value=settings.DEFAULT_THICKNESS, step=1,
            label="Sketch thickness", elem_id="thickness",
            info="of the edge map's lines, as NVlabs' HED demo sets it (1-4, default 2): 1-3 keep the recipe's thin "
                 "lines, 4 widens them by a pixel"))
    decoder = _decoder_radio(engine, "decoder")
    styles = _style_controls(engine, "style")
    photo, photo_map_view, restyle = _photo_accordion(engine, photo_strength)
    photo_state = gr.State(None)  # the tab's canvas_handlers.Photo (its exact edge map) for the frame functions

    # The tab's frame inputs, in SKETCH_INPUTS order: the queue's functions take them in that order and the canvas
    # gets them by name.
    named = dict(zip(SKETCH_INPUTS, (prompt, steps, seed, guidance, control_strength, thickness)))
    # The queue makes the frames the canvas does not get from its server functions: page load, and a final the
    # canvas asks the queue for (its 'final' event: a photo replaces the sketch, or the server function could not
    # make it).
    gr.on(triggers=[demo.load, sketch.final], fn=canvases.sketch_final,
          inputs=[sketch, *named.values(), photo_state, decoder, *styles.values()], outputs=[output], **queued)
    _mirror([demo.load], {**named, **styles, "live": live, "photo": photo_map_view, "decoder": decoder},
            "#sketch .sc-root")
    gr.on(triggers=[], fn=api.sketch_to_image, inputs=[sketch, *named.values(), decoder, *styles.values()],
          outputs=[api_image, api_latency], api_name="sketch_to_image",
          api_description="Sketch (PNG data URL) + prompt -> (JPEG image, latency markdown).",
          concurrency_id=GPU, concurrency_limit=queued["concurrency_limit"])
    # Upload, clear, example click, thickness and the restyle switch and strength all recompute (or drop) the photo's
    # map, and the frame follows in the same event.
    gr.on(triggers=[photo.change, thickness.change, restyle.change, photo_strength.change], fn=canvases.photo_frame,
          inputs=[photo, thickness, sketch, prompt, steps, seed, guidance, control_strength, decoder, restyle,
                  photo_strength, *styles.values()],
          outputs=[photo_map_view, photo_state, output], **(queued | {"show_progress": "minimal"}))


def _example_gallery(examples: list[dict[str, str]], sketch: SketchCanvas, prompt: gr.Textbox, size: int) -> None:
    """The Sketch tab's example sketches: a click loads one into the canvas, with its prompt."""
    gallery = gr.Gallery(
        value=[(str(ASSETS / e["file"]), e["prompt"]) for e in examples],
        label="Example sketches (click one to load it)", elem_id="sketch_examples",
        columns=len(examples), height="auto", allow_preview=False, show_label=True, interactive=False,
        object_fit="contain",
    )

    def load_example(event: gr.SelectData):
        entry = examples[event.index]
        return sketch_value(str(ASSETS / entry["file"]), size), entry["prompt"]

    gallery.select(load_example, outputs=[sketch, prompt], api_visibility="private", queue=False)


def _photo_accordion(engine: FrameSource, photo_strength: gr.Slider) -> tuple[gr.Image, gr.Image, gr.Checkbox]:
    """The Sketch tab's photo: the upload, the edge map the model sees and the restyle switch, which shows the
    ``photo_strength`` slider: the photo itself redrawn (image-to-image), its edges steering, instead of its edges
    alone. Returns (photo, edge map view, restyle switch)."""
    with gr.Accordion("Or start from a photo (its edge map replaces the sketch)", open=False):
        with gr.Row():
            photo = gr.Image(label="Photo", type="pil", sources=["upload", "clipboard"], elem_id="photo", height=320)
            # labelled with the Canny stand-in's note from the start when the engine loaded its detector already
            photo_map_view = gr.Image(label=messages.edge_map_label(messages.edges_note(engine)), format="png",
                                      interactive=False, elem_id="photo_map", height=320)
        restyle = gr.Checkbox(settings.DEFAULT_PHOTO_RESTYLE, label="Restyle the photo (image-to-image)",
                              info="redraw the photo itself, its edges still steering; off: the edges alone",
                              elem_id="photo_restyle")
        if photo_examples := _examples("photo_examples.json"):
            gr.Examples([[str(ASSETS / e["file"])] for e in photo_examples], inputs=[photo], label="Example photo")
    restyle.change(lambda on: gr.update(visible=on), inputs=restyle, outputs=photo_strength,
                   api_visibility="private", queue=False)
    return photo, photo_map_view, restyle


def _camera_tab(demo: gr.Blocks, tab: gr.Tab, engine: FrameSource, camera: CameraHandlers) -> None:
    if settings.ZERO_GPU:  # each frame would be a GPU allocation of its own, billed against the visitor's quota
        gr.Markdown(messages.CAMERA_ON_ZERO_GPU, elem_id="camera_unavailable")
        return
    gr.Markdown(messages.CAMERA_INTRO)
    prompt = _prompt_box("camera_prompt", "what the camera should become, e.g. 'an oil painting'")
    CameraStream(elem_id="camera", capture_size=settings.CAMERA_CAPTURE_SIZE, output_id="camera_output",
                 latency_id="camera_latency", server_functions=camera.server_functions())
    with gr.Row():
        mode = gr.Radio([("Restyle the camera (image-to-image)", "image"), ("Follow its edges (ControlNet)", "edges")],
                        value=settings.DEFAULT_CAMERA_MODE, label="Mode", elem_id="camera_mode")
        strength = _strength_slider("camera_strength", settings.DEFAULT_CAMERA_STRENGTH,
                                    "Strength: how far each frame is redrawn (image mode)")
        control_strength = _control_strength_slider("camera_control_strength", when="edges mode")
    with gr.Row():
        steps = _steps_slider("camera_steps", settings.CAMERA_STEPS, messages.CAMERA_STEPS_INFO)
        seed = _seed_row("camera_seed")
        guidance = _guidance_slider("camera_guidance")
    with gr.Row():
        decoder = _decoder_radio(engine, "camera_decoder", value=camera_decoder(engine), label="Decoder")
        steadiness = _no_gradio_range_check(gr.Slider(
            0.0, settings.MAX_STEADINESS, value=settings.DEFAULT_STEADINESS, step=settings.STRENGTH_STEP,
            label="Steadiness", info=messages.CAMERA_STEADINESS_INFO, elem_id="camera_steadiness"))
    styles = _style_controls(engine, "camera_style")
    named = dict(zip(CAMERA_INPUTS, (prompt, mode, strength, steps, seed, guidance, control_strength, decoder,
                                     steadiness)))
    _mirror([demo.load, tab.select], {**named, **styles}, "#camera .cam-root")


PAINT_OVER_JS = """() => {
  const out = document.querySelector('#paint_output');
  const save = out && out.querySelector('.lv-save');
  const img = out && out.querySelector('.lv-img');
  const src = (save && save.getAttribute('href')) || (img && img.getAttribute('src'));
  const root = document.querySelector('#paint .sc-root');
  if (src && root && root.loadPicture) root.loadPicture(src);
  return [];
}"""  # the final frame on show (the one its download button saves) becomes the canvas, as an undoable step


def _paint_tab(tab: gr.Tab, demo: gr.Blocks, engine: FrameSource, canvases: CanvasHandlers, queued: dict) -> None:
    """The Paint tab: paint in colour (or over a photo) and the image follows, redrawn by image-to-image at the
    tab's strength (``CanvasHandlers.paint_frame``); the same live machinery as the Sketch tab (module docstring)."""
    size = engine.size
    prompt = _prompt_box("paint_prompt", "what the painting should become, e.g. 'a harbour at sunset, oil painting'")
    with gr.Row(equal_height=False, elem_id="paint_row"):
        with gr.Column(elem_id="paint_draw"):
            canvas = SketchCanvas.for_paint("", size=size, elem_id="paint", label="Painting",
                                            output_id="paint_output",
                                            server_functions=canvases.server_functions("paint"))
            live = _live_drafts_switch("paint_live_drafts", "paint")
        with gr.Column(elem_id="paint_view"):
            output = LiveImage(max_height=min(size, OUTPUT_MAX_HEIGHT), elem_id="paint_output",
                               readout_id="paint_latency")
            paint_over = gr.Button("↺ Paint over this", elem_id="paint_over", size="sm")
    strength = _strength_slider("paint_strength", settings.DEFAULT_PAINT_STRENGTH,
                                "Strength: how far the painting is redrawn (1: not at all kept, text-to-image)")
    with gr.Row():
        steps = _steps_slider("paint_steps", info=messages.CANVAS_STEPS_INFO)
        seed = _seed_row("paint_seed")
    with gr.Row():
        guidance = _guidance_slider("paint_guidance")
        edges = gr.Checkbox(settings.DEFAULT_PAINT_EDGES, label="Also read dark lines as edges",
                            info="the painting's dark lines steer through the ControlNet, as a sketch's do",
                            elem_id="paint_edges")
        control_strength = _control_strength_slider("paint_control_strength")
    decoder = _decoder_radio(engine, "paint_decoder")
    styles = _style_controls(engine, "paint_style")

    named = dict(zip(PAINT_INPUTS, (prompt, strength, steps, seed, guidance, edges, control_strength)))
    # The queue makes the frames the canvas does not get from its server functions: the tab's first frame when it
    # opens (not at page load: most visits never open it), and a final the canvas asks the queue for.
    gr.on(triggers=[tab.select, canvas.final], fn=canvases.paint_final,
          inputs=[canvas, *named.values(), decoder, *styles.values()], outputs=[output], **queued)
    _mirror([demo.load, tab.select], {**named, **styles, "live": live, "decoder": decoder}, "#paint .sc-root")
    paint_over.click(fn=None, js=PAINT_OVER_JS)


def _playground_tab(tab: gr.Tab, engine: FrameSource, api: ApiHandlers, queued: dict) -> None:
    with gr.Row(equal_height=False):
        with gr.Column():
            prompt = _prompt_box("t2i_prompt", "type: the image refreshes as you write", lines=3)
            steps = _steps_slider("t2i_steps")
            seed = _seed_row("t2i_seed")
            guidance = _guidance_slider("t2i_guidance")
            decoder = _decoder_radio(engine, "t2i_decoder")
            styles = _style_controls(engine, "t2i_style")
            travel = _travel_controls()
            aspect = gr.Radio(list(settings.ASPECT_RATIOS), value=settings.ASPECT_RATIOS[0], label="Aspect",
                              elem_id="t2i_aspect")
            with gr.Row():
                width, height = (_no_gradio_range_check(gr.Slider(
                    settings.MIN_SIZE, settings.MAX_SIZE, value=engine.size, step=settings.SIZE_MULTIPLE,
                    label=label, elem_id=f"t2i_{label.lower()}")) for label in ("Width", "Height"))
        with gr.Column():
            output = gr.Image(label="Image", format="jpeg", type="filepath", interactive=False, elem_id="t2i_output")
            latency = gr.Markdown(label="Latency", elem_id="t2i_latency")
    inputs = [prompt, steps, seed, guidance, width, height, decoder, *styles.values(), *travel]
    gr.on(triggers=[tab.select, *(component.change for component in inputs)], fn=api.text_to_image,
          inputs=inputs, outputs=[output, latency],
          **(queued | {"api_visibility": "public", "api_name": "text_to_image",
                       "api_description": "Prompt -> (JPEG image of width x height, latency markdown)."}))
    aspect.change(lambda value: aspect_size(value, engine.size), inputs=aspect, outputs=[width, height],
                  api_visibility="private", queue=False)
