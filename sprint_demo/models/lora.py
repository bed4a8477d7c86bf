"""LoRA adapters on the transformer, loaded with diffusers' own loader (``SanaLoraLoaderMixin.load_lora_weights``,
PEFT underneath) and switched per batch: ``LoraAdapters``.

Two ways to switch, by whether the transformer is compiled:

* eager: every adapter is loaded under its own name and a batch activates one (``set_adapters``) or none
  (``disable_lora``): the other adapters' weights stay where they are, a switch is a flag per layer;
* compiled (``hotswap=True``): ``torch.compile`` guards on which adapter is active, so a switch by name would
  recompile. Instead one adapter slot is loaded and each switch copies the next adapter's weights into it in place
  (diffusers' ``enable_lora_hotswap`` before the first load, then ``load_lora_weights(..., hotswap=True)``), which the
  compiled code reads without recompiling. The strength is folded into the slot's up-projections (the call's LoRA
  scale stays 1: a compiled block specialises on that value), and "no adapter" (and scale 0) is the slot holding
  zeros, which add exactly nothing. Under hotswap every adapter must target layers of the first one's (the
  slot's), or it is refused at load.

Eager, an adapter's strength is diffusers' LoRA scale, ``attention_kwargs={"scale": s}`` at call time
(``select``), so one adapter at several strengths needs no reload. A LoRA that does not fit the model (other
shapes, keys that name no layer of it, not a LoRA at all) is refused by name at load (``LoraRefused``) and leaves
the model as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

HOTSWAP_SLOT = "style"  # the one adapter name under hotswap


class LoraRefused(ValueError):
    """A LoRA that cannot be used with this model; the message names it and says why."""


def parse_lora(entry: str) -> tuple[str, str]:
    """``NAME=PATH_OR_HUB_ID`` -> (name, source); a ValueError naming the entry otherwise."""
    name, sep, source = entry.partition("=")
    name, source = name.strip(), source.strip()
    if not sep or not name or not source:
        raise ValueError(f"--lora takes NAME=PATH_OR_HUB_ID, got {entry!r}")
    return name, source


@dataclass
class LoraAdapters:
    """The adapters loaded into ``pipe``'s transformer and which one is active. ``hotswap``: one slot, weights
    copied in on a switch (for a compiled transformer; ``max_rank`` is the highest rank any adapter may have)."""

    pipe: object
    hotswap: bool = False
    max_rank: int = 128

    def __post_init__(self) -> None:
        self.names: list[str] = []
        self.active: str | None = None  # the adapter the transformer runs with (None: none)
        self._weights: dict[str, dict[str, torch.Tensor]] = {}  # hotswap: each adapter's state dict
        self._slot: tuple[str | None, float] | None = None  # hotswap: (adapter or None for zeros, strength) held

    def load(self, name: str, source: str | dict) -> None:
        """Loads ``source`` (a file, a folder, a hub id or a state dict) as adapter ``name``; ``LoraRefused`` naming
        it when it does not fit, the model left as it was."""
        if name in self.names:
            raise LoraRefused(f"LoRA {name!r}: a LoRA of that name is loaded already")
        try:
            state = self.pipe.lora_state_dict(source)
            state = state[0] if isinstance(state, tuple) else state
            if self.hotswap:
                self._load_hotswap(name, state)
            else:
                self._load_named(name, state)
        except LoraRefused:
            raise
        except Exception as error:  # noqa: BLE001 - any loader failure is this LoRA's, said with its name
            raise LoraRefused(f"LoRA {name!r} ({_show(source)}) does not fit this model: "
                              f"{type(error).__name__}: {' '.join(str(error).split())[:300]}") from error
        self.names.append(name)
        self.active = name  # a load leaves the new adapter active: back to none
        self.activate(None)

    def _load_named(self, name: str, state: dict) -> None:
        try:
            self.pipe.load_lora_weights(state, adapter_name=name)
        except Exception:
            self._forget(name)
            raise
        if name not in self.pipe.get_list_adapters().get("transformer", []):
            self._forget(name)
            raise LoraRefused(f"LoRA {name!r}: none of its keys names a layer of this model's transformer")

    def _load_hotswap(self, name: str, state: dict) -> None:
        if not self._weights:  # the first adapter makes the slot, at the highest rank any later one may have
            self.pipe.enable_lora_hotswap(target_rank=self.max_rank, check_compiled="warn")
            self._load_named(HOTSWAP_SLOT, state)
            self._weights[None] = {key: torch.zeros_like(value) for key, value in state.items()}
        else:  # the same load a switch makes: a LoRA that does not fit the slot is refused now, not at a switch
            self._slot = None  # unknown until this load ends: the next switch loads the slot whole again
            self.pipe.load_lora_weights(state, adapter_name=HOTSWAP_SLOT, hotswap=True)
        self._slot = (name, 1.0)
        self._weights[name] = state

    def _forget(self, name: str) -> None:
        if name in self.pipe.get_list_adapters().get("transformer", []):
            self.pipe.delete_adapters(name)

    def activate(self, name: str | None, scale: float = 1.0) -> None:
        """Makes ``name`` (one of ``names``) the adapter frames run with, or none; nothing to do when it is.
        ``scale``: under hotswap, the strength folded into the slot's up-projections (``select``)."""
        if name is not None and name not in self.names:
            raise KeyError(f"no LoRA named {name!r}; loaded: {', '.join(self.names) or 'none'}")
        if self.hotswap:
            slot = (None, 1.0) if name is None or scale == 0 else (name, float(scale))
            if self._weights and slot != self._slot:
                self.pipe.load_lora_weights(self._scaled(*slot), adapter_name=HOTSWAP_SLOT, hotswap=True)
                self._slot = slot
        elif name == self.active:
            return
        elif name is None:
            self.pipe.disable_lora()
        else:
            self.pipe.enable_lora()
            self.pipe.set_adapters(name)
        self.active = name

    def _scaled(self, name: str | None, scale: float) -> dict[str, torch.Tensor]:
        """Adapter ``name``'s state dict with its up-projections times ``scale`` (zeros for None)."""
        state = self._weights[name]
        if scale == 1.0:
            return state
        return {key: value * scale if "lora_B" in key else value for key, value in state.items()}

    def select(self, name: str | None, scale: float) -> dict | None:
        """Activates ``name`` at strength ``scale`` and returns what the forward passes take: diffusers' LoRA scale,
        or None (the call as without LoRA) when no adapter is active. Under hotswap the strength is folded into the
        slot's weights and the call's scale stays 1 (diffusers then scales nothing): a compiled block guards on
        the scale's value, so each new strength would compile again; and no adapter (or scale 0) is zeros in the
        slot, which add exactly nothing."""
        self.activate(name, scale)
        if self.hotswap:
            return {"scale": 1.0} if self._weights else None
        return None if name is None else {"scale": float(scale)}


def _show(source: object) -> str:
    return "a state dict" if isinstance(source, dict) else repr(str(source)[:120])


__all__ = ["HOTSWAP_SLOT", "LoraAdapters", "LoraRefused", "parse_lora"]
