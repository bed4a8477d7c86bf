"""SANA-Sprint Live Sketch: load the model, build the interface, serve it.

    python app.py                      # real weights if they load, else the offline preview model
    python app.py --model preview      # tiny random model: runs on any CPU, offline
    python app.py --help

Importing this module does nothing but define names (tests import it). The flags, the loading and the launch live
in ``sprint_demo.web.launch`` (``build_parser``, ``main``), which the Ray Serve front
(``python -m sprint_demo.tools.serve_ray``) builds on too. On Hugging Face Spaces (``settings.ON_SPACES``) the app
listens on all interfaces; on ZeroGPU the frame functions are wrapped with ``spaces.GPU``.
"""

from __future__ import annotations

import sys

from sprint_demo.web.launch import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
