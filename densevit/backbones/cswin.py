"""CSWin Transformer backbones (Dong et al. 2022, "Cross-Shaped Windows"): four stages at strides 4-32.

Each block splits its heads in two: half attend inside vertical stripes (full height,
``split_size`` wide), half inside horizontal stripes (``split_size`` high, full width), so a
token sees the cross through it; the last stage attends over the whole map. Positions enter
through LePE, a depthwise 3x3 conv on V added to the attention output (no position table,
so any input size works). A 7x7 stride-4 conv stem and 3x3 stride-2 conv merges (each followed
by a LayerNorm) make the pyramid; widths double at each merge.

Any H, W that 32 divides works, square or not. Where a stripe width does not divide the map
(split 7 on stage 3's H/16 x W/16 grid unless 112 divides the image), the map is zero-padded
evenly on both sides to whole stripes after the qkv projection and cropped after attention,
without a mask: exactly what the official detection and segmentation backbones compute, so
their fine-tuned weights keep their behaviour. Split sizes are never adapted; at 224x224 (and
any size 112 divides) nothing is padded and the result is the official classifier's.

Keys are the official release's (microsoft/CSWin-Transformer, ``models/cswin.py``), so its
ImageNet files (``{"state_dict_ema": ...}``) load directly: ``stage1_conv_embed.{0,2}``,
``stage{1-4}.{i}.{qkv,norm1,proj,norm2,mlp.fc1,mlp.fc2}``, ``stage{s}.{i}.attns.{j}.get_v``,
``merge{1-3}.{conv,norm}``, ``norm`` (the final LayerNorm) and, with ``num_classes``, ``head``.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn
from torchvision.ops.misc import Permute

from densevit.backbones.base import Backbone
from densevit.backbones.registry import BACKBONES


def _windows(x: Tensor, height: int, width: int) -> Tensor:
    """[B, C, H, W] -> [B * (H / height) * (W / width), C, height, width], windows row by row."""
    batch, channels, rows, cols = x.shape
    x = x.view(batch, channels, rows // height, height, cols // width, width)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(-1, channels, height, width)


def _unwindows(windows: Tensor, batch: int, rows: int, cols: int) -> Tensor:
    """Inverse of :func:`_windows`: [B * n, C, h, w] -> [B, C, rows, cols]."""
    _, channels, height, width = windows.shape
    x = windows.view(batch, rows // height, cols // width, channels, height, width)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, rows, cols)


class StripeAttention(nn.Module):
    """Multi-head self-attention inside stripes (or the whole map) plus LePE (``get_v``).

    forward(q, k, v: [B, C, H, W]) -> [B, C, H, W]. ``orientation`` "vertical" attends in
    windows of H x split_size, "horizontal" in split_size x W, "full" over H x W.

    With ``keep_weights`` set (off by default), each call also stores ``weights`` [B*windows,
    heads, n, n] (n = window area; windows row by row on the padded map, tokens row by row in a
    window): softmax(q k^T / sqrt(d)) from the same q and k that SDPA takes, so a query's row
    includes the zero padding tokens it attends to; and ``weights_layout`` ((H, W), (window h,
    w), (top, left) padding) to map windows back. The output still comes from SDPA, unchanged.
    """

    keep_weights: bool = False
    weights: Tensor | None = None
    weights_layout: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None

    def __init__(self, dim: int, num_heads: int, split_size: int, orientation: str) -> None:
        super().__init__()
        if orientation not in ("vertical", "horizontal", "full"):
            raise ValueError(f"orientation must be vertical, horizontal or full, got {orientation!r}")
        self.num_heads = num_heads
        self.split_size = split_size
        self.orientation = orientation
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def window(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) of one attention window on an H x W map."""
        if self.orientation == "vertical":
            return height, self.split_size
        if self.orientation == "horizontal":
            return self.split_size, width
        return height, width

    def _heads(self, x: Tensor) -> Tensor:
        """[n, C, h, w] -> [n, heads, h*w, C / heads] (channel c = head * head_dim + d, as the official code)."""
        n, channels, height, width = x.shape
        return x.reshape(n, self.num_heads, channels // self.num_heads, height * width).transpose(-1, -2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        batch, channels, height, width = q.shape
        win_h, win_w = self.window(height, width)
        pad_h, pad_w = -height % win_h, -width % win_w
        top, left = pad_h // 2, pad_w // 2
        if pad_h or pad_w:
            q, k, v = (F.pad(t, (left, pad_w - left, top, pad_h - top)) for t in (q, k, v))
        q, k, v = (_windows(t, win_h, win_w) for t in (q, k, v))
        # LePE runs per window: V's conv sees zeros beyond a stripe's edge, as in the official code
        lepe = self._heads(self.get_v(v))
        q, k = self._heads(q), self._heads(k)
        if self.keep_weights:
            self.weights = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1).detach()
            self.weights_layout = ((height, width), (win_h, win_w), (top, left))
        out = F.scaled_dot_product_attention(q, k, self._heads(v)) + lepe
        out = out.transpose(-1, -2).reshape(-1, channels, win_h, win_w)
        out = _unwindows(out, batch, height + pad_h, width + pad_w)
        return out[:, :, top : top + height, left : left + width]


class CSWinBlock(nn.Module):
    """Pre-norm block: cross-shaped (or full) attention, then a 4x MLP; x: [B, H, W, C] -> same.

    ``attns`` holds two half-width branches (vertical, horizontal stripes) or, with ``full``,
    one branch over the whole map with all heads.
    """

    def __init__(self, dim: int, num_heads: int, split_size: int, full: bool = False, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        # the official order of children, so that state_dict() lists keys as the official files do
        self.qkv = nn.Linear(dim, dim * 3)
        self.norm1 = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        if full:
            branches = [StripeAttention(dim, num_heads, split_size, "full")]
        else:
            branches = [StripeAttention(dim // 2, num_heads // 2, split_size, o) for o in ("vertical", "horizontal")]
        self.attns = nn.ModuleList(branches)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        # qkv channels are [q | k | v]; each branch takes its own contiguous half of q, k and v
        q, k, v = self.qkv(self.norm1(x)).permute(0, 3, 1, 2).chunk(3, dim=1)
        parts = zip(*(t.chunk(len(self.attns), dim=1) for t in (q, k, v)))
        attended = torch.cat([attn(*qkv) for attn, qkv in zip(self.attns, parts)], dim=1)
        x = x + self.drop_path(self.proj(attended.permute(0, 2, 3, 1)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MergeBlock(nn.Module):
    """3x3 stride-2 conv then LayerNorm: [B, H, W, C] -> [B, H/2, W/2, C_out]."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class CSWinBackbone(Backbone):
    """CSWin Transformer returning chosen stages (see the module docstring).

    forward(x: [B, 3, H, W]) -> [B, C_i, H/s_i, W/s_i] for stage i in ``out_indices`` (default
    all: C = (1, 2, 4, 8) x ``embed_dim``, s = 4, 8, 16, 32). With ``norm`` the last stage
    passes through the final LayerNorm, the one the ImageNet weights provide.

    Args:
        embed_dim: width of stage 1.
        depths: blocks per stage.
        num_heads: heads per stage (split in two halves in stages 1-3).
        split_sizes: stripe width per stage (the last stage attends over the whole map).
        out_indices: increasing stage indices in 0..3.
        norm: apply the final LayerNorm to stage 4's map.
        drop_path_rate: stochastic depth, rising linearly to this over all blocks.
        num_classes: > 0 adds the official ``head`` (a linear classifier on :meth:`pooled_features`).
    """

    classifier_prefixes = ("head.",)

    def __init__(
        self,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        split_sizes: Sequence[int] = (1, 2, 7, 7),
        out_indices: Sequence[int] = (0, 1, 2, 3),
        norm: bool = True,
        drop_path_rate: float = 0.0,
        num_classes: int = 0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.out_indices = list(out_indices)
        if not self.out_indices or self.out_indices != sorted(set(self.out_indices)) or not all(
            0 <= i < 4 for i in self.out_indices
        ):
            raise ValueError(f"out_indices must be increasing stage indices in 0..3, got {list(out_indices)}")
        widths = [embed_dim * 2**i for i in range(4)]
        # padding 2 (not 3): the official stem; H/4 x W/4 for any H, W divisible by 4
        self.stage1_conv_embed = nn.Sequential(
            nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=2), Permute([0, 2, 3, 1]), nn.LayerNorm(embed_dim)
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        for i, (width, depth, heads, split) in enumerate(zip(widths, depths, num_heads, split_sizes)):
            if i > 0:
                setattr(self, f"merge{i}", MergeBlock(widths[i - 1], width))
            first = sum(depths[:i])
            blocks = [CSWinBlock(width, heads, split, full=i == 3, mlp_ratio=mlp_ratio, drop_path=rates[first + j])
                      for j in range(depth)]
            setattr(self, f"stage{i + 1}", nn.ModuleList(blocks))
        self.norm = nn.LayerNorm(widths[-1])
        self.head = nn.Linear(widths[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply_norm = norm
        self.channels = [widths[i] for i in self.out_indices]
        self.strides = [4 * 2**i for i in self.out_indices]
        self.apply(_init_weights)

    def _stages(self, x: Tensor, last: int) -> Iterator[tuple[int, Tensor]]:
        """Yield (stage index, [B, h, w, C] map after that stage) for stages 0..last."""
        x = self.stage1_conv_embed(x)
        for i in range(last + 1):
            if i > 0:
                x = getattr(self, f"merge{i}")(x)
            for block in getattr(self, f"stage{i + 1}"):
                x = block(x)
            yield i, x

    def forward(self, x: Tensor) -> list[Tensor]:
        self.check_input(x)
        maps = []
        for i, y in self._stages(x, self.out_indices[-1]):
            if i in self.out_indices:
                y = self.norm(y) if i == 3 and self.apply_norm else y
                maps.append(y.permute(0, 3, 1, 2).contiguous())
        return maps

    def pooled_features(self, x: Tensor) -> Tensor:
        """x: [B, 3, H, W] -> [B, 8 * embed_dim]: stage 4 after the final norm, averaged over positions."""
        self.check_input(x)
        for _, y in self._stages(x, 3):
            pass
        return self.norm(y).mean(dim=(1, 2))

    def classify(self, x: Tensor) -> Tensor:
        """x: [B, 3, H, W] -> logits [B, num_classes] from ``head`` (the official classifier's output)."""
        return self.head(self.pooled_features(x))

    def no_weight_decay(self) -> set[str]:
        # no position tables; norms and biases are the optimiser's usual exceptions
        return set()

    def in_library_layout(self, state: dict[str, Tensor]) -> bool:
        # the official layout is ours: every file passes through convert_library_state_dict,
        # which only drops a classifier this backbone does not have
        return True

    def convert_library_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Official (= our) keys; ``head.*`` is dropped when this backbone has no head."""
        if isinstance(self.head, nn.Linear):
            return dict(state)
        return {k: v for k, v in state.items() if not k.startswith(self.classifier_prefixes)}


def _init_weights(module: nn.Module) -> None:
    """The official initialisation: linear weights truncated-normal (std 0.02), biases zero, norms 1/0."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# Drop-path rates: the official release's ImageNet training commands (README: 0.2 / 0.4 / 0.5).
@BACKBONES.register("cswin_tiny")
def cswin_tiny(drop_path_rate: float = 0.2, **kwargs) -> CSWinBackbone:
    """CSWin-T: width 64, depths 1-2-21-1, heads 2-4-8-16, stripes 1-2-7-7; 21.8M parameters (22.3M with head)."""
    return CSWinBackbone(64, (1, 2, 21, 1), (2, 4, 8, 16), drop_path_rate=drop_path_rate, **kwargs)


@BACKBONES.register("cswin_small")
def cswin_small(drop_path_rate: float = 0.4, **kwargs) -> CSWinBackbone:
    """CSWin-S: width 64, depths 2-4-32-2, heads 2-4-8-16, stripes 1-2-7-7; 34.1M parameters (34.6M with head)."""
    return CSWinBackbone(64, (2, 4, 32, 2), (2, 4, 8, 16), drop_path_rate=drop_path_rate, **kwargs)


@BACKBONES.register("cswin_base")
def cswin_base(drop_path_rate: float = 0.5, **kwargs) -> CSWinBackbone:
    """CSWin-B: width 96, depths 2-4-32-2, heads 4-8-16-32, stripes 1-2-7-7; 76.6M parameters (77.4M with head)."""
    return CSWinBackbone(96, (2, 4, 32, 2), (4, 8, 16, 32), drop_path_rate=drop_path_rate, **kwargs)
