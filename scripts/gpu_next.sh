#!/usr/bin/env bash
# The next GPU run for the model thread, image-to-image and the camera: random-full (real SANA-Sprint 0.6B shapes,
# random weights), compiled with CUDA graphs, three checks in one run of < 8 minutes, each a bench mode:
#
#   1. idle     the first frame after 10 s idle on the engine's model thread (where warm-up recorded the CUDA
#               graphs) against the same frame in a fresh thread (bench --mode idle)
#   2. img2img  image-to-image frames at 1024x1024, full and tiny lanes, 1 step (bench --mode img2img)
#   3. camera   8 camera users at CAMERA_SIZE (512: frames of 512x384), tiny lane, batches of 1 against 8
#               (bench --mode camera); the goal: 10 frames/s or more per user
#   4. control  the DC-AE encode of a 1024x1024 control map against the tiny encoder's, same run (bench --mode
#               components --parts encode): what a new stroke costs a tiny-lane draft now that control maps take
#               the DC-AE's encoder in both lanes
#
#   scripts/gpu_next.sh OUT_DIR [WHEEL_DIR]
#
# As scripts/gpu_bench.sh: the wheels in WHEEL_DIR (default .whl; docs/PERFORMANCE.md has the download command) are
# installed into /tmp/site when diffusers is missing; each check writes <check>.json and <check>.log to OUT_DIR;
# a check that fails or runs out of time leaves the others' results; PACK=FILE.tar.gz packs OUT_DIR at the end.
# Environment: CHECKS (default "idle img2img camera control", run in that order), BUDGET_S, PACK; MODEL, SIZE,
# CAMERA_USERS, DURATION_S, IDLE_S, CONTROL_REPEAT and SPEEDUPS let the test suite run it on a CPU with the preview
# model (tests/test_gpu_bench_script.py).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_next.sh OUT_DIR [WHEEL_DIR]}
wheels=${2:-.whl}
mkdir -p "$out"
deadline=$((SECONDS + ${BUDGET_S:-470}))
left() { echo $((deadline - SECONDS)); }
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

model=(--model "${MODEL:-random-full}")
read -r -a speedups <<< "${SPEEDUPS:---compile --cuda-graphs}"
declare -A flags=(
  [idle]="--mode idle --steps 1 --idle ${IDLE_S:-10}"
  [img2img]="--mode img2img --size ${SIZE:-1024} --steps 1 --decoder full,tiny --repeat 10"
  [camera]="--mode camera --users ${CAMERA_USERS:-8} --max-batch-size 1,8 --decoder tiny --steps 1 --duration ${DURATION_S:-20}"
  [control]="--mode components --size ${SIZE:-1024} --parts encode --repeat ${CONTROL_REPEAT:-10}"
)
checks=${CHECKS:-idle img2img camera control}
for name in $checks; do [ -n "${flags[$name]+known}" ] || { echo "unknown check $name (${!flags[*]})"; exit 2; }; done

if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
} | tee "$out/gpu.txt"

for name in $checks; do
  [ "$(left)" -gt 30 ] || { echo "no time left for $name"; continue; }
  # shellcheck disable=SC2086  # the flags are words
  timeout $(( $(left) - 5 )) python3 -m sprint_demo.tools.bench "${model[@]}" ${flags[$name]} "${speedups[@]}" \
    --json "$out/$name.json" 2>&1 | grep -v "Warning\|float32" | tee "$out/$name.log"
done
echo "elapsed ${SECONDS}s"
[ -n "${PACK:-}" ] && tar -czf "$PACK" -C "$(dirname "$out")" "$(basename "$out")" && echo "packed into $PACK"
exit 0
