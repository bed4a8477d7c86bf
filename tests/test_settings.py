"""settings.py is the one place that reads ``SPRINT_*`` environment variables, and the speed switches keep their
defaults and their environment overrides through it.

The scanner finds a read as the code writes one: a ``SPRINT_*`` name (a string constant) passed to a function
whose name mentions the environment (``os.getenv``, ``os.environ.get``, ``environ.pop``, a helper such as
``_env_flag``), or used as the index of ``os.environ`` / ``environ`` to read. A name built at run time is out of
its reach; the tests below show what it catches and what it lets pass.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from python_source import parse_python

PACKAGE = Path(__file__).resolve().parent.parent / "sprint_demo"
SETTINGS = PACKAGE / "settings.py"
SPRINT_NAME = re.compile(r"SPRINT_[A-Z0-9_]+")


def _dotted(node: ast.AST) -> str:
    """``os.environ.get`` -> "os.environ.get"; other expressions -> ""."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _sprint_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and SPRINT_NAME.fullmatch(node.value):
        return node.value
    return None


def sprint_env_reads(source: str) -> list[str]:
    """Where ``source`` reads a ``SPRINT_*`` environment variable: "line N: NAME via CALLEE" for each read."""
    reads = []
    for node in ast.walk(parse_python(source)):
        if isinstance(node, ast.Call):
            callee = _dotted(node.func)
            if "env" not in callee.lower():
                continue
            for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                if name := _sprint_name(argument):
                    reads.append(f"line {node.lineno}: {name} via {callee}()")
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            container = _dotted(node.value)
            if container.split(".")[-1] == "environ" and (name := _sprint_name(node.slice)):
                reads.append(f"line {node.lineno}: {name} via {container}[...]")
    return reads


def test_only_settings_reads_sprint_environment_variables():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != SETTINGS:
            found += [f"{path.relative_to(PACKAGE.parent)} {read}"
                      for read in sprint_env_reads(path.read_text(encoding="utf-8"))]
    assert not found, "read these in sprint_demo/settings.py instead:\n" + "\n".join(found)


def test_settings_reads_the_speed_switches():
    """The scanner sees settings' own reads, so an empty result elsewhere is not a scanner that sees nothing."""
    names = {read.split()[2] for read in sprint_env_reads(SETTINGS.read_text(encoding="utf-8"))}
    assert {"SPRINT_TF32", "SPRINT_CHANNELS_LAST", "SPRINT_COMPILE", "SPRINT_CUDA_GRAPHS",
            "SPRINT_COMPILE_SCOPE", "SPRINT_MODEL", "SPRINT_PORT"} <= names


def test_the_scanner_catches_every_way_of_reading_one():
    source = "\n".join([
        "import os",
        "from os import environ, getenv",
        "a = os.getenv('SPRINT_A')",
        "b = os.environ.get('SPRINT_B', '1')",
        "c = os.environ['SPRINT_C']",
        "d = getenv('SPRINT_D')",
        "e = environ['SPRINT_E']",
        "f = _env_flag('SPRINT_F', True)",
        "g = os.environ.pop('SPRINT_G', None)",
        "h = os.getenv(key='SPRINT_H')",
    ])
    reads = sprint_env_reads(source)
    assert [read.split()[2] for read in reads] == [f"SPRINT_{letter}" for letter in "ABCDEFGH"], reads
    assert "line 3: SPRINT_A via os.getenv()" in reads


def test_the_scanner_lets_other_names_writes_and_messages_pass():
    source = "\n".join([
        "import os",
        "offline = os.getenv('HF_HUB_OFFLINE') == '1'",  # not ours
        "NOT_INHERITED = ('SPRINT_HOST', 'SPRINT_PORT')",  # names listed for a child process, not read
        "os.environ['SPRINT_QUEUE_SIZE'] = '8'",  # a write
        "raise ValueError('SPRINT_HED_DETECTOR must be auto, hed or classical')",  # a message
        "print(f'{os.getenv(name)}')",  # a name built at run time: out of reach (module docstring)
    ])
    assert sprint_env_reads(source) == []


def test_speed_options_defaults_come_from_settings_and_the_environment():
    """``SpeedOptions()``: TF32 and channels_last on, compile and CUDA graphs off, per-block scope; each SPRINT_*
    variable turns its switch. A fresh process each time, because settings reads the environment once, at import."""
    code = ("from sprint_demo.models.speedups import SpeedOptions; o = SpeedOptions(); "
            "print(o.tf32, o.channels_last, o.compile, o.cuda_graphs, o.compile_scope)")

    def options(**environment: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPRINT_")} | environment
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                cwd=PACKAGE.parent, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip()

    assert options() == "True True False False blocks"
    assert options(SPRINT_TF32="0", SPRINT_CHANNELS_LAST="0", SPRINT_COMPILE="1", SPRINT_CUDA_GRAPHS="1",
                   SPRINT_COMPILE_SCOPE="step") == "False False True True step"
