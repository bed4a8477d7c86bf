// LiveImage's js_on_load (sprint_demo/web/live.py). Gradio runs this file, after props.js, as the body of a function
// of (element, trigger, props, server, upload, watch). The queue's frames arrive as props.value; the canvas hands
// the frames of its server functions to root.liveOutput.draft(frame) / .final(frame). The newest picture wins:
// seq numbers come from the canvas, one counter for drafts and finals, and a frame older than the one on screen
// is not shown.
function liveImage({ element, props, watch }) {
  const root = element.querySelector('.lv-root');
  const img = element.querySelector('.lv-img');
  const liveLine = element.querySelector('.lv-live');
  const readout = element.querySelector('.lv-readout');
  const frameBox = element.querySelector('.lv-frame');
  const save = element.querySelector('.lv-save');
  element.querySelector('.lv-full').addEventListener('click', () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else if (frameBox.requestFullscreen) frameBox.requestFullscreen().catch(() => {});
  });
  img.style.maxHeight = requiredNumber(props, 'max_image_height') + 'px';
  let shownSeq = 0;    // the request number of the frame on screen
  let finalAsked = 0;  // the request number of the newest final frame the canvas asked for

  function show(frame, kind) {
    img.src = frame.src;
    img.dataset.kind = kind;
    img.dataset.digest = frame.digest || '';
    img.dataset.seq = String(frame.seq || 0);
    if (kind === 'final') {  // drafts keep the last final's readout and download
      readout.textContent = frame.readout || '';
      save.href = frame.src;
    }
    root.dispatchEvent(new CustomEvent('live-frame', { bubbles: true, detail: {
      kind: kind, digest: frame.digest || null, seq: frame.seq || 0, t: performance.now() } }));
  }

  // A frame the canvas asked for (request `seq`): shown unless a frame for a newer request is on screen.
  function showAsked(frame, kind) {
    if (!frame || !frame.src || frame.seq < shownSeq || (kind === 'draft' && frame.seq === shownSeq)) return false;
    shownSeq = frame.seq;
    show(frame, kind);
    return true;
  }

  root.liveOutput = {
    draft(frame) { return showAsked(frame, 'draft'); },  // returns whether it was shown
    final(frame) { return showAsked(frame, 'final'); },
    expectFinal(seq) { finalAsked = Math.max(finalAsked, seq); },
    status(text) { liveLine.textContent = text; },
  };

  // A frame from the queue names the request it answers (seq), or none (page load, photo): then it answers the
  // newest final asked for. It is not shown when a frame for a newer picture is already on screen (the pen is
  // moving again; that picture's own final follows).
  function onValue() {
    const frame = props.value;
    if (!frame || !frame.src) return;
    const seq = frame.seq || finalAsked;
    if (seq < shownSeq) return;
    shownSeq = seq;
    show(frame, 'final');
  }
  watch('value', onValue);
  onValue();
}

liveImage({ element, props, watch });
