// The SketchCanvas's js_on_load (sprint_demo/web/canvas.py). Gradio runs this file as the body of a function of
// (element, trigger, props, server, upload, watch): element is the component's root, props its properties
// (value, size, brush, eraser_factor), watch(name, callback) observes a property set from Python. The Paint canvas
// (canvas.py, palette=True) has a second toolbar row: colour swatches, a colour picker and a photo button.
const canvas = element.querySelector('.sc-canvas');  // what the user sees: backing store = CSS size x devicePixelRatio
const brushInput = element.querySelector('.sc-brush');
const penButton = element.querySelector('.sc-pen');
const eraserButton = element.querySelector('.sc-eraser');
const colorInput = element.querySelector('.sc-color');  // the Paint canvas's colour; none: black ink
const swatches = Array.from(element.querySelectorAll('.sc-swatch'));
const photoInput = element.querySelector('.sc-photo-file');
const PAINT = colorInput !== null;
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
let actions = [];          // {kind: 'stroke', points, width, color, erase} | {kind: 'clear'} | {kind: 'image', img, crop}
let background = null;     // the loaded image the visible strokes lie on (Paint: what the eraser paints back)
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

// What the Paint canvas's eraser paints: the loaded picture under the strokes, as a pattern in model coordinates
// (each context's own transform scales it, like the strokes), or white paper when there is none.
function underneath(ctx) {
  if (background === null) return null;
  if (!background.paper) {
    const copy = document.createElement('canvas');
    copy.width = SIZE;
    copy.height = SIZE;
    drawAction(copy.getContext('2d'), background);
    background.paper = copy;
    background.patterns = new Map();
  }
  if (!background.patterns.has(ctx)) background.patterns.set(ctx, ctx.createPattern(background.paper, 'no-repeat'));
  return background.patterns.get(ctx);
}

function style(ctx, stroke) {
  const paint = (stroke.erase && underneath(ctx)) || stroke.color;
  ctx.strokeStyle = paint;
  ctx.fillStyle = paint;
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
    const c = action.crop;
    if (c) ctx.drawImage(action.img, c.x, c.y, c.side, c.side, 0, 0, SIZE, SIZE);
    else ctx.drawImage(action.img, 0, 0, SIZE, SIZE);
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
  background = actions[start] && actions[start].kind === 'image' ? actions[start] : null;
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

// The picture as a PNG data URL, two ways. While the pen moves (drafts): toBlob, which copies the picture now and
// encodes it off the main thread, so drawing never stalls (toDataURL blocks it up to ~16 ms with a busy sketch).
// When the pen has lifted (finals): toDataURL, the quickest way out (~3 ms against ~11 ms through toBlob's task
// and the FileReader, measured in headless Chromium at 512 px), and nothing is being drawn to stall.
function asDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function snapshot() {
  return new Promise((resolve) => model.toBlob(resolve, 'image/png')).then(asDataURL);
}

// A finished stroke, undo or clear: the new picture becomes the value (the API's input) and gets its final frame.
function send() {
  const url = model.toDataURL('image/png');
  if (url === lastSent) return;  // e.g. undo on an empty history
  lastSent = url;
  canvas.dataset.sent = String(Number(canvas.dataset.sent || 0) + 1);
  props.value = url;  // Gradio dispatches 'change' for the new value
  requestFinal(claimFinal(), url);
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

// Paint: a swatch or the colour picker sets the brush's colour and takes up the pen.
function setColor(color) {
  colorInput.value = color;
  for (const swatch of swatches) swatch.classList.toggle('sc-active', swatch.dataset.color === colorInput.value);
  setTool('pen');
}
if (PAINT) {
  for (const swatch of swatches) swatch.addEventListener('click', () => setColor(swatch.dataset.color));
  colorInput.addEventListener('input', () => setColor(colorInput.value));
  setColor(colorInput.value);
}

canvas.addEventListener('pointerdown', (event) => {
  if (activePointer !== null) return;
  if (event.pointerType === 'mouse' && event.button !== 0) return;
  event.preventDefault();
  activePointer = event.pointerId;
  try { canvas.setPointerCapture(event.pointerId); } catch (e) { /* synthetic pointers have no capture */ }
  canvas.focus({ preventScroll: true });
  const width = Number(brushInput.value) * (tool === 'eraser' ? ERASER_FACTOR : 1);
  current = { kind: 'stroke', points: [toModel(event)], width: width, erase: PAINT && tool === 'eraser',
              color: tool === 'eraser' ? '#ffffff' : (PAINT ? colorInput.value : '#000000') };
  for (const ctx of contexts) drawSegment(ctx, current, 0);
  stroke = { t0: performance.now(), first: null, frames: 0 };
  lastDraftAt = performance.now();  // the first draft after DRAFT_INTERVAL of drawing: a tap makes none
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

// Paint: a picture from the page (the output's frame: "Paint over this") or from the device (the photo button)
// becomes the canvas, cropped about its centre to the square, as an undoable step; it is sent like a stroke.
function loadPicture(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const side = Math.min(img.naturalWidth, img.naturalHeight);
      const crop = { x: (img.naturalWidth - side) / 2, y: (img.naturalHeight - side) / 2, side: side };
      actions.push({ kind: 'image', img: img, crop: crop });
      redraw();
      send();
      resolve();
    };
    img.onerror = () => reject(new Error('not an image the browser can read'));
    img.src = src;
  });
}
root.loadPicture = loadPicture;
if (photoInput) {
  photoInput.addEventListener('change', () => {
    const file = photoInput.files && photoInput.files[0];
    if (!file) return;
    const url = URL.createObjectURL(file);
    photoInput.value = '';  // the same file chosen again loads again
    loadPicture(url).catch(() => {}).finally(() => URL.revokeObjectURL(url));
  });
}

// --- Live frames ---------------------------------------------------------------------------------------------
// Drafts while the pen moves: the server function `draft_frame`, at most one in flight, at most one per
// DRAFT_INTERVAL of drawing, always the picture as it is when it leaves. A final frame when the pen lifts, on undo /
// clear / a loaded sketch, and when the tab's prompt and sliders have been still for SETTLE ms: the server function
// `final_frame` (one HTTP request answered with the frame), or the queue (the 'final' event) when a photo's edge map
// replaces the sketch (it lives in the session's state) or the server function could not make it (too many tabs
// waiting, an error: the queue then makes it or shows the error). The output (LiveImage, props.output_id) shows
// the newest.
const DRAFT_INTERVAL = Number(props.draft_interval_ms) || 75;
const SETTLE = Number(props.settle_ms) || 350;
const TAB = Math.random().toString(36).slice(2) + Date.now().toString(36);  // this page's frames, for the server
let inputs = null;        // the tab's frame inputs by name (prompt, steps, ...), as the tab shows them
let decoder = null;       // the decoder chosen for final frames
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

function wantDraft() {
  dirty = true;
  pump();
}

async function pump() {
  if (!dirty || inflight || !liveOn || photoActive || inputs === null || !server || !server.draft_frame) return;
  const wait = lastDraftAt + DRAFT_INTERVAL - performance.now();
  if (wait > 0) {
    if (pumpTimer === null) pumpTimer = setTimeout(() => { pumpTimer = null; pump(); }, wait);
    return;
  }
  inflight = true;
  dirty = false;
  lastDraftAt = performance.now();
  const mine = ++seq;
  const png = snapshot();  // the picture now
  canvas.dispatchEvent(new CustomEvent('sketch-draft', { detail: { seq: mine } }));
  let frame = null;
  try {
    const picture = await png;
    // A final claimed while the snapshot was encoded covers this picture: sending the draft would only cost work.
    if (mine === seq) frame = await server.draft_frame({ png: picture, inputs: inputs, seq: mine, tab: TAB });
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

// A final frame is coming for the picture as it is now: no draft of it is needed any more.
function claimFinal() {
  if (settleTimer !== null) { clearTimeout(settleTimer); settleTimer = null; }
  if (pumpTimer !== null) { clearTimeout(pumpTimer); pumpTimer = null; }
  dirty = false;
  const mine = ++seq;
  const out = output();
  if (out !== null) out.expectFinal(mine);
  return mine;
}

async function requestFinal(mine, url) {
  if (mine === undefined) mine = claimFinal();
  if (photoActive || inputs === null || !server || !server.final_frame) {
    trigger('final', { seq: mine, tab: TAB });
    return;
  }
  let answer = null;
  try {
    answer = await server.final_frame({ png: url || model.toDataURL('image/png'), inputs: inputs, decoder: decoder,
                                        seq: mine, tab: TAB });
  } catch (error) {
    answer = null;
  }
  if (answer && answer.src) {
    const out = output();
    if (out !== null) out.final(answer);
  } else if (!(answer && answer.dropped)) {  // dropped: a newer picture of this tab took its place
    trigger('final', { seq: mine, tab: TAB });
  }
}

// The tab's other inputs, sent here by a client-side event whenever one changes (ui.py), as one object keyed by
// name: the frame inputs (sent with every frame request, under the same names) and the switches `live`, `photo`
// and `decoder`. A prompt or slider that moves gets drafts while it moves (live) and its final frame once it has
// been still for SETTLE ms.
root.setInputs = (values) => {
  const { live, photo, decoder: chosen, ...frameInputs } = values;
  const changed = inputs !== null && JSON.stringify(frameInputs) !== JSON.stringify(inputs);
  const decoderChanged = decoder !== null && chosen !== decoder;
  inputs = frameInputs;
  liveOn = Boolean(live);
  photoActive = Boolean(photo);
  decoder = chosen;
  if (!changed && !decoderChanged) return;
  if (changed && liveOn && !photoActive) wantDraft();
  if (settleTimer !== null) clearTimeout(settleTimer);
  settleTimer = setTimeout(() => { settleTimer = null; requestFinal(); }, liveOn && changed ? SETTLE : 0);
};

redraw();
if (props.value) load(props.value);
