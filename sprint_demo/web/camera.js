// The CameraStream (sprint_demo/web/camera.py, whose docstring holds the server-function contract). Gradio runs this
// file, after frame_client.js and props.js, as the body of a function of (element, trigger, props, server, upload,
// watch). Four parts: the capture (videoCapture: video frames as JPEGs), the camera device (openCamera and its
// helpers), the output (cameraOutput: the image, its latency line and frame rate) and the stream (cameraStream:
// Start / Stop, the buttons and status line, the snapshot), which sends frames through the frame client.
//
// Newest frame only: at most max_in_flight requests per page (one being made, one waiting, which the server
// replaces with a newer one); the next frame is captured only when fewer are outstanding, so nothing queues
// behind. Every start and stop opens a new run: an answer from an older run is never shown, so after Stop the
// output keeps the last frame whatever still comes back.

// --- Capture -------------------------------------------------------------------------------------------------------
// Frames of `video` with the video's aspect ratio, longer side `size`, both sides rounded to the nearest multiple of
// `multiple` (at least one multiple), drawn into an off-screen canvas and encoded as JPEG. It counts the video's new
// frames (requestVideoFrameCallback) so that the stream can wait for one instead of sending the same picture twice
// when the model is quicker than the camera; browsers without the callback capture on a short timer.
function videoCapture(video, size, multiple) {
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d');
  let seen = 0;   // new video frames seen; 0: unknown, capture anyway
  let sent = -1;  // `seen` when the stream last took a frame: the same video frame is not sent twice

  function shape() {
    const w = video.videoWidth;
    const h = video.videoHeight;
    const scale = size / Math.max(w, h);
    const side = (v) => Math.max(multiple, Math.round(v * scale / multiple) * multiple);
    return [side(w), side(h)];
  }

  return {
    shape: shape,
    ready: () => video.readyState >= 2 && video.videoWidth > 0 && video.videoHeight > 0,
    grab(quality, mirrored) {
      const [w, h] = shape();
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      if (mirrored) ctx.setTransform(-1, 0, 0, 1, w, 0);
      ctx.drawImage(video, 0, 0, w, h);
      return canvas.toDataURL('image/jpeg', quality);
    },
    // The video frame on show was sent already (only known where frames are counted).
    sentAlready: () => Boolean(video.requestVideoFrameCallback) && seen > 0 && seen === sent,
    markSent() { sent = seen; },
    forgetSent() { sent = -1; },
    // Counts frames from zero and calls onFrame() for each new one while stillWanted() holds.
    watch(stillWanted, onFrame) {
      seen = 0;
      sent = -1;
      if (!video.requestVideoFrameCallback) return;
      const next = () => {
        if (!stillWanted()) return;
        seen += 1;
        onFrame();
        video.requestVideoFrameCallback(next);
      };
      video.requestVideoFrameCallback(next);
    },
  };
}

// --- The camera device ---------------------------------------------------------------------------------------------
const CAMERA_MESSAGES = {
  refused: 'Camera permission was refused: allow the camera in the browser\'s site settings, then press Start.',
  missing: 'No camera was found.',
  insecure: 'Browsers allow the camera only over HTTPS or on localhost.',
};

function explainCameraError(error) {
  const name = error && error.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') return CAMERA_MESSAGES.refused;
  if (name === 'NotFoundError' || name === 'OverconstrainedError' || name === 'DevicesNotFoundError') {
    return CAMERA_MESSAGES.missing;
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

// --- Output --------------------------------------------------------------------------------------------------------
// The image made from the camera (<img id=output_id>), the latency line and the frame rate over the last 2 s.
function cameraOutput({ out, latency, readout }) {
  const FPS_WINDOW_MS = 2000;
  let shownSeq = 0;       // the frame on screen
  let shownInput = null;  // the camera frame (JPEG data URL) behind the image on screen, for a snapshot
  let shownTimes = [];    // performance.now() of the frames shown in the last FPS_WINDOW_MS
  let runStartedAt = 0;
  let last = null;        // the frame on screen: {seq, captured_at, shown_at, server_ms, round_trip_ms, age_ms}

  function framesPerSecond() {
    const now = performance.now();
    shownTimes = shownTimes.filter((t) => now - t <= FPS_WINDOW_MS);
    const span = Math.min(FPS_WINDOW_MS, now - runStartedAt);
    return span > 0 ? shownTimes.length * 1000 / span : 0;
  }

  return {
    get shownInput() { return shownInput; },
    startRun() {
      runStartedAt = performance.now();
      shownTimes = [];
    },
    // Shows frame `answer` (made from the JPEG `image`, `roundTrip` ms from capture to answer) unless a newer one
    // is on screen or current() no longer holds (stopped): 'shown', 'stale', or 'unreadable' (not an image).
    async show(answer, image, roundTrip, current) {
      if (answer.seq < shownSeq) return 'stale';
      const next = new Image();
      next.src = answer.src;
      try {
        await next.decode();  // decoded off screen first: the swap below paints at once, and a bad image shows nothing
      } catch (error) {
        return 'unreadable';
      }
      if (!current() || answer.seq <= shownSeq) return 'stale';
      const shownAt = performance.now();
      out.src = answer.src;
      shownSeq = answer.seq;
      shownInput = image;
      const capturedAt = Number(answer.captured_at);
      last = { seq: answer.seq, captured_at: capturedAt, shown_at: shownAt, server_ms: Number(answer.server_ms),
               round_trip_ms: roundTrip, age_ms: shownAt - capturedAt };
      out.dataset.seq = String(answer.seq);
      out.dataset.capturedAt = String(capturedAt);
      out.dataset.shownAt = String(shownAt);
      out.dataset.shown = String(Number(out.dataset.shown || 0) + 1);
      shownTimes.push(shownAt);
      readout.textContent = answer.readout || '';
      return 'shown';
    },
    announce() {  // the camera-frame event of the frame just shown
      out.dispatchEvent(new CustomEvent('camera-frame', { bubbles: true, detail: {
        seq: last.seq, captured_at: last.captured_at, shown_at: last.shown_at, server_ms: last.server_ms,
        round_trip_ms: last.round_trip_ms } }));
    },
    updateLatency(running) {
      if (last === null) { latency.textContent = ''; return; }
      const ms = (v) => (Number.isFinite(v) ? Math.round(v) + ' ms' : '?');
      latency.textContent = 'server ' + ms(last.server_ms) + ' · round trip ' + ms(last.round_trip_ms) + ' · ' +
                            (running ? framesPerSecond() : 0).toFixed(1) + ' frames/s · frame age ' +
                            ms(last.age_ms) + ' (capture to screen)';
    },
  };
}

// --- The stream ----------------------------------------------------------------------------------------------------
function cameraStream({ element, props, server }) {
  const root = element.querySelector('.cam-root');
  const video = element.querySelector('.cam-video');
  const startButton = element.querySelector('.cam-start');
  const stopButton = element.querySelector('.cam-stop');
  const mirrorBox = element.querySelector('.cam-mirror');
  const facingSelect = element.querySelector('.cam-facing');
  const snapButton = element.querySelector('.cam-snap');
  const statusLine = element.querySelector('.cam-status');
  const snapBox = element.querySelector('.cam-snapshot');
  const snapImg = element.querySelector('.cam-snap-img');
  const snapSave = element.querySelector('.cam-snap-save');
  const QUALITY = requiredNumber(props, 'jpeg_quality');
  const SNAPSHOT_QUALITY = requiredNumber(props, 'snapshot_jpeg_quality');
  const MAX_ERRORS = requiredNumber(props, 'max_errors');
  const ERROR_BACKOFF_MS = requiredNumber(props, 'error_backoff_ms');  // a failing server is not hammered meanwhile
  const LEFT = 'The camera stopped when its tab was left: press Start to go on.';
  const session = newSessionId();
  const capture = videoCapture(video, requiredNumber(props, 'capture_size'), requiredNumber(props, 'size_multiple'));
  const output = cameraOutput({ out: element.querySelector('.cam-output'),
                                latency: element.querySelector('.cam-latency'),
                                readout: element.querySelector('.cam-readout') });
  const hasServer = (name) => Boolean(server && typeof server[name] === 'function');
  let inputs = {};        // sent with each frame; set by the app through root.setInputs
  let stream = null;      // the MediaStream while the camera is on
  let runId = 0;          // bumped by every start and stop: the camera opened for an older run is closed again
  let running = false;    // frames are being captured and sent
  let starting = false;   // getUserMedia pending
  let facing = 'user';
  let errorCount = 0;     // errors in a row: MAX_ERRORS stop the stream
  let snapshotBusy = false;
  let fpsTimer = null;

  const client = frameClient({
    limit: requiredNumber(props, 'max_in_flight'),
    busyBackoffMs: requiredNumbers(props, 'busy_backoff_ms'),  // "server full" answers in a row wait longer
    // after our waiting frame was replaced by our own newer one (the server is busy with other frames): the next
    // one after this long, so that a waiting frame stays fresh without a request per video frame
    droppedBackoffMs: requiredNumber(props, 'replace_interval_ms'),
    wanted: () => {
      if (!running) return false;
      if (!shownOnPage()) { stop(LEFT); return false; }
      return true;
    },
    notYet: () => {
      if (!videoReady()) return 30;
      return capture.sentAlready() ? 100 : 0;  // the next video frame pumps; the timer only covers a stalled one
    },
    request: requestFrame,
    answered: frameAnswered,
  });
  if (!hasServer('camera_snapshot')) snapButton.hidden = true;

  function setStatus(text) { statusLine.textContent = text; }

  function buttons() {
    startButton.disabled = running || starting;
    stopButton.disabled = !(running || starting);
    snapButton.disabled = snapshotBusy || !(running || output.shownInput);
  }

  function videoReady() { return stream !== null && capture.ready(); }

  // Gradio keeps a tab's components in the page, hidden, when another tab is chosen; the video still plays there,
  // so a camera left on in a hidden tab would keep its light on and the GPU busy for nobody.
  function shownOnPage() {
    if (!root.isConnected) return false;
    return root.checkVisibility ? root.checkVisibility() : root.offsetParent !== null;
  }

  function requestFrame(ticket) {
    capture.markSent();
    ticket.capturedAt = performance.now();
    ticket.image = capture.grab(QUALITY, mirrorBox.checked);
    root.dataset.sent = String(ticket.seq);
    return server.camera_frame({ image: ticket.image, inputs: inputs, seq: ticket.seq, session: session,
                                 captured_at: ticket.capturedAt });
  }

  // The back-off after busy and dropped answers is the client's; the rest is said here.
  function frameAnswered(answer, ticket) {
    if (!answer) {
      failed('The server did not answer.');  // Gradio logs the cause in the console and resolves undefined
    } else if (answer.src) {
      errorCount = 0;
      show(answer, ticket);
    } else if (answer.dropped) {
      // a newer frame of this page took its place on the server, which is busy with other frames
    } else if (answer.busy) {
      setStatus('The server is busy: retrying...');
    } else if (answer.expired) {
      stop((answer.error || 'The time limit for the camera passed.') + ' Press Start again.');
    } else {
      failed(String(answer.error || 'The server could not make this frame.'));
    }
  }

  function failed(message) {
    errorCount += 1;
    if (errorCount >= MAX_ERRORS) {
      stop(message + ' (' + errorCount + ' times in a row: the camera stopped; press Start to try again.)');
      return;
    }
    setStatus(message);
    client.pause(ERROR_BACKOFF_MS);
  }

  async function show(answer, ticket) {
    const current = () => client.isCurrent(ticket);
    const shown = await output.show(answer, ticket.image, ticket.answeredAt - ticket.capturedAt, current);
    if (shown === 'unreadable' && current()) failed('The server sent an image the browser cannot read.');
    if (shown !== 'shown') return;
    if (errorCount === 0 && client.busyInRow === 0) setStatus(streamingText());
    output.updateLatency(running);
    buttons();
    output.announce();
  }

  function streamingText() {
    const track = stream && stream.getVideoTracks()[0];
    const label = track && track.label ? track.label : 'camera';
    return 'Streaming from ' + label + ' (' + video.videoWidth + 'x' + video.videoHeight + ', sent as ' +
           capture.shape().join('x') + ').';
  }

  // The front/back choice is offered only when there is more than one camera; before permission browsers list at
  // most one device per kind, so this runs again once the camera is open.
  async function refreshDevices() {
    const cameras = await videoInputs();
    facingSelect.hidden = cameras.length < 2;
    root.dataset.cameras = String(cameras.length);
    return cameras;
  }

  function releaseCamera() {
    if (stream !== null) for (const track of stream.getTracks()) track.stop();
    stream = null;
    video.srcObject = null;
  }

  async function start() {
    if (running || starting) return;
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setStatus(CAMERA_MESSAGES.insecure);
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
      setStatus(explainCameraError(error));
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
    client.reset();
    errorCount = 0;
    output.startRun();
    root.dataset.running = 'true';
    buttons();
    setStatus('Camera on: waiting for the first frame...');
    if (fpsTimer === null) {
      fpsTimer = setInterval(() => {
        if (!running) return;
        if (!shownOnPage()) stop(LEFT);  // also while waiting on the server, when the client does not pump
        else output.updateLatency(running);
      }, 500);
    }
    capture.watch(() => run === runId, client.pump);
    refreshDevices();
    client.pump();
  }

  function stop(message) {
    const wasActive = running || starting;
    runId += 1;  // from here on nothing of the old run is shown
    running = false;
    starting = false;
    client.reset();
    if (fpsTimer !== null) { clearInterval(fpsTimer); fpsTimer = null; }
    releaseCamera();
    root.dataset.running = 'false';
    if (wasActive && client.seq > 0) {
      root.dataset.stoppedAt = String(performance.now());
      // The server drops this session's waiting frame and any frame up to `seq` that reaches it late.
      Promise.resolve(server.camera_stop({ session: session, seq: client.seq })).catch(() => {});
    }
    output.updateLatency(running);
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
      if (run === runId) stop(explainCameraError(error));
      return;
    }
    if (run !== runId) { for (const track of media.getTracks()) track.stop(); return; }
    stream = media;
    video.srcObject = media;
    try { await video.play(); } catch (error) { /* see begin() */ }
    for (const track of media.getVideoTracks()) {
      track.addEventListener('ended', () => { if (stream === media) stop('The camera stopped.'); });
    }
    capture.forgetSent();
    client.pump();
  }

  function mirror() { video.classList.toggle('cam-mirrored', mirrorBox.checked); }

  async function snapshot() {
    if (snapshotBusy || !hasServer('camera_snapshot')) return;
    const image = running && videoReady() ? capture.grab(SNAPSHOT_QUALITY, mirrorBox.checked) : output.shownInput;
    if (!image) return;
    snapshotBusy = true;
    buttons();
    const before = statusLine.textContent;
    setStatus('Making the snapshot...');
    let answer;
    try {
      answer = await server.camera_snapshot({ image: image, inputs: inputs, session: session,
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
  root.cameraSession = session;
  mirror();
  buttons();
}

cameraStream({ element, props, server });
