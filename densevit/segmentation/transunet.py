"""TransUNet (Chen et al. 2021): an encoder, the cascaded upsampler and a 3x3 segmentation head.

The encoder is any module that follows the backbone contract (a list of NCHW maps with
``.channels`` and ``.strides``, strides increasing): the deepest map feeds the decoder and
the shallower ones are its skips, deepest first. Inputs whose sides are multiples of the
deepest stride work, square or not.
"""
from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from densevit.errors import UserInputError
from densevit.segmentation.decoder import CascadedUpsampler

# One output width per 2x step, by the number of steps (log2 of the deepest stride).
DEFAULT_DECODER_CHANNELS = {4: (256, 128, 64, 16), 5: (256, 128, 64, 32, 16)}


class TransUNet(nn.Module):
    """Encoder + cascaded upsampler + head; ``forward(x[B,C,H,W]) -> logits[B,num_classes,H,W]``.

    Args:
        encoder: backbone-contract module.
        num_classes: output classes (background included).
        decoder_channels: one entry per 2x step; defaults to (256, 128, 64, 16) for stride 16
            (the paper's) and (256, 128, 64, 32, 16) for stride 32.
        n_skip: number of encoder skips used (at most ``len(encoder.channels) - 1``).
        in_chans: channels the encoder expects; a 1-channel input is repeated to 3 when
            ``in_chans`` is 3 (grey CT slices with an RGB-pretrained encoder).
    """

    # Which parameters are the backbone (its own learning rate) and the classifier (resized
    # when pretrained weights were trained for another number of classes).
    backbone_prefixes = ("encoder.",)
    classifier_prefixes = ("head.",)

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        decoder_channels: Sequence[int] | None = None,
        n_skip: int | None = None,
        head_channels: int = 512,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        strides = list(encoder.strides)
        channels = list(encoder.channels)
        if strides != sorted(strides):
            raise ValueError(f"encoder strides must increase, got {strides}")
        steps = round(math.log2(strides[-1]))
        if decoder_channels is None:
            decoder_channels = DEFAULT_DECODER_CHANNELS.get(steps)
        if decoder_channels is None or len(decoder_channels) != steps:
            raise UserInputError(
                f"model.kwargs.decoder_channels: needs {steps} entries for a stride-{strides[-1]} encoder, "
                f"got {None if decoder_channels is None else list(decoder_channels)}"
            )
        skip_channels = channels[-2::-1]
        self.encoder = encoder
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.size_divisor = strides[-1]
        self.decoder = CascadedUpsampler(
            channels[-1],
            skip_channels,
            decoder_channels,
            len(skip_channels) if n_skip is None else n_skip,
            head_channels,
        )
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W], H and W multiples of ``size_divisor`` -> logits [B, num_classes, H, W]."""
        if x.shape[1] == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        *skips, deepest = self.encoder(x)
        return self.head(self.decoder(deepest, skips[::-1]))
