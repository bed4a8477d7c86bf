"""``session_routing``: the session-affinity policy (``SessionHomes``), Serve's request router around it
(``SessionRouter``, driven here the way Serve drives it, without starting Ray) and ``SessionCalls``. The routing
across live replicas is tested in tests/test_serve_ray.py."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID, RequestMetadata
from ray.serve.request_router import PendingRequest

from sprint_demo.tools.session_routing import IDLE_S, MAX_SESSIONS, MOVE_GAP, SessionCalls, SessionHomes, SessionRouter

SCALING = Path(__file__).resolve().parent.parent / "docs" / "SCALING.md"


def _spread(homes: SessionHomes, sessions: int, live: list[str]) -> dict[str, str]:
    return {f"s{i}": homes.home(f"s{i}", live) for i in range(sessions)}


def test_new_sessions_spread_evenly_and_each_keeps_its_home():
    homes = SessionHomes()
    live = ["a", "b", "c"]
    first = _spread(homes, 7, live)
    assert sorted(Counter(first.values()).values()) == [2, 2, 3]
    for late in range(3):  # later calls, with more sessions arriving in between, find the same homes
        homes.home(f"late{late}", live)
        assert _spread(homes, 7, live) == first
    assert sorted(homes.sessions_per_replica().values()) == [3, 3, 4]


def test_sessions_of_a_gone_replica_move_to_the_live_ones_and_the_others_stay():
    homes = SessionHomes()
    before = _spread(homes, 6, ["a", "b", "c"])
    homes.keep_only(["b", "c"])  # "a" died: Serve's replica set no longer has it
    after = _spread(homes, 6, ["b", "c"])
    assert all(after[s] == before[s] for s in before if before[s] != "a")
    assert {after[s] for s in before if before[s] == "a"} <= {"b", "c"}
    assert sorted(homes.sessions_per_replica().values()) == [3, 3]
    # a session whose home is missing from the live set it is asked with also gets a live one
    assert homes.home("s0", ["c"]) == "c"


def test_a_full_home_gives_its_session_away_only_to_a_much_emptier_replica_between_calls():
    homes = SessionHomes()
    homes.home("s0", ["a"])
    homes.home("s1", ["a"])  # both on "a": "b" is a replacement that has just started
    assert homes.move_targets("s0", ["a", "b"]) == ["b"]  # 2 against 0: MOVE_GAP apart
    homes.routed("s1", "a", call=1)  # a call of s1 is on its home: s1 stays until it is answered
    assert homes.move_targets("s1", ["a", "b"]) == []
    homes.routed("s0", "b", call=2)  # Serve took s0's call to "b": s0 lives there now
    assert homes.home("s0", ["a", "b"]) == "b" and homes.sessions_per_replica() == Counter(a=1, b=1)
    homes.completed("a", 1)
    assert homes.move_targets("s1", ["a", "b"]) == []  # 1 against 1: no move, and no move back for s0
    assert homes.move_targets("s0", ["a", "b"]) == []
    assert MOVE_GAP == 2


def test_a_cancel_neither_assigns_nor_moves_a_session():
    homes = SessionHomes()
    assert homes.home_of("never seen", ["a", "b"]) is None and not homes.sessions_per_replica()
    homes.home("s", ["a", "b"])
    home = homes.home_of("s", ["a", "b"])
    other = "b" if home == "a" else "a"
    homes.routed("s", other, call="cancel-call", moves=False)
    assert homes.home_of("s", ["a", "b"]) == home


def test_a_finished_call_is_counted_off_only_on_the_replica_that_held_it():
    """Serve reports a call's end with the replica and the call's id; a call refused by a full replica and sent
    again keeps its id, so the end of the refused try must not count off the try that runs."""
    homes = SessionHomes()
    homes.home("s0", ["a"])
    homes.home("s1", ["a"])
    homes.routed("s0", "a", call="x")
    homes.completed("b", "x")  # another replica's report for the same id: ignored
    assert homes.move_targets("s0", ["a", "b"]) == []
    homes.completed("a", "x")
    assert homes.move_targets("s0", ["a", "b"]) == ["b"]


def test_idle_sessions_are_forgotten_and_the_table_is_bounded():
    now = [0.0]
    homes = SessionHomes(idle_s=10.0, max_sessions=3, clock=lambda: now[0])
    _spread(homes, 2, ["a", "b"])
    now[0] = 11.0
    homes.home("fresh", ["a", "b"])
    assert sum(homes.sessions_per_replica().values()) == 1  # s0 and s1 were idle for 11 s
    for i in range(5):
        homes.home(f"n{i}", ["a", "b"])
    assert sum(homes.sessions_per_replica().values()) == 3


# --- SessionRouter, called as Serve calls it -------------------------------------------------------------------
DEPLOYMENT = DeploymentID(name="EngineReplica", app_name="sprint")
_calls = itertools.count()


class _Replica(SimpleNamespace):
    """What the router reads of Serve's RunningReplica."""

    async def get_queue_len(self, deadline_s: float) -> int:
        return 0


def _replicas(*names: str) -> list[_Replica]:
    return [_Replica(replica_id=ReplicaID(name, DEPLOYMENT), max_ongoing_requests=2) for name in names]


def _call(method: str = "render", **kwargs) -> PendingRequest:
    n = next(_calls)
    return PendingRequest(args=[], kwargs=kwargs,
                          metadata=RequestMetadata(request_id=str(n), internal_request_id=f"i{n}", call_method=method))


def _ids(ranks) -> list[list[str]]:
    return [[replica.replica_id.unique_id for replica in rank] for rank in ranks]


def test_router_sends_session_calls_home_and_the_rest_by_two_choices():
    async def scenario():
        router = SessionRouter(deployment_id=DEPLOYMENT, handle_source=DeploymentHandleSource.UNKNOWN)
        router.initialize_state()
        replicas = _replicas("a", "b")
        router.update_replicas(replicas)
        homes = {s: _ids(await router.choose_replicas(replicas, _call(session=s))) for s in ("t0", "t1", "t2", "t3")}
        assert all(len(ranks) == 1 and len(ranks[0]) == 1 for ranks in homes.values()), homes
        assert Counter(ranks[0][0] for ranks in homes.values()) == Counter(a=2, b=2)
        for session, ranks in homes.items():  # later frames and the Stop go to the same replica
            assert _ids(await router.choose_replicas(replicas, _call(session=session))) == ranks
            assert _ids(await router.choose_replicas(replicas, _call("cancel", session=session))) == ranks
        assert sorted(_ids(await router.choose_replicas(replicas, _call(session=None)))[0]) == ["a", "b"]
        assert sorted(_ids(await router.choose_replicas(replicas, None))[0]) == ["a", "b"]
        await router.choose_replicas(replicas, _call("cancel", session="unknown"))
        assert sum(router.homes.sessions_per_replica().values()) == 4  # a cancel made no home

        lost = homes["t0"][0][0]
        router.update_replicas([r for r in replicas if r.replica_id.unique_id != lost])  # it died
        survivor = [r for r in replicas if r.replica_id.unique_id != lost]
        for session in homes:
            assert _ids(await router.choose_replicas(survivor, _call(session=session))) == [[survivor[0].replica_id
                                                                                              .unique_id]]
        # a replacement joins empty: a full survivor offers it as a second rank; a call taken there moves it
        replacement = _replicas("c")[0]
        router.update_replicas([*survivor, replacement])
        ranks = _ids(await router.choose_replicas([*survivor, replacement], pending := _call(session="t0")))
        assert ranks == [[survivor[0].replica_id.unique_id], ["c"]]
        router.on_request_routed(pending, replacement.replica_id, result=None)
        assert _ids(await router.choose_replicas([*survivor, replacement], _call(session="t0"))) == [["c"]]

    asyncio.run(scenario())


def test_session_calls_cancels_what_waits_of_a_session():
    class _Response:
        def __init__(self):
            self.cancelled = False

        def cancel(self):
            self.cancelled = True

    calls = SessionCalls()
    draft, final, other = _Response(), _Response(), _Response()
    calls.add("s", draft, draft=True)
    calls.add("s", final, draft=False)
    calls.add("t", other, draft=True)
    calls.add(None, _Response(), draft=True)  # a call without a session is not kept
    assert calls.cancel("s", drafts_only=True) == 1 and draft.cancelled and not final.cancelled
    calls.remove("s", draft)
    assert calls.cancel("s", keep=final) == 0
    assert calls.cancel("s") == 1 and final.cancelled and not other.cancelled
    calls.remove("s", final)
    assert calls.cancel("s") == 0


def test_the_scaling_page_says_how_sessions_are_routed():
    """docs/SCALING.md's picture names the router and what it does with a session, and its section on routing names
    the router's settings with their values."""
    text = SCALING.read_text(encoding="utf-8")
    picture = text.split("```")[1]  # the page's first block: the picture
    assert "SessionRouter" in picture and "a call with a session -> the replica holding that session" in picture
    section = text[text.index("\n## Sessions and routing\n"):]
    section = section[:section.index("\n## ", 1)]
    assert "RequestRouterConfig" in section and "DeploymentResponse.cancel" in section
    for name, value in (("MOVE_GAP", MOVE_GAP), ("IDLE_S", IDLE_S), ("MAX_SESSIONS", MAX_SESSIONS)):
        written = re.search(rf"`{name}` \(([\d ]+)", section)
        assert written and float(written.group(1).replace(" ", "")) == value, f"{name} is {value}"
    assert "may reach different replicas" not in text
