"""Starting the app, in one place: its flags, the queue, the upload limit, the page CSS and where it listens.

* ``build_parser()`` / ``parse_args(argv)``: ``app.py``'s flags; ``engine_options(args)`` turns them into
  ``load_engine``'s keyword arguments (the Ray Serve front adds its own flags to the same parser and hands every
  replica the same options).
* ``main(argv)``: what ``python app.py`` runs: parse, load the engine, ``launch``.
* ``launch(engine, ...)`` serves a loaded engine in this process; the tests call it with
  ``prevent_thread_lock=True`` to keep running beside the server.

Nothing here imports Gradio or torch at module level: ``app.py --help`` stays light.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from typing import Any

from .. import settings
from ..frames import FrameSource
from ..inputs import InputError, check_size
from ..models.speedups import COMPILE_SCOPES, SpeedOptions
from . import messages

DEFAULT_HOST = settings.SPACES_HOST if settings.ON_SPACES else settings.HOST  # a Space's proxy must reach the app


def launch(engine: FrameSource, *, host: str = DEFAULT_HOST, port: int = settings.PORT, share: bool = False,
           prevent_thread_lock: bool = False, quiet: bool = False, concurrency_limit: int | None = None) -> Any:
    """Build the interface around ``engine`` (``ui.create_demo``) and serve it; returns the ``gr.Blocks``.

    One queue for everyone (``settings.QUEUE_SIZE`` waiting), which lets the engine's ``max_batch_size`` events
    reach it at once so that frames of different users can share a batch (one at a time with 1), uploads capped
    at ``settings.MAX_UPLOAD_BYTES``. ``concurrency_limit``: frame events let through at once (default: the
    engine's ``max_batch_size``; the Ray Serve front passes what all its replicas take). Blocks until the server
    stops unless ``prevent_thread_lock``; then the caller stops it with ``demo.close()``.
    """
    from .ui import CSS, create_demo

    demo = create_demo(engine, concurrency_limit=concurrency_limit or engine.max_batch_size)
    demo.queue(default_concurrency_limit=1, max_size=settings.QUEUE_SIZE)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=settings.MAX_UPLOAD_BYTES, css=CSS,
                prevent_thread_lock=prevent_thread_lock, quiet=quiet)
    return demo


M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(arenas: int = settings.MALLOC_ARENAS) -> bool:
    """Caps glibc's malloc arenas (``mallopt(M_ARENA_MAX)``) for this process; call it first thing, before threads
    allocate. Returns whether the cap was set (False for 0, off Linux, or without glibc)."""
    if arenas <= 0 or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False


# --- The app's command line (app.py) ---------------------------------------------------------------------
def build_parser(prog: str = "python app.py", description: str = "SANA-Sprint Live Sketch web app."
                 ) -> argparse.ArgumentParser:
    """``app.py``'s flags: the model and its engine (``engine_options``), and where to listen."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--model", default=settings.MODEL,
                        help=f"auto (real SANA-Sprint weights if they load, else the preview model), "
                             f"{settings.PREVIEW_MODEL}, {settings.RANDOM_FULL_MODEL}, a hub id or a local folder "
                             f"(default: %(default)s; env SPRINT_MODEL)")
    parser.add_argument("--controlnet", default=settings.CONTROLNET,
                        help="ControlNet: hub id, diffusers folder or NVlabs .pth (default: the model's own choice; "
                             "env SPRINT_CONTROLNET)")
    parser.add_argument("--controlnet-wiring", default=settings.CONTROLNET_WIRING,
                        choices=("auto", *settings.CONTROLNET_WIRINGS),
                        help="where the ControlNet's residuals enter the base: auto (the checkpoint's own: nvlabs for "
                             "an NVlabs .pth, diffusers for a diffusers SanaControlNetModel folder), nvlabs (what "
                             "NVlabs' HED ControlNets were trained with) or diffusers (default: %(default)s; env "
                             "SPRINT_CONTROLNET_WIRING)")
    parser.add_argument("--device", default=None, help="torch device: cuda, cuda:1, cpu (default: best available)")
    parser.add_argument("--dtype", default=None,
                        help="bfloat16, float16 or float32 (default: bfloat16 on a GPU, float32 on a CPU); float16 is "
                             "for the transformer and ControlNet only: the text encoder and the VAE stay bfloat16, as "
                             "diffusers' SANA-Sprint docs require")
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
                        help="DC-AE-Lite (diffusers AutoencoderDC), e.g. NVlabs' "
                             f"{settings.VAE_LITE_ID}: its lighter decoder replaces the DC-AE's for the full decoder "
                             "(default: off, the recipe's DC-AE 1.1; env SPRINT_VAE_LITE)")
    parser.add_argument("--size", type=int, default=None,
                        help=f"side of the sketch canvas and its frames in pixels (default: {settings.DEFAULT_SIZE}, "
                             f"{settings.PREVIEW_SIZE} for the preview model)")
    parser.add_argument("--max-batch-size", type=int, default=settings.MAX_BATCH_SIZE,
                        help="frames of different users made in one batch at most; 1: one frame at a time "
                             "(default: %(default)s; env SPRINT_MAX_BATCH_SIZE)")
    parser.add_argument("--lora", action="append", default=None, metavar="NAME=PATH_OR_HUB_ID",
                        help="a LoRA adapter offered as style NAME beside the presets (a .safetensors file, a folder "
                             "or a hub id in diffusers' format); repeatable. One that does not fit the model is "
                             "refused at start, naming it (default: none; env SPRINT_LORAS, comma-separated)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default: %(default)s; env SPRINT_HOST)")
    parser.add_argument("--port", type=int, default=settings.PORT, help="port (default: %(default)s; env SPRINT_PORT)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    return parser


def parse_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse and check ``app.py``'s flags (or those of ``parser``, built on ``build_parser``)."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.controlnet_wiring not in ("auto", *settings.CONTROLNET_WIRINGS):  # a default from the environment
        parser.error(f"--controlnet-wiring must be auto, {' or '.join(settings.CONTROLNET_WIRINGS)}, "
                     f"got {args.controlnet_wiring!r}")
    args.lora = tuple(args.lora) if args.lora is not None else settings.LORAS
    for entry in args.lora:
        name, sep, source = entry.partition("=")
        if not sep or not name.strip() or not source.strip():
            parser.error(f"--lora takes NAME=PATH_OR_HUB_ID, got {entry!r}")
    if args.max_batch_size < 1:
        parser.error(f"--max-batch-size must be at least 1, got {args.max_batch_size}")
    if args.size is not None:
        try:
            args.size = check_size(args.size, args.size)[0]
        except InputError as error:
            parser.error(str(error).replace("width", "--size", 1))
    return args


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as ``engine.load_engine``'s keyword arguments."""
    speed = replace(SpeedOptions(), compile=args.compile, cuda_graphs=args.cuda_graphs,
                    compile_scope=args.compile_scope)
    return dict(model=args.model, controlnet=args.controlnet, device=args.device, dtype=args.dtype, speed=speed,
                tiny_autoencoder=args.tiny_autoencoder, vae_lite=args.vae_lite, max_batch_size=args.max_batch_size,
                size=args.size, controlnet_wiring=args.controlnet_wiring, loras=args.lora)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit_malloc_arenas()  # before the model's threads allocate (settings.MALLOC_ARENAS says why)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("app")

    from ..engine import load_engine
    from ..models.loading import ModelLoadError

    try:
        engine = load_engine(**engine_options(args))
    except (ModelLoadError, OSError, ValueError) as error:
        print(f"error: could not load model {args.model!r}: {error}", file=sys.stderr)
        return 2
    if note := messages.banner(engine):
        log.warning("%s", note)
    log.info("%s", messages.startup_line(engine))

    launch(engine, host=args.host, port=args.port, share=args.share)
    return 0
