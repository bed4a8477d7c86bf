"""Draw the example sketches and the example photo in assets/ (no third-party images; deterministic).

    python3 assets/make_examples.py            # rewrites assets/*.png, example_photo.jpg, examples.json, ...
    python3 assets/make_examples.py OUT_DIR    # writes them somewhere else (the tests compare the bytes)

Sketches: 1024x1024 greyscale PNG, black strokes on white. Each shape is a dense polyline pushed sideways by a
smooth, seeded wobble (a few low-frequency sines along the stroke), so lines look drawn by hand; strokes are drawn
at 2x and downsampled for antialiasing. The photo is a synthetic landscape (gradients, shapes, a reflection)
painted with numpy, for the upload / HED path.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIDE = 1024  # output side of every sketch (the Sprint models are 1024px-based)
SCALE = 2  # supersampling factor for antialiased strokes
STROKE = 4  # stroke width in output pixels (the canvas brush is about this wide)
Point = tuple[float, float]


class Pen:
    """Draws wobbly, hand-looking strokes on a supersampled canvas; coordinates are in output pixels."""

    def __init__(self, seed: str) -> None:
        self.rng = random.Random(seed)
        self.image = Image.new("L", (SIDE * SCALE, SIDE * SCALE), 255)
        self.draw = ImageDraw.Draw(self.image)

    def stroke(self, points: list[Point], wobble: float = 3.0, closed: bool = False) -> None:
        """Resample the polyline densely, push each point along its normal by a smooth random offset, draw."""
        if closed:
            points = points + [points[0]]
        dense = _resample(points, step=3.0)
        if len(dense) < 2:
            return
        length = sum(math.dist(a, b) for a, b in itertools.pairwise(dense))
        waves = [(self.rng.uniform(0.5, 1.0) * wobble / k, self.rng.uniform(0.6, 1.6) * k, self.rng.uniform(0, 6.3))
                 for k in (1, 2, 3)]
        out: list[Point] = []
        travelled = 0.0
        for i, (x, y) in enumerate(dense):
            if i:
                travelled += math.dist(dense[i - 1], dense[i])
            a, b = dense[max(0, i - 1)], dense[min(len(dense) - 1, i + 1)]
            tx, ty = b[0] - a[0], b[1] - a[1]
            norm = math.hypot(tx, ty) or 1.0
            t = travelled / max(length, 1.0)
            offset = sum(amp * math.sin(2 * math.pi * freq * t * max(1.0, length / 300) + phase)
                         for amp, freq, phase in waves)
            out.append(((x - ty / norm * offset) * SCALE, (y + tx / norm * offset) * SCALE))
        width = STROKE * SCALE
        self.draw.line(out, fill=0, width=width, joint="curve")
        for x, y in (out[0], out[-1]):  # round caps
            self.draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=0)

    def arc(self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, wobble: float = 3.0) -> None:
        """An elliptic arc from `start` to `end` degrees (0 = right, clockwise on screen)."""
        n = max(8, int(abs(end - start) / 4))
        pts = [(cx + rx * math.cos(math.radians(start + (end - start) * i / n)),
                cy + ry * math.sin(math.radians(start + (end - start) * i / n))) for i in range(n + 1)]
        self.stroke(pts, wobble)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, wobble: float = 3.0) -> None:
        # a hand-drawn closed loop overshoots a little past where it started
        start = self.rng.uniform(0, 360)
        self.arc(cx, cy, rx, ry, start, start + 372, wobble)

    def curve(self, points: list[Point], wobble: float = 3.0) -> None:
        """A smooth curve through the points (Catmull-Rom)."""
        self.stroke(_catmull_rom(points), wobble)

    def result(self) -> Image.Image:
        return self.image.resize((SIDE, SIDE), Image.Resampling.LANCZOS)


def _resample(points: list[Point], step: float) -> list[Point]:
    out: list[Point] = [points[0]]
    for a, b in itertools.pairwise(points):
        n = max(1, int(math.dist(a, b) / step))
        out.extend((a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n) for i in range(1, n + 1))
    return out


def _catmull_rom(points: list[Point], samples: int = 12) -> list[Point]:
    padded = [points[0]] + points + [points[-1]]
    out: list[Point] = []
    for p0, p1, p2, p3 in zip(padded, padded[1:], padded[2:], padded[3:]):
        for i in range(samples):
            t = i / samples
            t2, t3 = t * t, t * t * t
            out.append(tuple(0.5 * (2 * p1[k] + (p2[k] - p0[k]) * t + (2 * p0[k] - 5 * p1[k] + 4 * p2[k] - p3[k]) * t2
                                    + (3 * p1[k] - p0[k] - 3 * p2[k] + p3[k]) * t3) for k in (0, 1)))
    out.append(points[-1])
    return out


# --- The sketches -----------------------------------------------------------------------------------------
def house_and_tree(pen: Pen) -> None:
    pen.stroke([(120, 880), (380, 872), (640, 884), (930, 876)], wobble=4)  # ground
    pen.stroke([(180, 860), (180, 560), (520, 560), (520, 860)])  # walls
    pen.stroke([(150, 575), (350, 380), (555, 575)])  # roof
    pen.stroke([(440, 470), (440, 400), (485, 400), (485, 510)])  # chimney
    pen.stroke([(310, 860), (310, 720), (390, 720), (390, 860)])  # door
    pen.ellipse(372, 795, 6, 6, wobble=0.5)  # door knob
    for x0 in (215, 425):  # windows with crosses
        pen.stroke([(x0, 610), (x0 + 65, 610), (x0 + 65, 675), (x0, 675)], closed=True)
        pen.stroke([(x0 + 32, 610), (x0 + 32, 675)], wobble=1)
        pen.stroke([(x0, 642), (x0 + 65, 642)], wobble=1)
    pen.stroke([(730, 872), (742, 700), (738, 610)], wobble=2)  # trunk
    pen.stroke([(800, 872), (790, 700), (800, 610)], wobble=2)
    pen.stroke([(770, 700), (830, 640)], wobble=1)  # a branch
    bumps = [(640, 560), (650, 460), (720, 390), (820, 380), (900, 450), (910, 550), (850, 620), (700, 625),
             (640, 560)]
    pen.curve(bumps, wobble=6)  # canopy
    pen.ellipse(870, 170, 55, 55)  # sun
    for k in range(8):
        a = math.radians(k * 45 + 10)
        pen.stroke([(870 + 80 * math.cos(a), 170 + 80 * math.sin(a)),
                    (870 + 120 * math.cos(a), 170 + 120 * math.sin(a))], wobble=1)


def cat_face(pen: Pen) -> None:
    pen.curve([(250, 420), (230, 560), (290, 740), (512, 830), (734, 740), (794, 560), (774, 420)], wobble=4)
    pen.stroke([(250, 430), (270, 180), (420, 320)])  # left ear
    pen.stroke([(774, 430), (754, 180), (604, 320)])  # right ear
    pen.curve([(420, 320), (512, 300), (604, 320)], wobble=3)  # top of the head
    pen.stroke([(300, 270), (330, 370)], wobble=1)  # inner ears
    pen.stroke([(724, 270), (694, 370)], wobble=1)
    for cx in (400, 624):  # eyes with slit pupils
        pen.ellipse(cx, 520, 62, 48)
        pen.curve([(cx, 480), (cx - 12, 520), (cx, 562)], wobble=1)
        pen.curve([(cx, 480), (cx + 12, 520), (cx, 562)], wobble=1)
    pen.stroke([(482, 620), (542, 620), (512, 655)], closed=True, wobble=1)  # nose
    pen.curve([(512, 655), (505, 690), (470, 705), (440, 690)], wobble=1)  # mouth
    pen.curve([(512, 655), (519, 690), (554, 705), (584, 690)], wobble=1)
    for dy, tilt in ((-10, -40), (15, 0), (40, 40)):  # whiskers
        pen.stroke([(430, 650 + dy), (250, 640 + dy + tilt)], wobble=2)
        pen.stroke([(594, 650 + dy), (774, 640 + dy + tilt)], wobble=2)


def mountain_lake(pen: Pen) -> None:
    ridge = [(60, 600), (210, 380), (300, 470), (450, 220), (590, 430), (680, 330), (830, 520), (964, 600)]
    pen.stroke(ridge, wobble=3)
    pen.stroke([(395, 300), (430, 320), (450, 290), (475, 325), (505, 300)], wobble=1)  # snow line
    pen.stroke([(650, 370), (675, 385), (700, 360), (718, 390)], wobble=1)
    pen.stroke([(40, 610), (984, 610)], wobble=2)  # shore
    for y in (690, 770, 850, 930):  # ripples
        for x in range(90 + (y % 3) * 40, 900, 210):
            pen.curve([(x, y), (x + 30, y - 8), (x + 60, y), (x + 90, y - 8)], wobble=1)
    pen.ellipse(800, 180, 60, 60)  # sun
    for x, y in ((200, 160), (280, 200), (330, 140)):  # birds
        pen.curve([(x - 30, y - 10), (x - 12, y - 16), (x, y)], wobble=0.5)
        pen.curve([(x, y), (x + 12, y - 16), (x + 30, y - 10)], wobble=0.5)


def coffee_cup(pen: Pen) -> None:
    pen.ellipse(480, 460, 210, 50)  # rim
    pen.curve([(270, 462), (285, 640), (350, 780), (480, 810), (610, 780), (675, 640), (690, 462)], wobble=3)
    pen.curve([(680, 530), (800, 520), (820, 610), (760, 690), (650, 700)], wobble=3)  # handle
    pen.curve([(690, 560), (760, 565), (765, 615), (720, 650), (665, 655)], wobble=2)
    pen.arc(490, 800, 330, 80, 0, 180)  # saucer: the front half, and the back where the cup does not hide it
    pen.arc(490, 800, 330, 80, 180, 232, wobble=2)
    pen.arc(490, 800, 330, 80, 308, 360, wobble=2)
    pen.arc(480, 470, 170, 30, 10, 170, wobble=1)  # coffee surface
    for x in (400, 480, 560):  # steam
        pen.curve([(x, 380), (x - 25, 320), (x + 20, 260), (x - 15, 200), (x + 10, 150)], wobble=2)
    pen.stroke([(120, 930), (900, 920)], wobble=3)  # table edge


def rocket(pen: Pen) -> None:
    pen.curve([(430, 700), (420, 480), (450, 300), (512, 150)], wobble=3)  # body, left
    pen.curve([(594, 700), (604, 480), (574, 300), (512, 150)], wobble=3)  # body, right
    pen.stroke([(430, 700), (594, 700)], wobble=2)
    pen.ellipse(512, 390, 45, 45)  # window
    pen.ellipse(512, 390, 28, 28, wobble=1)
    pen.stroke([(430, 560), (330, 700), (340, 760), (432, 690)])  # fins
    pen.stroke([(594, 560), (694, 700), (684, 760), (592, 690)])
    pen.stroke([(512, 600), (512, 700)], wobble=1)
    pen.stroke([(450, 710), (470, 800), (490, 760), (512, 880), (534, 760), (554, 800), (574, 710)], wobble=2)  # flame
    pen.curve([(380, 900), (300, 930), (240, 900)], wobble=4)  # smoke puffs
    pen.curve([(640, 900), (720, 935), (790, 895)], wobble=4)
    for x, y in ((160, 160), (830, 240), (250, 420), (800, 520), (170, 640), (880, 760)):  # stars
        pen.stroke([(x - 18, y), (x + 18, y)], wobble=0.5)
        pen.stroke([(x, y - 18), (x, y + 18)], wobble=0.5)


SKETCHES = [  # (file, drawing function, prompt)
    ("house_and_tree.png", house_and_tree,
     "a cozy cottage with a red roof next to a big oak tree on a sunny day, watercolor illustration"),
    ("cat_face.png", cat_face, "a fluffy ginger cat with big green eyes, studio portrait, detailed fur"),
    ("mountain_lake.png", mountain_lake,
     "snowy mountains reflected in a calm alpine lake at sunrise, landscape photograph"),
    ("coffee_cup.png", coffee_cup, "a steaming cup of coffee on a saucer, wooden table, warm morning light"),
    ("rocket.png", rocket, "a retro rocket launching into a starry night sky, flames and smoke, poster art"),
]
PHOTO = ("example_photo.jpg", "a lakeside cabin below the mountains at golden hour, photograph")


def synthetic_photo(width: int = 1024, height: int = 768) -> Image.Image:
    """A landscape painted with numpy: gradient sky, sun glow, two mountain ranges, a cabin, a lake reflection."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = int(height * 0.62)
    t = (y / horizon)[..., None]
    sky = (1 - t) * np.array([70, 120, 200], np.float32) + t * np.array([250, 190, 140], np.float32)
    glow = np.exp(-((x - 0.72 * width) ** 2 + (y - 0.30 * height) ** 2) / (2 * 60.0 ** 2))[..., None]
    img = sky + glow * np.array([255, 230, 160], np.float32) * 0.9
    ranges = ((0.45, 0.12, 3.0, 0.4, (110, 105, 140)), (0.55, 0.08, 5.0, 1.7, (60, 80, 70)))  # far, near
    for base, amp, freq, phase, colour in ranges:
        ridge = height * (base - amp * np.abs(np.sin(freq * np.pi * x[0] / width + phase))
                          - 0.03 * np.sin(17 * np.pi * x[0] / width))
        mask = (y >= ridge[None, :]) & (y < horizon)
        shade = 1.0 - 0.35 * ((y - ridge[None, :]) / height).clip(0, 1)
        img = np.where(mask[..., None], np.array(colour, np.float32) * shade[..., None], img)
    cabin = (x > 0.18 * width) & (x < 0.32 * width) & (y > horizon - 90) & (y < horizon)
    img[cabin] = (120, 70, 40)
    roof = (y > horizon - 150) & (y <= horizon - 90) & (np.abs(x - 0.25 * width) < (y - (horizon - 150)) * 1.4)
    img[roof] = (150, 40, 35)
    door = (x > 0.235 * width) & (x < 0.265 * width) & (y > horizon - 50) & (y < horizon)
    img[door] = (60, 35, 20)
    above = img[2 * horizon - height: horizon][::-1]  # the lake mirrors what is above the shore
    ripple = 1.0 + 0.04 * np.sin(y[horizon:, :, None] * 0.9)
    img[horizon:] = above * np.array([0.75, 0.82, 0.95], np.float32) * ripple
    img += rng.normal(0.0, 2.0, img.shape).astype(np.float32)  # a little sensor noise
    photo = Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")
    return photo.filter(ImageFilter.GaussianBlur(0.8))


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, draw, _prompt in SKETCHES:
        pen = Pen(seed=name)
        draw(pen)
        pen.result().save(out_dir / name, optimize=True)
    synthetic_photo().save(out_dir / PHOTO[0], quality=85, optimize=True)
    examples = [{"file": name, "prompt": prompt} for name, _draw, prompt in SKETCHES]
    (out_dir / "examples.json").write_text(json.dumps(examples, indent=2, ensure_ascii=False) + "\n")
    photos = [{"file": PHOTO[0], "prompt": PHOTO[1]}]
    (out_dir / "photo_examples.json").write_text(json.dumps(photos, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
