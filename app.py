"""SANA-Sprint Live Sketch: load the model, build the interface, serve it.

    python app.py                      # real weights if they load, else the offline preview model
    python app.py --model preview      # tiny random model: runs on any CPU, offline
    python app.py --help

Importing this module does nothing but define functions (tests import it); everything runs from ``main``, which
loads the engine and hands it to ``sprint_demo.launch.launch`` (queue, upload limit, page CSS). On Hugging Face
Spaces (``settings.ON_SPACES``) it listens on all interfaces; on ZeroGPU the frame functions are wrapped with
``spaces.GPU`` (see ``sprint_demo.ui``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from sprint_demo import settings
from sprint_demo.inputs import InputError, check_size
from sprint_demo.launch import DEFAULT_HOST, launch, limit_malloc_arenas
from sprint_demo.speedups import COMPILE_SCOPES, SpeedOptions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description="SANA-Sprint Live Sketch web app.")
    parser.add_argument("--model", default=settings.MODEL,
                        help=f"auto (real SANA-Sprint weights if they load, else the preview model), "
                             f"{settings.PREVIEW_MODEL}, {settings.RANDOM_FULL_MODEL}, a hub id or a local folder "
                             f"(default: %(default)s; env SPRINT_MODEL)")
    parser.add_argument("--controlnet", default=settings.CONTROLNET,
                        help="ControlNet: hub id, diffusers folder or NVlabs .pth (default: the model's own choice; "
                             "env SPRINT_CONTROLNET)")
    parser.add_argument("--device", default=None, help="torch device: cuda, cuda:1, cpu (default: best available)")
    parser.add_argument("--dtype", default=None, help="bfloat16, float16 or float32 (default: the model's choice)")
    parser.add_argument("--compile", action="store_true", default=SpeedOptions().compile,
                        help="torch.compile the model blocks and the DC-AE on a GPU (40-60 s at start; "
                             "env SPRINT_COMPILE=1)")
    parser.add_argument("--cuda-graphs", action="store_true", default=SpeedOptions().cuda_graphs,
                        help="with --compile: CUDA graphs, 2-3x faster frames again (env SPRINT_CUDA_GRAPHS=1); "
                             "see docs/PERFORMANCE.md")
    parser.add_argument("--compile-scope", default=SpeedOptions().compile_scope, choices=COMPILE_SCOPES,
                        help="with --compile: per block (measured) or per denoising step (env SPRINT_COMPILE_SCOPE)")
    parser.add_argument("--tiny-autoencoder", default=settings.TINY_AUTOENCODER, metavar="auto|off|ENCODER,DECODER",
                        help="the tiny autoencoder of the fast 'tiny' decoder: auto (random weights for the preview "
                             "and random-full models, the published TAESANA files, downloaded once, for real "
                             "weights), off, or the encoder and decoder .pth as paths or URLs "
                             "(default: %(default)s; env SPRINT_TINY_AUTOENCODER)")
    parser.add_argument("--vae-lite", default=settings.VAE_LITE, metavar="HUB_ID_OR_FOLDER",
                        help="DC-AE-Lite (diffusers AutoencoderDC): its lighter decoder replaces the DC-AE's for "
                             "the full decoder (default: off; env SPRINT_VAE_LITE)")
    parser.add_argument("--size", type=int, default=None,
                        help=f"side of the sketch canvas and its frames in pixels (default: {settings.DEFAULT_SIZE}, "
                             f"{settings.PREVIEW_SIZE} for the preview model)")
    parser.add_argument("--max-batch-size", type=int, default=settings.MAX_BATCH_SIZE,
                        help="frames of different users made in one batch at most; 1: one frame at a time "
                             "(default: %(default)s; env SPRINT_MAX_BATCH_SIZE)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default: %(default)s; env SPRINT_HOST)")
    parser.add_argument("--port", type=int, default=settings.PORT, help="port (default: %(default)s; env SPRINT_PORT)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    args = parser.parse_args(argv)
    if args.max_batch_size < 1:
        parser.error(f"--max-batch-size must be at least 1, got {args.max_batch_size}")
    if args.size is not None:
        try:
            args.size = check_size(args.size, args.size)[0]
        except InputError as error:
            parser.error(str(error).replace("width", "--size", 1))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit_malloc_arenas()  # before the model's threads allocate (settings.MALLOC_ARENAS says why)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("app")

    from sprint_demo.engine import load_engine
    from sprint_demo.models import ModelLoadError

    try:
        speed = replace(SpeedOptions(), compile=args.compile, cuda_graphs=args.cuda_graphs,
                        compile_scope=args.compile_scope)
        engine = load_engine(args.model, args.controlnet, args.device, args.dtype, speed=speed,
                             tiny_autoencoder=args.tiny_autoencoder, vae_lite=args.vae_lite,
                             max_batch_size=args.max_batch_size, size=args.size)
    except (ModelLoadError, OSError, ValueError) as error:
        print(f"error: could not load model {args.model!r}: {error}", file=sys.stderr)
        return 2
    if engine.banner:
        log.warning("%s", engine.banner)
    log.info("model %s on %s, frame size %d, batches of up to %d, speed-ups: %s, decoders: %s", engine.model_name,
             engine.device, engine.size, engine.max_batch_size, engine.speed.describe(), ", ".join(engine.decoders))

    launch(engine, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
