"""Servers for the tests: the app in this process on the preview engine, and ``python app.py`` processes shared
between test files. Both start the app through ``sprint_demo.web.launch``, as ``app.py`` does.

The suite's shared server runs with a stand-in safety checker (``refuse_blocked_test_word``: the server finds this
module as ``support`` through ``PYTHONPATH``) and a canary value in its environment, so the tests can check the
safety hook end to end and that no route leaks ``/proc/self/environ``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from sprint_demo import settings
from sprint_demo.tools.app_process import REPO_ROOT, AppProcess, free_port
from sprint_demo.web.launch import launch

REPO = REPO_ROOT
TEST_ENV = {"HF_HUB_OFFLINE": "1"}  # test servers never reach the hub
BLOCKED_TEST_WORD = "zyzzogeton"  # the stand-in safety checker below refuses prompts holding this word
CANARY_ENV = "SPRINT_TEST_CANARY"  # a secret-like value put in the suite server's environment
CANARY = f"canary-{os.getpid()}-{time.time_ns()}"
# A frame made in a batch with other users' frames may differ from the same request made alone: on the CPU a
# batch runs other matrix and convolution kernels (blocked over more rows), whose float32 sums differ in the last
# bits (measured: 1e-6 after denoising, 1e-5 after decoding, on a 0..1 pixel scale). A uint8 level is 1/255 =
# 0.004, so such a difference moves a pixel only where its value lies that close to a rounding boundary, and then
# by one level. Other sessions' images differ from each other by 20 levels or more on average.
BATCHED_ROW_TOLERANCE_LEVELS = 1


def refuse_blocked_test_word(prompt: str) -> str | None:
    """Stand-in safety checker: refuses prompts that contain ``BLOCKED_TEST_WORD`` and accepts everything else, so
    the tests can check the hook end to end without a real classifier."""
    return f"contains the blocked test word {BLOCKED_TEST_WORD!r}" if BLOCKED_TEST_WORD in prompt.lower() else None


# --- The app in this process ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def preview_engine() -> Any:
    """One preview engine per test process (thread-safe), shared by the API and browser test modules."""
    from sprint_demo.engine import load_engine

    return load_engine(settings.PREVIEW_MODEL)


@contextlib.contextmanager
def live_app(engine: Any = None) -> Iterator[tuple[str, Any, Any]]:
    """``launch(engine)`` in this process on a free loopback port; yields (url, engine, demo)."""
    engine = preview_engine() if engine is None else engine
    port = free_port()
    demo = launch(engine, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}", engine, demo
    finally:
        demo.close()


# --- python app.py in a process of its own ---------------------------------------------------------------------
def start_app(args: list[str], env: dict[str, str] | None = None, **kwargs: Any) -> AppProcess:
    """``AppProcess`` with the tests' environment (offline) plus ``env``."""
    return AppProcess(args, env={**TEST_ENV, **(env or {})}, **kwargs)


_shared_servers: dict[tuple, AppProcess] = {}
_shared_lock = threading.Lock()


def shared_server(args: list[str], env: dict[str, str] | None = None, wait: bool = True) -> AppProcess:
    """One server per distinct (args, env) for the whole test process, stopped at exit; ready unless ``wait=False``.

    Several test files share one ``python app.py`` start (20-40 s of imports and model building on 2 busy cores)
    instead of paying for one each; ``wait=False`` starts it early, in the background.
    """
    key = (tuple(args), tuple(sorted((env or {}).items())))
    with _shared_lock:
        server = _shared_servers.get(key)
        if server is None or server.process.poll() is not None:
            server = start_app(args, env)
            _shared_servers[key] = server
            atexit.register(server.stop)
    return server.wait_ready() if wait else server


def suite_server(wait: bool = True) -> AppProcess:
    """The preview-model server the test files share: started as a user would (no --host, no --share), with the
    stand-in safety checker on and the canary in its environment."""
    python_path = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    return shared_server(["--model", settings.PREVIEW_MODEL], wait=wait, env={
        "SPRINT_SAFETY_CHECKER": "support:refuse_blocked_test_word",
        "PYTHONPATH": python_path,
        CANARY_ENV: CANARY,
    })
