#!/usr/bin/env bash
# GPU benchmark: random-full (real SANA-Sprint 0.6B + 7-block ControlNet + DC-AE + Gemma-2-2B shapes) at
# 1024x1024, 1/2/4 steps, text-to-image and ControlNet, eager, torch.compile and compile + CUDA graphs, in one
# run of < 8 minutes. The tiny_* variants run the "tiny" decoder lane (the tiny autoencoder decodes the frame; the
# control map takes the DC-AE's encoder in both lanes; bench --decoder tiny).
#
#   scripts/gpu_bench.sh OUT_DIR [WHEEL_DIR]
#
# For a GPU machine that has torch but no diffusers and no network: the wheels in WHEEL_DIR (default .whl:
# diffusers, transformers, regex, importlib_metadata; see docs/PERFORMANCE.md for the download command) are
# installed into /tmp/site first. Writes gpu.txt, parity.txt and <variant>.json (+ .log, + .profile.txt for the
# variants in PROFILE: a torch.profiler report of where each stage's time goes) to OUT_DIR and prints the summary
# table last. A variant that fails or runs out of time leaves the others' results. PACK=FILE.tar.gz also packs
# OUT_DIR into one file at the end (the device tool brings back at most 8 files).
# Environment: VARIANTS, STEPS, MODES, BUDGET_S, PROFILE, PACK (see below); MODEL, SIZE, REPEAT and PARITY=0 let the
# test suite run the script on a CPU with the preview model (tests/test_gpu_bench_script.py).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_bench.sh OUT_DIR [WHEEL_DIR]}
wheels=${2:-.whl}
mkdir -p "$out"
deadline=$((SECONDS + ${BUDGET_S:-470}))  # the whole run must end inside 8 minutes (BUDGET_S for shorter leases)
left() { echo $((deadline - SECONDS)); }
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

common=(--model "${MODEL:-random-full}" --size "${SIZE:-1024}" --steps "${STEPS:-1,2,4}"
        --mode "${MODES:-t2i,controlnet,controlnet-warm}" --repeat "${REPEAT:-10}")
# Each variant: the bench flags it adds. The speed-ups are measured against each other in the same run.
declare -A flags=(
  [eager]=""
  [compiled]="--compile"                                   # torch.compile per block, no CUDA graphs
  [cudagraphs]="--compile --cuda-graphs"                   # + CUDA graphs, per block
  [step]="--compile --cuda-graphs --compile-scope step"    # + one region per denoising step
  [nchw]="--compile --cuda-graphs --compile-scope step --no-channels-last"  # ablation: DC-AE without NHWC
  [fp16]="--compile --cuda-graphs --compile-scope step --dtype fp16"       # ablation: fp16 transformer + ControlNet
  [tiny_eager]="--decoder tiny"                                            # the tiny lane, no compile
  [tiny]="--decoder tiny --compile --cuda-graphs"                          # the tiny lane, compiled per block
  [tiny_step]="--decoder tiny --compile --cuda-graphs --compile-scope step"  # the tiny lane, one region per step
)
# Run in the order given: the one that matters most right after eager, so it is not the one the budget cuts.
# e.g. VARIANTS="eager step cudagraphs" STEPS=1 for a short lease; the tiny lane first, then the full lane's step
# scope: VARIANTS="tiny cudagraphs step tiny_step" STEPS=1 MODES=controlnet,t2i BUDGET_S=330 (docs/PERFORMANCE.md)
variants=${VARIANTS:-eager compiled cudagraphs}
for name in $variants; do [ -n "${flags[$name]+known}" ] || { echo "unknown variant $name (${!flags[*]})"; exit 2; }; done

if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} | tee "$out/gpu.txt"

# Correctness on this GPU first: our pipeline equals diffusers' SanaSprintPipeline (preview shapes, bf16), both at
# their default prompt encoding (the trained instruction).
[ "${PARITY:-1}" = 1 ] && timeout 60 python3 - <<'PY' 2>&1 | tee "$out/parity.txt"
import torch
from diffusers import SanaSprintPipeline
from sprint_demo.models.loading import load_pipeline
pipe = load_pipeline("preview", device="cuda", dtype="bf16").pipe
ref = SanaSprintPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler)
ref.set_progress_bar_config(disable=True)
for steps in (1, 2, 4):
    kw = dict(prompt="a cat", num_inference_steps=steps, height=512, width=768, output_type="pt",
              use_resolution_binning=False)
    a = pipe(**kw, generator=torch.Generator().manual_seed(0)).images
    b = ref(**kw, intermediate_timesteps=1.3 if steps == 2 else None, generator=torch.Generator().manual_seed(0)).images
    print(f"parity on cuda, {steps} step(s): torch.equal = {torch.equal(a, b)}")
PY

profiled=${PROFILE:-tiny cudagraphs step}  # variants that also write a profiler report (a few seconds each)
files=()
for name in $variants; do
  [ "$(left)" -gt 30 ] || { echo "no time left for $name"; continue; }
  # eager gets at most 170 s so that the compiled variants keep most of the budget
  limit=$(( $(left) - 5 )); [ "$name" = eager ] && [ $limit -gt 170 ] && limit=170
  profile=(); [[ " $profiled " == *" $name "* ]] && profile=(--profile "$out/$name.profile.txt")
  # shellcheck disable=SC2086  # the flags are words
  timeout $limit python3 -m sprint_demo.tools.bench "${common[@]}" ${flags[$name]} "${profile[@]}" --json "$out/$name.json" 2>&1 \
    | grep -v "Warning\|float32" | tee "$out/$name.log"
  [ -s "$out/$name.json" ] && files+=("$out/$name.json")
done
[ ${#files[@]} -gt 0 ] && python3 -m sprint_demo.tools.bench --summarize "${files[@]}" | tee "$out/summary.txt"
echo "elapsed ${SECONDS}s"
[ -n "${PACK:-}" ] && tar -czf "$PACK" -C "$(dirname "$out")" "$(basename "$out")" && echo "packed into $PACK"
