// The frame client shared by the canvas (canvas_frames.js: the Sketch and Paint tabs) and the camera (camera.js):
// the page's session id and the loop that sends frame requests to a server function. Python puts this file in
// front of the component's own files (sprint_demo/web/scripts.py); it only defines functions.

// A random id for this page's frames: the server keeps one waiting frame per session, the newest.
function newSessionId() {
  return crypto.randomUUID ? crypto.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36);
}

// The request loop. pump() sends a frame when all of these hold, in this order: fewer than `limit` requests are
// in flight; wanted() says there is something to send (it may also stop its owner); the back-off after a "busy" or
// "dropped" answer and `gapMs` since the last request have passed; notYet() (ms to wait, 0: go) says the source
// has something new. A wait is a timer that pumps again; at most one is pending.
//
// request(ticket) sends frame ticket.seq and returns a promise of the server's answer; what the owner wants back
// with the answer (the picture it sent) it keeps on the ticket. A request that throws or rejects answers undefined.
// answered(answer, ticket) gets every answer of the current run (ticket.answeredAt: performance.now() when it came),
// after the back-off it asks for is set; the loop pumps again after it.
//
// Back-off (times in ms): a "busy" answer waits busyBackoffMs[n] (n: busy answers in a row, the last entry
// repeating), a "dropped" answer (a newer frame of the session took this one's place on a busy server)
// droppedBackoffMs; an answer with a picture (src) ends a run of busy answers. pause(ms) backs off for the owner's
// own reasons (an error).
//
// Sequence numbers grow by one per request for the page's life, never reset: the server and the output keep the
// newest. claim() numbers a request made outside the loop (a final frame) from the same counter. reset() starts a
// new run (Stop, Start): nothing in flight counts any more, answers of the old run are not handed on, the back-off
// and the pending timer are gone.
function frameClient({ limit, gapMs = 0, busyBackoffMs = [], droppedBackoffMs = 0, wanted, notYet = () => 0,
                       request, answered }) {
  let seq = 0;
  let run = 0;
  let inFlight = 0;
  let lastSentAt = -Infinity;
  let backoffUntil = 0;
  let busyInRow = 0;
  let timer = null;

  function later(ms) {
    if (timer !== null) return;
    timer = setTimeout(() => { timer = null; pump(); }, Math.max(0, ms));
  }

  function cancelTimer() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
  }

  function pump() {
    if (inFlight >= limit || !wanted()) return;
    const wait = Math.max(backoffUntil, lastSentAt + gapMs) - performance.now();
    if (wait > 0) { later(wait); return; }
    const pending = notYet();
    if (pending > 0) { later(pending); return; }
    send();
    pump();  // with a limit above one, the next request may leave at once
  }

  function send() {
    const ticket = { seq: ++seq, run: run };
    inFlight += 1;
    lastSentAt = performance.now();
    let answer;
    try {
      answer = Promise.resolve(request(ticket));
    } catch (error) {
      answer = Promise.resolve(undefined);
    }
    answer.catch(() => undefined).then((value) => settle(value, ticket));
  }

  function settle(answer, ticket) {
    ticket.answeredAt = performance.now();
    if (ticket.run !== run) return;  // reset meanwhile: nothing of the old run is handed on
    inFlight -= 1;
    if (answer && answer.src) {
      busyInRow = 0;
    } else if (answer && answer.busy && busyBackoffMs.length) {
      pause(busyBackoffMs[Math.min(busyInRow, busyBackoffMs.length - 1)]);
      busyInRow += 1;
    } else if (answer && answer.dropped && droppedBackoffMs > 0) {
      backoffUntil = Math.max(backoffUntil, performance.now() + droppedBackoffMs);
    }
    answered(answer, ticket);
    pump();
  }

  function pause(ms) { backoffUntil = performance.now() + ms; }

  return {
    pump: pump,
    pause: pause,
    cancelTimer: cancelTimer,
    // The gap to the next request counts from now, as if one had just left (a new stroke's first draft).
    restartGap() { lastSentAt = performance.now(); },
    claim() { return ++seq; },
    reset() {
      run += 1;
      inFlight = 0;
      backoffUntil = 0;
      busyInRow = 0;
      cancelTimer();
    },
    isCurrent(ticket) { return ticket.run === run; },
    get seq() { return seq; },
    get busyInRow() { return busyInRow; },
  };
}
