"""The contract every backbone keeps, as a small base class.

A backbone maps an image batch ``x: Tensor[B, 3, H, W]`` to a list of NCHW feature maps
``[Tensor[B, channels[i], H / strides[i], W / strides[i]], ...]``, ordered as ``strides``.
Heads read ``channels`` and ``strides`` to size themselves; the optimiser reads
``no_weight_decay()`` to leave position embeddings and similar tables out of weight decay.

A backbone that wraps a timm / torchvision network keeps it in the attribute ``body``, so its
own state-dict keys are the library's keys prefixed with ``body.`` (plus any layers it adds,
such as ``fpn.``); ``densevit.backbones.weights`` relies on this to load either layout. A
backbone that is its own network (TransUNet's encoder) overrides ``no_weight_decay`` and
``convert_library_state_dict`` instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class: subclasses set ``body``, ``channels`` and ``strides`` and implement ``forward``.

    Class attributes:
        classifier_prefixes: key prefixes of the library's classifier (``head.``, ``fc.``);
            a classification checkpoint carries them, a backbone has no use for them.
        accepts_google_npz: whether ``convert_library_state_dict`` maps Google's ViT ``.npz``
            arrays (TransUNet's encoders do).
    """

    classifier_prefixes: tuple[str, ...] = ("head.",)
    accepts_google_npz: bool = False

    body: nn.Module
    channels: list[int]
    strides: list[int]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Names of parameters that should get no weight decay (timm convention), in our keys."""
        wanted = getattr(self.body, "no_weight_decay", None)
        if wanted is None:
            return set()
        body_names = {name for name, _ in self.body.named_parameters()}
        return {f"body.{name}" for name in wanted() if name in body_names}

    def in_library_layout(self, state: dict[str, torch.Tensor]) -> bool:
        """Whether ``state`` is in the library's key layout rather than ours: it shares no key with ours."""
        own = self.state_dict()
        return not any(k in own for k in state)

    def convert_library_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a checkpoint in the library's own key layout (timm / torchvision) onto our keys.

        Subclasses with a timm ``checkpoint_filter_fn`` run it first (it resamples position
        embeddings and relative-position tables to this model's sizes).
        """
        state = {k: v for k, v in state.items() if not k.startswith(self.classifier_prefixes)}
        filter_fn = self.library_filter_fn()
        if filter_fn is not None:
            state = filter_fn(state, self.body)
        return {f"body.{k}": v for k, v in state.items()}

    def load_weights_file(self, path: str | Path) -> None:
        """Load a weight file (or weights name) in our key layout or the library's (see :mod:`densevit.backbones.weights`)."""
        from densevit.backbones.weights import load_pretrained

        load_pretrained(self, path)

    def library_filter_fn(self) -> Callable[[dict, nn.Module], dict] | None:
        """timm's checkpoint filter for ``body``'s architecture, if it has one."""
        return None

    def check_input(self, x: torch.Tensor) -> None:
        """Fail clearly on inputs the strides do not divide (shape check only, no device sync)."""
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects images [B, C, H, W], got shape {tuple(x.shape)}")
        stride = max(self.strides)
        height, width = x.shape[-2:]
        if height % stride or width % stride:
            raise ValueError(
                f"{type(self).__name__} needs H and W divisible by {stride}, got {height}x{width}; "
                "pad the batch to a multiple of the largest stride"
            )
