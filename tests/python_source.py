"""Parsing the package's own source for the tests that read it (layers, environment reads).

``ast.parse`` runs with the garbage collector held off. On CPython 3.11 (CI's 3.11.7) the parser keeps its recursion
depth in interpreter-wide state; when the collector runs a finalizer in the middle of a parse and that finalizer
formats a traceback (3.11's traceback module parses source to place its ``^^^`` marks), the nested parse resets that
depth and the outer one fails with "SystemError: AST constructor recursion depth mismatch". CI met it once, in
``test_settings``, while the collector finalized an asyncio task left by the Ray tests (a dead replica's
``ActorDiedError``, logged as "Task exception was never retrieved"); ``test_python_source.py`` reproduces it.
"""

from __future__ import annotations

import ast
import gc
from pathlib import Path


def parse_python(source: str) -> ast.Module:
    """``ast.parse(source)``, with no collection (and so no finalizer) able to run in the middle of it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if was_enabled:
            gc.enable()


def parse_file(path: Path) -> ast.Module:
    return parse_python(path.read_text(encoding="utf-8"))
