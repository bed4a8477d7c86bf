#!/usr/bin/env bash
# diffusers' own fast tests for SanaSprintImg2ImgPipeline (tests/pipelines/sana/test_sana_sprint_img2img.py and
# the PipelineTesterMixin it runs), pointed at sprint_demo's SanaSprintControlNetImg2ImgPipeline.
#
# Usage: scripts/run_diffusers_img2img_tests.sh DIFFUSERS [ours|diffusers] [pytest arguments...]
#   DIFFUSERS  a diffusers checkout (a work tree with tests/, or a bare git directory: its HEAD is used)
#   ours       (default) pipeline_class = SanaSprintControlNetImg2ImgPipeline, with "controlnet": None among the
#              dummy components and the offline tokenizer
#   diffusers  diffusers' own class, changed only by the offline tokenizer (the baseline to compare counts with)
#
# The tests are copied to a temporary folder and changed there, never in the checkout; the installed diffusers
# runs them (the copy has no src/ beside tests/, which diffusers' conftest would put first on sys.path). The only
# changes (with the imports they need), each required to match exactly once:
#   * GemmaTokenizer.from_pretrained("hf-internal-testing/dummy-gemma") -> build_byte_tokenizer() (no hub here;
#     its ids for the tests' empty prompt, <bos> then <pad>, lie within the dummy Gemma's 8-token vocabulary);
#   * (ours) "controlnet": None added to get_dummy_components;
#   * (ours) pipeline_class = SanaSprintControlNetImg2ImgPipeline.
# One more step outside the tests (ours only; REGISTER=0 leaves it out): test_encode_prompt_works_in_isolation reads
# encode_prompt's source through diffusers.pipelines.<class name> (diffusers' ReturnNameVisitor.get_ast_tree), where
# only diffusers' own classes live, so a pytest plugin puts ours there under its name, as it would stand if it were
# part of diffusers. Without it that test fails on the lookup (AttributeError), before it runs our encode_prompt.
# No test is skipped beyond diffusers' own skips. diffusers' test modules import parameterized and requests_mock
# (pip install parameterized requests_mock); tests that need an accelerator skip themselves on a CPU.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    sed -n '5,10p' "$0" >&2
    exit 2
fi
checkout=$1
mode=${2:-ours}
shift $(( $# >= 2 ? 2 : 1 ))
case $mode in ours|diffusers) ;; *) echo "mode must be ours or diffusers, got $mode" >&2; exit 2 ;; esac

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ -d $checkout/tests/pipelines ]]; then
    cp -r "$checkout/tests" "$work/tests"
else
    git --git-dir="$checkout" archive HEAD tests | tar -x -C "$work"
fi

MODE=$mode python3 - "$work/tests/pipelines/sana/test_sana_sprint_img2img.py" <<'EOF'
import os
import sys

path = sys.argv[1]
text = open(path).read()
changes = [
    ('GemmaTokenizer.from_pretrained("hf-internal-testing/dummy-gemma")', "build_byte_tokenizer()"),
    ("import inspect\n", "import inspect\n\nfrom sprint_demo.models.loading import build_byte_tokenizer\n"),
]
if os.environ["MODE"] == "ours":
    changes += [
        ('"tokenizer": tokenizer,\n', '"tokenizer": tokenizer,\n            "controlnet": None,\n'),
        ("pipeline_class = SanaSprintImg2ImgPipeline\n",
         "pipeline_class = SanaSprintControlNetImg2ImgPipeline\n"),
        ("import inspect\n", "import inspect\n\nfrom sprint_demo import SanaSprintControlNetImg2ImgPipeline\n"),
    ]
for old, new in changes:
    if text.count(old) != 1:
        sys.exit(f"expected exactly one {old!r} in {path}, found {text.count(old)}")
    text = text.replace(old, new)
open(path, "w").write(text)
EOF

plugins=()
if [[ $mode == ours && ${REGISTER:-1} != 0 ]]; then
    cat > "$work/register_sprint_demo.py" <<'EOF'
import diffusers.pipelines

from sprint_demo import SanaSprintControlNetImg2ImgPipeline

setattr(diffusers.pipelines, SanaSprintControlNetImg2ImgPipeline.__name__, SanaSprintControlNetImg2ImgPipeline)
EOF
    plugins=(-p register_sprint_demo)
fi

cd "$work"
PYTHONPATH="$repo:$work${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 \
    python3 -m pytest -p no:cacheprovider "${plugins[@]}" tests/pipelines/sana/test_sana_sprint_img2img.py "$@"
