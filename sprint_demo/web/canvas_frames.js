// The canvas's live frames (SketchCanvas, sprint_demo/web/canvas.py; the drawing itself is canvas.js). Drafts while
// the pen moves: the server function `draft_frame` through the frame client (frame_client.js), at most one in
// flight, at most one per draft_interval_ms of drawing, always the picture as it is when it leaves. A final frame
// when the pen lifts, on undo / clear / a loaded picture, and when the tab's prompt and sliders have been still for
// settle_ms: the server function `final_frame` (one HTTP request answered with the frame), numbered from the
// client's counter, or the queue (the component's 'final' event) when a photo's edge map replaces the sketch (it
// lives in the session's state) or the server function could not make it (too many tabs waiting, an error: the
// queue then makes it or shows the error). The output (LiveImage, props.output_id) shows the newest.
//
// canvasFrames(...) returns the hooks the drawing calls (strokeStarted, pictureMoved, strokeEnded, pictureChanged)
// and setInputs, which the tab's client-side event calls with the tab's other inputs.
function canvasFrames({ canvas, model, props, server, trigger }) {
  const DRAFT_INTERVAL = requiredNumber(props, 'draft_interval_ms');
  const SETTLE = requiredNumber(props, 'settle_ms');
  const session = newSessionId();
  let inputs = null;        // the tab's frame inputs by name (prompt, steps, ...), as the tab shows them
  let decoder = null;       // the decoder chosen for final frames
  let liveOn = false;       // the Live drafts switch
  let photoActive = false;  // an uploaded photo's edge map replaces the sketch: a draft of the sketch would be wrong
  let dirty = false;        // the picture or the inputs changed since the last draft left
  let settleTimer = null;
  let stroke = null;        // the stroke in progress: { t0, first (ms to its first draft on screen), frames }

  const client = frameClient({
    limit: 1,
    gapMs: DRAFT_INTERVAL,
    wanted: () => dirty && liveOn && !photoActive && inputs !== null && Boolean(server && server.draft_frame),
    request: requestDraft,
    answered: showDraft,
  });

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
    client.pump();
  }

  async function requestDraft(ticket) {
    dirty = false;
    const png = pngSoon(model);  // the picture now
    canvas.dispatchEvent(new CustomEvent('sketch-draft', { detail: { seq: ticket.seq } }));
    const picture = await png;
    // A final claimed while the snapshot was encoded covers this picture: sending the draft would only cost work.
    if (ticket.seq !== client.seq) return null;
    return server.draft_frame({ png: picture, inputs: inputs, seq: ticket.seq, tab: session });
  }

  // A refused or failed draft shows nothing: the final frame follows anyway.
  function showDraft(frame) {
    const out = output();
    if (frame && out && out.draft(frame) && stroke !== null) {
      stroke.frames += 1;
      if (stroke.first === null) stroke.first = performance.now() - stroke.t0;
      report(false);
    }
  }

  // A final frame is coming for the picture as it is now: no draft of it is needed any more.
  function claimFinal() {
    if (settleTimer !== null) { clearTimeout(settleTimer); settleTimer = null; }
    client.cancelTimer();
    dirty = false;
    const mine = client.claim();
    const out = output();
    if (out !== null) out.expectFinal(mine);
    return mine;
  }

  // The final frame of `url` (the PNG just sent as the value; none: the picture now).
  async function requestFinal(url) {
    const mine = claimFinal();
    if (photoActive || inputs === null || !server || !server.final_frame) {
      trigger('final', { seq: mine, tab: session });
      return;
    }
    let answer = null;
    try {
      answer = await server.final_frame({ png: url || model.toDataURL('image/png'), inputs: inputs,
                                          decoder: decoder, seq: mine, tab: session });
    } catch (error) {
      answer = null;
    }
    if (answer && answer.src) {
      const out = output();
      if (out !== null) out.final(answer);
    } else if (!(answer && answer.dropped)) {  // dropped: a newer picture of this tab took its place
      trigger('final', { seq: mine, tab: session });
    }
  }

  // The tab's other inputs, sent by a client-side event whenever one changes (ui.py), as one object keyed by name:
  // the frame inputs (sent with every frame request, under the same names) and the switches `live`, `photo` and
  // `decoder`. A prompt or slider that moves gets drafts while it moves (live) and its final frame once it has been
  // still for SETTLE ms.
  function setInputs(values) {
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
  }

  return {
    setInputs: setInputs,
    strokeStarted() {
      stroke = { t0: performance.now(), first: null, frames: 0 };
      client.restartGap();  // the first draft after DRAFT_INTERVAL of drawing: a tap makes none
      wantDraft();
    },
    pictureMoved: wantDraft,
    strokeEnded() {
      report(true);
      stroke = null;
    },
    pictureChanged: requestFinal,
  };
}

// The picture of `model` as a PNG data URL, two ways. While the pen moves (drafts): toBlob, which copies the picture
// now and encodes it off the main thread, so drawing never stalls (toDataURL blocks it up to ~16 ms with a busy
// sketch). When the pen has lifted (finals): toDataURL, the quickest way out (~3 ms against ~11 ms through toBlob's
// task and the FileReader, measured in headless Chromium at 512 px), and nothing is being drawn to stall.
function pngSoon(model) {
  return new Promise((resolve) => model.toBlob(resolve, 'image/png')).then((blob) => new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  }));
}
