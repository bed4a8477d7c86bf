"""Prompt encoding with the instruction encoded once: ``PrefixCachedPromptEncoder``.

diffusers' ``SanaSprintPipeline.encode_prompt`` with a ``complex_human_instruction`` lower-cases and strips the
prompt, tokenises instruction + prompt as one string, pads it on the right to ``instruction tokens +
max_sequence_length - 2`` tokens, runs Gemma-2 over all of them with the attention mask and keeps token 0 and the
last ``max_sequence_length - 1`` positions. The instruction is the same for every prompt and Gemma-2 is causal: the
hidden states, keys and values of its tokens do not depend on what follows them. This encoder runs the instruction's
tokens once, keeps their hidden states and key/value cache (transformers' ``DynamicCache``), and for each prompt
runs only the prompt's own positions after them, attending to the cached keys: the same arithmetic in another
order, so equal to the full encode within float rounding, not bit for bit (bound and measurements:
tests/test_prompt_encoder.py). The padding after the prompt (diffusers pads every prompt to the whole window) is
not run: the mask hides it from every attention that reads the embeddings (a frame is bit for bit the same whatever
the padding's embeddings hold), so they are zeros here. A prompt of a few words then costs a few
positions of Gemma-2 instead of about 500 (docs/PERFORMANCE.md, "Text encode").

The cached prefix is the instruction's tokens but the last: the instruction ends in a space, which a SentencePiece
tokenizer merges with the prompt's first word, so only the tokens before it are the same in every prompt's
tokenisation. Each prompt's token ids are checked against the prefix; a prompt whose tokens differ there, a run longer
than Gemma-2's sliding window, or an encoder without an instruction runs the full encode instead.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Prompt encoding's defaults: diffusers' SanaSprintPipeline and SanaSprintImg2ImgPipeline, written once here.
MAX_SEQUENCE_LENGTH = 300  # prompt tokens the text encoder keeps
# The "complex human instruction" SANA-Sprint was distilled with: prepended to every prompt before Gemma-2 encodes it
# (the lines joined with "\n"). This is diffusers' default of SanaSprintPipeline.__call__; NVlabs' training config
# (SanaSprint_600M_1024px_allqknorm_bf16_scm_ladd.yaml, text_encoder.chi_prompt) has the same lines except that it
# quotes "Enhanced prompt" with double quotes where diffusers has single ones (tests/test_prompt_encoder.py).
COMPLEX_HUMAN_INSTRUCTION = (
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for "
    "image generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial "
    "relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping "
    "peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street "
    "lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass "
    "skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional "
    "commentary or evaluations:",
    "User Prompt: ",
)


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt's embeddings as ``encode_prompt`` returns them, and its tokens as the encoder saw them."""

    embeds: torch.Tensor  # (1, max_sequence_length, D), the text encoder's dtype
    mask: torch.Tensor  # (1, max_sequence_length)
    tokens: int  # the prompt's tokens (lower-cased and stripped, after the instruction's), uncut
    kept: int  # of those, the ones inside the window the embeddings keep

    @property
    def dropped(self) -> int:
        """Tokens at the prompt's end that fell outside the window: the model never sees them."""
        return self.tokens - self.kept


class PrefixCachedPromptEncoder:
    """``encode_prompt(prompt, complex_human_instruction=instruction, max_sequence_length=...)`` for one prompt at a
    time, with the instruction's tokens encoded once (module docstring). ``instruction`` None or empty: the prompt
    alone, every call a full encode. The prefix is encoded on first use and again when the text encoder's device or
    dtype changes; replaced weights (a LoRA, say) need a new encoder."""

    def __init__(self, tokenizer, text_encoder, instruction: Sequence[str] | None = COMPLEX_HUMAN_INSTRUCTION,
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.instruction = "\n".join(instruction) if instruction else ""
        self.max_sequence_length = max_sequence_length
        # the token budget, counted as diffusers counts it (the instruction's tokens with BOS)
        self._instruction_ids = tokenizer.encode(self.instruction)
        if self.instruction:
            self.length = len(self._instruction_ids) + max_sequence_length - 2
            self.prefix_ids = self._instruction_ids[:-1]
        else:
            self.length, self.prefix_ids = max_sequence_length, []
        window = getattr(text_encoder.config, "sliding_window", None)
        self.caches = bool(self.prefix_ids) and (window is None or self.length <= window)
        self._prefix: tuple[tuple, torch.Tensor, object] | None = None  # ((device, dtype), hidden states, cache)
        self.prefix_runs = 0  # prompts encoded from the cached prefix (the others ran the full encode)

    @torch.no_grad()
    def __call__(self, prompt: str) -> EncodedPrompt:
        text = self.instruction + prompt.lower().strip()  # diffusers' _text_preprocessing without clean_caption
        inputs = self.tokenizer(text, padding="max_length", max_length=self.length, truncation=True,
                                add_special_tokens=True, return_tensors="pt", padding_side="right")
        device = self.text_encoder.device
        ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
        hidden = self._encode(ids, mask).to(dtype=self.text_encoder.dtype)
        select = [0, *range(-self.max_sequence_length + 1, 0)]  # token 0 and the last positions, as diffusers
        return EncodedPrompt(hidden[:, select], mask[:, select], *self._count(text))

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(1, length) ids and mask -> the text encoder's last hidden states (1, length, D)."""
        start = len(self.prefix_ids)
        if not self.caches or ids[0, :start].tolist() != self.prefix_ids:
            return self.text_encoder(ids, attention_mask=mask)[0]
        prefix_hidden, cache = self._prefix_state()
        end = int(mask[0].sum())  # right padding: positions from here on are padding
        positions = torch.arange(start, end, device=ids.device).unsqueeze(0)
        prompt = self.text_encoder(ids[:, start:end], attention_mask=mask[:, :end], position_ids=positions,
                                   cache=cache, use_cache=True)[0]
        # Padding is masked out of every cross-attention that reads these embeddings (diffusers' Sana transformer
        # and ControlNet turn the mask into a -10000 bias: the padded keys get a weight of exactly 0), so its
        # hidden states are never read: zeros here, not Gemma's ~300 positions of arithmetic per prompt.
        padding = prompt.new_zeros(1, self.length - end, prompt.shape[-1])
        self.prefix_runs += 1
        return torch.cat([prefix_hidden, prompt, padding], dim=1)

    def _prefix_state(self) -> tuple[torch.Tensor, object]:
        """The prefix's hidden states and a copy of its key/value cache (the forward pass appends to the one it is
        handed)."""
        key = (self.text_encoder.device, self.text_encoder.dtype)
        if self._prefix is None or self._prefix[0] != key:
            ids = torch.tensor([self.prefix_ids], device=key[0])
            output = self.text_encoder(ids, attention_mask=torch.ones_like(ids), use_cache=True)
            self._prefix = (key, output.last_hidden_state, output.cache)
        return self._prefix[1], copy.deepcopy(self._prefix[2])

    def _count(self, text: str) -> tuple[int, int]:
        """(the prompt's tokens, those the embeddings keep). The prompt's tokens start where the tokenisation of
        instruction + prompt leaves the instruction's own (one token early where the two merge); the embeddings
        keep positions from ``length - max_sequence_length + 1`` on, and the tokenizer cuts at ``length``."""
        ids = self.tokenizer(text, add_special_tokens=True).input_ids
        start = next((i for i, (a, b) in enumerate(zip(ids, self._instruction_ids)) if a != b),
                     min(len(ids), len(self._instruction_ids)))
        window_start = self.length - self.max_sequence_length + 1
        kept = max(0, min(len(ids), self.length) - max(start, window_start))
        return len(ids) - start, kept


__all__ = ["EncodedPrompt", "PrefixCachedPromptEncoder"]
