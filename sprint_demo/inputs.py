"""Server-side parsing and validation of everything a user or an API caller can send: the boundary.

One function per surface turns its raw values (from the UI, the API or the command line) into one clean
``FrameRequest``: ``sketch_request`` (a sketch, or a ready control map such as a photo's edges), ``image_request``
(a painting or a photo redrawn by image-to-image), ``camera_request`` (a camera frame, either way) and
``text_request``; the engine and everything under it take that request as it is and check nothing again.
The sliders of the UI are a convenience: the server checks every value because the API can be called without
the UI. Every check either returns a clean value or raises ``InputError`` (a ``ValueError``) whose message names
the field, the allowed range and the bad value (cut to ``settings.SHOWN_VALUE_CHARS`` characters).

Decisions, written once here:

* Numbers (``check_*``): ints, integral floats (``2.0``) and numeric strings (``"2"``, ``" 4.5 "``) are
  accepted; bools, NaN, +-inf, non-numbers and values out of range are refused. Sizes that are not a multiple
  of ``settings.SIZE_MULTIPLE`` are **refused**, not snapped: the UI sliders step by the multiple and can never
  send such a value, so one that arrives comes from the API, where a clear error beats a silently different
  image. The message names the two nearest valid sizes.
* Images (``decode_image``): PNG, JPEG or WebP only, recognised by their content (the mime type of a data URL
  and the file name are not trusted). The byte limit is checked before decoding and the pixel limit before
  the pixels are allocated, so a small file that claims 10000x10000 pixels is refused after reading its
  header. Transparent pixels are composited on white (a transparent canvas is white paper); every mode comes
  back as RGB; JPEG EXIF orientation is applied; animated files give their first frame. Extreme aspect ratios
  (4096x64, 1x1) are accepted unchanged: a sketch is fitted into the square frame (letterbox, so nothing drawn is
  cut off), a picture or photo gets a frame of its own aspect ratio (``fit_size``, cropped beyond its limits).
* Blank canvas (``is_blank``): near-white everywhere, up to ``settings.BLANK_MAX_INK_PIXELS`` specks darker
  than ``settings.BLANK_INK_LEVEL``. ``None`` counts as blank.
* Prompts (``clean_prompt``): NFC-normalised; NUL and other control characters removed; newlines, tabs and
  other whitespace become single spaces; emoji, joiners and right-to-left text are kept. An empty prompt is
  allowed and the request says what the image then follows (``EMPTY_PROMPT_NOTICES``: the sketch, the image, or
  the seed alone). Prompts longer
  than ``settings.MAX_PROMPT_CHARS`` are cut, with a notice.
* Safety hook (``check_safety``): off unless ``settings.SAFETY_CHECKER`` (env ``SPRINT_SAFETY_CHECKER``) names
  ``"module:function"``. The function takes the cleaned prompt and returns ``None`` when it is acceptable or a
  reason string; a reason becomes ``InputError("prompt refused by the safety checker: <reason>")``. The
  function is imported once per process and cached. A checker that cannot be imported or that crashes raises
  ``RuntimeError`` (a server fault, not the user's): the prompt is not let through unchecked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import io
import logging
import math
import numbers
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image, ImageOps

from . import settings
from .conditioning import sketch_to_control_map, to_rgb
from .frames import DECODERS, DEFAULT_DECODER, FrameRequest
from .steady import thumbnail

logger = logging.getLogger(__name__)

# Decompression bombs. Image.open() checks the header against PIL's process-wide Image.MAX_IMAGE_PIXELS (89 M
# pixels by default) and, between 1x and 2x that, only *warns* (DecompressionBombWarning) and decodes anyway; a
# warnings filter to turn that into an error is process-global state that any `catch_warnings` block (pytest
# wraps every import and test in one) silently undoes. So _open_image does not use Image.open: it calls the
# format's registered factory itself, which parses only the header, checks the size against our stricter
# settings.MAX_UPLOAD_PIXELS, and only then decodes pixels. PIL's warning can never fire on this path.
Image.init()  # registers the PNG / JPEG / WebP openers in Image.OPEN


class InputError(ValueError):
    """A value sent by a user or an API caller is not acceptable; the message says which and why."""


def _show(value: object) -> str:
    """repr() of a bad value, cut to settings.SHOWN_VALUE_CHARS characters for error messages."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = f"<{len(value)} bytes: {bytes(value[:24])!r}>"
    else:
        try:
            text = repr(value)
        except Exception:  # noqa: BLE001 - a hostile __repr__ must not turn a clean refusal into a crash
            text = f"<{type(value).__name__}>"
    limit = settings.SHOWN_VALUE_CHARS
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- Images -----------------------------------------------------------------------------------------------
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)
_IMAGE_MIMES = {"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/webp"}


def _sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes (magic numbers), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe_non_image(data: bytes) -> str:
    """A short guess at what a non-image upload is, for the error message."""
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in head or (head.startswith(b"<?xml") and b"svg" in data[:4096].lower()):
        return "SVG text"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<script")) or b"<html" in head:
        return "HTML text"
    if head.startswith(b"<"):
        return "XML/HTML-like text"
    if head.startswith(b"gif8"):
        return "a GIF image"
    return "unrecognised data"


def _decode_data_url(text: str, what: str) -> bytes:
    """data:image/...;base64,... -> raw bytes (size-checked before decoding)."""
    match = _DATA_URL.match(text)
    if match is None:
        raise InputError(f"{what} must be a data:image/...;base64 URL, raw bytes or a PIL image, got {_show(text)}")
    mime = (match["mime"] or "").lower()
    if mime not in _IMAGE_MIMES:
        raise InputError(f"{what} data URL must be image/png, image/jpeg or image/webp, got {_show(mime or text)}")
    if not match["b64"]:
        raise InputError(f"{what} data URL must be base64-encoded (';base64,'), got {_show(text)}")
    payload = "".join(text[match.end():].split())  # base64 may be wrapped over lines
    if len(payload) // 4 * 3 > settings.MAX_UPLOAD_BYTES:
        raise InputError(f"{what} is larger than {settings.MAX_UPLOAD_BYTES} bytes "
                         f"(about {len(payload) // 4 * 3} bytes of base64 data)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError(f"{what} data URL holds invalid base64 ({error}): {_show(payload)}") from None


def _open_image(data: bytes, what: str) -> Image.Image:
    """Raw bytes -> a fully loaded PIL image, refusing oversize, non-image, bomb and truncated input."""
    if len(data) > settings.MAX_UPLOAD_BYTES:
        raise InputError(f"{what} is {len(data)} bytes; the limit is {settings.MAX_UPLOAD_BYTES} bytes")
    if not data:
        raise InputError(f"{what} is empty (0 bytes)")
    kind = _sniff_format(data)
    if kind is None or kind not in settings.UPLOAD_IMAGE_FORMATS:
        found = _describe_non_image(data) if kind is None else f"a {kind} image"
        allowed = ", ".join(settings.UPLOAD_IMAGE_FORMATS)
        raise InputError(f"{what} is not a {allowed} image (looks like {found}): {_show(data)}")
    try:
        factory, _accept = Image.OPEN[kind]  # what Image.open calls after sniffing, minus PIL's bomb check
        image = factory(io.BytesIO(data), None)  # parses the header only
        _check_pixels(image.size, what)
        image.load()  # animated PNG / WebP: the first frame
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"{what} is too large to decode ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        # truncated files ("image file is truncated"), corrupt chunks, bad headers
        raise InputError(f"{what} could not be decoded as {kind}: {_show(str(error))}") from None
    return image


def _check_pixels(size: tuple[int, int], what: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InputError(f"{what} has no pixels ({width}x{height})")
    if width * height > settings.MAX_UPLOAD_PIXELS:
        raise InputError(f"{what} is {width}x{height} = {width * height} pixels; "
                         f"the limit is {settings.MAX_UPLOAD_PIXELS} pixels")


def decode_image(data: str | bytes | Image.Image | None, *, what: str = "sketch") -> Image.Image | None:
    """A data URL, raw bytes or PIL image -> an RGB PIL image (None stays None); see the module docstring."""
    if data is None:
        return None
    if isinstance(data, Image.Image):
        _check_pixels(data.size, what)
        try:
            data.load()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise InputError(f"{what} could not be decoded: {_show(str(error))}") from None
        image = data
    elif isinstance(data, str):
        image = _open_image(_decode_data_url(data.strip(), what), what)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        image = _open_image(bytes(data), what)
    else:
        raise InputError(f"{what} must be a data:image/...;base64 URL, raw bytes or a PIL image, "
                         f"got {type(data).__name__} {_show(data)}")
    try:
        image = ImageOps.exif_transpose(image)  # phone photos store rotation in EXIF; no-op without it
    except Exception as error:  # noqa: BLE001 - a corrupt EXIF block is not worth refusing the image for
        logger.info("%s: EXIF orientation ignored (%s)", what, error)
    return to_rgb(image)


def is_blank(image: Image.Image | None) -> bool:
    """True when the canvas holds no strokes: near-white everywhere, specks and JPEG noise tolerated."""
    if image is None:
        return True
    grey = np.asarray(to_rgb(image).convert("L"))
    ink = int(np.count_nonzero(grey < settings.BLANK_INK_LEVEL))
    return ink <= settings.BLANK_MAX_INK_PIXELS


# --- Prompts ----------------------------------------------------------------------------------------------
def clean_prompt(prompt: object) -> tuple[str, tuple[str, ...]]:
    """A raw prompt -> (prompt to encode, notices for the user); see the module docstring for the rules."""
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__} {_show(prompt)}")
    notices: list[str] = []
    raw_chars = len(prompt)
    # Bound the work on absurd inputs before normalising; what is dropped here would be cut below anyway
    # (control characters removed in between are the only difference, and they are rare).
    text = prompt[: 4 * settings.MAX_PROMPT_CHARS + 64]
    text = unicodedata.normalize("NFC", text)
    kept: list[str] = []
    dropped = 0
    for char in text:
        category = unicodedata.category(char)
        if char.isspace():
            kept.append(" ")  # newline, tab, no-break space, line separator ... -> one plain space
        elif category == "Cc" or category == "Cs":  # NUL, escapes, DEL, C1 controls; lone surrogates
            dropped += 1
        else:  # letters, emoji, format characters (ZWJ in emoji, RTL marks) are kept
            kept.append(char)
    text = " ".join("".join(kept).split())
    if dropped:
        notices.append(f"removed {dropped} control character{'s' if dropped != 1 else ''} from the prompt")
    if len(text) > settings.MAX_PROMPT_CHARS:
        text = unicodedata.normalize("NFC", text[: settings.MAX_PROMPT_CHARS].rstrip())
        notices.append(f"prompt cut to {settings.MAX_PROMPT_CHARS} characters (it had {raw_chars})")
    return text, tuple(notices)


_checker_lock = threading.Lock()
_checkers: dict[str, Callable[[str], object]] = {}


def _load_checker(spec: str) -> Callable[[str], object]:
    with _checker_lock:
        if spec not in _checkers:
            module_name, sep, function_name = spec.partition(":")
            if not sep or not module_name or not function_name:
                raise RuntimeError(f"SPRINT_SAFETY_CHECKER must look like 'module:function', got {spec!r}")
            try:
                function = getattr(importlib.import_module(module_name), function_name)
            except (ImportError, AttributeError) as error:
                raise RuntimeError(f"cannot load the safety checker {spec!r}: {error}") from error
            if not callable(function):
                raise RuntimeError(f"the safety checker {spec!r} is not callable")
            _checkers[spec] = function
        return _checkers[spec]


def check_safety(prompt: str) -> None:
    """Run the optional prompt safety hook (settings.SAFETY_CHECKER); raise InputError when it refuses."""
    spec = settings.SAFETY_CHECKER
    if not spec:
        return
    checker = _load_checker(spec)
    try:
        reason = checker(prompt)
    except Exception as error:
        raise RuntimeError(f"the safety checker {spec!r} failed: {error}") from error
    if reason is not None:
        raise InputError(f"prompt refused by the safety checker: {str(reason)[:200]}")


# --- Numbers ----------------------------------------------------------------------------------------------
def _number(value: object, name: str, expected: str) -> float | int:
    """int / float / numeric string -> int or finite float; anything else -> InputError naming `expected`."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 40:
            raise InputError(f"{name} must be {expected}, got {_show(value)}")
        try:
            number: float | int = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise InputError(f"{name} must be {expected}, got {_show(value)}") from None
    elif isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be {expected}, got {_show(value)}")
    elif isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real):
        number = float(value)
    else:
        raise InputError(f"{name} must be {expected}, got {type(value).__name__} {_show(value)}")
    if isinstance(number, float) and not math.isfinite(number):
        raise InputError(f"{name} must be {expected}, got {_show(value)}")
    return number


def _integer(value: object, name: str, low: int, high: int, expected: str | None = None) -> int:
    expected = expected or f"an integer from {low} to {high}"
    number = _number(value, name, expected)
    if isinstance(number, float):
        if not number.is_integer():
            raise InputError(f"{name} must be {expected}, got {_show(value)}")
        number = int(number)
    if not low <= number <= high:
        raise InputError(f"{name} must be {expected}, got {_show(value)}")
    return number


def _real(value: object, name: str, low: float, high: float) -> float:
    expected = f"a number from {low} to {high}"
    number = float(_number(value, name, expected))
    if not low <= number <= high:
        raise InputError(f"{name} must be {expected}, got {_show(value)}")
    return number


def check_steps(value: object) -> int:
    """Sampling steps: an integer from settings.MIN_STEPS to settings.MAX_STEPS."""
    return _integer(value, "steps", settings.MIN_STEPS, settings.MAX_STEPS)


def check_seed(value: object) -> int:
    """Random seed: an integer from 0 to settings.MAX_SEED (negative seeds are refused)."""
    return _integer(value, "seed", 0, settings.MAX_SEED)


def check_guidance(value: object) -> float:
    """Guidance scale: a number from settings.MIN_GUIDANCE to settings.MAX_GUIDANCE."""
    return _real(value, "guidance", settings.MIN_GUIDANCE, settings.MAX_GUIDANCE)


def check_control_strength(value: object) -> float:
    """ControlNet conditioning scale: settings.MIN_CONTROL_STRENGTH to settings.MAX_CONTROL_STRENGTH."""
    return _real(value, "control strength", settings.MIN_CONTROL_STRENGTH, settings.MAX_CONTROL_STRENGTH)


def check_thickness(value: object) -> int:
    """Control-line thickness: an integer from settings.MIN_THICKNESS to settings.MAX_THICKNESS."""
    return _integer(value, "thickness", settings.MIN_THICKNESS, settings.MAX_THICKNESS)


def _side(value: object, name: str) -> int:
    low, high, step = settings.MIN_SIZE, settings.MAX_SIZE, settings.SIZE_MULTIPLE
    expected = f"a multiple of {step} from {low} to {high}"
    number = _integer(value, name, low, high, expected)
    if number % step:
        below = number // step * step  # low and high are multiples of step, so both neighbours are valid
        raise InputError(f"{name} must be {expected}, got {_show(value)} (nearest: {below} or {below + step})")
    return number


def check_size(width: object, height: object) -> tuple[int, int]:
    """Frame size: each side a multiple of settings.SIZE_MULTIPLE from settings.MIN_SIZE to MAX_SIZE (refused,
    not snapped, otherwise)."""
    return _side(width, "width"), _side(height, "height")


def check_strength(value: object) -> float:
    """Image-to-image strength: a number in (0, 1] (0 would keep the picture as it is: nothing to make)."""
    expected = "a number in (0, 1]"
    number = float(_number(value, "strength", expected))
    if not 0 < number <= 1:
        raise InputError(f"strength must be {expected}, got {_show(value)}")
    return number


def fit_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The frame size for a picture of ``width`` x ``height``: its long side becomes ``long_side`` (the engine's
    frame side), its short side keeps the aspect ratio, rounded to a multiple of ``settings.SIZE_MULTIPLE`` and at
    least ``settings.MIN_SIZE`` (a picture more elongated than that is cropped to it: ``fit_picture``)."""
    snap, ratio = settings.SIZE_MULTIPLE, min(width, height) / max(width, height)
    short = min(long_side, max(settings.MIN_SIZE, round(long_side * ratio / snap) * snap))
    return (long_side, short) if width >= height else (short, long_side)


def fit_picture(image: Image.Image, long_side: int) -> Image.Image:
    """``image`` at ``fit_size``: cropped about its centre to that aspect ratio (a few pixels at most, unless it is
    more elongated than the sizes allow), then resized."""
    width, height = fit_size(image.width, image.height, long_side)
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def check_decoder(value: object) -> str:
    """Which autoencoder decodes the frame: one of ``frames.DECODERS``."""
    if value not in DECODERS:
        raise InputError(f"decoder must be one of {', '.join(DECODERS)}, got {_show(value)}")
    return value


def check_style(value: object) -> str:
    """A style's name: a preset (``settings.STYLE_PRESETS``) or, as the engine checks, a loaded LoRA's name."""
    if not isinstance(value, str) or not value.strip() or len(value) > settings.SHOWN_VALUE_CHARS:
        raise InputError(f"style must be a style's name (one of {', '.join(settings.STYLE_PRESETS)} or a loaded "
                         f"LoRA's), got {_show(value)}")
    return value.strip()


def check_style_scale(value: object) -> float:
    """A LoRA style's strength: settings.MIN_STYLE_SCALE to settings.MAX_STYLE_SCALE."""
    return _real(value, "style_scale", settings.MIN_STYLE_SCALE, settings.MAX_STYLE_SCALE)


def check_blend(value: object, name: str = "blend") -> float:
    """A travel blend: 0 (the first prompt or seed exactly) to 1 (the second exactly)."""
    return _real(value, name, 0.0, 1.0)


def styled(request: FrameRequest, style: object, style_scale: object) -> FrameRequest:
    """``request`` with its style: a preset's scale is not used, so it is left at the default (equal requests
    stay equal whatever the slider says)."""
    style, scale = check_style(style), check_style_scale(style_scale)
    return replace(request, style=style, style_scale=settings.DEFAULT_STYLE_SCALE if style in settings.STYLE_PRESETS
                   else scale)


def travelled(request: FrameRequest, prompt_b: object, blend: object, seed_b: object,
              seed_blend: object) -> FrameRequest:
    """``request`` with prompt and seed travel. An empty ``prompt_b``, a blend of 0, or a ``seed_b`` equal to the
    seed (or empty) is no travel: those requests equal the plain one."""
    blend, seed_blend = check_blend(blend), check_blend(seed_blend, "seed_blend")
    second, notices = clean_prompt(prompt_b if prompt_b is not None else "")
    if second and blend > 0:
        check_safety(second)
        request = replace(request, prompt_b=second, blend=blend,
                          notices=request.notices + tuple(f"prompt_b: {n}" for n in notices))
    if seed_b not in (None, "") and seed_blend > 0:
        seed_b = _integer(seed_b, "seed_b", 0, settings.MAX_SEED)
        if seed_b != request.seed:
            request = replace(request, seed_b=seed_b, seed_blend=seed_blend)
    return request


# --- Requests ---------------------------------------------------------------------------------------------
def text_request(prompt: object, steps: object, seed: object, guidance_scale: object, width: object,
                 height: object, decoder: object = DEFAULT_DECODER, style: object = settings.DEFAULT_STYLE,
                 style_scale: object = settings.DEFAULT_STYLE_SCALE, prompt_b: object = "",
                 blend: object = settings.DEFAULT_BLEND, seed_b: object = None,
                 seed_blend: object = settings.DEFAULT_BLEND) -> FrameRequest:
    """Raw text-to-image values -> a clean FrameRequest (InputError naming the first bad value); ``prompt_b`` /
    ``blend`` and ``seed_b`` / ``seed_blend``: prompt and seed travel (``travelled``)."""
    request = _request(prompt, steps, seed, guidance_scale, check_size(width, height), decoder)
    return travelled(styled(request, style, style_scale), prompt_b, blend, seed_b, seed_blend)


def sketch_request(sketch: object, prompt: object, steps: object, seed: object, guidance_scale: object,
                   control_strength: object, thickness: object, size: tuple[int, int], control_map: object = None,
                   decoder: object = DEFAULT_DECODER, style: object = settings.DEFAULT_STYLE,
                   style_scale: object = settings.DEFAULT_STYLE_SCALE) -> FrameRequest:
    """Raw sketch values -> a clean FrameRequest at ``size`` (the engine's frame, already valid).

    ``control_map`` (a ready map, e.g. a photo's edges) wins over ``sketch`` and is resized to ``size`` when it
    differs; otherwise the sketch (dark strokes on light) becomes the map, and a blank or missing sketch means no
    control (the same request as text-to-image)."""
    control_strength = check_control_strength(control_strength)
    thickness = check_thickness(thickness)
    if control_map is not None:
        control_map = decode_image(control_map, what="control map")
        control_map = control_map if control_map.size == size else control_map.resize(size, Image.BILINEAR)
    else:
        sketch = decode_image(sketch, what="sketch")
        if sketch is not None and not is_blank(sketch):
            control_map = sketch_to_control_map(sketch, thickness, size)
    return styled(_request(prompt, steps, seed, guidance_scale, size, decoder, control_map, control_strength),
                  style, style_scale)


# What an empty prompt leaves the image to follow, by what the request has besides the prompt.
EMPTY_PROMPT_NOTICES = {
    "picture": "empty prompt: the image follows the picture alone",
    "control": "empty prompt: the image follows the sketch alone",
    "none": "empty prompt: the image comes from the seed alone",
}


def image_request(image: object, prompt: object, strength: object, steps: object, seed: object,
                  guidance_scale: object, long_side: int, decoder: object = DEFAULT_DECODER, edges: bool = False,
                  control_strength: object = settings.DEFAULT_CONTROL_STRENGTH,
                  thickness: object = settings.DEFAULT_THICKNESS, control_map: object = None,
                  style: object = settings.DEFAULT_STYLE, style_scale: object = settings.DEFAULT_STYLE_SCALE
                  ) -> FrameRequest:
    """Raw image-to-image values -> a clean FrameRequest: the picture (a painting, a photo, a camera frame) at
    ``fit_picture(image, long_side)``, taken back to ``strength`` and redrawn. Strength 1 is text-to-image at that
    size (the picture is dropped). ``edges``: the picture's dark lines also steer the ControlNet, as a sketch's
    would; or ``control_map`` (a ready map, e.g. a camera frame's edges) does."""
    strength = check_strength(strength)
    picture = decode_image(image, what="image")
    if picture is None:
        raise InputError("image is empty: send a PNG, JPEG or WebP picture")
    picture = fit_picture(picture, long_side)
    size = picture.size
    control_strength = check_control_strength(control_strength)
    thickness = check_thickness(thickness)
    if control_map is not None:
        control_map = decode_image(control_map, what="control map")
        control_map = control_map if control_map.size == size else control_map.resize(size, Image.BILINEAR)
    elif edges and not is_blank(picture):
        control_map = sketch_to_control_map(picture, thickness, size)
    request = styled(_request(prompt, steps, seed, guidance_scale, size, decoder, control_map, control_strength,
                              picture=strength < 1.0), style, style_scale)
    if strength == 1.0:
        return request
    return replace(request, init_image=picture, init_key=_digest(picture), strength=strength)


# A photo's edge map: (picture, line thickness, (width, height)) -> white lines on black of that size; the engine's
# ``photo_to_control_map``, which runs HED on the engine's model thread.
EdgeMapper = Callable[[Image.Image, int, tuple[int, int]], Image.Image]


def camera_request(image: object, prompt: object, mode: object, strength: object, steps: object, seed: object,
                   guidance_scale: object, control_strength: object, decoder: object, long_side: int,
                   edge_map: EdgeMapper, style: object = settings.DEFAULT_STYLE,
                   style_scale: object = settings.DEFAULT_STYLE_SCALE,
                   steadiness: object = settings.DEFAULT_STEADINESS,
                   skip_unchanged: bool | None = None) -> FrameRequest:
    """Raw camera-frame values -> a clean FrameRequest at ``fit_size(frame, long_side)``: the frame redrawn by
    image-to-image at ``strength`` (``mode`` "image"), or a text-to-image frame steered by the frame's edge map
    (``mode`` "edges": ``edge_map`` makes it at ``settings.DEFAULT_THICKNESS``; ``strength`` is not used).
    ``steadiness`` (``check_steadiness``) blends the stream's previous frame into the start (image mode; edges mode
    starts from pure noise, where it could not act, so it is 0 there). ``skip_unchanged`` (default
    ``settings.CAMERA_SKIP_UNCHANGED``): the request carries the picture's thumbnail, so that the engine may answer
    an unchanged picture with the stream's last frame (``sprint_demo.steady``)."""
    if mode not in settings.CAMERA_MODES:
        raise InputError(f"mode must be one of {', '.join(settings.CAMERA_MODES)}, got {_show(mode)}")
    steadiness = check_steadiness(steadiness)
    picture = decode_image(image, what="camera frame")
    if picture is None:
        raise InputError("camera frame is empty")
    skip = settings.CAMERA_SKIP_UNCHANGED if skip_unchanged is None else skip_unchanged
    steady = dict(thumbnail=thumbnail(picture) if skip else None)
    if mode == "image":
        request = image_request(picture, prompt, strength, steps, seed, guidance_scale, long_side, decoder,
                                control_strength=control_strength, style=style, style_scale=style_scale)
        return replace(request, **steady, steadiness=steadiness if request.init_key is not None else 0.0)
    control_map = edge_map(picture, settings.DEFAULT_THICKNESS, fit_size(picture.width, picture.height, long_side))
    return replace(image_request(picture, prompt, 1.0, steps, seed, guidance_scale, long_side, decoder,
                                 control_strength=control_strength, control_map=control_map, style=style,
                                 style_scale=style_scale), **steady)


def check_steadiness(value: object) -> float:
    """Steadiness: a number in [0, ``settings.MAX_STEADINESS``] (the share of the previous frame in the start)."""
    expected = f"a number in [0, {settings.MAX_STEADINESS:g}]"
    number = float(_number(value, "steadiness", expected))
    if not 0 <= number <= settings.MAX_STEADINESS:
        raise InputError(f"steadiness must be {expected}, got {_show(value)}")
    return number


def _request(prompt: object, steps: object, seed: object, guidance_scale: object, size: tuple[int, int],
             decoder: object, control_map: Image.Image | None = None, control_strength: float = 0.0,
             picture: bool = False) -> FrameRequest:
    prompt, notices = clean_prompt(prompt)
    if not prompt:
        notices += (EMPTY_PROMPT_NOTICES["picture" if picture else "none" if control_map is None else "control"],)
    check_safety(prompt)
    return FrameRequest(
        prompt=prompt,
        steps=check_steps(steps),
        seed=check_seed(seed),
        guidance_scale=check_guidance(guidance_scale),
        width=size[0],
        height=size[1],
        control_map=control_map,
        control_key=None if control_map is None else _digest(control_map),
        control_strength=0.0 if control_map is None else control_strength,
        decoder=check_decoder(decoder),
        notices=notices,
    )


def _digest(image: Image.Image) -> str:
    return hashlib.blake2b(image.tobytes() + repr((image.size, image.mode)).encode(), digest_size=16).hexdigest()
