"""Taking attention weights out of a model while it runs, without changing what it computes.

Nothing here re-implements attention. Each capture switches a model's own attention layers to
the path that forms the weights explicitly, reads them there, and puts everything back:

* timm self-attention (ViT, the R50+ViT hybrids, TransUNet's encoder, TNT's outer transformer)
  and Swin's window attention compute ``softmax(q k^T)`` themselves when ``fused_attn`` is
  False and pass it through ``attn_drop`` (TNT always does): ``fused_attn`` is set False while
  capturing and a forward hook on ``attn_drop`` keeps its output. The unfused path gives the
  same outputs as SDPA up to float rounding.
* DETR's decoder (``densevit.detection.transformer.Attention``), CSWin's stripe attention
  (``densevit.backbones.cswin.StripeAttention``) and RT-DETR's deformable attention store
  their weights / sampling points when their ``keep_weights`` / ``keep_sampling`` flag is set;
  their outputs do not change at all.

Every capture is a context manager that restores the flags and removes its hooks on exit,
also when the forward pass fails. The maths on the captured matrices lives in
:mod:`densevit.inference.attention_maps`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from timm.layers import Attention as TimmAttention
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.tnt import Attention as TNTAttention
from torch import Tensor, nn

from densevit.backbones.cswin import CSWinBlock
from densevit.detection.deformable import MSDeformableAttention
from densevit.detection.transformer import Attention as DetrAttention


def token_attention_modules(model: nn.Module) -> list[nn.Module]:
    """The global self-attention layers of ``model``, in definition order (= call order for these
    encoders): timm ``Attention`` modules and TNT's outer (patch) attention; TNT's inner
    attention runs within each 16x16 patch and is left out."""
    return [
        module for name, module in model.named_modules()
        if isinstance(module, TimmAttention) or (isinstance(module, TNTAttention) and name.endswith("attn_out"))
    ]


def swin_blocks(model: nn.Module) -> list[list[SwinTransformerBlock]]:
    """Swin's blocks grouped by stage (``layers.S.blocks.B``); empty when ``model`` has none."""
    stages: dict[str, list[SwinTransformerBlock]] = {}
    for name, module in model.named_modules():
        if isinstance(module, SwinTransformerBlock):
            stages.setdefault(name.rsplit(".blocks.", 1)[0], []).append(module)
    return list(stages.values())


@contextlib.contextmanager
def _unfused(modules: Sequence[nn.Module]) -> Iterator[list[Tensor]]:
    """``fused_attn`` off on ``modules`` and their ``attn_drop`` outputs collected, in call order:
    one [B*windows, heads, N, N] tensor per call. Flags and hooks are restored on exit."""
    collected: list[Tensor] = []
    saved = [(module, module.fused_attn) for module in modules if hasattr(module, "fused_attn")]
    handles = []
    try:
        for module, _ in saved:
            module.fused_attn = False
        for module in modules:
            # TNT's attn_drop works in place: keep a copy, not the tensor it goes on to reuse
            handles.append(module.attn_drop.register_forward_hook(
                lambda _m, _inputs, output: collected.append(output.detach().clone())))
        yield collected
    finally:
        for handle in handles:
            handle.remove()
        for module, fused in saved:
            module.fused_attn = fused


@contextlib.contextmanager
def token_attention(model: nn.Module) -> Iterator[list[Tensor]]:
    """Collect the self-attention of every global attention layer that runs in ``model``:
    a list, filled during the forward pass, of [B, heads, N, N] tensors in call order."""
    modules = token_attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no ViT / TNT self-attention layers")
    with _unfused(modules) as collected:
        yield collected


@dataclass
class WindowCall:
    """One Swin block's window attention: ``weights`` [B*windows, heads, A, A] (A = window area)
    on the block's input grid ``size`` (H, W), with the block's ``window`` and ``shift``."""

    weights: Tensor
    size: tuple[int, int]
    window: tuple[int, int]
    shift: tuple[int, int]


@dataclass
class _SwinRecorder:
    calls: list[WindowCall] = field(default_factory=list)
    pending: list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = field(default_factory=list)


@contextlib.contextmanager
def window_attention(blocks: Sequence[SwinTransformerBlock]) -> Iterator[list[WindowCall]]:
    """Collect the window attention of ``blocks``: one :class:`WindowCall` per block call, in the
    yielded list when the block exits.

    A pre-hook on each block reads its input grid (NHWC) and its window and shift as used in
    that call; the weights come from ``attn_drop`` of the block's ``WindowAttention``.
    """
    recorder = _SwinRecorder()

    def before(block: SwinTransformerBlock, inputs: tuple[Tensor, ...]) -> None:
        height, width = inputs[0].shape[1:3]
        recorder.pending.append(((height, width), tuple(block.window_size), tuple(block.shift_size)))

    handles = [block.register_forward_pre_hook(before) for block in blocks]
    try:
        with _unfused([block.attn for block in blocks]) as weights:
            yield recorder.calls
            # pre-hooks and attn_drop hooks fire once per block call, in the same order
            recorder.calls.extend(WindowCall(w, *call) for w, call in zip(weights, recorder.pending))
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _flagged(modules: Sequence[nn.Module], flag: str, *stores: str) -> Iterator[None]:
    """``module.<flag> = True`` on ``modules`` while inside; afterwards the flag is as it was and
    the attributes ``stores`` are dropped, so the model keeps no tensors of the inspected image."""
    missing = object()
    saved = [module.__dict__.get(flag, missing) for module in modules]
    try:
        for module in modules:
            setattr(module, flag, True)
        yield
    finally:
        for module, value in zip(modules, saved):
            if value is missing:
                module.__dict__.pop(flag, None)  # back to the class default (off)
            else:
                setattr(module, flag, value)
            for store in stores:
                module.__dict__.pop(store, None)


def cswin_blocks(model: nn.Module) -> list[list[CSWinBlock]]:
    """CSWin's blocks grouped by stage (``stageS.B``); empty when ``model`` has none."""
    stages: dict[str, list[CSWinBlock]] = {}
    for name, module in model.named_modules():
        if isinstance(module, CSWinBlock):
            stages.setdefault(name.rsplit(".", 1)[0], []).append(module)
    return list(stages.values())


@dataclass
class StripeCall:
    """One CSWin branch's attention in one call: ``weights`` [B*windows, heads, n, n] over the
    windows of the zero-padded map (row by row; n = window area), on the block's input grid
    ``size`` (H, W), with the branch's ``orientation`` ("vertical", "horizontal" or "full"), its
    ``window`` (h, w) and the ``padding`` (top, left) added before the windows were cut."""

    orientation: str
    weights: Tensor
    size: tuple[int, int]
    window: tuple[int, int]
    padding: tuple[int, int]


@contextlib.contextmanager
def stripe_attention(block: CSWinBlock) -> Iterator[list[StripeCall]]:
    """Collect the attention of a CSWin ``block``: when the block exits the yielded list holds one
    :class:`StripeCall` per branch (vertical then horizontal stripes, or the full map), from the
    block's last call; it stays empty when the block did not run.

    The branches' ``keep_weights`` flag is set while inside (the output comes from SDPA as
    always), then restored, and the stored weights are dropped.
    """
    calls: list[StripeCall] = []
    branches = list(block.attns)
    with _flagged(branches, "keep_weights", "weights", "weights_layout"):
        yield calls
        calls.extend(StripeCall(branch.orientation, branch.weights, *branch.weights_layout)
                     for branch in branches if branch.weights is not None)


@contextlib.contextmanager
def detr_cross_attention(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """DETR's last decoder layer's cross-attention: when the block exits the yielded dict holds
    ``weights`` [B, heads, Q, h*w] (softmax over the memory tokens, row by row)."""
    attention: DetrAttention = model.transformer.decoder_layers[-1].cross_attn
    found: dict[str, Tensor] = {}
    with _flagged([attention], "keep_weights", "weights"):
        yield found
        if attention.weights is not None:
            found["weights"] = attention.weights


@contextlib.contextmanager
def rtdetr_sampling(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """RT-DETR's last decoder layer's deformable attention: when the block exits the yielded
    dict holds ``locations`` [B,Q,heads,P,2] ((x, y) in [0, 1] of the input) and ``weights``
    [B,Q,heads,P] (each head's weights sum to 1 over its P points of all levels)."""
    attention: MSDeformableAttention = model.decoder.layers[-1].cross_attn
    found: dict[str, Tensor] = {}
    with _flagged([attention], "keep_sampling", "sampling"):
        yield found
        if attention.sampling is not None:
            found["locations"], found["weights"] = attention.sampling
