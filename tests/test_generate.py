"""The command-line generator, run as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sprint_demo.tools.generate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_sketch_and_text_to_image_from_the_command_line(tmp_path):
    out = tmp_path / "cat.png"
    done = generate("--prompt", "a cat", "--sketch", "assets/cat_face.png", "--steps", "2", "--seed", "9",
                    "--out", str(out), "--model", "preview")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["model"] == "preview" and Image.open(out).size == (512, 512)
    assert "Preview model" in done.stderr

    t2i = tmp_path / "t2i.png"
    done = generate("--prompt", "a cat", "--width", "384", "--height", "256", "--out", str(t2i), "--model", "preview")
    assert done.returncode == 0, done.stderr
    assert Image.open(t2i).size == (384, 256)
    assert Image.open(t2i).tobytes() != Image.open(out).tobytes()


def test_a_photo_s_frame_keeps_the_photo_s_aspect_ratio(tmp_path):
    """--photo: its edge map and the frame at the photo's own aspect ratio (1024x768 -> 512x384 on the preview)."""
    out = tmp_path / "photo.png"
    done = generate("--prompt", "a harbour", "--photo", "assets/example_photo.jpg", "--out", str(out), "--model",
                    "preview")
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (512, 384) and json.loads(done.stdout.splitlines()[-1])["size"] == [512, 384]


def test_bad_input_gives_a_clear_error_and_exit_code(tmp_path):
    done = generate("--prompt", "a cat", "--steps", "7", "--out", str(tmp_path / "x.png"), "--model", "preview")
    assert done.returncode == 2 and "steps" in done.stderr and "7" in done.stderr
    assert "Traceback" not in done.stderr
    done = generate("--prompt", "a cat", "--sketch", str(tmp_path / "missing.png"), "--out", str(tmp_path / "x.png"),
                    "--model", "preview")
    assert done.returncode == 2 and "missing.png" in done.stderr
