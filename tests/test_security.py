"""What the served app exposes: where it listens, share links, upload limits, file routes, the safety hook.

All checks run against ``python app.py --model preview`` started as a user would (no ``--host``, no ``--share``),
shared with the load test (``support.suite_server``). Requests go to 127.0.0.1 only.

The file-route list comes from reading gradio 6.31's ``gradio/routes.py``: every GET route that takes a path or
a name from the URL (``/gradio_api/file=``, ``/gradio_api/file/``, ``/static/``, ``/assets/``, ``/svelte/``,
``/gradio_api/proxy=``, ``/gradio_api/custom_component/...``, ``/gradio_api/stream/.../playlist-file``,
``/gradio_api/run-history/.../assets/...``, ``/monitoring/``, ``/pwa_icon/``) plus the legacy unprefixed
``/file=`` and the upload route's file name. Each is asked for ``/etc/passwd``, ``/proc/self/environ`` and the
app's own source through absolute, relative, URL-encoded, double-encoded, backslash and NUL-suffixed paths.
A route passes when it does not answer 200 with the file's content.
"""

from __future__ import annotations

import http.client
import os
import socket
import urllib.parse
from pathlib import Path

import httpx
import psutil
import pytest
import support
from gradio_client import Client
from gradio_client.exceptions import AppError

from sprint_demo import settings
from sprint_demo.sketches import png_data_url
from sprint_demo.tools import loadtest

pytestmark = pytest.mark.slow
REPO = support.REPO


@pytest.fixture(scope="module")
def server():
    return support.suite_server()


# --- Where it listens --------------------------------------------------------------------------------------
def test_defaults_are_loopback_and_no_share():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sprint_app", REPO / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)  # defines functions only (app.py runs nothing on import)
    args = app.parse_args([])
    assert args.share is False
    if "SPRINT_HOST" in os.environ or settings.ON_SPACES:  # an operator's choice, not a default
        pytest.skip("SPRINT_HOST or SPACE_ID is set: the host default is overridden on purpose")
    assert args.host == settings.HOST == "127.0.0.1"


def test_launch_without_host_listens_on_loopback_only(server):
    listening = [c for c in psutil.Process(server.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening, "the server listens on nothing"
    assert {c.laddr.ip for c in listening} <= {"127.0.0.1"}, listening
    # The same port on this machine's other addresses must refuse the connection.
    others = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family == socket.AF_INET and not a.address.startswith("127.")}
    for address in others:
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex((address, server.port)) != 0, f"port {server.port} answers on {address}"


def test_no_share_link(server):
    log = server.log().lower()
    assert "gradio.live" not in log and "public url" not in log, log[-2000:]
    # A share link is a tunnel: an outbound connection to a non-loopback address. There is none.
    outbound = [c for c in psutil.Process(server.pid).net_connections(kind="inet")
                if c.raddr and not c.raddr.ip.startswith("127.")]
    assert not outbound, outbound


# --- Upload limits -----------------------------------------------------------------------------------------
def test_upload_size_limit_is_set_and_enforced(server):
    small = httpx.post(server.url + "/gradio_api/upload", files={"files": ("small.png", b"x" * 1000)}, timeout=30)
    assert small.status_code == 200, small.text
    big = b"\0" * (settings.MAX_UPLOAD_BYTES + 1024 * 1024)
    refused = httpx.post(server.url + "/gradio_api/upload", files={"files": ("big.png", big)}, timeout=60)
    assert refused.status_code == 413, (refused.status_code, refused.text[:300])
    assert "size" in refused.text.lower(), refused.text[:300]


def test_oversized_sketch_through_the_api_is_refused_clearly(server):
    # A data URL is a string, not an upload: the app's own byte limit (inputs.decode_image) refuses it.
    payload = "data:image/png;base64," + "A" * (settings.MAX_UPLOAD_BYTES * 4 // 3 + 4096)
    client = Client(server.url, verbose=False, analytics_enabled=False)
    try:
        with pytest.raises(AppError) as refused:
            client.predict(sketch=payload, prompt="a house", seed=1, api_name=loadtest.SKETCH_ENDPOINT)
        message = str(refused.value)
        assert str(settings.MAX_UPLOAD_BYTES) in message or "larger than" in message, message
        # and the server still serves
        pixels = loadtest.read_pixels(client.predict(prompt="a house", seed=1, width=256, height=256,
                                                     api_name=loadtest.TEXT_ENDPOINT))
        assert pixels.shape == (256, 256, 3)
    finally:
        client.close()


def test_upload_file_name_cannot_escape_the_upload_folder(server, tmp_path):
    name = "../../../../../../../../tmp/sprint-escape-test.txt"
    answer = httpx.post(server.url + "/gradio_api/upload", files={"files": (name, b"escape attempt")}, timeout=30)
    assert not Path("/tmp/sprint-escape-test.txt").exists()
    if answer.status_code == 200:
        (stored,) = answer.json()
        assert ".." not in Path(stored).parts and Path(stored).name == "sprint-escape-test.txt", stored
        assert Path(stored).resolve() != Path("/tmp/sprint-escape-test.txt")


# --- File routes -------------------------------------------------------------------------------------------
def _targets(server) -> dict[str, tuple[str, bytes]]:
    """name -> (absolute path, bytes whose presence in a body proves a leak)."""
    targets = {
        "passwd": ("/etc/passwd", Path("/etc/passwd").read_bytes().splitlines()[0]),
        "environ": ("/proc/self/environ", support.CANARY.encode()),
        "app source": (str(REPO / "app.py"), (REPO / "app.py").read_bytes()[:80]),
        "settings source": (str(REPO / "sprint_demo" / "settings.py"),
                            (REPO / "sprint_demo" / "settings.py").read_bytes()[:80]),
    }
    return targets


def _variants(path: str) -> list[str]:
    """Ways to spell ``path`` (absolute) in a URL: plain, relative, encoded, double-encoded, odd separators."""
    rel = path.lstrip("/")
    up = "../" * 12
    variants = [
        path, "/" + path, up + rel, "..%2f" * 12 + rel.replace("/", "%2f"),
        urllib.parse.quote(path, safe=""), urllib.parse.quote(up + rel, safe=""),
        "%2e%2e%2f" * 12 + rel, "%252e%252e%252f" * 12 + rel.replace("/", "%252f"),
        urllib.parse.quote(urllib.parse.quote(path, safe=""), safe=""),
        "..\\" * 12 + rel.replace("/", "\\"), "....//" * 12 + rel, path + "%00.png",
        "file://" + path, "/.//" + rel, ".%2e/" * 12 + rel,
    ]
    if path.startswith(str(REPO)):  # the server's working directory is the repo: relative names matter
        variants += [str(Path(path).relative_to(REPO)), "./" + str(Path(path).relative_to(REPO))]
    return variants


def _routes(server) -> list[str]:
    """URL templates with ``{}`` where the path goes."""
    return [
        "/gradio_api/file={}", "/gradio_api/file/{}", "/file={}", "/file/{}", "/static/{}", "/assets/{}",
        "/svelte/{}", "/gradio_api/proxy={}", "/gradio_api/custom_component/x/client/{}",
        "/gradio_api/stream/s/r/0/{}", "/gradio_api/run-history/records/e/r/assets/{}", "/monitoring/{}",
        "/pwa_icon/{}", "/{}",
    ]


def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET exactly ``target`` (no client-side normalisation of dots or escapes)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read(1 << 20)
    finally:
        connection.close()


def test_no_file_route_serves_anything_outside_the_app(server):
    leaks, statuses = [], {}
    for name, (path, marker) in _targets(server).items():
        for route in _routes(server):
            for variant in _variants(path):
                target = route.replace("{}", variant)
                status, body = _raw_get(server.port, target)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200 and marker in body:
                    leaks.append(f"{name}: GET {target} -> {status}, {len(body)} bytes")
    print(f"file-route sweep: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert not leaks, "\n".join(leaks)
    assert sum(statuses.values()) > 500, statuses  # the sweep really ran


def test_uploaded_file_is_served_but_only_from_the_upload_folder(server):
    answer = httpx.post(server.url + "/gradio_api/upload", files={"files": ("note.txt", b"hello upload")}, timeout=30)
    assert answer.status_code == 200, answer.text
    (stored,) = answer.json()
    status, body = _raw_get(server.port, "/gradio_api/file=" + urllib.parse.quote(stored))
    assert status == 200 and body == b"hello upload"
    # one level up from the upload is the cache root: not a file route's business
    status, body = _raw_get(server.port, "/gradio_api/file=" + urllib.parse.quote(stored + "/../../../../etc/passwd"))
    assert not (status == 200 and b"root:" in body)


# --- Prompt safety hook ------------------------------------------------------------------------------------
def test_safety_hook_refuses_the_blocked_word_and_accepts_others(server):
    client = Client(server.url, verbose=False, analytics_enabled=False)
    try:
        sketch = png_data_url(loadtest.session_sketch(0))
        for api_name, extra in ((loadtest.TEXT_ENDPOINT, {"width": 256, "height": 256}),
                                (loadtest.SKETCH_ENDPOINT, {"sketch": sketch})):
            with pytest.raises(AppError) as refused:
                client.predict(prompt=f"a {support.BLOCKED_TEST_WORD.upper()} in a field", seed=3,
                               api_name=api_name, **extra)
            message = str(refused.value)
            assert "safety" in message.lower() and support.BLOCKED_TEST_WORD in message, message
            assert "Traceback" not in message
            pixels = loadtest.read_pixels(client.predict(prompt="a horse in a field", seed=3, api_name=api_name,
                                                         **extra))
            assert pixels.ndim == 3
    finally:
        client.close()


def test_sketch_string_is_never_read_as_a_file_path(server):
    # The sketch parameter is a free string: it must be taken as a data URL only, never opened as a path or URL.
    client = Client(server.url, verbose=False, analytics_enabled=False)
    try:
        for sketch in ("/etc/passwd", "file:///etc/passwd", "../../../../etc/passwd", str(REPO / "app.py"),
                       "http://127.0.0.1:1/x.png"):
            with pytest.raises(AppError) as refused:
                client.predict(sketch=sketch, prompt="a house", seed=5, api_name=loadtest.SKETCH_ENDPOINT)
            message = str(refused.value)
            assert "data:image" in message and "root:" not in message, message
    finally:
        client.close()
