"""scripts/gpu_bench.sh and scripts/gpu_next.sh, run on this CPU with the preview model: a GPU lease is too short
to find a broken script there. Compile switches are off on a CPU, so this checks the scripts' plumbing, not any
speed-up."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_bench_script_runs_each_variant_and_summarises(tmp_path):
    out, pack = tmp_path / "run", tmp_path / "run.tar.gz"
    env = os.environ | {"VARIANTS": "tiny eager step", "MODEL": "preview", "SIZE": "256", "STEPS": "1",
                        "MODES": "t2i,controlnet", "REPEAT": "1", "PARITY": "0", "BUDGET_S": "300", "PROFILE": "step",
                        "PACK": str(pack)}
    done = subprocess.run(["bash", "scripts/gpu_bench.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for variant, decoder in (("tiny", "tiny"), ("eager", "full"), ("step", "full")):
        runs = json.loads((out / f"{variant}.json").read_text())["runs"]
        assert [(r["mode"], r["decoder"], r["steps"], r["width"]) for r in runs] == [
            ("t2i", decoder, 1, 256), ("controlnet", decoder, 1, 256)]
        assert all(r["model_ms"] > 0 for r in runs)
    assert not (out / "compiled.json").exists()  # only the variants asked for
    summary = (out / "summary.txt").read_text().splitlines()
    # in the order asked, each run with its decoder lane
    assert [line.split()[:3] for line in summary[2:]] == [
        [variant, mode, decoder] for variant, decoder in (("tiny", "tiny"), ("eager", "full"), ("step", "full"))
        for mode in ("t2i", "controlnet")]
    assert json.loads((out / "step.json").read_text())["meta"]["compiled_vs_eager"]["max_levels"] == 0
    # the profiler report of the variant asked for: the ControlNet case, every model stage with its time
    assert not (out / "eager.profile.txt").exists() and not (out / "tiny.profile.txt").exists()
    report = (out / "step.profile.txt").read_text().splitlines()
    assert report[0].startswith("# torch.profiler: 3 frames of controlnet, 1 step(s), 256px")
    stage_ms = {line.split()[0]: float(line.split()[1]) for line in report[2:7]}
    assert set(stage_ms) == {"text_encode", "control_encode", "denoise", "decode", "postprocess"}
    assert all(stage_ms[stage] > 0.5 for stage in ("control_encode", "denoise", "decode"))
    assert "Self CPU" in "\n".join(report)  # the operator table follows
    with tarfile.open(pack) as packed:  # one file for the device tool to bring back
        assert {"run/step.json", "run/step.profile.txt", "run/summary.txt"} <= set(packed.getnames())


def test_gpu_bench_script_refuses_an_unknown_variant_before_spending_the_lease(tmp_path):
    env = os.environ | {"VARIANTS": "eager stepp", "MODEL": "preview", "PARITY": "0"}
    done = subprocess.run(["bash", "scripts/gpu_bench.sh", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "unknown variant stepp" in done.stdout
    assert not list(tmp_path.iterdir())  # nothing ran


@pytest.mark.slow
def test_the_next_gpu_script_runs_its_four_checks(tmp_path):
    """scripts/gpu_next.sh on the CPU with the preview model, short: each check writes its results."""
    out, pack = tmp_path / "run", tmp_path / "run.tar.gz"
    env = os.environ | {"MODEL": "preview", "SIZE": "256", "CAMERA_USERS": "2", "DURATION_S": "2", "IDLE_S": "0.2",
                        "CONTROL_REPEAT": "1", "SPEEDUPS": "", "BUDGET_S": "300", "PACK": str(pack)}
    done = subprocess.run(["bash", "scripts/gpu_next.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    idle = json.loads((out / "idle.json").read_text())["runs"][0]
    assert idle["model_thread_ms"] > 0 and idle["fresh_thread_ms"] > 0
    img2img = json.loads((out / "img2img.json").read_text())["runs"]
    lanes = {(r["mode"], r["decoder"], r["width"]) for r in img2img}
    assert lanes == {("img2img", "full", 256), ("img2img", "tiny", 256)}
    camera = json.loads((out / "camera.json").read_text())["runs"]
    assert [(r["mode"], r["max_batch_size"], r["users"]) for r in camera] == [("camera", 1, 2), ("camera", 8, 2)]
    control = json.loads((out / "control.json").read_text())["components"]
    assert control["size"] == 256 and set(control["median_ms"]) == {"dc_ae_encode", "tiny_encode"}
    with tarfile.open(pack) as packed:
        assert {"run/idle.json", "run/img2img.json", "run/camera.json", "run/control.json"} <= set(packed.getnames())
    bad = subprocess.run(["bash", "scripts/gpu_next.sh", str(tmp_path / "x")], cwd=ROOT, capture_output=True,
                         text=True, env=os.environ | {"CHECKS": "idle camra"}, timeout=60, check=False)
    assert bad.returncode == 2 and "unknown check camra" in bad.stdout
