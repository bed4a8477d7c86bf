"""``frames.FrameSource``, what the web layer may use of an engine: ``Engine`` and ``RayEngine`` implement every
member with the Protocol's exact signature and type, and a live engine's values have those types."""

from __future__ import annotations

import inspect
import types
import typing

import pytest
import support

from sprint_demo.engine import Engine
from sprint_demo.frames import FrameSource
from sprint_demo.tools.serve_ray import RayEngine

IMPLEMENTATIONS = [Engine, RayEngine]


def _members(cls: type) -> tuple[dict[str, type], dict[str, inspect.Signature]]:
    """({attribute: type}, {method: signature}) of a class: annotated attributes and properties' return types;
    methods' signatures with their annotations evaluated."""
    attributes = dict(typing.get_type_hints(cls)) if cls is not FrameSource else {}
    methods = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            attributes[name] = typing.get_type_hints(member.fget)["return"]
        elif inspect.isfunction(member):
            methods[name] = inspect.signature(member, eval_str=True)
    return attributes, methods


PROTOCOL_ATTRIBUTES, PROTOCOL_METHODS = _members(FrameSource)


def test_the_protocol_names_what_the_web_layer_uses():
    assert set(PROTOCOL_ATTRIBUTES) == {
        "size", "model_name", "is_preview", "fallback_reason", "has_controlnet", "controlnet_description",
        "decoders", "has_tiny_decoder", "tiny_note", "edges_fallback", "speed", "device", "max_batch_size",
        "batch_sizes", "styles", "frame_counts"}
    assert set(PROTOCOL_METHODS) == {"render", "cancel", "photo_to_control_map", "close"}


@pytest.mark.parametrize("cls", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_implementation_has_the_protocols_signatures_and_types(cls):
    attributes, methods = _members(cls)
    for name, expected in PROTOCOL_ATTRIBUTES.items():
        assert name in attributes, f"{cls.__name__} has no annotated attribute or property {name!r}"
        assert attributes[name] == expected, f"{cls.__name__}.{name}: {attributes[name]} is not {expected}"
    for name, expected in PROTOCOL_METHODS.items():
        assert name in methods, f"{cls.__name__} has no method {name!r}"
        assert methods[name] == expected, f"{cls.__name__}.{name}{methods[name]} is not {name}{expected}"


def test_the_check_catches_a_different_type_and_signature():
    class Drifted(Engine):
        batch_sizes: dict[int, int]

        @property
        def speed(self) -> str:  # as RayEngine once had it
            return "none"

        def cancel(self, session: str, now: bool = False) -> None: ...

    attributes, methods = _members(Drifted)
    assert attributes["batch_sizes"] != PROTOCOL_ATTRIBUTES["batch_sizes"]
    assert attributes["speed"] != PROTOCOL_ATTRIBUTES["speed"]
    assert methods["cancel"] != PROTOCOL_METHODS["cancel"]


def assert_values_have_the_protocols_types(engine) -> None:
    """Every FrameSource attribute of a live ``engine`` holds a value of the Protocol's type."""
    assert isinstance(engine, FrameSource)
    for name, expected in PROTOCOL_ATTRIBUTES.items():
        value = getattr(engine, name)
        union = typing.get_origin(expected) in (typing.Union, types.UnionType)
        allowed = tuple(typing.get_origin(t) or t for t in (typing.get_args(expected) if union else (expected,)))
        assert isinstance(value, allowed), f"{name}: {value!r} is not {expected}"


def test_a_live_engine_has_values_of_the_protocols_types():
    assert_values_have_the_protocols_types(support.preview_engine())
