// The SketchCanvas's drawing (sprint_demo/web/canvas.py): pointer strokes, the eraser, undo and clear, and on the
// Paint canvas (canvas.py, palette=True) a second toolbar row: colour swatches, a colour picker and a photo button.
// Its frames are canvas_frames.js, over the frame client (frame_client.js); the end of this file wires the two.
// Gradio runs the files together as the body of a function of (element, trigger, props, server, upload, watch):
// element is the component's root, props its properties (value, size, brush, eraser_factor, ...), watch(name,
// callback) observes a property set from Python.

// The drawing of the component at `element` into `model`, the off-screen canvas whose PNG is the value. `frames`
// hears of every stroke (strokeStarted, pictureMoved, strokeEnded) and of every new picture (pictureChanged).
function sketchCanvas({ element, props, watch, model, frames }) {
  const canvas = element.querySelector('.sc-canvas');  // what the user sees: backing store = CSS size x DPR
  const brushInput = element.querySelector('.sc-brush');
  const penButton = element.querySelector('.sc-pen');
  const eraserButton = element.querySelector('.sc-eraser');
  const colorInput = element.querySelector('.sc-color');  // the Paint canvas's colour; none: black ink
  const swatches = Array.from(element.querySelectorAll('.sc-swatch'));
  const photoInput = element.querySelector('.sc-photo-file');
  const root = element.querySelector('.sc-root');
  const PAINT = colorInput !== null;
  const SIZE = model.width;                             // the model's frame side: the value's fixed resolution
  const mctx = model.getContext('2d');
  const dctx = canvas.getContext('2d');
  const contexts = [mctx, dctx];                        // every drawing op runs on both, in model coordinates
  const ERASER_FACTOR = requiredNumber(props, 'eraser_factor');
  const MAX_DISPLAY = 4096;
  let tool = 'pen';
  const actions = [];        // {kind: 'stroke', points, width, color, erase} | {kind: 'clear'} | {kind: 'image', ...}
  let background = null;     // the loaded image the visible strokes lie on (Paint: what the eraser paints back)
  let current = null;        // the stroke being drawn
  let activePointer = null;  // one pointer draws at a time; a second finger is ignored
  let lastSent = props.value || '';

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
    if (!background.patterns.has(ctx)) {
      background.patterns.set(ctx, ctx.createPattern(background.paper, 'no-repeat'));
    }
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

  // A finished stroke, undo or clear: the new picture becomes the value (the API's input) and gets its final frame.
  function send() {
    const url = model.toDataURL('image/png');
    if (url === lastSent) return;  // e.g. undo on an empty history
    lastSent = url;
    canvas.dataset.sent = String(Number(canvas.dataset.sent || 0) + 1);
    props.value = url;  // Gradio dispatches 'change' for the new value
    frames.pictureChanged(url);
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
    frames.strokeStarted();
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
    frames.pictureMoved();
  });

  function finish(event) {
    if (current === null || event.pointerId !== activePointer) return;
    for (const ctx of contexts) drawTail(ctx, current);
    actions.push(current);
    current = null;
    activePointer = null;
    try { canvas.releasePointerCapture(event.pointerId); } catch (e) { /* already released */ }
    send();  // once per stroke, never per move
    frames.strokeEnded();
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
      if (ask) frames.pictureChanged();
      return;
    }
    const img = new Image();
    img.onload = () => { actions.push({ kind: 'image', img: img }); redraw(); if (ask) frames.pictureChanged(); };
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

  redraw();
  if (props.value) load(props.value);
}

// --- The component: the drawing and its frames, sharing the off-screen canvas ---------------------------------------
const model = document.createElement('canvas');  // off-screen: what is sent, size x size whatever the screen
model.width = requiredNumber(props, 'size');
model.height = model.width;
const frames = canvasFrames({ canvas: element.querySelector('.sc-canvas'), model, props, server, trigger });
element.querySelector('.sc-root').setInputs = frames.setInputs;
sketchCanvas({ element, props, watch, model, frames });
