"""The ControlNet trainer on the CPU preview model: it learns, it learns to use the control, two processes equal
one process at twice the batch, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sprint_demo.conditioning import sketch_to_control_map
from sprint_demo.models.loading import load_pipeline
from sprint_demo.sketches import stroke_sketch
from sprint_demo.tools import train_controlnet as tc

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--resolution", "256", "--detector", "classical"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The preview's many tiny ops run faster on one thread than two fighting on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    tc.make_demo_data(root / "train", 16, 256, seed=0)
    tc.make_demo_data(root / "held_out", 8, 256, seed=99)
    tc.make_demo_data(root / "small", 8, 256, seed=1)
    return {"train": root / "train", "held_out": root / "held_out", "small": root / "small"}


def log_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / tc.LOG_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "controlnet"
    tc.main(["--data", str(data["train"]), "--output", str(out), *COMMON, "--batch-size", "4", "--max-steps", "30",
             "--learning-rate", "1e-2", "--cache-latents", "--validate-every", "30", "--num-validation", "2"])
    return out


def test_demo_data_pairs_images_with_captions(data):
    images = sorted(data["small"].glob("*.png"))
    assert len(images) == 8
    caption = images[0].with_suffix(".txt").read_text()
    assert " at the " in caption and caption.rstrip().endswith("background")


@pytest.mark.slow
def test_short_run_learns_and_the_app_loads_the_result(trained):
    log = log_of(trained)
    assert [r["step"] for r in log] == list(range(1, 31)) and all(r["num_processes"] == 1 for r in log)
    first, last = sum(r["loss"] for r in log[:5]) / 5, sum(r["loss"] for r in log[-5:]) / 5
    assert last < first, (first, last)
    assert (trained / "validation" / "step_000030.png").exists()
    grid = Image.open(trained / "validation" / "step_000030.png")
    assert grid.size == (4 * 256, 2 * 256)  # control | 1 step | 2 steps | image, one row per sample

    # the weights moved from the zero-initialised start, and the app loads them for the preview model
    loaded = load_pipeline("preview", controlnet=str(trained), device="cpu")
    start = tc.SanaSprintControlNetModel.from_transformer(loaded.pipe.transformer)
    moved = max((p - start.state_dict()[k]).abs().max().item() for k, p in loaded.pipe.controlnet.state_dict().items())
    assert moved > 1e-3
    assert loaded.controlnet_report.family == "sprint"

    # and it changes the picture for a sketch, where the untrained (zero) ControlNet leaves the base's image
    control = sketch_to_control_map(Image.open(ROOT / "assets" / "house_and_tree.png"), 2, (256, 256))

    def frame(controlnet) -> np.ndarray:
        loaded.pipe.register_modules(controlnet=controlnet)
        image = loaded.pipe(
            prompt="a house and a tree", num_inference_steps=1, height=256, width=256, use_resolution_binning=False,
            generator=torch.Generator().manual_seed(0), control_image=control).images[0]
        return np.asarray(image, dtype=np.float32)

    trained_frame, zero_frame = frame(loaded.pipe.controlnet), frame(start)
    assert np.abs(trained_frame - zero_frame).mean() > 1.0  # grey levels


@pytest.mark.slow
def test_it_learned_to_use_the_control(trained, data):
    loaded = load_pipeline("preview", controlnet=str(trained), device="cpu")
    dataset = tc.FolderDataset(data["held_out"], tc.ControlPairs(256, 2, "classical", None))
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    keys = list(range(len(dataset)))  # the same noise and times for both losses
    with torch.no_grad():
        right = tc.control_loss(loaded.pipe, loaded.pipe.controlnet, batch, keys).item()
        shuffled = tc.control_loss(loaded.pipe, loaded.pipe.controlnet, batch, keys, shuffle_control=True).item()
    assert right < shuffled * 0.99, (right, shuffled)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_at_twice_the_batch(data, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    args = ["--data", str(data["small"]), *COMMON, "--max-steps", "3", "--learning-rate", "1e-3"]
    env = os.environ | {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
                        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    result = subprocess.run([*launch, "-m", "sprint_demo.tools.train_controlnet", *args, "--output", str(two),
                             "--batch-size", "2"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    tc.main([*args, "--output", str(one), "--batch-size", "4"])

    log_two, log_one = log_of(two), log_of(one)
    assert all(r["num_processes"] == 2 for r in log_two) and len(log_two) == 3
    for r2, r1 in zip(log_two, log_one):
        rank0, rank1 = r2["samples_per_rank"]
        assert len(rank0) == len(rank1) == 2 and not set(rank0) & set(rank1)  # different data on each rank
        assert rank0 + rank1 == r1["samples_per_rank"][0]  # together: the one process's batch
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5)
    digests = json.loads((two / tc.SUMMARY_FILE).read_text())["weight_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]  # identical weights on both ranks
    w2, w1 = (load_file(folder / "diffusion_pytorch_model.safetensors") for folder in (two, one))
    assert max((w2[k] - w1[k]).abs().max().item() for k in w1) < 1e-5
    assert max(w1[k].abs().max().item() for k in w1 if k.startswith("controlnet_blocks")) > 1e-4  # they trained


@pytest.mark.slow
def test_resuming_equals_an_uninterrupted_run(data, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = ["--data", str(data["small"]), *COMMON, "--batch-size", "2", "--learning-rate", "1e-3"]
    # 8 pairs / batch 2 = 4 steps an epoch: the checkpoint falls mid-epoch and the run crosses into epoch 1
    tc.main([*args, "--output", str(full), "--max-steps", "6", "--checkpoint-every", "3"])
    checkpoint = full / tc.CHECKPOINTS / "step_000003"
    assert json.loads((checkpoint / tc.TRAINER_STATE).read_text()) == {"step": 3, "epoch": 0, "batches_in_epoch": 3}
    tc.main([*args, "--output", str(resumed), "--max-steps", "6", "--resume", str(checkpoint)])

    assert [r["step"] for r in log_of(resumed)] == [4, 5, 6]
    assert [r["samples_per_rank"] for r in log_of(resumed)] == [r["samples_per_rank"] for r in log_of(full)[3:]]
    a, b = (load_file(folder / "diffusion_pytorch_model.safetensors") for folder in (full, resumed))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6

    # `latest` finds the newest checkpoint of an output folder
    assert tc.latest_checkpoint(full).name == "step_000006"


def test_bad_flags_are_named(data, tmp_path):
    with pytest.raises(SystemExit):
        tc.parse_args(["--data", str(data["small"]), "--output", str(tmp_path), "--resolution", "300"])
    with pytest.raises(ValueError, match="fewer than one step"):
        tc.EpochSampler(3, seed=0, multiple=4)
    with pytest.raises(ValueError, match="no same-named .txt"):
        (tmp_path / "lonely.png").write_bytes((data["small"] / "shape_00000.png").read_bytes())
        tc.FolderDataset(tmp_path, tc.ControlPairs(256, 2, "classical", None))


def test_a_sana10_controlnet_is_adapted_to_sprint(preview):
    transformer = preview.pipe.transformer
    shapes = {k: transformer.config[k] for k in ("num_attention_heads", "attention_head_dim",
                                                  "num_cross_attention_heads", "cross_attention_head_dim",
                                                  "cross_attention_dim", "caption_channels")}
    sana10 = tc.SanaSprintControlNetModel(**shapes, qk_norm=None, guidance_embeds=False, timestep_scale=1000.0)
    torch.nn.init.normal_(sana10.controlnet_blocks[0].weight)
    adapted, note = tc.adapt_to_sprint(sana10, transformer)
    assert adapted.config.guidance_embeds and adapted.config.qk_norm == transformer.config.qk_norm
    assert adapted.config.timestep_scale == 1.0 and "adapted to Sprint" in note
    assert torch.equal(adapted.controlnet_blocks[0].weight, sana10.controlnet_blocks[0].weight)  # its own weights
    base_norm = transformer.transformer_blocks[0].attn1.norm_q.weight
    assert torch.equal(adapted.transformer_blocks[0].attn1.norm_q.weight, base_norm)  # qk norms from the base
    assert tc.adapt_to_sprint(adapted, transformer)[1] == "kept as is (Sprint-native)"


def test_the_training_prediction_at_pi_over_2_is_the_samplers_one_step_frame():
    """Training evaluates the model exactly as the sampler does: from pure noise at t = pi/2, the predicted clean
    latent equals the 1-step pipeline's output latent (torch.equal), with the ControlNet steering at scale 1."""
    pipe = load_pipeline("preview", device="cpu").pipe
    embeds, mask = pipe.encode_prompt("a red square", device="cpu", complex_human_instruction=None)
    control = pipe.prepare_control_latents(sketch_to_control_map(stroke_sketch(256, 3), 2, (256, 256)), 256, 256)
    noise = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        sampled = pipe(prompt_embeds=embeds, prompt_attention_mask=mask, num_inference_steps=1, height=256,
                       width=256, latents=noise, control_latents=control, controlnet_conditioning_scale=1.0,
                       guidance_scale=4.5, use_resolution_binning=False, output_type="latent").images
        sigma_data = pipe.scheduler.config.sigma_data
        guidance = torch.full((1,), 4.5) * pipe.transformer.config.guidance_embeds_scale
        t = torch.full((1,), tc.MAX_TIMESTEPS)
        predicted = tc.predict_clean_latent(pipe, noise * sigma_data, t, embeds, mask, guidance,
                                            tc.ControlInputs(pipe.controlnet, control, 1.0))
    assert torch.equal(predicted / sigma_data, sampled)


def test_the_trainer_encodes_captions_as_the_app_does():
    """The trainer's caption embeddings are the app engine's for the same prompt, bit for bit (each from its own
    preview pipeline): the trained instruction prepended, its tokens encoded once; within the bound of diffusers'
    full encode with the instruction where the mask keeps them."""
    import support

    from sprint_demo.engine import load_engine
    from sprint_demo.models.pipeline import COMPLEX_HUMAN_INSTRUCTION

    pipe = load_pipeline("preview", device="cpu").pipe
    captions = ["a red circle above a blue square", "A Tree; Two Birds"]
    pixels = torch.zeros(2, 3, 64, 64)
    _, _, embeds, mask = tc.encode_batch(pipe, {"id": [0, 1], "caption": captions, "image": pixels,
                                                "control": pixels})
    engine = load_engine("preview", device="cpu", warmup=False)
    try:
        for row, caption in enumerate(captions):
            app_embeds, app_mask, _ = engine.renderer.prompt_embeddings(caption)
            assert torch.equal(embeds[row : row + 1], app_embeds) and torch.equal(mask[row : row + 1], app_mask)
            full, full_mask = pipe.encode_prompt(caption, device="cpu",
                                                 complex_human_instruction=COMPLEX_HUMAN_INSTRUCTION)
            kept = full.detach() * full_mask[..., None]  # the cached encode leaves the (unread) padding zero
            assert support.max_abs_difference(embeds[row : row + 1], kept) <= support.PREFIX_CACHE_MAX_ABS
    finally:
        engine.close()
