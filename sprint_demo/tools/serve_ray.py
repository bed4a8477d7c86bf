"""The same app with N engine replicas on Ray Serve: one GPU each when there are GPUs, one Gradio UI in front.

    python -m sprint_demo.tools.serve_ray --replicas 8 --model auto        # a multi-GPU machine: one replica per GPU
    python -m sprint_demo.tools.serve_ray --replicas 2 --model preview     # two CPU replicas of the preview model
    python -m sprint_demo.tools.serve_ray --ray-address auto ...           # an existing Ray cluster (``ray start``)

Pieces (docs/SCALING.md has the picture and the cluster recipe):

* ``EngineReplica``: a Ray Serve deployment; each replica is one Ray actor process that loads its own engine
  (``sprint_demo.engine.load_engine``) and answers the engine's frame methods. Each frame it makes carries a
  notice naming the replica (``REPLICA_NOTICE``; ``replica_of(frame)`` reads it back).
* ``RayEngine``: what ``ui.create_demo`` gets instead of an ``Engine``. It has the same attributes the UI reads
  and the same frame methods, and forwards each call through a ``DeploymentHandle``; frames (PIL images and
  timings) come back through Ray's object store.
* Routing: ``session_routing.SessionRouter`` is the deployment's request router: every call of an engine session
  (``render(..., session=...)``, ``cancel(session=...)``) goes to the replica that holds the session, new
  sessions go to the replica holding the fewest, and calls without a session by power of two choices.
* Errors: an ``InputError`` raised in a replica is raised again here with the same message (the UI shows it
  as a ``gr.Error`` naming the value); a model fault is raised again as the replica's own exception; a replica
  whose process dies mid-frame costs that frame one retry (Serve's router sends it to a live replica) and, if
  that fails too, ``ReplicaFault``, which the UI reports as a model fault to try again. Serve starts a
  replacement replica by itself.
* Addresses: without ``--ray-address`` a private single-machine Ray instance is started whose every socket is
  on 127.0.0.1 (``start_local_ray``), and Serve runs without its HTTP proxy (``proxy_location="Disabled"``):
  the only listening socket for users is Gradio's. With ``--ray-address`` the cluster's own binding applies.

This module imports Ray only inside functions, so importing it is cheap and the single-GPU app never loads
Ray. The Ray defaults below are used only here, so they are written here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, replace
from typing import Any

from PIL import Image

from .. import settings
from ..frames import Frame, FrameRequest, Priority, Superseded
from ..inputs import InputError
from ..models.speedups import SpeedOptions
from ..web import messages
from ..web.launch import build_parser, engine_options, launch, limit_malloc_arenas
from ..web.launch import parse_args as launch_args

log = logging.getLogger(__name__)

APP_NAME = "sprint"  # the Serve application
DEPLOYMENT_NAME = "EngineReplica"
REPLICA_NOTICE = "made by Ray Serve replica"  # frame notice prefix; the replica id follows
REPLICA_CPUS = 1.0  # Ray's CPU reservation per replica (a scheduling unit; Ray also sets OMP_NUM_THREADS to it)
FRAME_TIMEOUT_S = 120.0  # a frame that takes longer is reported as a fault (first frames of a real model: < 10 s)
HEALTH_CHECK_PERIOD_S = 5.0
HEALTH_CHECK_TIMEOUT_S = 30.0
UNHEALTHY_AFTER_FAULTS = 3  # consecutive model faults after which a replica reports itself unhealthy
# Ray treats a machine as a single-node cluster bound to 127.0.0.1 when this is 0 (its default on macOS and
# Windows); on Linux it otherwise binds its gRPC servers to every interface and advertises the LAN address.
RAY_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


class ReplicaFault(RuntimeError):
    """A replica stopped (its process died) while making a frame, twice in a row; trying again may succeed."""


# --- The deployment: one engine per replica -----------------------------------------------------------------
class EngineReplica:
    """One engine in one Ray actor process. Wrapped by ``serve.deployment`` in ``deploy`` (not with the decorator
    here, so that importing this module does not import Ray)."""

    def __init__(self, options: dict[str, Any]) -> None:
        """``options``: ``load_engine``'s keyword arguments (``web.launch.engine_options``)."""
        from ray import serve

        from ..engine import load_engine

        limit_malloc_arenas()  # a replica is a server process of its own
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        _keep_replica_port_on_loopback()
        self.engine = load_engine(**options)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self._faults = 0  # consecutive model faults (InputErrors are the caller's, not the replica's)
        self._faults_lock = threading.Lock()
        self._at_work: Counter[str | None] = Counter()  # session -> its render calls in this replica now
        self._work_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        """What the UI and the proxy need to know about this replica's engine (``FrameSource``'s facts)."""
        engine = self.engine
        return {
            "replica": self.replica_id, "pid": os.getpid(), "size": engine.size,
            "fallback_reason": engine.fallback_reason, "has_controlnet": engine.has_controlnet,
            "controlnet_description": engine.controlnet_description, "model_name": engine.model_name,
            "is_preview": engine.is_preview, "device": engine.device, "speed": asdict(engine.speed),
            "max_batch_size": engine.max_batch_size, "decoders": list(engine.decoders),
            "tiny_note": engine.tiny_note, "edges_fallback": engine.edges_fallback, "styles": list(engine.styles),
        }

    def pid(self) -> tuple[str, int]:
        """(replica id, process id): tests kill a replica's process with it."""
        return self.replica_id, os.getpid()

    def batch_sizes(self) -> tuple[str, dict[int, int]]:
        """(replica id, this replica's ``Engine.batch_sizes``)."""
        return self.replica_id, dict(self.engine.batch_sizes)

    def cache_counts(self) -> tuple[str, dict[str, int]]:
        """(replica id, this replica's ``Engine.cache_counts``: prompt and control-latent cache hits and misses)."""
        return self.replica_id, dict(self.engine.cache_counts)

    def sessions_at_work(self) -> tuple[str, dict[str | None, int]]:
        """(replica id, {session: its render calls in this replica now}): a stopped session has none left."""
        with self._work_lock:
            return self.replica_id, dict(self._at_work)
    def frame_counts(self) -> tuple[str, dict[str, int]]:
        """(replica id, this replica's ``Engine.frame_counts``)."""
        return self.replica_id, dict(self.engine.frame_counts)

    def render(self, *args: Any, **kwargs: Any) -> Frame:
        session = kwargs.get("session")
        with self._work_lock:
            self._at_work[session] += 1
        try:
            return self._frame(self.engine.render, args, kwargs)
        finally:
            with self._work_lock:
                self._at_work[session] -= 1
                if not self._at_work[session]:
                    del self._at_work[session]

    def cancel(self, session: str) -> tuple[str, None]:
        """(replica id, None): the router sends a session's cancel to the replica that holds the session."""
        self.engine.cancel(session)
        return self.replica_id, None

    def photo_to_control_map(self, *args: Any, **kwargs: Any) -> Image.Image:
        return self._counted(self.engine.photo_to_control_map, args, kwargs)

    def check_health(self) -> None:
        """Serve calls this every ``HEALTH_CHECK_PERIOD_S``; raising makes it replace the replica. A process that
        died fails it anyway; this also catches an engine whose every frame fails (e.g. a broken CUDA context)."""
        if self._faults >= UNHEALTHY_AFTER_FAULTS:
            raise RuntimeError(f"replica {self.replica_id}: the last {self._faults} frames failed")

    def _frame(self, method, args, kwargs):
        frame = self._counted(method, args, kwargs)
        return replace(frame, notices=(*frame.notices, f"{REPLICA_NOTICE} {self.replica_id}"))

    def _counted(self, method, args, kwargs):
        try:
            result = method(*args, **kwargs)
        except InputError:
            raise
        except Exception:
            with self._faults_lock:
                self._faults += 1
            raise
        with self._faults_lock:
            self._faults = 0
        return result


def _keep_replica_port_on_loopback() -> None:
    """On a loopback-only node, bind this replica's internal gRPC port to 127.0.0.1 too.

    Serve 2.60 opens that port (used for handle calls only with ``RAY_SERVE_USE_GRPC_BY_DEFAULT=1``) on every
    interface, ``"[::]:0"``, with no setting to change it (ray-project/ray issue 64544). It is opened after the
    deployment's constructor returns, so the constructor swaps in this address. tests/test_serve_ray.py checks
    every listening socket of the Ray processes; a Ray version that moves this code fails that test."""
    import ray
    from ray.serve._private import replica

    if ray.util.get_node_ip_address() != LOOPBACK:
        return
    add_port = replica.add_port_to_grpc_server
    if getattr(add_port, "loopback", False):
        return

    def add_port_on_loopback(server, address: str) -> int:
        return add_port(server, f"{LOOPBACK}:0" if address == "[::]:0" else address)

    add_port_on_loopback.loopback = True
    replica.add_port_to_grpc_server = add_port_on_loopback


def replica_of(frame: Any) -> str | None:
    """The id of the replica that made ``frame`` (from its notice), or None for a frame made in this process."""
    for notice in frame.notices:
        if notice.startswith(REPLICA_NOTICE):
            return notice[len(REPLICA_NOTICE):].strip()
    return None


# --- Starting Ray and Serve -------------------------------------------------------------------------------
def start_local_ray(num_cpus: int | None = None) -> None:
    """A private Ray instance on this machine with every socket on 127.0.0.1 and no dashboard.

    Ray on Linux would otherwise bind its gRPC servers to all interfaces and advertise the machine's LAN address
    even when given ``_node_ip_address="127.0.0.1"``. Its single-node switch (``RAY_SINGLE_NODE_ENV=0``) must be
    in the environment before ``ray`` is imported; raylet and workers inherit it."""
    already = "ray" in sys.modules
    os.environ[RAY_SINGLE_NODE_ENV] = "0"
    import ray
    from ray._private import ray_constants  # read-only: tells whether the switch above took effect

    if already and ray_constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError(f"ray was imported before start_local_ray: set {RAY_SINGLE_NODE_ENV}=0 before "
                           "importing it, or Ray binds to every interface")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK,
             runtime_env=_runtime_env(), log_to_driver=False, configure_logging=False)
    bound = ray.util.get_node_ip_address()
    if bound != LOOPBACK:
        ray.shutdown()
        raise RuntimeError(f"Ray bound to {bound}, not {LOOPBACK}")


def connect_ray(address: str) -> None:
    """Joins an existing cluster (``ray start --head`` on one node, ``ray start --address`` on the others)."""
    import ray

    ray.init(address=address, runtime_env=_runtime_env(), log_to_driver=False, configure_logging=False)


def _runtime_env() -> dict[str, Any]:
    """This package travels to every worker (Ray zips it into its object store): workers need the dependencies
    installed, not this checkout on their path."""
    import sprint_demo

    return {"py_modules": [sprint_demo]}


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def deploy(replicas: int, options: dict[str, Any], gpus: bool | None = None,
           max_ongoing_requests: int = settings.RAY_MAX_ONGOING, session_affinity: bool = True) -> RayEngine:
    """Starts Serve (no HTTP proxy) and ``replicas`` replicas of ``EngineReplica``, each loading its engine with
    ``options`` (``load_engine``'s keyword arguments: ``web.launch.engine_options``); returns the proxy engine once
    every replica has loaded its model. ``gpus``: one GPU per replica (default: when the cluster has GPUs and the
    device is not the CPU). Each replica's engine batches up to its ``max_batch_size`` of the frames it holds
    (``max_ongoing_requests``), so batches fill only when that is at least the batch size. ``session_affinity``:
    route by session (``session_routing.SessionRouter``); False leaves Serve's default router (power of two
    choices for every call), the baseline the affinity figures are measured against."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from .session_routing import SessionRouter

    if gpus is None:
        gpus = cluster_gpus() > 0 and (options.get("device") or "").split(":")[0] != "cpu"
    serve.start(proxy_location="Disabled")  # handles only: no HTTP or gRPC port
    routing = {"request_router_config": RequestRouterConfig(request_router_class=SessionRouter)} if session_affinity \
        else {}
    deployment = serve.deployment(
        EngineReplica,
        name=DEPLOYMENT_NAME,
        num_replicas=replicas,
        ray_actor_options={"num_gpus": 1 if gpus else 0, "num_cpus": REPLICA_CPUS},
        max_ongoing_requests=max_ongoing_requests,
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
        **routing,
    )
    handle = serve.run(deployment.bind(options), name=APP_NAME, route_prefix=None)
    return RayEngine(handle, replicas, max_ongoing_requests)


def shutdown(local: bool) -> None:
    """Removes the app; a private Ray instance (``start_local_ray``) is stopped with it."""
    import ray
    from ray import serve

    if local:
        serve.shutdown()
        ray.shutdown()
    else:  # a shared cluster may serve other apps
        serve.delete(APP_NAME)


# --- The proxy the UI talks to ----------------------------------------------------------------------------
class RayEngine:
    """Stands in for ``engine.Engine`` in ``ui.create_demo`` (both implement ``frames.FrameSource``): the same
    attributes and methods, every frame made by a replica.

    ``concurrency`` is how many frames may be in flight at once (replicas x frames each replica accepts); give it
    to ``create_demo`` so the UI's queue lets that many through. ``retries`` counts frames that were sent again
    because their replica died. Every call that names a session passes it as the ``session`` keyword argument: the
    deployment's router (``session_routing.SessionRouter``) sends it to the replica that holds the session."""

    size: int
    model_name: str
    is_preview: bool
    fallback_reason: str | None
    has_controlnet: bool
    controlnet_description: str | None
    decoders: tuple[str, ...]
    has_tiny_decoder: bool
    tiny_note: str | None
    edges_fallback: str | None
    speed: SpeedOptions
    device: str
    max_batch_size: int
    styles: tuple[str, ...]

    def __init__(self, handle: Any, replicas: int, max_ongoing_requests: int = settings.RAY_MAX_ONGOING) -> None:
        from .session_routing import SessionCalls

        self._handle = handle
        self.replica_count = replicas
        self.concurrency = replicas * max_ongoing_requests
        self.retries = 0
        self._retries_lock = threading.Lock()
        self._waiting = SessionCalls()  # each session's calls waiting for an answer: Stop and finals cancel them
        info = self._call("info")
        self.size = info["size"]
        self.fallback_reason = info["fallback_reason"]
        self.has_controlnet = info["has_controlnet"]
        self.controlnet_description = info["controlnet_description"]
        self.model_name = info["model_name"]
        self.is_preview = info["is_preview"]
        self.device = info["device"]  # as a replica sees it (each replica its own GPU)
        self.speed = SpeedOptions(**info["speed"])
        self.max_batch_size = info["max_batch_size"]  # each replica's
        self.decoders = tuple(info["decoders"])  # the UI's decoder choice
        self.has_tiny_decoder = "tiny" in self.decoders
        self.tiny_note = info["tiny_note"]
        self.edges_fallback = info["edges_fallback"]  # why Canny stands in for HED (each replica alike)
        self.styles = tuple(info["styles"])  # presets and the LoRAs each replica loaded (the same options)

    # The engine's frame methods, forwarded as called: the checks stay the engine's own. A session's frames all go
    # to the replica that holds it, whose engine orders, replaces and stops them as in one process; a frame still
    # waiting in Serve's router (its replica full) is cancelled there by a final of its session or by a Stop.
    def render(self, request: FrameRequest, prep_ms: float = 0.0, session: str | None = None,
               priority: Priority = Priority.FINAL, refusable: bool = True) -> Frame:
        return self._call("render", request, prep_ms=prep_ms, session=session, priority=priority,
                          refusable=refusable)

    def cancel(self, session: str) -> None:
        """Stops ``session``: its calls still waiting are cancelled through Serve, then the replica that holds it
        drops its waiting frame and stops the one in flight (the router sends the cancel there)."""
        self._waiting.cancel(session)
        self._call("cancel", session=session)

    def photo_to_control_map(self, photo: Image.Image, thickness: int = settings.DEFAULT_THICKNESS,
                             size: tuple[int, int] | None = None) -> Image.Image:
        return self._call("photo_to_control_map", photo, thickness, size)

    @property
    def batch_sizes(self) -> Counter[int]:
        """Every replica's batches added up (rows -> batches made with that many)."""
        total: Counter[int] = Counter()
        for sizes in self._from_every_replica("batch_sizes").values():
            total.update(sizes)
        return total

    @property
    def frame_counts(self) -> Counter[str]:
        """Every replica's frame counts added up ("made", "reused", "skipped")."""
        total: Counter[str] = Counter()
        for counts in self._from_every_replica("frame_counts").values():
            total.update(counts)
        return total

    def close(self) -> None:
        """Removes the replicas (``shutdown`` also stops a private Ray instance)."""
        from ray import serve

        serve.delete(APP_NAME)

    def replica_pids(self, timeout_s: float = 60.0) -> dict[str, int]:
        """{replica id: process id} of every live replica."""
        return self._from_every_replica("pid", timeout_s=timeout_s)

    def replica_cache_counts(self) -> dict[str, dict[str, int]]:
        """{replica id: its engine's ``cache_counts``} of every live replica."""
        return self._from_every_replica("cache_counts")

    def replica_sessions_at_work(self) -> dict[str, dict[str | None, int]]:
        """{replica id: {session: its frames in that replica now}} of every live replica."""
        return self._from_every_replica("sessions_at_work")

    def _from_every_replica(self, method: str, *args: Any, timeout_s: float = 60.0) -> dict[str, Any]:
        """{replica id: answer} of ``method(*args)`` (which answers (replica id, value)) from every live replica.
        The router picks replicas itself, so this asks repeatedly until it has heard from ``replica_count``
        distinct replicas (or the time is up)."""
        heard: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        while len(heard) < self.replica_count and time.monotonic() < deadline:
            calls = [getattr(self._handle, method).remote(*args) for _ in range(2 * self.replica_count)]
            for replica, value in [call.result(timeout_s=timeout_s) for call in calls]:
                heard[replica] = value
        return heard

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from concurrent.futures import CancelledError

        from ray.exceptions import RayActorError, RayTaskError, TaskCancelledError

        session, draft = kwargs.get("session"), kwargs.get("priority") == Priority.DRAFT
        for attempt in range(2):
            response = getattr(self._handle, method).remote(*args, **kwargs)
            if method == "render" and session is not None:
                if not draft:  # a final replaces its session's drafts, wherever they wait
                    self._waiting.cancel(session, drafts_only=True)
                self._waiting.add(session, response, draft)
            try:
                return response.result(timeout_s=FRAME_TIMEOUT_S)
            except (CancelledError, TaskCancelledError):  # by a Stop or a final of its session (SessionCalls)
                raise Superseded(f"session {session} stopped this frame, or a final replaced it") from None
            except RayTaskError as error:  # raised by the engine inside the replica
                cause = error.cause
                if isinstance(cause, InputError):
                    raise InputError(str(cause)) from None
                raise cause from None
            except RayActorError as error:  # the replica's process died (killed, out of memory, crashed)
                if attempt == 1:
                    raise ReplicaFault(f"the model replica stopped twice while making this frame: {error}") from None
                log.warning("replica died during %s; sending it to another replica", method)
                with self._retries_lock:
                    self.retries += 1
            finally:
                self._waiting.remove(session, response)
        raise AssertionError("unreachable")


# --- Command line ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``app.py``'s flags (``web.launch.build_parser``: every replica loads its engine with them) plus the
    replicas'."""
    parser = build_parser(prog="python -m sprint_demo.tools.serve_ray",
                          description="SANA-Sprint Live Sketch with N engine replicas on Ray Serve (model flags as "
                                      "in `python app.py --help`; --share is not offered).")
    parser.add_argument("--replicas", type=int, default=None,
                        help="engine replicas (default: one per GPU in the Ray cluster, 1 without GPUs)")
    parser.add_argument("--ray-address", default=None,
                        help="an existing Ray cluster ('auto' or host:port); default: a private Ray instance on "
                             "this machine, bound to 127.0.0.1")
    parser.add_argument("--max-ongoing-requests", type=int, default=None,
                        help=f"frames one replica accepts at once (default: the larger of {settings.RAY_MAX_ONGOING}, "
                             "env SPRINT_RAY_MAX_ONGOING, and --max-batch-size, so that a replica's batches can fill)")
    args = launch_args(argv, parser)
    if args.share:
        parser.error("--share is not offered with Ray Serve replicas")
    if args.replicas is not None and args.replicas < 1:
        parser.error(f"--replicas must be at least 1, got {args.replicas}")
    if args.max_ongoing_requests is None:
        args.max_ongoing_requests = max(settings.RAY_MAX_ONGOING, args.max_batch_size)
    if args.max_ongoing_requests < 1:
        parser.error(f"--max-ongoing-requests must be at least 1, got {args.max_ongoing_requests}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    local = args.ray_address is None
    if local:
        start_local_ray()
    else:
        connect_ray(args.ray_address)
    try:
        replicas = args.replicas or max(1, cluster_gpus())
        log.info("starting %d replica(s) of %s", replicas, args.model)
        engine = deploy(replicas, engine_options(args), max_ongoing_requests=args.max_ongoing_requests)
        if note := messages.banner(engine):
            log.warning("%s", note)
        log.info("model %s, %d replica(s) on %s, frame size %d, speed-ups: %s", engine.model_name, replicas,
                 engine.device, engine.size, engine.speed.describe())

        launch(engine, host=args.host, port=args.port, concurrency_limit=engine.concurrency)
    finally:
        shutdown(local)
    return 0


if __name__ == "__main__":
    sys.exit(main())
