#!/usr/bin/env bash
# GPU benchmark: random-full (real SANA-Sprint 0.6B + 7-block ControlNet + DC-AE + Gemma-2-2B shapes) at
# 1024x1024, 1/2/4 steps, text-to-image and ControlNet, eager, torch.compile and compile + CUDA graphs, in one
# run of < 8 minutes.
#
#   scripts/gpu_bench.sh OUT_DIR [WHEEL_DIR]
#
# For a GPU machine that has torch but no diffusers and no network: the wheels in WHEEL_DIR (default .whl:
# diffusers, transformers, regex, importlib_metadata; see docs/PERFORMANCE.md for the download command) are
# installed into /tmp/site first. Writes gpu.txt, parity.txt, eager.json, compiled.json, cudagraphs.json (+ logs) to OUT_DIR and
# prints the summary table last. A variant that fails or runs out of time leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_bench.sh OUT_DIR [WHEEL_DIR]}
wheels=${2:-.whl}
mkdir -p "$out"
deadline=$((SECONDS + ${BUDGET_S:-470}))  # the whole run must end inside 8 minutes (BUDGET_S for shorter leases)
left() { echo $((deadline - SECONDS)); }
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} | tee "$out/gpu.txt"

# Correctness on this GPU first: our pipeline equals diffusers' SanaSprintPipeline (preview shapes, bf16).
timeout 60 python3 - <<'PY' 2>&1 | tee "$out/parity.txt"
import torch
from diffusers import SanaSprintPipeline
from sprint_demo.models import load_pipeline
pipe = load_pipeline("preview", device="cuda", dtype="bf16").pipe
ref = SanaSprintPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler)
ref.set_progress_bar_config(disable=True)
for steps in (1, 2, 4):
    kw = dict(prompt="a cat", num_inference_steps=steps, height=512, width=768, output_type="pt",
              use_resolution_binning=False, complex_human_instruction=None)
    a = pipe(**kw, generator=torch.Generator().manual_seed(0)).images
    b = ref(**kw, intermediate_timesteps=1.3 if steps == 2 else None, generator=torch.Generator().manual_seed(0)).images
    print(f"parity on cuda, {steps} step(s): torch.equal = {torch.equal(a, b)}")
PY

common=(--model random-full --size 1024 --steps "${STEPS:-1,2,4}" --mode "${MODES:-t2i,controlnet,controlnet-warm}" --repeat 10)
# eager | compiled (per block) | cudagraphs (per block) | step (compile + CUDA graphs, one region per denoise step)
variants=${VARIANTS:-eager compiled cudagraphs}  # e.g. VARIANTS="eager cudagraphs step" STEPS=1 for a short lease
run() { [[ " $variants " == *" $1 "* ]]; }
run eager && timeout $(( $(left) < 170 ? $(left) : 170 )) python3 -m sprint_demo.bench "${common[@]}" \
  --json "$out/eager.json" 2>&1 | grep -v "Warning\|float32" | tee "$out/eager.log"
run compiled && timeout $(( $(left) < 200 ? $(left) : 200 )) python3 -m sprint_demo.bench "${common[@]}" --compile \
  --json "$out/compiled.json" 2>&1 | grep -v "Warning\|float32" | tee "$out/compiled.log"
run cudagraphs && timeout $(( $(left) - 5 )) python3 -m sprint_demo.bench "${common[@]}" --compile --cuda-graphs \
  --json "$out/cudagraphs.json" 2>&1 | grep -v "Warning\|float32" | tee "$out/cudagraphs.log"
run step && timeout $(( $(left) - 5 )) python3 -m sprint_demo.bench "${common[@]}" --compile --cuda-graphs \
  --compile-scope step --json "$out/step.json" 2>&1 | grep -v "Warning\|float32" | tee "$out/step.log"
files=()
for f in eager compiled cudagraphs step; do [ -s "$out/$f.json" ] && files+=("$out/$f.json"); done
[ ${#files[@]} -gt 0 ] && python3 -m sprint_demo.bench --summarize "${files[@]}" | tee "$out/summary.txt"
echo "elapsed ${SECONDS}s"
