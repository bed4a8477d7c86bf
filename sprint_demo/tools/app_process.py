"""``python app.py ARGS`` as a process of its own on a free loopback port: how the load test and the tests start
servers whose memory and threads are their own (``python -m sprint_demo.tools.loadtest --serve``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_SCRIPT = REPO_ROOT / "app.py"
START_TIMEOUT_S = 180.0  # imports + preview model build + warm-up on 2 busy cores
# A started process is a local launch as on a developer's machine: these host, queue and Spaces switches are not
# inherited from this environment (pass them in ``env`` to set them).
NOT_INHERITED = ("SPRINT_HOST", "SPRINT_PORT", "SPRINT_QUEUE_SIZE", "SPRINT_SAFETY_CHECKER", "SPACE_ID",
                 "SPACES_ZERO_GPU", "GRADIO_SERVER_NAME", "GRADIO_SHARE")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppProcess:
    """``python app.py ARGS --port <free port>`` in a subprocess, its output in a log file; a context manager that
    stops it.

    ``script`` replaces ``app.py`` (for instance ``["-c", code]`` for a patched launch). ``wait_ready`` polls the
    server until it answers; ``stop`` terminates this process (by its own pid) and waits for it.
    """

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, port: int | None = None,
                 script: str | list[str] = str(APP_SCRIPT), python: str = sys.executable):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        full_env = {**inherited, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = Path(tempfile.mkstemp(prefix="sprint-server-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.command = [python, *([script] if isinstance(script, str) else script), *args]
        if "--port" not in args:
            self.command += ["--port", str(self.port)]
        self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, env=full_env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> AppProcess:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/gradio_api/info", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout_s:.0f} s:\n{self.log()[-3000:]}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
