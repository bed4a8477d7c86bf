"""One image from the command line.

    python -m sprint_demo.tools.generate --prompt "a cat in a garden" --sketch assets/cat_face.png --out cat.png
    python -m sprint_demo.tools.generate --prompt "a cat" --model preview --steps 2 --seed 7 --out cat.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import inputs, settings
from ..frames import FrameRequest, FrameSource
from ..inputs import InputError
from ..models.loading import ModelLoadError
from ..web import messages


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sprint_demo.tools.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--sketch", type=Path, help="PNG/JPEG: dark strokes on light paper (omit for text-to-image)")
    parser.add_argument("--photo", type=Path, help="a photo whose HED edges steer the image (instead of --sketch)")
    parser.add_argument("--steps", type=int, default=settings.DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=settings.DEFAULT_SEED)
    parser.add_argument("--guidance", type=float, default=settings.DEFAULT_GUIDANCE)
    parser.add_argument("--strength", type=float, default=settings.DEFAULT_CONTROL_STRENGTH, help="ControlNet scale")
    parser.add_argument("--thickness", type=int, default=settings.DEFAULT_THICKNESS, help="control line thickness")
    parser.add_argument("--width", type=int, default=None, help="text-to-image width (default: the model's size)")
    parser.add_argument("--height", type=int, default=None, help="text-to-image height")
    parser.add_argument("--out", type=Path, required=True, help="where to write the image (PNG or JPEG)")
    parser.add_argument("--model", default=settings.MODEL, help="auto | preview | random-full | weights id/folder")
    parser.add_argument("--controlnet", default=settings.CONTROLNET, help="ControlNet hub id, folder or .pth")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    return parser.parse_args(argv)


def frame_request(engine: FrameSource, args: argparse.Namespace) -> FrameRequest:
    """The request of the command line's frame: a sketch's, a photo's edges' (the photo's edge map and frame at its
    own aspect ratio, long side the engine's), or the prompt's alone."""
    values = dict(prompt=args.prompt, steps=args.steps, seed=args.seed, guidance_scale=args.guidance)
    if not (args.sketch or args.photo):
        return inputs.text_request(**values, width=args.width or engine.size, height=args.height or engine.size)
    source = inputs.decode_image((args.sketch or args.photo).read_bytes(), what="photo" if args.photo else "sketch")
    control_map = engine.photo_to_control_map(source, args.thickness) if args.photo else None
    size = control_map.size if control_map else (engine.size, engine.size)
    return inputs.sketch_request(None if args.photo else source, **values, control_strength=args.strength,
                                 thickness=args.thickness, size=size, control_map=control_map)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..engine import load_engine  # after argument parsing: --help stays instant

    try:
        engine = load_engine(args.model, args.controlnet, args.device, args.dtype, warmup=False)
        frame = engine.render(frame_request(engine, args))
    except (InputError, ModelLoadError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.image.save(args.out)
    if note := messages.banner(engine):
        print(f"note: {note}", file=sys.stderr)
    if args.photo and (note := messages.edges_note(engine)):
        print(f"note: {note}", file=sys.stderr)
    for notice in frame.notices:
        print(f"note: {notice}", file=sys.stderr)
    print(json.dumps({"out": str(args.out), "size": frame.image.size, "model": engine.model_name,
                      "timings_ms": frame.timings_ms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
