"""Every default and limit of the demo, written once.

The UI, the API checks, the command-line tools and the docs all read these names; change a value here and
it changes everywhere. Values that an operator may want to change without editing code are read from the
environment (``SPRINT_*``).
"""

from __future__ import annotations

import os


def _env_flag(name: str, default: bool) -> bool:
    """The switch ``name`` from the environment: "1" is on, any other value off, unset ``default``."""
    return os.getenv(name, "1" if default else "0") == "1"


# --- Models -------------------------------------------------------------------------------------------
SPRINT_MODEL_ID = "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers"  # real text-to-image weights
SPRINT_MODEL_ID_1600M = "Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers"
# No Sprint ControlNet is public (NVlabs/Sana issue 253). The released Sana 1.0 HED ControlNet is the only
# real HED checkpoint; paired with the Sprint base it is experimental and the UI says so.
SANA10_HED_CONTROLNET_ID = "Efficient-Large-Model/Sana_600M_1024px_ControlNet_HED"
SANA10_HED_CONTROLNET_FILE = "checkpoints/Sana_600M_1024px_ControlNet_HED.pth"
HED_ANNOTATOR_ID = "lllyasviel/Annotators"  # ControlNetHED.pth for uploaded photos

MODEL = os.getenv("SPRINT_MODEL", "auto")  # auto | preview | random-full | <hub id or folder>
CONTROLNET = os.getenv("SPRINT_CONTROLNET") or None  # hub id, diffusers folder or NVlabs .pth
# Where the ControlNet's residuals enter the base (sprint_demo/models/controlnet.py): the two published wirings.
# CONTROLNET_WIRING "auto" takes the checkpoint's own convention (NVlabs .pth: nvlabs; diffusers' stock
# SanaControlNetModel: diffusers, as diffusers' SanaControlNetPipeline runs it; ours: its config); or one of them.
CONTROLNET_WIRINGS = ("nvlabs", "diffusers")
CONTROLNET_WIRING = os.getenv("SPRINT_CONTROLNET_WIRING", "auto")
# Diffusers-format copies of NVlabs' released HED ControlNets (diffusers' convert_sana_controlnet_to_diffusers.py
# renames the keys one to one), used in diffusers' own SanaControlNetPipeline docs. Their weights were trained with
# the NVlabs wiring; loaded with the diffusers wiring, each residual lands one block later: the loader warns.
NVLABS_CONVERTED_CONTROLNETS = ("ishan24/Sana_600M_1024px_ControlNet_diffusers",
                                "ishan24/Sana_600M_1024px_ControlNetPlus_diffusers")
PREVIEW_MODEL = "preview"  # tiny random model built in code: runs anywhere, offline
RANDOM_FULL_MODEL = "random-full"  # real shapes, random weights: for GPU benchmarks
# The tiny autoencoder of the "tiny" decoder lane: auto (random weights for preview / random-full, the published
# TAESANA files, downloaded once, for real weights) | off | "ENCODER,DECODER" (paths or URLs of the two .pth files)
TINY_AUTOENCODER = os.getenv("SPRINT_TINY_AUTOENCODER") or "auto"
# DC-AE-Lite (hub id or diffusers folder): its decoder in the full lane, opt in. Not the default with real weights:
# Sprint 0.6B's own config and its diffusers folder decode with DC-AE 1.1, and NVlabs publishes DC-AE-Lite as a
# faster option beside it (their Sprint "dc_ae_turbo" / "dc_ae_lite" configs), not as the reference; the full lane
# is the reference lane (frames held against diffusers' pipeline) and the tiny lane is already the fast one.
VAE_LITE = os.getenv("SPRINT_VAE_LITE") or None
VAE_LITE_ID = "mit-han-lab/dc-ae-lite-f32c32-sana-1.1-diffusers"  # NVlabs' DC-AE-Lite for SANA 1.1 latents (Sprint)

# --dtype float16: diffusers' SANA-Sprint docs recommend a dtype for the transformer weights only; "the text encoder
# must stay in bfloat16 and the VAE in bfloat16 or float32". So fp16 runs the transformer and the ControlNet, and
# these (the VAE as the bf16 default run has it; the tiny autoencoder follows the VAE) for the others.
FP16_TEXT_ENCODER_DTYPE = "bfloat16"
FP16_VAE_DTYPE = "bfloat16"

# --- GPU speed-ups (sprint_demo/models/speedups.py; app.py and bench override them from their command lines) ---
TF32 = _env_flag("SPRINT_TF32", True)  # float32 matmuls on tensor cores (matters for float32 runs only)
CHANNELS_LAST = _env_flag("SPRINT_CHANNELS_LAST", True)  # NHWC layout for the autoencoders' convolutions
COMPILE = _env_flag("SPRINT_COMPILE", False)  # torch.compile: minutes of compile at start, so opt in
CUDA_GRAPHS = _env_flag("SPRINT_CUDA_GRAPHS", False)  # with COMPILE: mode "reduce-overhead" (CUDA graphs)
COMPILE_SCOPES = ("blocks", "step")  # what COMPILE compiles: each block apart, or each denoising step whole
COMPILE_SCOPE = os.getenv("SPRINT_COMPILE_SCOPE", "blocks")  # blocks (measured on GPUs) | step

# --- Sampling (the schedule's own constants live in sprint_demo/models/pipeline.py) ---------------------
MIN_STEPS, MAX_STEPS = 1, 4  # Sprint is step-adaptive over 1-4 steps; the app offers that range
# Step-adaptive: the frame a user keeps (the canvases' final when the pen lifts, the Playground, the API) at 2 steps,
# the authors' default (diffusers' SanaSprintPipeline and NVlabs' Sprint demo); drafts while the pen moves at 1 step,
# whatever the Steps control says (web/canvas_handlers.py): shown for a moment, they must keep up with the pen.
DEFAULT_STEPS = 2
DRAFT_STEPS = 1
# The Camera tab's Steps control starts at 1: its frames are a stream, each shown for a moment like a draft (and each
# a new picture to encode too). Its snapshot, a frame a user keeps, runs at least DEFAULT_STEPS.
CAMERA_STEPS = 1
DEFAULT_GUIDANCE = 4.5  # the slider's start; enters the transformer as guidance * guidance_embeds_scale
MIN_GUIDANCE, MAX_GUIDANCE = 1.0, 10.0
DEFAULT_SEED = 233  # NVlabs HED demo's seed
MAX_SEED = 2**32 - 1  # torch generators take any 64-bit value; 32 bits keeps the UI slider sane
MAX_PROMPT_CHARS = 2000  # longer prompts are cut (and the user told) before tokenising

# --- Styles (presets: renderer.styled_prompt; LoRA adapters: models/lora.py; README "Styles") -----------------
# Prompt templates: the typed prompt goes where "{prompt}" is, before the prompt is encoded (and cached). "none" is
# the prompt as typed. Our own wording, in the manner of NVlabs' Sana demos' style menu.
STYLE_PRESETS = {
    "none": "{prompt}",
    "cinematic": "cinematic film still of {prompt}, shallow depth of field, dramatic lighting, rich colour grading",
    "photographic": "a photograph of {prompt}, 50mm lens, natural light, sharp focus, fine detail",
    "anime": "anime illustration of {prompt}, clean line art, flat vivid colours, expressive",
    "watercolour": "a watercolour painting of {prompt}, soft washes, paper texture, loose brushwork",
    "pixel art": "pixel art of {prompt}, 16-bit video game sprite, limited palette, crisp pixels",
    "line drawing": "a black ink line drawing of {prompt}, pen on white paper, clean contours",
}
DEFAULT_STYLE = "none"
# LoRA adapters loaded at start (app.py --lora NAME=PATH_OR_HUB_ID, repeatable): SPRINT_LORAS holds the same
# NAME=SOURCE entries separated by commas. Each appears in the Style menu beside the presets.
LORAS = tuple(entry.strip() for entry in os.getenv("SPRINT_LORAS", "").split(",") if entry.strip())
# The style-strength slider: the adapter's LoRA scale (diffusers' attention_kwargs={"scale": ...}); presets ignore it.
DEFAULT_STYLE_SCALE = 1.0
MIN_STYLE_SCALE, MAX_STYLE_SCALE = 0.0, 2.0
# The Playground's prompt and seed travel: blend 0 is the first prompt (seed) exactly, 1 the second.
DEFAULT_BLEND = 0.0
DEFAULT_SEED_B = DEFAULT_SEED + 1  # the Playground's second seed (a blend of 0 leaves it unused)
BLEND_STEP = 0.05

# --- ControlNet conditioning ----------------------------------------------------------------------------
DEFAULT_CONTROL_STRENGTH = 1.0  # controlnet_conditioning_scale
MIN_CONTROL_STRENGTH, MAX_CONTROL_STRENGTH = 0.0, 2.0
# NVlabs HED demo: line thickness 1-4, default 2; the map's lines dilated by a thickness // 2 square (1-3 alike)
DEFAULT_THICKNESS = 2
MIN_THICKNESS, MAX_THICKNESS = 1, 4

# --- Image-to-image (Paint tab, photos, camera) ----------------------------------------------------------
# Strength s in (0, 1]: how far the picture is taken back towards noise before the model redraws it (TrigFlow start
# time s * pi/2, sprint_demo.models.pipeline.continuous_strength_timesteps); 1 ignores the picture (text-to-image).
# Each surface's default strength, set apart (the camera's is with the camera's settings below): 0.6 keeps a
# picture's colours and layout and redraws its detail.
DEFAULT_PAINT_STRENGTH = 0.6  # the Paint tab's Strength slider
DEFAULT_RESTYLE_STRENGTH = 0.6  # the Sketch tab's Photo strength (a restyled photo)
DEFAULT_API_STRENGTH = 0.6  # /image_to_image's strength when a caller leaves it out
MIN_UI_STRENGTH = 0.05  # the sliders' low end; the API takes any strength in (0, 1]
DEFAULT_PAINT_EDGES = False  # Paint: also read the painting's dark lines as edges for the ControlNet
STRENGTH_STEP = 0.05  # the strength sliders' step (Paint, the Sketch tab's photo restyle)
DEFAULT_PHOTO_RESTYLE = False  # Sketch tab: an uploaded photo gives its edges only, unless restyled (image-to-image)
# Paint canvas: the palette's swatches (any other colour through the colour picker), the colour it starts with and
# a wider brush than the Sketch tab's, for areas of colour rather than lines
PAINT_PALETTE = ("#000000", "#ffffff", "#808080", "#8b5a2b", "#e53935", "#fb8c00", "#fdd835", "#7cb342",
                 "#2e7d32", "#4fc3f7", "#1e88e5", "#3949ab", "#8e24aa", "#f48fb1")
DEFAULT_PAINT_COLOR = "#1e88e5"
DEFAULT_PAINT_BRUSH = 16

# --- Camera (Camera tab: sprint_demo/web/camera.py, camera_handlers.py) -----------------------------------
CAMERA_CAPTURE_SIZE = int(os.getenv("SPRINT_CAMERA_SIZE", "512"))  # long side of the frames the page sends
CAMERA_SESSION_S = float(os.getenv("SPRINT_CAMERA_SESSION_S", "300"))  # a stream stops after this; Start again
CAMERA_MODES = ("image", "edges")  # image-to-image of the frame, or its edge map steering the ControlNet
DEFAULT_CAMERA_MODE = "image"
DEFAULT_CAMERA_STRENGTH = 0.5  # image mode: the frame's layout and colours stay, the prompt restyles it
CAMERA_JPEG_QUALITY = 75  # frames shown for a moment, like drafts
# Camera frame shapes a compiled engine warms up (the commonest webcam aspect ratios: 640x480, 1280x720); other
# shapes run uncompiled, as a compiled engine never compiles with users waiting.
CAMERA_WARM_ASPECTS = ((4, 3), (16, 9))
# The camera page (sprint_demo/web/camera.js gets these as props): the JPEG quality (0-1, as the browser takes it)
# of the frames it sends and of a snapshot's frame, and the requests it keeps in flight: one being made, one waiting
# on the server (which keeps one waiting frame per session, the newest).
CAMERA_SEND_JPEG_QUALITY = 0.8
CAMERA_SNAPSHOT_JPEG_QUALITY = 0.95
CAMERA_MAX_IN_FLIGHT = 2
CAMERA_MAX_ERRORS = 5  # errors in a row that stop the stream
CAMERA_ERROR_BACKOFF_MS = 300  # after an error the next frame waits this long: a failing server is not hammered
CAMERA_BUSY_BACKOFF_MS = (200, 400, 800, 1600)  # after 1, 2, 3, 4+ "server full" answers in a row
# A page whose waiting frame was replaced by its own newer one (the server was busy with other frames) sends the
# next after this long, not at once: a waiting frame stays fresh without a request per video frame.
CAMERA_REPLACE_INTERVAL_MS = 150
# Unchanged camera pictures (sprint_demo/steady.py): a camera frame whose picture is alike the picture of its stream's
# last made frame, every other input equal, is answered with that frame and no model work. Pictures are compared as
# grey thumbnails of SKIP_THUMBNAIL_SIDE x SKIP_THUMBNAIL_SIDE pixels; "alike": their largest pixel difference is at
# most SKIP_ALIKE_LEVELS grey levels (0-255). The figures that chose both (sensor-like noise against the smallest
# motion to catch) are in docs/PERFORMANCE.md. A stream makes a frame at least every SKIP_REFRESH_S seconds anyway
# (a change the thumbnail misses is shown within that time). SPRINT_CAMERA_SKIP=0 turns skipping off.
CAMERA_SKIP_UNCHANGED = _env_flag("SPRINT_CAMERA_SKIP", True)
SKIP_THUMBNAIL_SIDE = 32
SKIP_ALIKE_LEVELS = 4.0
SKIP_REFRESH_S = 3.0
STEADY_SESSIONS = 64  # streams whose last made frame (a picture each) the engine keeps, LRU; Stop drops one
# Steadiness (camera, image mode): the share of the previous output frame's latent blended into the start picture's
# latent before it is noised (0 = off). More holds the picture stiller and lags behind motion: the flicker and lag
# figures that chose the default are in docs/PERFORMANCE.md.
DEFAULT_STEADINESS = 0.0
MAX_STEADINESS = 0.9

# --- Image sizes ----------------------------------------------------------------------------------------
SIZE_MULTIPLE = 32  # DC-AE compresses 32x; the transformer patch size is 1
MIN_SIZE, MAX_SIZE = 256, 2048
DEFAULT_SIZE = 1024  # the Sprint models are 1024px-based
PREVIEW_SIZE = 512  # the CPU preview model's default frame
MAX_UPLOAD_PIXELS = 4096 * 4096  # decompression-bomb guard for uploaded / drawn images
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # refused before decoding
DEFAULT_BRUSH, MIN_BRUSH, MAX_BRUSH = 4, 1, 48  # canvas brush width in canvas pixels (canvas side = engine.size)
ERASER_BRUSH_FACTOR = 3  # the eraser is this many times wider than the brush
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16")  # playground aspect choices; the long side is engine.size
# The image-to-image frame sizes (width, height) a compiled engine warms up besides the canvas's square: the camera's
# frames at CAMERA_WARM_ASPECTS (long side CAMERA_CAPTURE_SIZE, the short side rounded as inputs.fit_size rounds it).
WARM_IMAGE_SIZES = tuple(
    (CAMERA_CAPTURE_SIZE, round(CAMERA_CAPTURE_SIZE * short / long / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    for long, short in CAMERA_WARM_ASPECTS
)
WARM_STRENGTH = 0.5  # the warm-up's image-to-image strength: any in (0, 1) runs the same kernels and shapes

# --- Frame timings --------------------------------------------------------------------------------------
# Stages of a frame, in order, as the engine times them and the UI and benchmark report them. A frame's
# timings_ms holds these and "total" (the frame's wall time, which also covers the gaps between stages).
FRAME_STAGES = ("text_encode", "input_prep", "control_encode", "image_encode", "denoise", "decode",
                "postprocess")

# --- Serving --------------------------------------------------------------------------------------------
HOST = os.getenv("SPRINT_HOST", "127.0.0.1")  # loopback unless told otherwise (Spaces set 0.0.0.0 below)
PORT = int(os.getenv("SPRINT_PORT", "7860"))
ON_SPACES = os.getenv("SPACE_ID") is not None  # Hugging Face Spaces set SPACE_ID
SPACES_HOST = "0.0.0.0"  # what app.py listens on when ON_SPACES: the Space's proxy must reach it
ZERO_GPU = os.getenv("SPACES_ZERO_GPU") is not None
ZERO_GPU_DURATION_S = 15  # spaces.GPU(duration=...) per frame on ZeroGPU: short durations get priority
# Frames of different users waiting at the same time with the same size, steps, strength and decoder run as one
# batch of at most this many (1: one frame at a time). ZeroGPU runs each call in a process of its own: nothing to
# batch.
MAX_BATCH_SIZE = int(os.getenv("SPRINT_MAX_BATCH_SIZE", "1" if ZERO_GPU else "8"))
# How long the oldest waiting frame may wait for others to join its batch (only when the engine is idle, since frames
# that arrive while a batch runs are already waiting when it ends, and never for a lone user: batcher.py).
# A few ms is a small part of a frame.
BATCH_WINDOW_MS = float(os.getenv("SPRINT_BATCH_WINDOW_MS", "10"))
BATCH_COMPANY_MEMORY_S = 1.0  # a batch waits for company only if a batch this many seconds back had any
# glibc malloc arenas for the server process (0: glibc's default of 8 per core). Each thread that allocates gets an
# arena that keeps its own high-water mark; 2 keeps the server's memory flat under load at the same frames/s
# (measured: docs/RELIABILITY.md).
MALLOC_ARENAS = int(os.getenv("SPRINT_MALLOC_ARENAS", "2"))
# Frames one Ray Serve replica accepts at once (sprint_demo.tools.serve_ray). More than 1 lets the next frame wait
# inside the replica (no round trip between frames) and lets its engine see several frames to batch together.
RAY_MAX_ONGOING = int(os.getenv("SPRINT_RAY_MAX_ONGOING", "2"))
QUEUE_SIZE = int(os.getenv("SPRINT_QUEUE_SIZE", "64"))  # waiting events before new ones are refused
PROMPT_CACHE_SIZE = 64  # prompt embeddings kept (LRU)
CONTROL_CACHE_SIZE = 16  # control latents kept (LRU), one per recent canvas content
IMAGE_CACHE_SIZE = 16  # image-to-image start latents kept (LRU), one per recent picture and lane
JPEG_QUALITY = 90  # output frames are sent as JPEG: small transfers
DRAFT_JPEG_QUALITY = 75  # draft frames (shown for a moment while the pen moves): 40% fewer bytes than at 90

# --- Live drafts (frames while the pen moves; sprint_demo/web/live.py, canvas_frames.js) ----------------
LIVE_DRAFTS = True  # the Sketch tab's "Live drafts" switch starts on
DRAFT_INTERVAL_MS = 75  # at most one draft per this much drawing time (and never two in flight per tab)
SETTLE_MS = 350  # a prompt or slider unchanged this long gets its final frame; drafts before that
DRAFT_DECODER = "tiny"  # drafts use the tiny autoencoder when the engine has one, else the full decoder
# Engine sessions (browser tabs, camera streams) whose frame may wait for the model thread at once outside Gradio's
# queue (sprint_demo/batcher.py); each waiting caller holds a server thread. One more is answered "busy".
MAX_WAITING_FRAMES = 16
FRAME_CACHE_PRUNE_S = (300, 900)  # gr.Blocks(delete_cache=...): every 5 min, drop served frames older than 15 min
SAFETY_CHECKER = os.getenv("SPRINT_SAFETY_CHECKER") or None  # "module:function" prompt hook, off by default

# --- Input checks (sprint_demo/inputs.py) ---------------------------------------------------------------
UPLOAD_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # decoders allowed for drawn / uploaded images (content-sniffed)
SHOWN_VALUE_CHARS = 60  # error messages quote the bad value, cut to this many characters
BLANK_INK_LEVEL = 160  # a grey level (0-255) below this counts as ink when deciding whether a canvas is blank
BLANK_MAX_INK_PIXELS = 4  # up to this many ink pixels are specks (JPEG noise, antialiasing), not a drawing

# --- Control maps (sprint_demo/conditioning.py; recipe of NVlabs tools/controlnet/utils.py) -------------
SKETCH_INK_LEVEL = 128  # sketch pixels darker than this grey level are strokes
CONTROL_BLUR_SIGMA = 3.0  # Gaussian blur of the thin line map before the threshold below (NVlabs: 3.0)
CONTROL_BLUR_THRESHOLD = 4  # blurred values above this become 255, the rest 0 (NVlabs: > 4)
# thin-line non-maximum suppression of soft HED edges (NVlabs); its blur also smooths a sketch's ink distance
HED_NMS_THRESHOLD, HED_NMS_SIGMA = 127, 3.0
HED_ANNOTATOR_FILE = "ControlNetHED.pth"  # file in HED_ANNOTATOR_ID (a hub repo or a local folder)
# auto: HED if its weights load, else the classical Canny stand-in (said in the log and the UI for real models) |
# hed: HED or no start (real models) | classical. HED detects at the frame's short side, as NVlabs runs it.
HED_DETECTOR = os.getenv("SPRINT_HED_DETECTOR", "auto")
HUB_PROBE_TIMEOUT_S = 2.0  # "auto" first checks the hub answers at all: offline it fails fast, not after retries
