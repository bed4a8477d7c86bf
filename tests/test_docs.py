"""The README stays a newcomer's page, and what the docs name exists.

* The README is short (the details live in docs/ARCHITECTURE.md) and holds no test counts, which went stale with
  every commit that added a test.
* The README's flag table lists exactly ``app.py``'s flags, and every flag of its example commands is one the
  named tool defines.
* Every file path the README and docs/*.md name (in backticks or as a link) exists.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 190  # "at most about 180": the front matter the Space needs included
PATH_LIKE = re.compile(r"[\w./-]+\.(?:py|md|js|css|sh|json|png|jpg|txt|in|toml)")
PROJECT_FOLDERS = {"sprint_demo", "models", "web", "tools", "tests", "docs", "scripts", "assets", ".ci"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_readme_is_short_and_holds_no_test_counts():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES
    counts = re.findall(r"\b\d[\d,]* (?:tests|passed|failed)\b", text)
    assert not counts, f"test counts go stale with every commit; say how to run the tests instead: {counts}"


def test_readme_flag_table_is_app_py_s_flags():
    from sprint_demo.web.launch import build_parser

    defined = {option for action in build_parser()._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"}
    table = [line for line in readme_section("`app.py` flags").splitlines() if line.startswith("| `--")]
    named = {flag for line in table for flag in FLAG.findall(line.split(" | ")[0])}
    assert named == defined, f"README only: {sorted(named - defined)}; app.py only: {sorted(defined - named)}"


def test_readme_example_commands_use_flags_their_tools_define():
    block = readme_section("`app.py` flags").split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0] for line in block.splitlines() if line.startswith("python3 -m ")]
    assert commands
    for command in commands:
        module = command.split()[2]
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
        if "build_parser" in source:  # a tool that extends app.py's flags (serve_ray)
            source += (ROOT / "sprint_demo" / "web" / "launch.py").read_text(encoding="utf-8")
        flags = [word.split("=")[0] for word in shlex.split(command)[3:] if FLAG.fullmatch(word.split("=")[0])]
        for flag in flags:  # a quoted argument ("--serve '--model preview'") is a value, not a flag
            assert f'"{flag}"' in source, f"{module} defines no {flag} (README: {command.strip()})"


def tracked_names() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {Path(line).name for line in files.splitlines()}


def names_a_project_file(token: str) -> bool:
    """``sprint_demo/...``, ``web/camera.py``, ``docs/SCALING.md``, ``SCALING.md``, ``canvas.js``: yes; an output
    (``trainer_state.json``), another project's file (``gradio/routes.py``) or a pattern: no."""
    if not PATH_LIKE.fullmatch(token):
        return False
    first = token.split("/")[0]
    return first in PROJECT_FOLDERS if "/" in token else token.endswith((".md", ".py", ".js", ".css", ".sh"))


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda path: path.name)
def test_named_paths_exist(doc):
    """Every link target, and every project path in backticks, exists from the repository root, the doc's folder,
    sprint_demo/ or tests/; a bare file name (``canvas.js`` in a row that names ``web/canvas.py`` first) when a
    tracked file has that name."""
    text = doc.read_text(encoding="utf-8")
    links = [target for target in re.findall(r"\]\(([^)\s#]+)", text) if "://" not in target]
    named = links + [token for token in re.findall(r"`([^`\s]+)`", text) if names_a_project_file(token)]
    bare = tracked_names()
    missing = []
    for path in set(named):
        bases = (ROOT, doc.parent, ROOT / "sprint_demo", ROOT / "tests")
        if not any((base / path).exists() for base in bases) and not ("/" not in path and path in bare):
            missing.append(path)
    assert not missing, f"{doc.name} names files that do not exist: {sorted(missing)}"
