"""The frame client the canvas and the camera share (``sprint_demo/web/frame_client.js``), alone in chromium: a blank
page, the file as the components get it, and request functions whose answers the test decides. The components'
own behaviour over it is checked end to end by the browser tests of the Sketch, Paint and Camera tabs.

Timing checks are lower bounds only (a timer never fires early; a loaded machine only makes gaps longer), and what
must not wait is checked by counting requests, not by the clock.

If /usr/bin/chromium is missing these tests FAIL (never skip): ``apt-get install -y chromium``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser as helpers  # noqa: E402  (tests/browser.py)

from sprint_demo.web.page_files import page_file  # noqa: E402

pytestmark = pytest.mark.browser

# window.fc: the file's functions; window.rig(options): a client whose requests are recorded in rig.sent (seq, t) and
# answered when the test calls rig.answer(seq, value) (or at once with options.reply(ticket)); rig.answers records
# what answered() got. rig.want says whether there is something to send.
HARNESS = """(source) => {
  window.fc = new Function(source + '; return { frameClient, newSessionId };')();
  window.rig = (options) => {
    const rig = { sent: [], answers: [], pending: new Map(), want: true };
    rig.client = window.fc.frameClient(Object.assign({
      wanted: () => rig.want,
      request: (ticket) => {
        rig.sent.push({ seq: ticket.seq, t: performance.now() });
        if (options.reply) return options.reply(ticket);
        return new Promise((resolve) => rig.pending.set(ticket.seq, resolve));
      },
      answered: (answer, ticket) => rig.answers.push({ seq: ticket.seq, answer: answer === undefined ? 'undefined'
                                                                               : answer }),
    }, options));
    rig.answer = (seq, value) => { rig.pending.get(seq)(value); rig.pending.delete(seq); };
    return rig;
  };
}"""
SETTLE = "() => new Promise((resolve) => setTimeout(resolve, 0))"  # lets answered promises run


@pytest.fixture(scope="module")
def page(chromium):
    if chromium is None:
        helpers.require_chromium()  # raises AssertionError with the install hint
    context = chromium.new_context()
    try:
        blank = context.new_page()
        blank.evaluate(HARNESS, page_file("frame_client.js"))
        yield blank
    finally:
        context.close()


def test_in_flight_limit_sequence_numbers_and_claim(page):
    result = page.evaluate("""async () => {
      const settle = """ + SETTLE + """;
      const rig = window.rig({ limit: 2 });
      rig.client.pump();
      const first = rig.sent.map((s) => s.seq);          // two leave at once, the third waits
      rig.answer(1, { src: 'a' });
      await settle();
      const afterOne = rig.sent.map((s) => s.seq);       // an answer frees a place: the next one leaves
      const claimed = rig.client.claim();                // a request outside the loop takes the next number
      rig.answer(2, { src: 'b' });
      await settle();
      rig.want = false;
      rig.answer(3, { dropped: true });
      rig.answer(5, { src: 'c' });
      await settle();
      return { first, afterOne, claimed, sent: rig.sent.map((s) => s.seq), answers: rig.answers,
               seq: rig.client.seq };
    }""")
    assert result["first"] == [1, 2]
    assert result["afterOne"] == [1, 2, 3]
    assert result["claimed"] == 4
    assert result["sent"] == [1, 2, 3, 5]  # 4 went to the claim
    assert [a["seq"] for a in result["answers"]] == [1, 2, 3, 5] and result["seq"] == 5


def test_busy_answers_back_off_longer_in_a_row_and_a_frame_ends_the_run(page):
    result = page.evaluate("""async () => {
      const replies = [{ busy: true }, { busy: true }, { busy: true }, { src: 'x' }, { busy: true }];
      const done = new Promise((resolve) => {
        const rig = window.rig({ limit: 1, busyBackoffMs: [40, 120], reply: (ticket) => {
          if (ticket.seq > replies.length) { rig.want = false; resolve(rig); return null; }
          return replies[ticket.seq - 1];
        } });
        rig.inRow = [];
        const answered = rig.answers;
        rig.answers = { push: (a) => { answered.push(a); rig.inRow.push(rig.client.busyInRow); } };
        rig.client.pump();
      });
      const rig = await done;
      await (""" + SETTLE + """)();
      const t = rig.sent.map((s) => s.t);
      return { gaps: t.slice(1).map((v, i) => v - t[i]), inRow: rig.inRow };
    }""")
    gaps, in_row = result["gaps"], result["inRow"]
    assert in_row == [1, 2, 3, 0, 1, 1]  # busy answers in a row; the frame ends the run (the last: null, no change)
    assert gaps[0] >= 39 and gaps[1] >= 119 and gaps[2] >= 119, gaps  # 40, then 120 repeating
    assert gaps[4] >= 39, gaps  # the busy answer after the frame waits again


def test_dropped_answers_and_pause_back_off_and_the_gap_counts_from_the_last_request(page):
    result = page.evaluate("""async () => {
      const times = {};
      const run = (options, replies) => new Promise((resolve) => {
        const rig = window.rig(Object.assign({ limit: 1, reply: (ticket) => {
          if (ticket.seq > replies.length) { rig.want = false; resolve(rig); return null; }
          return replies[ticket.seq - 1];
        } }, options));
        if (options.pauseFirst) rig.client.pause(options.pauseFirst);
        if (options.restartGap) rig.client.restartGap();
        rig.started = performance.now();
        rig.client.pump();
      });
      const gapsOf = (rig) => [rig.sent[0].t - rig.started].concat(
        rig.sent.slice(1).map((s, i) => s.t - rig.sent[i].t));
      times.dropped = gapsOf(await run({ droppedBackoffMs: 80 }, [{ dropped: true }, { src: 'x' }]));
      times.gap = gapsOf(await run({ gapMs: 60, restartGap: true }, [{ src: 'x' }, { src: 'y' }]));
      times.paused = gapsOf(await run({ pauseFirst: 70 }, [{ src: 'x' }]));
      times.plain = (await run({}, [{ src: 'x' }, { src: 'y' }, { src: 'z' }])).sent.length;
      return times;
    }""")
    assert result["dropped"][0] < 1000 and result["dropped"][1] >= 79, result  # the first leaves at once
    assert result["gap"][0] >= 59 and result["gap"][1] >= 59 and result["gap"][2] >= 59, result
    assert result["paused"][0] >= 69, result
    assert result["plain"] == 4  # without back-off or gap, each answer's pump sends the next at once


def test_reset_forgets_what_is_in_flight_and_failed_requests_answer_undefined(page):
    result = page.evaluate("""async () => {
      const settle = """ + SETTLE + """;
      const rig = window.rig({ limit: 1 });
      rig.client.pump();
      rig.client.reset();                   // Stop: request 1 no longer counts
      rig.client.pump();                    // Start: request 2 leaves although 1 never answered
      rig.answer(1, { src: 'old' });
      await settle();
      const afterOld = rig.answers.length;  // the old run's answer is not handed on
      rig.want = false;
      rig.answer(2, { src: 'new' });
      await settle();
      const thrower = window.rig({ limit: 1, reply: () => { throw new Error('no server'); } });
      const rejecter = window.rig({ limit: 1, reply: () => Promise.reject(new Error('refused')) });
      for (const r of [thrower, rejecter]) { r.want = true; r.client.pump(); r.want = false; }
      await settle();
      return { sent: rig.sent.map((s) => s.seq), afterOld, answers: rig.answers, thrown: thrower.answers,
               rejected: rejecter.answers, ids: [window.fc.newSessionId(), window.fc.newSessionId()] };
    }""")
    assert result["sent"] == [1, 2] and result["afterOld"] == 0
    assert result["answers"] == [{"seq": 2, "answer": {"src": "new"}}]
    assert result["thrown"] == [{"seq": 1, "answer": "undefined"}]
    assert result["rejected"] == [{"seq": 1, "answer": "undefined"}]
    first, second = result["ids"]
    assert first != second and len(first) >= 16
