"""A light drawing canvas for Gradio: a ``gr.HTML`` subclass around a plain ``<canvas>``.

Why not ``gr.Sketchpad``: it exports and uploads background, composite and layers as PNG files on every change
(FACTS.md section 7: a median 1.27 s from mouse-up to a new image). This component keeps everything in the
browser and sends one PNG data URL per finished stroke, as the component's value (a string); nothing is
uploaded.

How it works (read from gradio 6.31 ``gradio/components/html.py`` and its frontend ``HTML-*.js``, not copied):

* ``html_template`` is rendered once; it does not mention ``value``, so value updates never re-render (Gradio
  morphs the DOM only when the rendered template string changes) and the drawing is never wiped.
* ``js_on_load`` gets ``element``, ``props`` and ``watch``. Setting ``props.value`` sends the value to the
  server side of the component, and Gradio's HTML wrapper dispatches ``change`` itself on every new value:
  ``trigger('change')`` would fire it twice.
* A value set from Python (an example sketch) reaches ``watch('value', ...)``, which paints it into the canvas as
  an undoable step. Our own ``props.value = ...`` does not come back through ``watch``.

Drawing: pointer events (mouse, pen and touch alike) with pointer capture, ``touch-action: none`` so a finger
draws instead of scrolling the page, coalesced events for fast pens, and strokes smoothed with quadratic curves
through segment midpoints. Two canvases: an off-screen one of fixed resolution (``size`` x ``size``, the model's
frame side) whose PNG is the value, and the visible one, whose backing store follows its CSS size times the
screen's devicePixelRatio (ResizeObserver) so strokes stay sharp on HiDPI screens. Both draw the same strokes in
model coordinates (pointer positions mapped through the element's bounding box), so the PNG the model sees is the
same on a phone and on a 4K monitor. History is a list of actions (stroke, clear, loaded image) replayed on undo
or resize, so undo costs no memory per step beyond the stroke's points.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import gradio as gr
from PIL import Image

from . import settings

_HTML = """
<div class="sc-root">
  <div class="sc-toolbar">
    <label class="sc-size" title="Brush width in canvas pixels">Brush
      <input type="range" class="sc-brush" min="${min_brush}" max="${max_brush}" step="1" value="${brush}">
    </label>
    <button type="button" class="sc-tool sc-pen sc-active" title="Draw (black ink)">&#9998; Pen</button>
    <button type="button" class="sc-tool sc-eraser" title="Erase (paints white paper, ${eraser_factor}x brush width)">
      &#9003; Eraser</button>
    <button type="button" class="sc-undo" title="Undo the last stroke (Ctrl+Z)">&#8630; Undo</button>
    <button type="button" class="sc-clear" title="Clear the canvas (undoable)">&#10005; Clear</button>
  </div>
  <canvas class="sc-canvas" width="${size}" height="${size}" tabindex="0"
          aria-label="Drawing canvas: draw with mouse, pen or finger"></canvas>
</div>
"""

# Scoped by Gradio to this component's root. No backticks or dollar-brace here: the CSS is a JS template too.
_CSS = """
.sc-root { display: flex; flex-direction: column; gap: 6px; width: 100%; }
.sc-toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; font-size: 14px; }
.sc-toolbar button { padding: 3px 10px; border: 1px solid #bbb; border-radius: 6px; background: #f6f6f6;
                     color: #222; cursor: pointer; }
.sc-toolbar button.sc-active { background: #222; color: #fff; border-color: #222; }
.sc-size { display: flex; align-items: center; gap: 4px; }
.sc-canvas { width: 100%; max-width: 640px; aspect-ratio: 1 / 1; height: auto; background: #fff;
             border: 1px solid #ccc; border-radius: 6px; touch-action: none; cursor: crosshair;
             -webkit-user-select: none; user-select: none; -webkit-touch-callout: none; display: block; }
"""

_JS = """
const canvas = element.querySelector('.sc-canvas');  // what the user sees: backing store = CSS size x devicePixelRatio
const brushInput = element.querySelector('.sc-brush');
const penButton = element.querySelector('.sc-pen');
const eraserButton = element.querySelector('.sc-eraser');
const SIZE = Number(props.size) || canvas.width;      // the model's frame side: the value's fixed resolution
const model = document.createElement('canvas');        // off-screen: what is sent, SIZE x SIZE whatever the screen
model.width = SIZE;
model.height = SIZE;
const mctx = model.getContext('2d');
const dctx = canvas.getContext('2d');
const contexts = [mctx, dctx];                          // every drawing op runs on both, in model coordinates
const ERASER_FACTOR = Number(props.eraser_factor) || 3;
const MAX_DISPLAY = 4096;
let tool = 'pen';
let actions = [];          // {kind: 'stroke', points, width, color} | {kind: 'clear'} | {kind: 'image', img}
let current = null;        // the stroke being drawn
let activePointer = null;  // one pointer draws at a time; a second finger is ignored
let lastSent = props.value || '';
const root = element.querySelector('.sc-root');

function paper(ctx) {
  ctx.save();
  ctx.globalCompositeOperation = 'source-over';
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, SIZE, SIZE);
  ctx.restore();
}

function mid(a, b) { return { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 }; }

function style(ctx, stroke) {
  ctx.strokeStyle = stroke.color;
  ctx.fillStyle = stroke.color;
  ctx.lineWidth = stroke.width;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
}

// Segment k of a stroke: midpoint(k-2, k-1) -> curve through point k-1 -> midpoint(k-1, k). Drawing segments
// one by one while the pointer moves gives the same pixels as the replay below.
function drawSegment(ctx, stroke, k) {
  const p = stroke.points;
  style(ctx, stroke);
  ctx.beginPath();
  if (k === 0) {
    ctx.arc(p[0].x, p[0].y, stroke.width / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  if (k === 1) {
    ctx.moveTo(p[0].x, p[0].y);
    const m = mid(p[0], p[1]);
    ctx.lineTo(m.x, m.y);
  } else {
    const a = mid(p[k - 2], p[k - 1]);
    const b = mid(p[k - 1], p[k]);
    ctx.moveTo(a.x, a.y);
    ctx.quadraticCurveTo(p[k - 1].x, p[k - 1].y, b.x, b.y);
  }
  ctx.stroke();
}

function drawTail(ctx, stroke) {
  const p = stroke.points;
  const n = p.length;
  if (n < 2) return;
  style(ctx, stroke);
  const a = mid(p[n - 2], p[n - 1]);
  ctx.beginPath();
  ctx.moveTo(a.x, a.y);
  ctx.lineTo(p[n - 1].x, p[n - 1].y);
  ctx.stroke();
}

function drawAction(ctx, action) {
  if (action.kind === 'clear') {
    paper(ctx);
  } else if (action.kind === 'image') {
    paper(ctx);
    ctx.drawImage(action.img, 0, 0, SIZE, SIZE);
  } else {
    for (let k = 0; k < action.points.length; k++) drawSegment(ctx, action, k);
    drawTail(ctx, action);
  }
}

function redraw(targets) {
  // Only what follows the last clear / loaded image is visible: replay from there.
  let start = 0;
  for (let i = actions.length - 1; i >= 0; i--) {
    if (actions[i].kind !== 'stroke') { start = i; break; }
  }
  for (const ctx of targets || contexts) {
    paper(ctx);
    for (let i = start; i < actions.length; i++) drawAction(ctx, actions[i]);
    if (current !== null) drawAction(ctx, current);
  }
}

// HiDPI: the display canvas gets one backing pixel per device pixel and draws in model coordinates through a
// scale transform, so strokes are sharp on any screen while the value stays SIZE x SIZE.
function fitDisplay(devicePixels) {
  const side = Math.max(1, Math.min(MAX_DISPLAY, Math.round(devicePixels)));
  if (side === canvas.width && side === canvas.height) return;
  canvas.width = side;   // resets the context state, so the transform is set after
  canvas.height = side;
  dctx.setTransform(side / SIZE, 0, 0, side / SIZE, 0, 0);
  redraw([dctx]);
}
dctx.setTransform(canvas.width / SIZE, 0, 0, canvas.width / SIZE, 0, 0);
if (typeof ResizeObserver !== 'undefined') {
  new ResizeObserver((entries) => {
    // contentRect x devicePixelRatio, not devicePixelContentBoxSize: emulated scale factors (and some browsers)
    // leave the latter in CSS pixels.
    const px = entries[entries.length - 1].contentRect.width * (window.devicePixelRatio || 1);
    if (px > 0) fitDisplay(px);  // 0 while the tab is hidden
  }).observe(canvas);
}

function send() {
  const url = model.toDataURL('image/png');
  if (url === lastSent) return;  // e.g. undo on an empty history
  lastSent = url;
  canvas.dataset.sent = String(Number(canvas.dataset.sent || 0) + 1);
  props.value = url;  // Gradio dispatches 'change' for the new value (the API's input)
  requestFinal();
}
canvas.sketchDataURL = () => model.toDataURL('image/png');  // the value as it would be sent now (tests, debugging)

function toModel(event) {
  const r = canvas.getBoundingClientRect();  // border box; the drawing is the content box inside the border
  return {
    x: (event.clientX - r.left - canvas.clientLeft) * SIZE / canvas.clientWidth,
    y: (event.clientY - r.top - canvas.clientTop) * SIZE / canvas.clientHeight,
  };
}

function setTool(name) {
  tool = name;
  penButton.classList.toggle('sc-active', name === 'pen');
  eraserButton.classList.toggle('sc-active', name === 'eraser');
}

canvas.addEventListener('pointerdown', (event) => {
  if (activePointer !== null) return;
  if (event.pointerType === 'mouse' && event.button !== 0) return;
  event.preventDefault();
  activePointer = event.pointerId;
  try { canvas.setPointerCapture(event.pointerId); } catch (e) { /* synthetic pointers have no capture */ }
  canvas.focus({ preventScroll: true });
  const width = Number(brushInput.value) * (tool === 'eraser' ? ERASER_FACTOR : 1);
  current = { kind: 'stroke', points: [toModel(event)], width: width,
              color: tool === 'eraser' ? '#ffffff' : '#000000' };
  for (const ctx of contexts) drawSegment(ctx, current, 0);
  stroke = { t0: performance.now(), first: null, frames: 0 };
  wantDraft();
});

canvas.addEventListener('pointermove', (event) => {
  if (current === null || event.pointerId !== activePointer) return;
  event.preventDefault();
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of (events.length ? events : [event])) {
    const p = toModel(e);
    const last = current.points[current.points.length - 1];
    if (Math.abs(p.x - last.x) + Math.abs(p.y - last.y) < 0.5) continue;
    current.points.push(p);
    for (const ctx of contexts) drawSegment(ctx, current, current.points.length - 1);
  }
  wantDraft();
});

function finish(event) {
  if (current === null || event.pointerId !== activePointer) return;
  for (const ctx of contexts) drawTail(ctx, current);
  actions.push(current);
  current = null;
  activePointer = null;
  try { canvas.releasePointerCapture(event.pointerId); } catch (e) { /* already released */ }
  send();  // once per stroke, never per move
  report(true);
  stroke = null;
}
canvas.addEventListener('pointerup', finish);
canvas.addEventListener('pointercancel', finish);
// Belt and braces for browsers that still scroll on touch despite touch-action: none.
canvas.addEventListener('touchstart', (e) => e.preventDefault(), { passive: false });
canvas.addEventListener('touchmove', (e) => e.preventDefault(), { passive: false });

function undo() {
  if (current !== null || actions.length === 0) return;
  actions.pop();
  redraw();
  send();
}
function clearAll() {
  if (current !== null) return;
  const last = actions[actions.length - 1];
  if (actions.length === 0 || (last && last.kind === 'clear')) return;
  actions.push({ kind: 'clear' });
  redraw();
  send();
}
penButton.addEventListener('click', () => setTool('pen'));
eraserButton.addEventListener('click', () => setTool('eraser'));
element.querySelector('.sc-undo').addEventListener('click', undo);
element.querySelector('.sc-clear').addEventListener('click', clearAll);
canvas.addEventListener('keydown', (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === 'z') { event.preventDefault(); undo(); }
});

// A value set from Python (an example sketch, or a clear) is painted in as an undoable step; one that arrives
// while the page runs is a new picture, so it asks for its final frame.
function load(url, ask) {
  lastSent = url;
  if (!url) {
    actions.push({ kind: 'clear' });
    redraw();
    if (ask) requestFinal();
    return;
  }
  const img = new Image();
  img.onload = () => { actions.push({ kind: 'image', img: img }); redraw(); if (ask) requestFinal(); };
  img.src = url;
}
watch('value', () => { if ((props.value || '') !== lastSent) load(props.value || '', true); });

// --- Live frames ---------------------------------------------------------------------------------------------
// Drafts while the pen moves: the server function `draft` (one HTTP request answered with the frame), at most
// one in flight, at most one per DRAFT_INTERVAL of drawing, always the picture as it is when it leaves. A final
// frame through the queue (the 'final' event) when the pen lifts, on undo / clear / a loaded sketch, and when the
// tab's prompt and sliders have been still for SETTLE ms. The output (LiveImage, props.output_id) shows the newest.
const DRAFT_INTERVAL = Number(props.draft_interval_ms) || 75;
const SETTLE = Number(props.settle_ms) || 350;
const TAB = Math.random().toString(36).slice(2) + Date.now().toString(36);  // this page's drafts, for the server
let inputs = null;        // [prompt, steps, seed, guidance, control strength, thickness], as the tab shows them
let liveOn = false;       // the Live drafts switch
let photoActive = false;  // an uploaded photo's edge map replaces the sketch: a draft of the sketch would be wrong
let seq = 0;              // request numbers shared by drafts and finals: the output shows the newest
let inflight = false;
let dirty = false;        // the picture or the inputs changed since the last draft left
let lastDraftAt = -Infinity;
let pumpTimer = null;
let settleTimer = null;
let stroke = null;        // the stroke in progress: { t0, first (ms to its first draft on screen), frames }

function output() {
  const el = props.output_id ? document.getElementById(props.output_id) : null;
  const out = el ? el.querySelector('.lv-root') : null;
  return out && out.liveOutput ? out.liveOutput : null;
}

function report(done) {
  const out = output();
  if (out === null || stroke === null || stroke.frames === 0) return;
  const seconds = (performance.now() - stroke.t0) / 1000;
  out.status('live: first frame ' + Math.round(stroke.first) + ' ms after pen down · ' +
             (stroke.frames / seconds).toFixed(1) + ' frames/s' + (done ? ' (' + stroke.frames + ' drafts)' : ''));
}

function asDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function wantDraft() {
  dirty = true;
  pump();
}

async function pump() {
  if (!dirty || inflight || !liveOn || photoActive || inputs === null || !server || !server.draft) return;
  const wait = lastDraftAt + DRAFT_INTERVAL - performance.now();
  if (wait > 0) {
    if (pumpTimer === null) pumpTimer = setTimeout(() => { pumpTimer = null; pump(); }, wait);
    return;
  }
  inflight = true;
  dirty = false;
  lastDraftAt = performance.now();
  const mine = ++seq;
  // toBlob copies the picture now and encodes the PNG off the main thread (toDataURL blocks drawing ~16 ms).
  const blob = new Promise((resolve) => model.toBlob(resolve, 'image/png'));
  canvas.dispatchEvent(new CustomEvent('sketch-draft', { detail: { seq: mine } }));
  let frame = null;
  try {
    frame = await server.draft({ png: await asDataURL(await blob), inputs: inputs, seq: mine, tab: TAB });
  } catch (error) {
    frame = null;  // refused or failed: the final frame follows anyway
  }
  inflight = false;
  const out = output();
  if (frame && out && out.draft(frame) && stroke !== null) {
    stroke.frames += 1;
    if (stroke.first === null) stroke.first = performance.now() - stroke.t0;
    report(false);
  }
  pump();
}

function requestFinal() {
  if (settleTimer !== null) { clearTimeout(settleTimer); settleTimer = null; }
  if (pumpTimer !== null) { clearTimeout(pumpTimer); pumpTimer = null; }
  dirty = false;
  const mine = ++seq;
  const out = output();
  if (out !== null) out.expectFinal(mine);
  trigger('final', { seq: mine, tab: TAB });
}

// The tab's other inputs, sent here by a client-side event whenever one changes (ui.py): a prompt or slider that
// moves gets drafts while it moves (live) and its final frame once it has been still for SETTLE ms.
root.setInputs = (values) => {
  const next = values.slice(0, 6);
  const changed = inputs !== null && JSON.stringify(next) !== JSON.stringify(inputs);
  inputs = next;
  liveOn = Boolean(values[6]);
  photoActive = Boolean(values[7]);
  if (!changed) return;
  if (liveOn && !photoActive) wantDraft();
  if (settleTimer !== null) clearTimeout(settleTimer);
  settleTimer = setTimeout(requestFinal, liveOn ? SETTLE : 0);
};

redraw();
if (props.value) load(props.value);
"""


def png_data_url(image: Image.Image) -> str:
    """A PIL image -> ``data:image/png;base64,...`` (the canvas value format)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def sketch_value(path: str, size: int) -> str:
    """An image file -> the canvas value for it: drawn on white paper, scaled to fit ``size`` x ``size``."""
    with Image.open(path) as image:
        image.load()
        rgba = image.convert("RGBA")
    paper = Image.new("RGB", (size, size), "white")
    rgba.thumbnail((size, size), Image.Resampling.LANCZOS)
    offset = ((size - rgba.width) // 2, (size - rgba.height) // 2)
    paper.paste(rgba, offset, rgba)
    return png_data_url(paper)


class SketchCanvas(gr.HTML):
    """A drawing canvas whose value is a PNG data URL (white paper, black ink) of ``size`` x ``size`` pixels.

    The value changes once per finished stroke, undo or clear; ``change`` fires then. Set the value from Python
    (a ``data:image/png;base64,...`` string, see ``sketch_value``) to load a sketch into the canvas.

    ``final`` fires when the canvas asks for a final frame (see the live frames part of the JavaScript), with
    ``{seq, tab}`` as its event data; a server function named ``draft`` (``server_functions``), if given, gets the
    draft frames, shown in the ``LiveImage`` whose elem_id is ``output_id``.
    """

    EVENTS = [*gr.HTML.EVENTS, "final"]

    def __init__(self, value: str | None = None, *, size: int = settings.DEFAULT_SIZE,
                 brush: int = settings.DEFAULT_BRUSH, output_id: str = "", **kwargs: Any):
        super().__init__(
            value=value,
            html_template=_HTML,
            css_template=_CSS,
            js_on_load=_JS,
            apply_default_css=False,
            size=int(size),
            brush=int(brush),
            min_brush=settings.MIN_BRUSH,
            max_brush=settings.MAX_BRUSH,
            eraser_factor=settings.ERASER_BRUSH_FACTOR,
            output_id=output_id,
            draft_interval_ms=settings.DRAFT_INTERVAL_MS,
            settle_ms=settings.SETTLE_MS,
            **kwargs,
        )

    def api_info(self) -> dict[str, Any]:
        return {"type": "string", "description": "PNG data URL (data:image/png;base64,...) of the sketch: dark "
                                                 "strokes on white; empty string = no sketch"}

    def example_payload(self) -> Any:
        return png_data_url(Image.new("RGB", (settings.MIN_SIZE, settings.MIN_SIZE), "white"))

    def example_value(self) -> Any:
        return self.example_payload()
