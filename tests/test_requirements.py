"""The pinned requirement files (written by scripts/update_requirements.sh from the .in files): every line a
`name==version` pin, the app's packages pinned alike in all three files, the direct requirements of the .in files
met by the pins, and gradio equal to the Space's sdk_version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
RUNTIME, RAY, DEV = "requirements.txt", "requirements-ray.txt", "requirements-dev.txt"
# what uv writes for a pin: name==version, optionally with an environment marker after "; "
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!-]+)(\s*;\s*(?P<marker>\S.*))?")


def pins(name: str) -> dict[str, str]:
    """Canonical package name -> pinned version of one compiled file; fails on any line that is not a pin."""
    found: dict[str, str] = {}
    for number, raw in enumerate((ROOT / name).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):  # uv's header and its "# via" annotations
            continue
        match = PIN.fullmatch(line)
        assert match, f"{name}:{number}: not a name==version pin: {raw!r}"
        package = canonicalize_name(match["name"])
        assert package not in found, f"{name}:{number}: {package} pinned twice"
        found[package] = match["version"]
    return found


def direct_requirements(name: str) -> list[Requirement]:
    """The requirements of a hand-written .in file, following its -r includes."""
    found = []
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += direct_requirements(line[3:].strip())
        elif line:
            found.append(Requirement(line))
    return found


@pytest.mark.parametrize("name", [RUNTIME, RAY, DEV])
def test_every_line_is_a_pin(name):
    assert pins(name)


@pytest.mark.parametrize("name", [RAY, DEV])
def test_the_apps_packages_carry_the_apps_pins(name):
    runtime, other = pins(RUNTIME), pins(name)
    differ = {package: (version, other[package]) for package, version in runtime.items()
              if package in other and other[package] != version}
    assert not differ, f"{name} pins these differently from {RUNTIME}: {differ}"


def test_dev_holds_everything_of_the_app_and_of_ray():
    dev = pins(DEV)
    for name in (RUNTIME, RAY):
        missing = sorted(set(pins(name)) - set(dev))
        assert not missing, f"{DEV} lacks these packages of {name}: {missing}"
        assert {package: dev[package] for package in pins(name)} == pins(name)


@pytest.mark.parametrize("source, compiled", [("requirements.in", RUNTIME), ("requirements-ray.in", RAY),
                                              ("requirements-dev.in", DEV)])
def test_pins_meet_the_in_files(source, compiled):
    """A .in file edited without recompiling shows here (scripts/update_requirements.sh recompiles)."""
    pinned = pins(compiled)
    for requirement in direct_requirements(source):
        package = canonicalize_name(requirement.name)
        assert package in pinned, f"{compiled} lacks {requirement} of {source}"
        assert requirement.specifier.contains(pinned[package], prereleases=True), (
            f"{compiled} pins {package}=={pinned[package]}, outside {requirement} of {source}")


def test_one_opencv_build():
    """controlnet-aux pulls the headless build; the GUI build beside it would be a second cv2 (and need libGL)."""
    for name in (RUNTIME, RAY, DEV):
        assert "opencv-python" not in pins(name), name
    assert "opencv-python-headless" in pins(RUNTIME)


def test_gradio_pin_is_the_spaces_sdk_version():
    """A Space installs requirements.txt on top of the gradio of the README's front matter: the two must agree."""
    front_matter = (ROOT / "README.md").read_text().split("---\n")[1]
    sdk_version = re.search(r"^sdk_version:\s*[\"']?([^\"'\s]+)", front_matter, re.MULTILINE)
    assert sdk_version, "README.md front matter has no sdk_version"
    assert pins(RUNTIME)["gradio"] == sdk_version[1]


def test_ci_runs_the_readme_test_command_and_it_checks_the_code_first():
    """CI must run what a newcomer runs: the README's test command, verbatim, with ruff before pytest."""
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "pip install -r requirements-dev.txt" in line
                   and "pytest" in line)
    assert command in (ROOT / ".ci" / "run").read_text()
    assert command.index("ruff check") < command.index("pytest")


def test_the_space_s_short_description_fits_its_limit():
    """Hugging Face refuses a Space whose short_description is longer than 60 characters."""
    front = (ROOT / "README.md").read_text().split("---")[1]
    (line,) = [line for line in front.splitlines() if line.startswith("short_description:")]
    assert 0 < len(line.split(":", 1)[1].strip()) <= 60, line
