"""scripts/gpu_bench.sh, run on this CPU with the preview model: a GPU lease is too short to find a broken script
there. Compile switches are off on a CPU, so this checks the script's plumbing, not any speed-up."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_bench_script_runs_each_variant_and_summarises(tmp_path):
    env = os.environ | {"VARIANTS": "eager step", "MODEL": "preview", "SIZE": "256", "STEPS": "1",
                        "MODES": "controlnet", "REPEAT": "1", "PARITY": "0", "BUDGET_S": "300"}
    done = subprocess.run(["bash", "scripts/gpu_bench.sh", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for variant in ("eager", "step"):
        runs = json.loads((tmp_path / f"{variant}.json").read_text())["runs"]
        assert [(r["mode"], r["steps"], r["width"]) for r in runs] == [("controlnet", 1, 256)]
        assert runs[0]["model_ms"] > 0
    assert not (tmp_path / "compiled.json").exists()  # only the variants asked for
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in summary[2:]] == ["eager", "step"]
