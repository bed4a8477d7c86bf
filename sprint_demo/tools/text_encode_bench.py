"""Text encode cost at Gemma-2-2B's real sizes: a new prompt encoded with the trained instruction in full
(diffusers' ``encode_prompt``, what ``__call__`` runs), with the instruction's tokens cached
(``PrefixCachedPromptEncoder``, what the app's engine runs), and without the instruction, in the same run.

``python -m sprint_demo.tools.bench --mode text`` prints ``benchmark_text_encode``' table (docs/PERFORMANCE.md,
"Text encode"). The text encoder is Gemma-2-2B's decoder with random weights (``gemma_config("full")``); its
tokenizer cannot be downloaded here, so ``word_tokenizer`` stands in: one token per word, per run of punctuation and
per line break. Gemma's 256k-token vocabulary keeps most common English words whole and splits rarer ones
("windowsill", "overcomplicating") into a few pieces, so the instruction's 204 tokens here are a slight undercount
of its Gemma tokens. The full encodes run a window padded to a fixed length (instruction tokens + 298, or 300
without it), so their cost does not depend on the prompt; the prefix-cached encode runs the prompt's own tokens only
(and the instruction's last), so its cost grows with the prompt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
from diffusers import SanaSprintPipeline
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import Gemma2Model, PreTrainedTokenizerFast

from ..models.loading import PREVIEW_SEED, default_device, gemma_config, parse_dtype
from ..models.prompt_encoder import COMPLEX_HUMAN_INSTRUCTION, PrefixCachedPromptEncoder
from .autoencoder_bench import _device_label, _medians, _synchronize

BENCH_PROMPTS = ("a watercolor painting of a lighthouse on a cliff at sunset",)  # the frame benchmark's prompt
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")


def word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A Gemma-like tokenizer (BOS first, pads on the right) of one token per word, per run of punctuation and per
    line break, its vocabulary the words of ``texts`` in both cases (prompts are lower-cased before they are
    tokenised). Unknown words are ``<unk>``."""
    splitter = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]+|\n"), behavior="removed", invert=True)
    pieces = sorted({piece for text in texts for variant in (text, text.lower())
                     for piece, _ in splitter.pre_tokenize_str(variant)})
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, "\n", *pieces))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = splitter
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[
        ("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="right")


def build_text_encoder(tokenizer, layers: int | None = None, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32, seed: int = PREVIEW_SEED) -> Gemma2Model:
    """Gemma-2-2B's decoder with random weights (``layers``: fewer of its layers, for quick checks), its vocabulary
    cut to ``tokenizer``'s: the embedding table is a lookup, so its size costs memory, not time."""
    config = gemma_config("full", len(tokenizer))
    config.vocab_size = len(tokenizer)
    if layers is not None:
        config.num_hidden_layers = layers
        config.layer_types = config.layer_types[:layers]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            model = Gemma2Model(config).eval()
    finally:
        torch.random.set_rng_state(state)
    return model if dtype == torch.float32 else model.to(dtype)


@torch.no_grad()
def benchmark_text_encode(device: str | None = None, dtype: str | torch.dtype | None = None, repeat: int = 5,
                          layers: int | None = None) -> dict:
    """Median milliseconds of one new prompt's encode, three ways, interleaved in each of ``repeat`` rounds after
    an untimed one (each round a prompt not seen before): ``full`` (``encode_prompt`` with the instruction),
    ``prefix_cached`` (``PrefixCachedPromptEncoder``, the prompt's positions only; the prefix's one-off encode
    reported apart) and
    ``no_instruction`` (``encode_prompt`` without it). Also the token counts, the largest difference between the
    cached and the full embeddings, and on the CPU each call's CPU time (shared cores: wall time depends on others'
    load, CPU time much less)."""
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}")
    device = torch.device(device or default_device())
    dtype = parse_dtype(dtype, device.type)
    prompts = [f"{BENCH_PROMPTS[0]}, take {i}" for i in range(repeat + 1)]
    tokenizer = word_tokenizer([*COMPLEX_HUMAN_INSTRUCTION, *prompts])
    text_encoder = build_text_encoder(tokenizer, layers, device, dtype)
    full_pipe = SanaSprintPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=None, transformer=None,
                                   scheduler=None)
    cached = PrefixCachedPromptEncoder(tokenizer, text_encoder)
    began = time.perf_counter()
    cached._prefix_state()  # the instruction's one-off encode (the engine's warm-up pays it)
    _synchronize(device)
    prefix_ms = (time.perf_counter() - began) * 1000
    differences = []

    def calls(prompt: str) -> dict[str, Callable[[], torch.Tensor]]:
        def encode(instruction):
            return full_pipe.encode_prompt(prompt, device=device, complex_human_instruction=instruction)[0]

        return {"full": lambda: encode(COMPLEX_HUMAN_INSTRUCTION), "prefix_cached": lambda: cached(prompt),
                "no_instruction": lambda: encode(None)}

    wall: dict[str, list[float]] = {name: [] for name in calls("")}
    cpu: dict[str, list[float]] = {name: [] for name in calls("")}
    for i, prompt in enumerate(prompts):  # the first round warms kernels and allocator pools: not counted
        outputs = {}
        for name, call in calls(prompt).items():  # interleaved, so a busy spell on a shared machine hits all three
            _synchronize(device)
            began, began_cpu = time.perf_counter(), time.process_time()
            outputs[name] = call()
            _synchronize(device)
            if i:
                wall[name].append((time.perf_counter() - began) * 1000)
                cpu[name].append((time.process_time() - began_cpu) * 1000)
        encoded = outputs["prefix_cached"]  # compared where its mask keeps it: the padding is left zero, unread
        kept = encoded.mask[0].bool()
        differences.append(float((encoded.embeds[0, kept].double() - outputs["full"][0, kept].double()).abs().max()))
    config = text_encoder.config
    result = {
        "device": _device_label(device),
        "dtype": str(dtype).removeprefix("torch."),
        "repeat": repeat,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "instruction_tokens": len(tokenizer.encode("\n".join(COMPLEX_HUMAN_INSTRUCTION))),
        "prompt_tokens": len(tokenizer(prompts[0]).input_ids) - 1,
        "tokens_run": {"full": cached.length, "no_instruction": cached.max_sequence_length,
                       # the prompt's tokens and the instruction's last, which joins the prompt's first word
                       "prefix_cached": len(tokenizer.encode("\n".join(COMPLEX_HUMAN_INSTRUCTION) + prompts[0]))
                       - len(cached.prefix_ids)},
        "prefix_once_ms": round(prefix_ms, 1),
        "median_ms": _medians(wall),
        "max_abs_prefix_cached_vs_full": max(differences),
        "prefix_runs": cached.prefix_runs,
    }
    if device.type == "cpu":
        result["median_cpu_ms"] = _medians(cpu)
    return result


def format_text_encode(result: dict) -> str:
    """``benchmark_text_encode``' result as a small table, each way's time also as a ratio to the full encode."""
    title = (f"# text encode, Gemma-2-2B shapes ({result['layers']} layers) on {result['device']}, {result['dtype']}, "
             f"median of {result['repeat']}; instruction {result['instruction_tokens']} tokens, prompt "
             f"{result['prompt_tokens']}; the prefix's one-off encode {result['prefix_once_ms']:.0f} ms")
    ms, cpu_ms = result["median_ms"], result.get("median_cpu_ms")
    header = f"{'':>15} {'tokens run':>10} {'ms':>9} {'x full':>7}"
    header += f" {'CPU ms':>9} {'x full':>7}" if cpu_ms else ""
    lines = [title, header]
    for name in ("full", "prefix_cached", "no_instruction"):
        line = f"{name:>15} {result['tokens_run'][name]:>10} {ms[name]:>9.1f} {ms[name] / ms['full']:>7.2f}"
        if cpu_ms:
            line += f" {cpu_ms[name]:>9.1f} {cpu_ms[name] / cpu_ms['full']:>7.2f}"
        lines.append(line)
    lines.append(f"# largest |prefix_cached - full|: {result['max_abs_prefix_cached_vs_full']:.2e}")
    return "\n".join(lines)
