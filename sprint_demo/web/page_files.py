"""The page's JavaScript and CSS: plain files next to this module, read once at import.

A component's ``js_on_load`` is put together from several files, one per concern (``component_script``); no
bundler. Gradio runs it as the body of ``Function(element, trigger, props, server, upload, watch)``, so the files
share one scope: each only defines functions (state lives inside them, in closures) and the component's own file,
last, calls them. The files:

* ``props.js``: reading the numbers Python passes in as props (from ``sprint_demo.settings``), failing loudly when
  one is missing.
* ``frame_client.js``: the frame client the canvas and the camera share: the session id and the request loop (in
  flight limit, sequence numbers, back-off after busy and dropped answers).
* ``canvas_frames.js``: the canvas's drafts and final frames, into its ``LiveImage``.
* ``canvas.js``, ``camera.js``, ``live.js``: the components (``SketchCanvas``, ``CameraStream``, ``LiveImage``).

Gradio scopes a component's CSS to its root and fills it in as a JavaScript template string, so a CSS file may
hold no backtick and no dollar-brace; ``canvas_tab.css`` is the page CSS of a canvas tab, filled in per tab by
``ui.canvas_tab_css``.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def page_file(name: str) -> str:
    """The text of ``name``, a file next to this module."""
    return (_HERE / name).read_text(encoding="utf-8")


def component_script(*names: str) -> str:
    """A component's ``js_on_load``: the files ``names``, in order, the component's own file last."""
    return "\n".join(f"// ---- {name} ----\n{page_file(name)}" for name in names)
