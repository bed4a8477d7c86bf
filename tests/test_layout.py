"""The package's shape: layers that import one way, no import cycles, no overlong functions or classes, a light top
level.

Layers, bottom up (a module may import its own layer and those below it, never one above):
settings < models < core (frames, inputs, conditioning, sketches, renderer, engine, batcher) < web < tools.
Imports inside functions count too: a late import is still a dependency, and a cycle through one is still a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from python_source import parse_file

PACKAGE = Path(__file__).resolve().parent.parent / "sprint_demo"
LAYERS = {"settings": 0, "models": 1, "core": 2, "web": 3, "tools": 4}
MAX_FUNCTION_LINES = 80  # outside models/
MAX_CLASS_LINES = 300  # outside models/
MAX_MODEL_FUNCTION_LINES = 150  # models/: a pipeline's __call__ carries diffusers' long signatures
# tools/ may keep an argument parser or a training loop up to this long (one place to read every flag or step)
MAX_TOOL_FUNCTION_LINES = 150
TOOL_FUNCTIONS_ALLOWED_LONGER = {"parse_args", "build_parser", "train"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package's own __init__: lazy names only, imports nothing (checked below)
    if parts[1] in ("models", "web", "tools"):
        return LAYERS[parts[1]]
    return LAYERS["settings"] if parts[1] == "settings" else LAYERS["core"]


def imports_of(path: Path) -> set[str]:
    """The sprint_demo modules ``path`` imports, anywhere in the file (``from . import x`` names module x)."""
    tree = parse_file(path)
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "sprint_demo")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "sprint_demo":
                continue
            for alias in node.names:  # `from pkg import module` imports the module; `from module import name` not
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {name for name in found if name in MODULES}


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(path): path for path in FILES}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
            for a, targets in graph.items() for b in sorted(targets) if layer(b) > layer(a)]


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_every_import_points_down_or_across():
    assert not upward_imports(GRAPH), "\n".join(upward_imports(GRAPH))


def test_no_import_cycles():
    assert not import_cycles(GRAPH), "\n".join(" -> ".join(cycle) for cycle in import_cycles(GRAPH))


def test_the_checks_catch_a_wrong_way_import_and_a_cycle():
    """A wrong-way import (the tiny autoencoder importing the loader, e.g. for a benchmark) fails both checks."""
    graph = {name: set(targets) for name, targets in GRAPH.items()}
    graph["sprint_demo.models.tiny_autoencoder"].add("sprint_demo.models.loading")
    assert ["sprint_demo.models.loading", "sprint_demo.models.tiny_autoencoder",
            "sprint_demo.models.loading"] in import_cycles(graph)
    graph["sprint_demo.models.pipeline"].add("sprint_demo.engine")
    assert upward_imports(graph) == ["sprint_demo.models.pipeline (layer 1) imports sprint_demo.engine (layer 2)"]
    assert "sprint_demo.models.loading" in GRAPH["sprint_demo.engine"]  # the reader follows real imports


def test_the_top_level_package_imports_nothing():
    assert GRAPH["sprint_demo"] == set()


def test_core_and_models_do_not_import_gradio():
    for name, path in MODULES.items():
        if layer(name) <= LAYERS["core"]:
            tree = parse_file(path)
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not any(n.split(".")[0] == "gradio" for n in names), name


def line_limit(module: str, node: ast.AST) -> int | None:
    """How long ``node`` (a function or class of ``module``) may be; None: no limit (classes in models/)."""
    parts = module.split(".")
    in_models, in_tools = len(parts) > 1 and parts[1] == "models", len(parts) > 1 and parts[1] == "tools"
    if isinstance(node, ast.ClassDef):
        return None if in_models else MAX_CLASS_LINES
    if in_models:
        return MAX_MODEL_FUNCTION_LINES
    if in_tools and node.name in TOOL_FUNCTIONS_ALLOWED_LONGER:
        return MAX_TOOL_FUNCTION_LINES
    return MAX_FUNCTION_LINES


def overlong(modules: dict[str, Path]) -> list[str]:
    found = []
    for name, path in modules.items():
        for node in ast.walk(parse_file(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                lines, limit = node.end_lineno - node.lineno + 1, line_limit(name, node)
                if limit is not None and lines > limit:
                    found.append(f"{name}.{node.name}: {lines} lines (limit {limit})")
    return found


def test_no_function_or_class_is_longer_than_its_limit():
    assert not overlong(MODULES), "\n".join(overlong(MODULES))


def test_the_length_check_catches_a_long_function_and_class(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def f():\n{body}\n\n\nclass C:\n" + "\n".join(
        f"    y{i} = {i}" for i in range(MAX_CLASS_LINES)) + "\n")
    found = overlong({"sprint_demo.web.long": tmp_path / "long.py", "sprint_demo.models.long": tmp_path / "long.py"})
    assert found == [f"sprint_demo.web.long.f: {MAX_FUNCTION_LINES + 1} lines (limit {MAX_FUNCTION_LINES})",
                     f"sprint_demo.web.long.C: {MAX_CLASS_LINES + 1} lines (limit {MAX_CLASS_LINES})"]


def test_public_names_come_from_the_top_level_and_settings_stays_light():
    code = ("import sys, sprint_demo.settings; "
            "assert not {'torch', 'gradio', 'diffusers'} & set(sys.modules), sorted(sys.modules); "
            "import sprint_demo; "
            "from sprint_demo import (SanaSprintControlNetPipeline, SanaSprintControlNetImg2ImgPipeline, "
            "SanaSprintControlNetModel, TinyAutoencoder, Engine, FrameRequest, load_pipeline, build_byte_tokenizer); "
            "from sprint_demo.models.pipeline import SanaSprintControlNetPipeline as P; "
            "from sprint_demo.models.pipeline import SanaSprintControlNetImg2ImgPipeline as I; "
            "assert SanaSprintControlNetPipeline is P and SanaSprintControlNetImg2ImgPipeline is I; "
            "assert 'Engine' in dir(sprint_demo); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_an_unknown_top_level_name_is_an_attribute_error():
    import sprint_demo

    with pytest.raises(AttributeError, match="no attribute 'Engin'"):
        sprint_demo.Engin  # noqa: B018
