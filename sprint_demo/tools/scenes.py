"""Synthetic camera scenes for the steadiness figures, the camera bench and the fake-camera tests: a textured picture
(soft gradients, shapes with edges, fine texture), seen through a sensor-like camera (Gaussian noise per pixel and
frame, then the JPEG the page sends), still, panning, or with a step change.

Sensor-like noise: ``NOISE_LEVELS`` grey levels of standard deviation per pixel and frame is a webcam in an indoor
room (a well-lit scene is about 1-2, a dim one 4-8 after the camera's own denoising); the figures also run at
twice that.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .. import settings

NOISE_LEVELS = 3.0
SEND_QUALITY = round(settings.CAMERA_SEND_JPEG_QUALITY * 100)  # the page's JPEG quality, as PIL takes it


def world(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A (height, width, 3) float picture 0-255: gradients, a few discs and bars with hard edges, and texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.stack([90 + 80 * x / width, 70 + 100 * y / height, 160 - 60 * x / width], axis=-1)
    scale = width * height / (640 * 480)  # as many shapes per area at every size
    for _ in range(round(12 * scale)):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(15, 70)
        picture[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(20, 235, 3)
    for _ in range(round(6 * scale)):
        x0, y0 = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        picture[y0:y0 + int(rng.uniform(6, 30)), x0:x0 + int(rng.uniform(40, 200))] = rng.uniform(20, 235, 3)
    texture = rng.normal(0, 12, (height // 4 + 1, width // 4 + 1))
    picture += np.kron(texture, np.ones((4, 4)))[:height, :width, None]
    return np.clip(picture, 0, 255)


def through_camera(picture: np.ndarray, rng: np.random.Generator, noise: float = NOISE_LEVELS,
                   quality: int = SEND_QUALITY) -> Image.Image:
    """``picture`` as one camera frame: sensor noise of ``noise`` levels (0: none), then the page's JPEG."""
    noisy = picture + rng.normal(0, noise, picture.shape) if noise else picture
    image = Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def view(scene: np.ndarray, width: int, height: int, dx: float) -> np.ndarray:
    """The ``width`` x ``height`` window of ``scene`` ``dx`` pixels from its left (a pan; sub-pixel: blended)."""
    left = int(np.floor(dx))
    part = dx - left
    window = scene[:height, left:left + width + 1]
    return (1 - part) * window[:, :width] + part * window[:, 1:width + 1]


class Camera:
    """A simulated camera of ``width`` x ``height`` on one scene: ``frame(index)`` is its ``index``-th picture.
    ``pan``: pixels the view moves per frame (0: a still scene); ``step_at``: from that frame on, a second scene
    (a step change of the input). Noise is drawn from ``seed``: the same camera gives the same frames."""

    def __init__(self, width: int, height: int, pan: float = 0.0, noise: float = NOISE_LEVELS, seed: int = 0,
                 step_at: int | None = None, frames: int = 1000):
        self.width, self.height, self.pan, self.noise, self.step_at = width, height, pan, noise, step_at
        self.scene = world(width + int(np.ceil(pan * frames)) + 2, height, seed)
        self.other = world(width, height, seed + 1) if step_at is not None else None
        self.rng = np.random.default_rng(seed + 100)

    def clean(self, index: int) -> np.ndarray:
        """The ``index``-th picture before the sensor."""
        if self.step_at is not None and index >= self.step_at:
            return self.other
        return view(self.scene, self.width, self.height, self.pan * index)

    def frame(self, index: int) -> Image.Image:
        return through_camera(self.clean(index), self.rng, self.noise)
