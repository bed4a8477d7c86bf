"""The instruction SANA-Sprint was trained with, and ``PrefixCachedPromptEncoder``: prompts encoded with the
instruction's tokens encoded once equal diffusers' full ``encode_prompt`` within a measured bound, and the tokens
the encoder reports are the ones its embeddings keep.

The bound. The prefix-cached encode runs the same arithmetic as the full one in another order (the instruction's
rows in one matrix product, the prompt's in another), so float32 results may differ in the last bits. Measured
(max |cached - full| over the embeddings, whose values spread about 1 after Gemma-2's final norm): 0 on the preview
model (1 layer, 32 wide) for every prompt here; on Gemma-2-2B's shapes with random weights (2,304 wide, 8 heads,
256-dim heads) 0 with 1 layer, 1.9e-6 with 2 layers (the slow test here) and 4.7e-6 with all 26 layers
(``python -m sprint_demo.tools.bench --mode text``, docs/PERFORMANCE.md). The bound, ``support.PREFIX_CACHE_MAX_ABS``,
is 1e-4, 21x the largest; one changed character of the prompt moves the embeddings by 0.30 or more on the preview,
3.9 or more on Gemma-2-2B's shapes, and the tests require more than 1000x the bound.
"""

from __future__ import annotations

import inspect

import pytest
import support
import torch
from diffusers import SanaSprintImg2ImgPipeline, SanaSprintPipeline
from transformers import Gemma2Model, GemmaTokenizer

from sprint_demo.models.loading import build_byte_tokenizer, gemma_config
from sprint_demo.models.pipeline import SanaSprintControlNetImg2ImgPipeline, SanaSprintControlNetPipeline
from sprint_demo.models.prompt_encoder import (
    COMPLEX_HUMAN_INSTRUCTION,
    MAX_SEQUENCE_LENGTH,
    PrefixCachedPromptEncoder,
)
from sprint_demo.tools.text_encode_bench import build_text_encoder, word_tokenizer

PREFIX_CACHE_MAX_ABS = support.PREFIX_CACHE_MAX_ABS
PROMPTS = ["a red house by a lake", "  A Red HOUSE by a LAKE  ", "", "üñíçødé ☕ 🚀", "a cat\nin a hat"]


@torch.no_grad()
def full_encode(tokenizer, text_encoder, prompt: str, instruction=COMPLEX_HUMAN_INSTRUCTION):
    """diffusers' own encode_prompt (SanaSprintPipeline's) on these two components."""
    pipe = SanaSprintPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=None, transformer=None,
                              scheduler=None)
    return pipe.encode_prompt(prompt, device=text_encoder.device, complex_human_instruction=instruction)


def default_of(pipeline: type, name: str = "complex_human_instruction"):
    return inspect.signature(pipeline.__call__).parameters[name].default


# --- The instruction --------------------------------------------------------------------------------------

def test_the_instruction_is_diffusers_default_in_both_pipelines_and_ours():
    assert list(COMPLEX_HUMAN_INSTRUCTION) == default_of(SanaSprintPipeline) == default_of(SanaSprintImg2ImgPipeline)
    assert default_of(SanaSprintControlNetPipeline) is COMPLEX_HUMAN_INSTRUCTION
    assert default_of(SanaSprintControlNetImg2ImgPipeline) is COMPLEX_HUMAN_INSTRUCTION
    assert default_of(SanaSprintControlNetPipeline, "max_sequence_length") == MAX_SEQUENCE_LENGTH == 300


def test_the_preview_text_encoder_has_positions_for_the_instruction_and_the_whole_window(preview):
    """With the byte tokenizer the instruction is 1,376 tokens; with the 298 of the prompt, 1,674 positions."""
    pipe = preview.pipe
    encoder = pipe.prompt_encoder
    assert len(pipe.tokenizer.encode("\n".join(COMPLEX_HUMAN_INSTRUCTION))) + MAX_SEQUENCE_LENGTH - 2 == encoder.length
    assert encoder.length <= pipe.text_encoder.config.max_position_embeddings
    assert gemma_config("preview", 300).max_position_embeddings == pipe.text_encoder.config.max_position_embeddings


# --- Prefix-cached against the full encode --------------------------------------------------------------------

def assert_equal_to_the_full_encode(encoder: PrefixCachedPromptEncoder, prompts: list[str]) -> float:
    """Every prompt's cached encode against diffusers' full one: the mask exactly, the embeddings the mask keeps
    within the bound, the padding's zeros (never run: the mask hides it from every attention that reads it); each
    prompt must have run from the cached prefix. Returns the largest difference."""
    runs, worst = encoder.prefix_runs, 0.0
    for prompt in prompts:
        encoded = encoder(prompt)
        embeds, mask = full_encode(encoder.tokenizer, encoder.text_encoder, prompt)
        width = encoder.text_encoder.config.hidden_size
        assert encoded.embeds.shape == embeds.shape == (1, MAX_SEQUENCE_LENGTH, width)
        assert encoded.embeds.dtype == embeds.dtype and torch.equal(encoded.mask, mask)
        kept = mask[0].bool()
        assert not encoded.embeds[0, ~kept].any()
        worst = max(worst, support.max_abs_difference(encoded.embeds[0, kept], embeds[0, kept]))
    assert encoder.prefix_runs == runs + len(prompts)
    assert worst <= PREFIX_CACHE_MAX_ABS, f"{worst:.2e} apart: beyond the bound {PREFIX_CACHE_MAX_ABS:.0e}"
    return worst


def assert_one_character_exceeds_the_bound(encoder: PrefixCachedPromptEncoder) -> None:
    for before, after in [("a red house by a lake", "a red horse by a lake"), ("a cat", "a car")]:
        difference = support.max_abs_difference(encoder(before).embeds, encoder(after).embeds)
        assert difference > 1000 * PREFIX_CACHE_MAX_ABS, f"{before!r} -> {after!r}: only {difference:.2e} apart"


def test_the_preview_encodes_with_the_prefix_cache_within_the_bound(preview):
    encoder = PrefixCachedPromptEncoder(preview.pipe.tokenizer, preview.pipe.text_encoder)
    assert encoder.caches and len(encoder.prefix_ids) == encoder.length - MAX_SEQUENCE_LENGTH + 1
    assert_equal_to_the_full_encode(encoder, [*PROMPTS, "word " * 400])
    assert_one_character_exceeds_the_bound(encoder)


def test_the_padding_embeddings_are_never_read(preview):
    """The prefix-cached encode leaves the padding's embeddings zero (it does not run those positions): nothing
    reads them. Frames made from diffusers' full encode and from the same encode with its padding zeroed are bit
    for bit the same, with and without control (the mask turns padding into a -10000 attention bias: weight 0)."""
    pipe = preview.pipe
    for prompt in ["a red house by a lake", ""]:
        embeds, mask = full_encode(pipe.tokenizer, pipe.text_encoder, prompt)
        zeroed = embeds * mask[..., None]
        assert not torch.equal(zeroed, embeds)
        for control in (None, torch.full((1, 3, 256, 256), -1.0)):
            frames = [pipe(prompt_embeds=e, prompt_attention_mask=mask, height=256, width=256, output_type="pt",
                           generator=torch.Generator().manual_seed(5), control_image=control,
                           use_resolution_binning=False).images for e in (zeroed, embeds)]
            assert torch.equal(*frames)


@pytest.mark.slow
def test_a_gemma_2_2b_shaped_encoder_with_the_prefix_cache_is_within_the_bound():
    """Gemma-2-2B's widths, its first two layers (one sliding-window, one global attention layer: both kinds of
    cache layer), the word tokenizer of the text-encode benchmark (the instruction in about as many tokens as
    Gemma's own tokenizer gives it). Measured: 1.9e-6 apart here; one changed character 3.9 or more."""
    tokenizer = word_tokenizer([*COMPLEX_HUMAN_INSTRUCTION, *PROMPTS, "a red horse by a lake", "a car"])
    text_encoder = build_text_encoder(tokenizer, layers=2)
    assert text_encoder.config.layer_types == ["sliding_attention", "full_attention"]
    encoder = PrefixCachedPromptEncoder(tokenizer, text_encoder)
    assert encoder.length <= text_encoder.config.sliding_window  # the window reaches no cached position
    assert_equal_to_the_full_encode(encoder, PROMPTS[:2])
    assert_one_character_exceeds_the_bound(encoder)


def merging_tokenizer() -> GemmaTokenizer:
    """The byte tokenizer plus one SentencePiece merge, "▁" + "a": the instruction's last token, its trailing
    space, becomes part of the prompt's first token "▁a", as Gemma's tokenizer merges a space into the next word."""
    vocab = dict(build_byte_tokenizer().get_vocab())
    for piece in ("\u2581", "a", "\u2581a"):
        vocab.setdefault(piece, len(vocab))
    return GemmaTokenizer(vocab=vocab, merges=[("\u2581", "a")], add_bos_token=True, padding_side="right")


@pytest.fixture(scope="module")
def merging_encoder() -> PrefixCachedPromptEncoder:
    tokenizer = merging_tokenizer()
    torch.manual_seed(1)
    return PrefixCachedPromptEncoder(tokenizer, Gemma2Model(gemma_config("preview", len(tokenizer))).eval())


def test_a_token_merged_across_the_instructions_end_is_not_cached(merging_encoder):
    tokenizer, instruction = merging_encoder.tokenizer, merging_encoder.instruction
    alone = tokenizer.encode(instruction)
    joined = tokenizer.encode(instruction + "a cat")
    assert joined[: len(alone) - 1] == alone[:-1] and joined[len(alone) - 1] != alone[-1]  # "▁" became "▁a"
    assert merging_encoder.prefix_ids == alone[:-1]
    assert_equal_to_the_full_encode(merging_encoder, ["a cat", "the cat", "an apple"])
    encoded = merging_encoder("a cat")
    assert (encoded.tokens, encoded.kept) == (len(joined) - len(alone) + 1, len(joined) - len(alone) + 1)


def test_a_prompt_that_changes_the_cached_tokens_runs_the_full_encode(merging_encoder, monkeypatch):
    """A prefix the prompt's tokenisation does not reproduce (here: a cached prefix one token longer, through
    the merged "▁a") is not used; that prompt gets the full encode, bit for bit."""
    alone = merging_encoder.tokenizer.encode(merging_encoder.instruction)
    monkeypatch.setattr(merging_encoder, "prefix_ids", alone)
    monkeypatch.setattr(merging_encoder, "_prefix", None)
    runs = merging_encoder.prefix_runs
    embeds, mask = full_encode(merging_encoder.tokenizer, merging_encoder.text_encoder, "a cat")
    assert torch.equal(merging_encoder("a cat").embeds, embeds)
    assert merging_encoder.prefix_runs == runs
    merging_encoder("the cat")  # no merge at the boundary: the longer prefix holds and is used
    assert merging_encoder.prefix_runs == runs + 1


def test_without_an_instruction_every_prompt_is_the_full_encode(preview):
    pipe = preview.pipe
    encoder = PrefixCachedPromptEncoder(pipe.tokenizer, pipe.text_encoder, instruction=None)
    assert not encoder.caches and encoder.length == MAX_SEQUENCE_LENGTH
    for prompt in PROMPTS:
        embeds, mask = full_encode(pipe.tokenizer, pipe.text_encoder, prompt, instruction=None)
        encoded = encoder(prompt)
        assert torch.equal(encoded.embeds, embeds) and torch.equal(encoded.mask, mask)
    assert encoder.prefix_runs == 0


def test_the_pipeline_rebuilds_its_encoder_when_the_text_encoder_is_replaced(preview):
    pipe = SanaSprintControlNetPipeline(**{name: getattr(preview.pipe, name) for name in
                                           ("tokenizer", "text_encoder", "vae", "transformer", "scheduler")})
    first = pipe.prompt_encoder
    assert pipe.prompt_encoder is first and first.text_encoder is preview.pipe.text_encoder
    pipe.register_modules(text_encoder=Gemma2Model(preview.pipe.text_encoder.config).eval())
    assert pipe.prompt_encoder is not first and pipe.prompt_encoder.text_encoder is pipe.text_encoder


# --- Tokens as the encoder sees them ---------------------------------------------------------------------------

def byte_prompt(tokens: int) -> str:
    """A prompt of exactly ``tokens`` byte-tokenizer tokens (letters are one byte each)."""
    return "x" * tokens


@pytest.mark.parametrize("instruction", [COMPLEX_HUMAN_INSTRUCTION, None], ids=["instruction", "none"])
def test_the_window_keeps_the_counted_tokens_and_drops_the_rest(preview, instruction):
    """With the instruction the embeddings keep 298 prompt tokens (token 0 and the last 299 positions: the
    instruction's last token and 298 of the prompt's), without it 299 (after BOS). A prompt one token longer is
    cut: the token past the window changes nothing, the last kept one changes the embeddings."""
    pipe = preview.pipe
    encoder = PrefixCachedPromptEncoder(pipe.tokenizer, pipe.text_encoder, instruction=instruction)
    window = MAX_SEQUENCE_LENGTH - (2 if instruction else 1)
    fits = encoder(byte_prompt(window))
    assert (fits.tokens, fits.kept, fits.dropped) == (window, window, 0)
    longer = encoder(byte_prompt(window + 1))
    assert (longer.tokens, longer.kept, longer.dropped) == (window + 1, window, 1)
    assert encoder(byte_prompt(window + 40)).dropped == 40
    assert torch.equal(encoder(byte_prompt(window) + "y").embeds, longer.embeds)  # past the window: unseen
    assert not torch.equal(encoder(byte_prompt(window - 1) + "y").embeds, fits.embeds)  # the last kept token
    upper = encoder("X" * (window + 1))  # counted as encoded: lower-cased
    assert (upper.tokens, upper.kept) == (window + 1, window) and torch.equal(upper.embeds, longer.embeds)
