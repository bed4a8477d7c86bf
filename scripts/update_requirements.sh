#!/usr/bin/env bash
# Recompiles the pinned requirement files from their hand-written inputs, in this order (each later one is
# constrained by requirements.txt, so the app's packages carry the same pins everywhere):
#   requirements.in     -> requirements.txt      (the app; what a Hugging Face Space installs)
#   requirements-ray.in -> requirements-ray.txt  (-c requirements.txt)
#   requirements-dev.in -> requirements-dev.txt  (-c requirements.txt -c requirements-ray.txt)
# The target is Linux x86_64 (manylinux_2_28), CPython 3.11, whatever machine runs this.
#
#   scripts/update_requirements.sh                        keep every pin the .in files still allow; add or drop
#                                                         only what an edit of a .in file asks for
#   scripts/update_requirements.sh --upgrade              every package to the newest release the .in files allow
#   scripts/update_requirements.sh --upgrade-package NAME one package (and what it needs) only
#
# Any arguments go to every `uv pip compile`. Then tests/test_requirements.py checks the result (pytest from
# requirements-dev.txt); install the new pins and run the whole suite before committing them.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9  # the resolver that wrote the files; its header records the command
if [[ "$(python3 -m uv --version 2>/dev/null)" != "uv $UV_VERSION"* ]]; then
    python3 -m pip install --quiet "uv==$UV_VERSION"
fi

compile() {
    python3 -m uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 "$@"
}

compile requirements.in -o requirements.txt "$@"
compile requirements-ray.in -c requirements.txt -o requirements-ray.txt "$@"
compile requirements-dev.in -c requirements.txt -c requirements-ray.txt -o requirements-dev.txt "$@"

python3 -m pytest -q -p no:cacheprovider tests/test_requirements.py
