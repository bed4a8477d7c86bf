// The CameraStream's js_on_load (sprint_demo/web/camera.py, whose docstring holds the server-function contract).
// Gradio runs this file as the body of a function of (element, trigger, props, server, upload, watch).
//
// Newest frame only: at most MAX_OUTSTANDING requests per page (one being made, one waiting, which the server
// replaces with a newer one); the next frame is captured only when fewer are outstanding, so nothing queues
// behind. Every start and stop opens a new "run" (runId): an answer from an older run is never shown, so after
// Stop the output keeps the last frame whatever still comes back.
const root = element.querySelector('.cam-root');
const video = element.querySelector('.cam-video');
const startButton = element.querySelector('.cam-start');
const stopButton = element.querySelector('.cam-stop');
const mirrorBox = element.querySelector('.cam-mirror');
const facingSelect = element.querySelector('.cam-facing');
const snapButton = element.querySelector('.cam-snap');
const statusLine = element.querySelector('.cam-status');
const out = element.querySelector('.cam-output');
const latency = element.querySelector('.cam-latency');
const readout = element.querySelector('.cam-readout');
const snapBox = element.querySelector('.cam-snapshot');
const snapImg = element.querySelector('.cam-snap-img');
const snapSave = element.querySelector('.cam-snap-save');

const SIZE = Number(props.capture_size) || 512;   // longer side of a captured frame (the model's side)
const MULTIPLE = 32;                              // the model's sides are multiples of 32
const QUALITY = Number(props.jpeg_quality) || 0.8;
const SNAPSHOT_QUALITY = 0.95;
const MAX_ERRORS = Number(props.max_errors) || 5;
const MAX_OUTSTANDING = 2;
const FPS_WINDOW_MS = 2000;
const BUSY_BACKOFF_MS = [200, 400, 800, 1600];    // consecutive "server full" answers wait longer
const ERROR_BACKOFF_MS = 300;                     // so a failing server is not hammered before MAX_ERRORS stop it
// after our waiting frame was replaced by our own newer one (the server is busy with other frames): the next one
// after this long, so that a waiting frame stays fresh without a request per video frame
const REPLACE_INTERVAL_MS = Number(props.replace_interval_ms) || 150;
const SESSION = (crypto.randomUUID ? crypto.randomUUID()
                 : Math.random().toString(36).slice(2) + Date.now().toString(36));
const MESSAGES = {
  refused: 'Camera permission was refused: allow the camera in the browser\'s site settings, then press Start.',
  missing: 'No camera was found.',
  insecure: 'Browsers allow the camera only over HTTPS or on localhost.',
};
const hasServer = (name) => Boolean(server && typeof server[name] === 'function');
if (!hasServer('camera_snapshot')) snapButton.hidden = true;

const capture = document.createElement('canvas');  // off-screen: the frame sent, the video's aspect ratio
const cctx = capture.getContext('2d');
let inputs = {};           // sent with each frame; set by the app through root.setInputs
let stream = null;         // the MediaStream while the camera is on
let runId = 0;             // bumped by every start and stop: answers of an older run are not shown
let running = false;       // frames are being captured and sent
let starting = false;      // getUserMedia pending
let facing = 'user';
let seq = 0;               // frame numbers for the page's life (never reset: the server drops older ones)
let outstanding = 0;       // requests of this run not answered yet
let shownSeq = 0;          // the frame on screen
let shownInput = null;     // the camera frame (JPEG data URL) behind the image on screen, for a snapshot
let pumpTimer = null;
let backoffUntil = 0;
let busyCount = 0;
let errorCount = 0;
let videoFrames = 0;       // new video frames seen (requestVideoFrameCallback); 0: unknown, capture anyway
let capturedFrame = -1;    // videoFrames at the last capture: the same video frame is not sent twice
let shownTimes = [];       // performance.now() of the frames shown in the last FPS_WINDOW_MS
let runStartedAt = 0;
let last = null;           // {server_ms, round_trip_ms, age_ms} of the frame on screen
let snapshotBusy = false;
let fpsTimer = null;

function setStatus(text) { statusLine.textContent = text; }

function buttons() {
  startButton.disabled = running || starting;
  stopButton.disabled = !(running || starting);
  snapButton.disabled = snapshotBusy || !(running || shownInput);
}

// --- Capture ---------------------------------------------------------------------------------------------------
function captureShape() {
  const w = video.videoWidth;
  const h = video.videoHeight;
  const scale = SIZE / Math.max(w, h);
  const side = (v) => Math.max(MULTIPLE, Math.round(v * scale / MULTIPLE) * MULTIPLE);
  return [side(w), side(h)];
}

function grab(quality) {
  const [w, h] = captureShape();
  if (capture.width !== w || capture.height !== h) { capture.width = w; capture.height = h; }
  cctx.setTransform(1, 0, 0, 1, 0, 0);
  if (mirrorBox.checked) cctx.setTransform(-1, 0, 0, 1, w, 0);
  cctx.drawImage(video, 0, 0, w, h);
  return capture.toDataURL('image/jpeg', quality);
}

function videoReady() {
  return stream !== null && video.readyState >= 2 && video.videoWidth > 0 && video.videoHeight > 0;
}

// Counting the video's frames lets the loop wait for a new one instead of sending the same picture twice when
// the model is quicker than the camera. Browsers without requestVideoFrameCallback capture on a short timer.
function watchFrames(run) {
  if (!video.requestVideoFrameCallback) return;
  const onFrame = () => {
    if (run !== runId) return;
    videoFrames += 1;
    pump();
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

function later(ms) {
  if (pumpTimer !== null) return;
  pumpTimer = setTimeout(() => { pumpTimer = null; pump(); }, Math.max(0, ms));
}

// Gradio keeps a tab's components in the page, hidden, when another tab is chosen; the video still plays there,
// so a camera left on in a hidden tab would keep its light on and the GPU busy for nobody.
function shownOnPage() {
  if (!root.isConnected) return false;
  return root.checkVisibility ? root.checkVisibility() : root.offsetParent !== null;
}
const LEFT = 'The camera stopped when its tab was left: press Start to go on.';

function pump() {
  if (!running || outstanding >= MAX_OUTSTANDING) return;
  if (!shownOnPage()) { stop(LEFT); return; }
  const now = performance.now();
  if (now < backoffUntil) { later(backoffUntil - now); return; }
  if (!videoReady()) { later(30); return; }
  if (video.requestVideoFrameCallback && videoFrames > 0 && videoFrames === capturedFrame) {
    later(100);  // the next video frame calls pump(); the timer only covers a stalled callback
    return;
  }
  capturedFrame = videoFrames;
  send(runId);
  pump();  // a second request may go out at once (one made, one waiting on the server)
}

async function send(run) {
  const capturedAt = performance.now();
  const image = grab(QUALITY);
  const mine = ++seq;
  outstanding += 1;
  root.dataset.sent = String(mine);
  let answer;
  try {
    answer = await server.camera_frame({ image: image, inputs: inputs, seq: mine, session: SESSION,
                                         captured_at: capturedAt });
  } catch (error) {
    answer = undefined;
  }
  const answeredAt = performance.now();
  if (run !== runId) return;  // stopped (or restarted) meanwhile: nothing of this run is shown
  outstanding -= 1;
  if (!answer) {
    failed('The server did not answer.');  // Gradio logs the cause in the console and resolves undefined
  } else if (answer.src) {
    errorCount = 0;
    busyCount = 0;
    show(answer, image, answeredAt - capturedAt, run);
  } else if (answer.dropped) {
    // a newer frame of this page took its place on the server, which is busy with other frames
    backoffUntil = Math.max(backoffUntil, performance.now() + REPLACE_INTERVAL_MS);
  } else if (answer.busy) {
    backoffUntil = performance.now() + BUSY_BACKOFF_MS[Math.min(busyCount, BUSY_BACKOFF_MS.length - 1)];
    busyCount += 1;
    setStatus('The server is busy: retrying...');
  } else if (answer.expired) {
    stop((answer.error || 'The time limit for the camera passed.') + ' Press Start again.');
    return;
  } else {
    failed(String(answer.error || 'The server could not make this frame.'));
  }
  pump();
}

function failed(message) {
  errorCount += 1;
  if (errorCount >= MAX_ERRORS) {
    stop(message + ' (' + errorCount + ' times in a row: the camera stopped; press Start to try again.)');
    return;
  }
  setStatus(message);
  backoffUntil = performance.now() + ERROR_BACKOFF_MS;
}

// --- Output ------------------------------------------------------------------------------------------------------
async function show(answer, image, roundTrip, run) {
  if (answer.seq < shownSeq) return;  // older than the frame on screen
  const next = new Image();
  next.src = answer.src;
  try {
    await next.decode();  // decoded off screen first: the swap below paints at once, and a bad image shows nothing
  } catch (error) {
    if (run === runId) failed('The server sent an image the browser cannot read.');
    return;
  }
  if (run !== runId || answer.seq <= shownSeq) return;  // stopped, or a newer frame got there first
  const shownAt = performance.now();
  out.src = answer.src;
  shownSeq = answer.seq;
  shownInput = image;
  const capturedAt = Number(answer.captured_at);
  last = { server_ms: Number(answer.server_ms), round_trip_ms: roundTrip, age_ms: shownAt - capturedAt };
  out.dataset.seq = String(answer.seq);
  out.dataset.capturedAt = String(capturedAt);
  out.dataset.shownAt = String(shownAt);
  out.dataset.shown = String(Number(out.dataset.shown || 0) + 1);
  shownTimes.push(shownAt);
  readout.textContent = answer.readout || '';
  if (errorCount === 0 && busyCount === 0) setStatus(streamingText());
  updateLatency();
  buttons();
  out.dispatchEvent(new CustomEvent('camera-frame', { bubbles: true, detail: {
    seq: answer.seq, captured_at: capturedAt, shown_at: shownAt, server_ms: last.server_ms,
    round_trip_ms: roundTrip } }));
}

function framesPerSecond() {
  const now = performance.now();
  shownTimes = shownTimes.filter((t) => now - t <= FPS_WINDOW_MS);
  const span = Math.min(FPS_WINDOW_MS, now - runStartedAt);
  return span > 0 ? shownTimes.length * 1000 / span : 0;
}

function updateLatency() {
  if (last === null) { latency.textContent = ''; return; }
  const ms = (v) => (Number.isFinite(v) ? Math.round(v) + ' ms' : '?');
  latency.textContent = 'server ' + ms(last.server_ms) + ' · round trip ' + ms(last.round_trip_ms) + ' · ' +
                        (running ? framesPerSecond() : 0).toFixed(1) + ' frames/s · frame age ' +
                        ms(last.age_ms) + ' (capture to screen)';
}

function streamingText() {
  const track = stream && stream.getVideoTracks()[0];
  const label = track && track.label ? track.label : 'camera';
  return 'Streaming from ' + label + ' (' + video.videoWidth + 'x' + video.videoHeight + ', sent as ' +
         captureShape().join('x') + ').';
}

// --- Camera ------------------------------------------------------------------------------------------------------
function explain(error) {
  const name = error && error.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') return MESSAGES.refused;
  if (name === 'NotFoundError' || name === 'OverconstrainedError' || name === 'DevicesNotFoundError') {
    return MESSAGES.missing;
  }
  if (name === 'NotReadableError') return 'The camera is in use by another program, or failed to start.';
  return 'The camera could not start: ' + ((error && error.message) || String(error));
}

async function videoInputs() {
  try {
    return (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === 'videoinput');
  } catch (error) {
    return [];
  }
}

// The front/back choice is offered only when there is more than one camera; before permission browsers list at
// most one device per kind, so this runs again once the camera is open.
async function refreshDevices() {
  const cameras = await videoInputs();
  facingSelect.hidden = cameras.length < 2;
  root.dataset.cameras = String(cameras.length);
  return cameras;
}

// A phone names its cameras' facing; a desktop with two webcams usually does not, and an exact facingMode then
// fails with OverconstrainedError: then the first camera is "front" and the next one "back".
async function openCamera(want) {
  const media = navigator.mediaDevices;
  try {
    return await media.getUserMedia({ video: { facingMode: { exact: want } }, audio: false });
  } catch (error) {
    if (error.name !== 'OverconstrainedError' && error.name !== 'NotFoundError') throw error;
  }
  const cameras = (await videoInputs()).filter((d) => d.deviceId);
  if (cameras.length >= 2) {
    const device = cameras[want === 'user' ? 0 : 1];
    return await media.getUserMedia({ video: { deviceId: { exact: device.deviceId } }, audio: false });
  }
  return await media.getUserMedia({ video: true, audio: false });
}

function releaseCamera() {
  if (stream !== null) for (const track of stream.getTracks()) track.stop();
  stream = null;
  video.srcObject = null;
}

async function start() {
  if (running || starting) return;
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus(MESSAGES.insecure);
    return;
  }
  const run = ++runId;
  starting = true;
  buttons();
  setStatus('Starting the camera...');
  let media;
  try {
    media = await openCamera(facing);
  } catch (error) {
    if (run !== runId) return;  // Stop pressed while the browser asked
    starting = false;
    setStatus(explain(error));
    buttons();
    return;
  }
  if (run !== runId) { for (const track of media.getTracks()) track.stop(); return; }
  starting = false;
  await begin(media, run);
}

async function begin(media, run) {
  stream = media;
  for (const track of media.getVideoTracks()) {
    track.addEventListener('ended', () => { if (stream === media) stop('The camera stopped (unplugged, or ' +
                                                                        'turned off by the system).'); });
  }
  video.srcObject = media;
  video.muted = true;
  try { await video.play(); } catch (error) { /* autoplay of a muted video is allowed; frames come anyway */ }
  if (run !== runId) return;
  running = true;
  outstanding = 0;
  errorCount = 0;
  busyCount = 0;
  backoffUntil = 0;
  runStartedAt = performance.now();
  shownTimes = [];
  videoFrames = 0;
  capturedFrame = -1;
  root.dataset.running = 'true';
  buttons();
  setStatus('Camera on: waiting for the first frame...');
  if (fpsTimer === null) {
    fpsTimer = setInterval(() => {
      if (!running) return;
      if (!shownOnPage()) stop(LEFT);  // also while waiting on the server, when pump() does not run
      else updateLatency();
    }, 500);
  }
  watchFrames(run);
  refreshDevices();
  pump();
}

function stop(message) {
  const wasActive = running || starting;
  runId += 1;  // from here on nothing of the old run is shown
  running = false;
  starting = false;
  outstanding = 0;
  if (pumpTimer !== null) { clearTimeout(pumpTimer); pumpTimer = null; }
  if (fpsTimer !== null) { clearInterval(fpsTimer); fpsTimer = null; }
  releaseCamera();
  root.dataset.running = 'false';
  if (wasActive && seq > 0) {
    root.dataset.stoppedAt = String(performance.now());
    // The server drops this session's waiting frame and any frame up to `seq` that reaches it late.
    Promise.resolve(server.camera_stop({ session: SESSION, seq: seq })).catch(() => {});
  }
  updateLatency();
  setStatus(message || 'Camera off: press Start.');
  buttons();
}

// Front/back: while streaming the camera is swapped without stopping the stream. The mirror follows the choice
// (a front camera is mirrored like a mirror, a back camera shows the world as it is); the user may flip it after.
async function switchFacing() {
  facing = facingSelect.value === 'environment' ? 'environment' : 'user';
  mirrorBox.checked = facing === 'user';
  mirror();
  if (!running) return;
  const run = runId;
  let media;
  try {
    releaseCamera();  // phones often cannot open both cameras at once
    media = await openCamera(facing);
  } catch (error) {
    if (run === runId) stop(explain(error));
    return;
  }
  if (run !== runId) { for (const track of media.getTracks()) track.stop(); return; }
  stream = media;
  video.srcObject = media;
  try { await video.play(); } catch (error) { /* see begin() */ }
  for (const track of media.getVideoTracks()) {
    track.addEventListener('ended', () => { if (stream === media) stop('The camera stopped.'); });
  }
  capturedFrame = -1;
  pump();
}

function mirror() { video.classList.toggle('cam-mirrored', mirrorBox.checked); }

// --- Snapshot ----------------------------------------------------------------------------------------------------
async function snapshot() {
  if (snapshotBusy || !hasServer('camera_snapshot')) return;
  const image = running && videoReady() ? grab(SNAPSHOT_QUALITY) : shownInput;
  if (!image) return;
  snapshotBusy = true;
  buttons();
  const before = statusLine.textContent;
  setStatus('Making the snapshot...');
  let answer;
  try {
    answer = await server.camera_snapshot({ image: image, inputs: inputs, session: SESSION,
                                            captured_at: performance.now() });
  } catch (error) {
    answer = undefined;
  }
  snapshotBusy = false;
  buttons();
  if (answer && answer.src) {
    snapImg.src = answer.src;
    snapSave.href = answer.src;
    snapSave.download = 'sana-sprint-camera-' + new Date().toISOString().replace(/[:.]/g, '-') + '.jpg';
    snapBox.hidden = false;
    props.value = answer.src;  // the component's value; Gradio dispatches 'change'
    setStatus(running ? before : 'Snapshot made.');
  } else if (answer && answer.busy) {
    setStatus('The server is busy: try the snapshot again in a moment.');
  } else {
    setStatus('Snapshot failed: ' + ((answer && answer.error) || 'the server did not answer.'));
  }
}

// --- Wiring ------------------------------------------------------------------------------------------------------
startButton.addEventListener('click', start);
stopButton.addEventListener('click', () => stop());
mirrorBox.addEventListener('change', mirror);
facingSelect.addEventListener('change', switchFacing);
snapButton.addEventListener('click', snapshot);
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener('devicechange', () => { if (stream !== null) refreshDevices(); });
}
// A hidden page stops the camera: its frames would only keep a GPU busy for nobody.
window.addEventListener('pagehide', () => { if (running || starting) stop(); });

// The app's inputs (prompt, strength, ...), keyed by parameter name: the next captured frame carries them.
root.setInputs = (values) => { inputs = Object.assign({}, values || {}); };
root.cameraSession = SESSION;
mirror();
buttons();
