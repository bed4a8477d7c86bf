"""The source-reading tests parse with no finalizer able to run mid-parse (see ``python_source``)."""

from __future__ import annotations

import ast
import gc
import traceback
from pathlib import Path

from python_source import parse_python

SOURCE = (Path(__file__).resolve().parent.parent / "sprint_demo" / "web" / "ui.py").read_text(encoding="utf-8")
ROUNDS = 20


class _Garbage:
    """A cycle whose finalizer formats a traceback, as a dead asyncio task's "exception was never retrieved" does."""

    finalized_mid_parse = 0
    parsing = False

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        if _Garbage.parsing:
            _Garbage.finalized_mid_parse += 1
        try:
            [][1]
        except IndexError:
            traceback.format_exc()


def _parse_under_collector_pressure(parse) -> tuple[int, list[str]]:
    """Parses SOURCE ROUNDS times with cyclic garbage waiting and the collector eager; returns how many finalizers
    ran inside a parse and the errors the parses raised."""
    _Garbage.finalized_mid_parse = 0
    errors = []
    threshold = gc.get_threshold()
    gc.set_threshold(50)
    try:
        for _ in range(ROUNDS):
            for _ in range(50):
                _Garbage()
            _Garbage.parsing = True
            try:
                parse(SOURCE)
            except SystemError as error:
                errors.append(str(error))
            finally:
                _Garbage.parsing = False
    finally:
        gc.set_threshold(*threshold)
        gc.collect()
    return _Garbage.finalized_mid_parse, errors


def test_the_pressure_reaches_inside_a_plain_parse():
    """The setting CI met: finalizers run in the middle of ``ast.parse`` (on CPython 3.11.7 some parses fail)."""
    finalized_mid_parse, _errors = _parse_under_collector_pressure(ast.parse)
    assert finalized_mid_parse > 0


def test_parse_python_lets_no_finalizer_in_and_gives_the_same_tree():
    finalized_mid_parse, errors = _parse_under_collector_pressure(parse_python)
    assert (finalized_mid_parse, errors) == (0, [])
    assert ast.dump(parse_python(SOURCE)) == ast.dump(ast.parse(SOURCE))
    assert gc.isenabled()
