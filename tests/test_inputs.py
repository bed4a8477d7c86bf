"""sprint_demo.inputs: every bad input refused with a clear InputError, every good one normalised."""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import resource
import struct
import sys
import types
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from sprint_demo import conditioning, inputs, settings
from sprint_demo.frames import FrameRequest
from sprint_demo.inputs import InputError, clean_prompt, decode_image, is_blank


# --- helpers ----------------------------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_header_only(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header claims width x height grey pixels; `idat` is its (compressed) pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb_10k() -> bytes:
    """A valid 10000x10000 all-black PNG (100 MB of pixels) that is only ~100 KB on disk."""
    compressor = zlib.compressobj(9)
    row = bytes(10001)  # filter byte 0 + 10000 zero pixels
    idat = b"".join(compressor.compress(row) for _ in range(10000)) + compressor.flush()
    return png_header_only(10000, 10000, idat)


class LoadSpy:
    """Counts pixel decodes (ImageFile.load) while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = ImageFile.ImageFile.load

        def load(image, *args, **kwargs):
            self.calls += 1
            return original(image, *args, **kwargs)

        monkeypatch.setattr(ImageFile.ImageFile, "load", load)


# --- decode_image: accepted inputs ------------------------------------------------------------------------
def test_none_stays_none():
    assert decode_image(None) is None


@pytest.mark.parametrize("fmt,mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_data_url_of_each_format(fmt, mime):
    image = Image.new("RGB", (64, 48), (10, 200, 30))
    out = decode_image(data_url(encode(image, fmt, quality=95) if fmt != "PNG" else encode(image), mime))
    assert out.mode == "RGB" and out.size == (64, 48)
    assert np.abs(np.asarray(out).astype(int) - (10, 200, 30)).max() <= 6  # lossy formats: close enough


def test_raw_bytes_and_pil_image_and_whitespace_in_base64():
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    png = encode(image)
    assert np.array_equal(np.asarray(decode_image(png)), np.asarray(image))
    assert np.array_equal(np.asarray(decode_image(bytearray(png))), np.asarray(image))
    assert np.array_equal(np.asarray(decode_image(image)), np.asarray(image))
    wrapped = data_url(png)
    wrapped = wrapped[:40] + "\n" + wrapped[40:]  # base64 wrapped over lines
    assert np.array_equal(np.asarray(decode_image(wrapped)), np.asarray(image))


def test_mime_is_not_trusted_content_is():
    jpeg = encode(Image.new("RGB", (16, 16), "white"), "JPEG")
    assert decode_image(data_url(jpeg, "image/png")).size == (16, 16)  # a JPEG labelled png still decodes


def test_rgba_composited_on_white():
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (0, 0, 0, 0))  # transparent -> white paper
    image.putpixel((1, 0), (255, 0, 0, 255))  # opaque red stays red
    image.putpixel((2, 0), (0, 0, 255, 128))  # half-transparent blue on white
    out = np.asarray(decode_image(encode(image))).astype(int)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [255, 0, 0]
    assert np.abs(out[0, 2] - (127, 127, 255)).max() <= 1


def test_greyscale_and_grey_alpha():
    grey = Image.new("L", (2, 1))
    grey.putpixel((0, 0), 100)
    grey.putpixel((1, 0), 0)
    assert np.asarray(decode_image(encode(grey)))[0].tolist() == [[100] * 3, [0] * 3]
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (0, 0))  # transparent black -> white
    la.putpixel((1, 0), (0, 255))  # opaque black
    assert np.asarray(decode_image(encode(la)))[0].tolist() == [[255] * 3, [0] * 3]


def test_palette_with_and_without_transparency():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    assert np.asarray(decode_image(encode(image)))[0].tolist() == [[0, 0, 0], [0, 255, 0]]
    transparent = encode(image, transparency=0)  # index 0 transparent -> white paper
    assert np.asarray(decode_image(transparent))[0].tolist() == [[255, 255, 255], [0, 255, 0]]


def test_16_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    png = encode(Image.fromarray(values))
    assert Image.open(io.BytesIO(png)).mode.startswith("I")  # really a 16-bit file
    out = np.asarray(decode_image(png))
    assert out[0, :, 0].tolist() == [0, 128, 255, 4]  # 1000/257 = 3.9 -> 4
    assert out.shape == (1, 4, 3)
    as_i = Image.fromarray(values.astype(np.int32), "I")  # a mode-I PIL image passed directly
    assert np.asarray(decode_image(as_i))[0, :, 0].tolist() == [0, 128, 255, 4]


def test_cmyk_jpeg():
    red = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    out = np.asarray(decode_image(encode(red, "JPEG", quality=95))).astype(int)
    assert np.abs(out - (255, 0, 0)).max() <= 8


def test_exif_rotated_jpeg():
    stored = Image.new("RGB", (200, 100), (255, 0, 0))
    stored.paste((0, 0, 255), (100, 0, 200, 100))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise for display
    out = decode_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.size == (100, 200)
    pixels = np.asarray(out).astype(int)
    assert np.abs(pixels[20, 50] - (255, 0, 0)).max() < 30  # stored left (red) is now on top
    assert np.abs(pixels[180, 50] - (0, 0, 255)).max() < 30


@pytest.mark.parametrize("size", [(1, 1), (4096, 64), (64, 4096)])
def test_extreme_aspect_ratios_are_accepted_unchanged(size):
    out = decode_image(encode(Image.new("L", size, 255)))
    assert out.size == size and out.mode == "RGB"


# --- decode_image: refused inputs -------------------------------------------------------------------------
@pytest.mark.parametrize("text,needle", [
    ("hello", "data:image/"),
    ("data:image/png;base64", "data:image/"),  # no comma
    ("data:text/html;base64,PGh0bWw+", "image/png, image/jpeg or image/webp"),
    ("data:image/svg+xml;base64,PHN2Zz4=", "image/png, image/jpeg or image/webp"),
    ("data:image/png,rawpixels", "base64"),
    ("data:image/png;base64,@@@@", "invalid base64"),
    ("data:image/png;base64,abc", "invalid base64"),  # bad padding
    ("data:image/png;base64,", "empty"),
])
def test_malformed_data_urls(text, needle):
    with pytest.raises(InputError, match="sketch") as error:
        decode_image(text)
    assert needle in str(error.value)


@pytest.mark.parametrize("payload,kind", [
    (b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>", "HTML"),
    (b"<html><head></head></html>", "HTML"),
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>', "SVG"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "SVG"),
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "GIF"),
    (b"just some text that is not an image", "unrecognised"),
    (b"\x00" * 100, "unrecognised"),
])
def test_non_images_named_png_are_refused(payload, kind):
    for sent in (data_url(payload, "image/png"), payload):
        with pytest.raises(InputError, match="not a PNG, JPEG, WEBP image") as error:
            decode_image(sent, what="upload")
        assert kind in str(error.value) and "upload" in str(error.value)


def test_truncated_png_and_jpeg_are_refused():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    for fmt in ("PNG", "JPEG"):
        data = encode(noise, fmt)
        with pytest.raises(InputError, match="could not be decoded"):
            decode_image(data[: len(data) // 2])


def test_too_many_bytes_refused_before_decoding(monkeypatch):
    png = encode(Image.new("RGB", (64, 64), "white"))
    monkeypatch.setattr(settings, "MAX_UPLOAD_BYTES", len(png) - 1)
    opened = []
    monkeypatch.setitem(Image.OPEN, "PNG", (lambda *a: opened.append(a), None))
    with pytest.raises(InputError, match=f"limit is {len(png) - 1} bytes"):
        decode_image(png)
    with pytest.raises(InputError, match=f"larger than {len(png) - 1} bytes"):
        decode_image(data_url(png))
    assert opened == []


def test_pixel_limit_checked_on_the_header(monkeypatch):
    spy = LoadSpy(monkeypatch)
    over = png_header_only(5000, 5000)  # 25 M pixels > MAX_UPLOAD_PIXELS, below PIL's own bomb limit
    with pytest.raises(InputError, match=f"5000x5000 = 25000000 pixels; the limit is {settings.MAX_UPLOAD_PIXELS}"):
        decode_image(over)
    assert spy.calls == 0


def test_10000x10000_bomb_refused_without_decoding(bomb_10k, monkeypatch):
    assert len(bomb_10k) < 1_000_000
    spy = LoadSpy(monkeypatch)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(InputError, match="10000x10000 = 100000000 pixels"):
        decode_image(data_url(bomb_10k))
    assert spy.calls == 0  # no pixel was decoded
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50_000  # the 100 MB never existed


@pytest.mark.parametrize("side", [9500, 20000])  # PIL alone would warn (and decode) / raise for these
def test_pil_bomb_sizes_refused_by_our_check_without_pil_warning(side):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match=f"{side}x{side} = {side * side} pixels; the limit is"):
            decode_image(png_header_only(side, side))
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_oversize_pil_image_refused():
    image = Image.new("1", (settings.MAX_UPLOAD_PIXELS // 1000 + 1, 1000))  # mode "1": 2 MB, over the limit
    with pytest.raises(InputError, match="pixels"):
        decode_image(image)


@pytest.mark.parametrize("value", [123, 4.5, ["data:image/png;base64,"], {"a": 1}, object()])
def test_unsupported_types(value):
    with pytest.raises(InputError, match="must be a data:image"):
        decode_image(value)


def test_shown_values_are_truncated():
    with pytest.raises(InputError) as error:
        decode_image("x" * 10_000)
    message = str(error.value)
    assert "..." in message and len(message) < 200


# --- is_blank -------------------------------------------------------------------------------------------
def test_blank_canvases():
    assert is_blank(None)
    assert is_blank(Image.new("RGB", (512, 512), "white"))
    assert is_blank(Image.new("RGBA", (512, 512), (0, 0, 0, 0)))  # transparent canvas = white paper
    specks = Image.new("RGB", (512, 512), "white")
    for xy in ((10, 10), (300, 40), (500, 500)):  # three stray antialias / dust pixels
        specks.putpixel(xy, (0, 0, 0))
    assert is_blank(specks)
    noisy = np.full((512, 512, 3), 250, np.uint8) + np.random.default_rng(1).integers(0, 6, (512, 512, 3), np.uint8)
    jpeg = decode_image(encode(Image.fromarray(noisy), "JPEG", quality=30))
    assert is_blank(jpeg)


def test_drawn_canvases():
    dot = Image.new("RGB", (512, 512), "white")
    dot.paste((0, 0, 0), (100, 100, 103, 103))  # a single 3x3 brush click
    assert not is_blank(dot)
    stroke = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    stroke.paste((0, 0, 0, 255), (50, 200, 450, 203))
    assert not is_blank(stroke)


# --- clean_prompt ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [None, 5, b"bytes", ["a cat"]])
def test_prompt_must_be_a_string(value):
    with pytest.raises(InputError, match="prompt must be a string"):
        clean_prompt(value)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t \r\n", "\x00\x01"])
def test_empty_prompt_allowed_with_a_notice_saying_what_the_image_follows(prompt):
    assert clean_prompt(prompt)[0] == ""
    sketch = Image.new("RGB", (256, 256), "white")
    sketch.paste((0, 0, 0), (40, 40, 200, 50))
    with_sketch = inputs.sketch_request(sketch, prompt=prompt, steps=1, seed=0, guidance_scale=4.5,
                                        control_strength=1.0, thickness=2, size=(256, 256)).notices
    text_only = inputs.text_request(prompt=prompt, steps=1, seed=0, guidance_scale=4.5, width=256, height=256).notices
    assert "empty prompt: the image follows the sketch alone" in with_sketch
    assert "empty prompt: the image comes from the seed alone" in text_only
    assert not any("sketch" in notice for notice in text_only)


def test_plain_prompt_unchanged_and_silent():
    assert clean_prompt("a red fox in the snow") == ("a red fox in the snow", ())


def test_long_prompt_cut_with_notice():
    text, notices = clean_prompt("a" * 20_000)
    assert len(text) == settings.MAX_PROMPT_CHARS == 2000
    assert any(f"cut to {settings.MAX_PROMPT_CHARS}" in n and "20000" in n for n in notices)
    exact, notices = clean_prompt("b" * settings.MAX_PROMPT_CHARS)
    assert len(exact) == settings.MAX_PROMPT_CHARS and notices == ()


def test_control_characters():
    text, notices = clean_prompt("a\x00 cat\x1b[31m\x7f on\na\tmat\r\n")
    assert text == "a cat[31m on a mat"
    assert any("removed 3 control characters" in n for n in notices)
    assert clean_prompt("bad \ud800 surrogate")[0] == "bad surrogate"


def test_emoji_rtl_and_unicode_kept():
    for prompt in ["👩‍🚀 astronaut riding a 🐴", "🇫🇷 flag, 👍🏽", "قطة سوداء تجلس على السطح",
                   "\u200fשלום\u200f עולם", "东京的夜景, ネオン"]:
        assert clean_prompt(prompt) == (prompt, ())


def test_nfc_normalisation():
    assert clean_prompt("cafe\u0301")[0] == "caf\u00e9"


# --- check_safety ---------------------------------------------------------------------------------------
@pytest.fixture
def safety_module(tmp_path, monkeypatch):
    (tmp_path / "fake_safety_checker.py").write_text(
        "CALLS = []\n"
        "def check(prompt):\n"
        "    CALLS.append(prompt)\n"
        "    return 'mentions a forbidden animal' if 'cat' in prompt else None\n"
        "def broken(prompt):\n"
        "    raise RuntimeError('model not loaded')\n"
        "NOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(inputs, "_checkers", {})
    yield
    sys.modules.pop("fake_safety_checker", None)


def test_safety_off_by_default(monkeypatch):
    monkeypatch.setattr(settings, "SAFETY_CHECKER", None)
    assert inputs.check_safety("anything at all") is None


def test_safety_checker_refuses_and_is_imported_once(safety_module, monkeypatch):
    monkeypatch.setattr(settings, "SAFETY_CHECKER", "fake_safety_checker:check")
    imports = []
    real_import = inputs.importlib.import_module
    monkeypatch.setattr(inputs, "importlib", types.SimpleNamespace(
        import_module=lambda name: imports.append(name) or real_import(name)))
    inputs.check_safety("a dog")
    with pytest.raises(InputError, match="prompt refused by the safety checker: mentions a forbidden animal"):
        inputs.check_safety("a cat")
    inputs.check_safety("a bird")
    assert imports == ["fake_safety_checker"]
    assert sys.modules["fake_safety_checker"].CALLS == ["a dog", "a cat", "a bird"]


@pytest.mark.parametrize("spec", ["no_colon_here", "fake_safety_checker:missing", "no_such_module_xyz:check",
                                  "fake_safety_checker:NOT_CALLABLE", "fake_safety_checker:broken"])
def test_misconfigured_safety_checker_fails_closed(safety_module, monkeypatch, spec):
    monkeypatch.setattr(settings, "SAFETY_CHECKER", spec)
    with pytest.raises(RuntimeError):
        inputs.check_safety("a dog")


# --- numeric checks ---------------------------------------------------------------------------------------
def test_steps_message_names_the_value():
    with pytest.raises(InputError) as error:
        inputs.check_steps(5)
    assert str(error.value) == "steps must be an integer from 1 to 4, got 5"


@pytest.mark.parametrize("value,expected", [(1, 1), (4, 4), (2.0, 2), ("3", 3), (" 2 ", 2), ("4.0", 4),
                                            (np.int64(2), 2)])
def test_steps_accepted(value, expected):
    result = inputs.check_steps(value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value", [0, 5, -1, "abc", 2.5, "2.5", True, False, None, float("nan"), float("inf"),
                                   "", [2], "1e400", "9" * 100])
def test_steps_refused(value):
    with pytest.raises(InputError, match="steps must be an integer from 1 to 4"):
        inputs.check_steps(value)


@pytest.mark.parametrize("value,expected", [(0, 0), (233, 233), (settings.MAX_SEED, settings.MAX_SEED),
                                            ("42", 42), (7.0, 7)])
def test_seed_accepted(value, expected):
    assert inputs.check_seed(value) == expected


@pytest.mark.parametrize("value", [-1, -(2**40), settings.MAX_SEED + 1, 2**64, 10**100, "-5", 1.5, True,
                                   float("nan"), "0x10"])
def test_seed_refused(value):
    with pytest.raises(InputError, match=f"seed must be an integer from 0 to {settings.MAX_SEED}"):
        inputs.check_seed(value)


@pytest.mark.parametrize("check,name,low,high", [
    (inputs.check_guidance, "guidance", settings.MIN_GUIDANCE, settings.MAX_GUIDANCE),
    (inputs.check_control_strength, "control strength", settings.MIN_CONTROL_STRENGTH,
     settings.MAX_CONTROL_STRENGTH),
])
def test_real_valued_checks(check, name, low, high):
    assert check(low) == low and check(high) == high and type(check(int(high))) is float
    assert check(str((low + high) / 2)) == (low + high) / 2
    for bad in (float("nan"), float("inf"), float("-inf"), "nan", "inf", low - 0.001, high + 0.001, True, None,
                "lots", [low]):
        with pytest.raises(InputError, match=f"{name} must be a number from {low} to {high}"):
            check(bad)


def test_thickness():
    assert [inputs.check_thickness(v) for v in (1, "2", 3.0, 4)] == [1, 2, 3, 4]
    for bad in (0, 5, 2.5, True, "thick"):
        with pytest.raises(InputError, match="thickness must be an integer from 1 to 4"):
            inputs.check_thickness(bad)


def test_size():
    assert inputs.check_size(1024, "768") == (1024, 768)
    assert inputs.check_size(settings.MIN_SIZE, float(settings.MAX_SIZE)) == (settings.MIN_SIZE, settings.MAX_SIZE)
    with pytest.raises(InputError, match=r"width must be a multiple of 32 from 256 to 2048, got 1000 \(nearest: 992 "
                                         r"or 1024\)"):
        inputs.check_size(1000, 1024)  # refused, not snapped
    for bad in ((128, 1024), (1024, 4096), (1024, True), (1024, None), (1024.5, 1024), (float("nan"), 512)):
        with pytest.raises(InputError, match="(width|height) must be a multiple of 32"):
            inputs.check_size(*bad)


# --- property test: any value -> an in-range result or InputError, never anything else ------------------
anything = st.one_of(
    st.integers(), st.integers(min_value=-10, max_value=3000),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-5, max_value=3000),
    st.text(max_size=30), st.integers(min_value=-10, max_value=3000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str), st.none(), st.booleans(),
    st.lists(st.integers(), max_size=3), st.binary(max_size=8), st.complex_numbers(),
)
INTEGER_CHECKS = [
    (inputs.check_steps, settings.MIN_STEPS, settings.MAX_STEPS),
    (inputs.check_seed, 0, settings.MAX_SEED),
    (inputs.check_thickness, settings.MIN_THICKNESS, settings.MAX_THICKNESS),
]
REAL_CHECKS = [
    (inputs.check_guidance, settings.MIN_GUIDANCE, settings.MAX_GUIDANCE),
    (inputs.check_control_strength, settings.MIN_CONTROL_STRENGTH, settings.MAX_CONTROL_STRENGTH),
]


@hypothesis_settings(max_examples=300, deadline=None)
@given(value=anything)
def test_checks_never_misbehave(value):
    for check, low, high in INTEGER_CHECKS:
        try:
            result = check(value)
        except InputError:
            continue
        assert type(result) is int and low <= result <= high
    for check, low, high in REAL_CHECKS:
        try:
            result = check(value)
        except InputError:
            continue
        assert type(result) is float and math.isfinite(result) and low <= result <= high


@hypothesis_settings(max_examples=300, deadline=None)
@given(width=anything, height=anything)
def test_check_size_never_misbehaves(width, height):
    try:
        result = inputs.check_size(width, height)
    except InputError:
        return
    for side in result:
        assert type(side) is int and settings.MIN_SIZE <= side <= settings.MAX_SIZE
        assert side % settings.SIZE_MULTIPLE == 0


@hypothesis_settings(max_examples=200, deadline=None)
@given(prompt=st.text(max_size=300))
def test_clean_prompt_property(prompt):
    text, _notices = clean_prompt(prompt)
    assert len(text) <= settings.MAX_PROMPT_CHARS
    assert all(not (ch.isspace() and ch != " ") for ch in text)
    assert "  " not in text and text == text.strip()
    assert "\x00" not in text
    text.encode("utf-8")  # no lone surrogates left: the tokenizer can encode it
    assert clean_prompt(text)[0] == text  # idempotent


# --- requests ---------------------------------------------------------------------------------------------
def strokes(size: int = 256) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    image.paste((0, 0, 0), (40, 100, 200, 106))
    return image


def sketch_request(sketch, **overrides) -> FrameRequest:
    values = dict(prompt="a cat", steps=1, seed=3, guidance_scale=4.5, control_strength=0.8, thickness=2,
                  size=(256, 256))
    return inputs.sketch_request(sketch, **(values | overrides))


def test_a_request_is_built_once_from_raw_values():
    request = sketch_request(data_url(encode(strokes())), prompt="  a\ncat ", steps="2", seed=7.0,
                             guidance_scale=" 3.5")
    assert (request.prompt, request.steps, request.seed, request.guidance_scale) == ("a cat", 2, 7, 3.5)
    assert (request.width, request.height, request.decoder) == (256, 256, "full")
    assert request.control_map.size == (256, 256) and request.control_strength == 0.8
    assert request.control_key is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.seed = 4


def test_equal_requests_compare_by_the_maps_digest_not_the_image_object():
    a, b = sketch_request(strokes()), sketch_request(strokes().copy())
    assert a.control_map is not b.control_map and a == b and hash(a) == hash(b)
    assert sketch_request(strokes(), seed=4) != a
    assert sketch_request(strokes(), thickness=4) != a  # a thicker map: another digest
    noted = inputs.text_request("a cat\x00", 1, 3, 4.5, 256, 256)
    assert noted.notices and noted == inputs.text_request("a cat", 1, 3, 4.5, 256, 256)  # notices are not pixels


def test_a_blank_sketch_is_the_text_request_and_a_ready_map_wins():
    text = inputs.text_request("a cat", 1, 3, 4.5, 256, 256)
    for blank in (None, Image.new("RGB", (256, 256), "white")):
        request = sketch_request(blank)
        assert request == text and request.control_map is None and request.control_strength == 0.0
    edges = Image.new("RGB", (512, 512), "black")
    edges.paste((255, 255, 255), (0, 0, 512, 8))
    request = sketch_request(strokes(), control_map=edges)
    assert request.control_map.size == (256, 256)  # resized to the frame
    assert request.control_key != sketch_request(strokes()).control_key  # the map, not the sketch


def test_a_photo_s_map_at_its_own_frame_size_gives_a_frame_of_that_size():
    """The Sketch tab's photo: its edge map made at ``fit_size`` (the photo's aspect ratio) and the request at that
    size: the map is taken as it is, not squashed into a square."""
    photo = Image.new("RGB", (1024, 768), "grey")
    size = inputs.fit_size(*photo.size, 512)
    edges = conditioning.photo_to_control_map(photo, 2, size, detector=conditioning.ClassicalEdgeDetector())
    assert size == edges.size == (512, 384)
    request = sketch_request(None, control_map=edges, size=edges.size)
    assert (request.width, request.height) == (512, 384)
    assert np.array_equal(np.asarray(request.control_map), np.asarray(edges))


@pytest.mark.parametrize("overrides,needle", [
    (dict(thickness=0), "thickness"), (dict(control_strength=9), "control strength"), (dict(steps=5), "steps"),
    (dict(seed=-1), "seed"), (dict(guidance_scale="x"), "guidance"), (dict(decoder="huge"), "decoder"),
    (dict(prompt=None), "prompt"),
])
def test_request_values_are_refused_by_name(overrides, needle):
    with pytest.raises(InputError, match=needle):
        sketch_request(strokes(), **overrides)


def test_request_images_and_sizes_are_refused_by_name():
    with pytest.raises(InputError, match="sketch must be a data:image"):
        sketch_request(np.zeros((8, 8)))
    with pytest.raises(InputError, match="control map"):
        sketch_request(None, control_map=b"not an image")
    with pytest.raises(InputError, match="width must be a multiple of 32"):
        inputs.text_request("a cat", 1, 3, 4.5, 500, 256)


def camera_request(image, edge_map=None, **overrides) -> FrameRequest:
    values = dict(prompt="a fox", mode="image", strength=0.5, steps=1, seed=3, guidance_scale=4.5,
                  control_strength=0.8, decoder="full", long_side=512)

    def no_edge_map(*args):
        raise AssertionError("an image-mode frame needs no edge map")

    return inputs.camera_request(image, **(values | overrides), edge_map=edge_map or no_edge_map)


def test_a_camera_frame_is_one_call_from_raw_values_in_either_mode():
    frame = Image.new("RGB", (640, 480), "teal")
    frame.paste((200, 40, 40), (100, 100, 300, 200))
    image = camera_request(data_url(encode(frame)))
    assert image == inputs.image_request(frame, "a fox", 0.5, 1, 3, 4.5, 512, "full", control_strength=0.8)
    assert (image.width, image.height, image.strength, image.control_map) == (512, 384, 0.5, None)

    asked = []

    def edge_map(picture, thickness, size):  # stands in for the engine's photo_to_control_map
        asked.append((picture.size, thickness, size))
        return conditioning.photo_to_control_map(picture, thickness, size,
                                                 detector=conditioning.ClassicalEdgeDetector())

    edges = camera_request(data_url(encode(frame)), edge_map, mode="edges", strength="ignored in edges mode")
    assert asked == [((640, 480), settings.DEFAULT_THICKNESS, (512, 384))]  # the frame's own aspect ratio
    assert edges.control_map.size == (512, 384) and edges.control_strength == 0.8
    assert edges.init_image is None and edges.strength == 1.0  # text-to-image, steered by the edges


@pytest.mark.parametrize("image,overrides,needle", [
    ("x", {}, "camera frame must be a data:image"), (None, {}, "camera frame is empty"),
    (Image.new("RGB", (64, 48)), dict(mode="sketch"), "mode must be one of image, edges, got 'sketch'"),
    (Image.new("RGB", (64, 48)), dict(strength=0), "strength"),
])
def test_camera_values_are_refused_by_name(image, overrides, needle):
    with pytest.raises(InputError, match=needle):
        camera_request(image, **overrides)
