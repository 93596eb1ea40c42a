"""A compact, independent re-implementation of the official RT-DETRv2 model, as a test oracle.

The official model is ``RTDETR(PResNet, HybridEncoder, RTDETRTransformerv2)`` from
lyuwenyu/RT-DETR (``rtdetrv2_pytorch``, Apache-2.0). This file mirrors only what a converter must
agree with: the module layout, so that ``state_dict()`` has the official keys, order, shapes and
buffers, and the eval-mode arithmetic (``pred_logits`` [B, 300, num_classes], ``pred_boxes``
[B, 300, 4] as sigmoid cxcywh). Training (denoising groups, auxiliary outputs) and the official
weight initialisation are left out; tests load or randomise weights themselves.

Official quirks kept on purpose:
- every stage's first ResNet block projects its shortcut, even in stage 2 where ResNet-18/34 go
  64 -> 64 at stride 1 (``res_layers.0.blocks.0.short.conv``, a plain 1x1 ConvNorm); the other
  stages' first blocks (stride 2, variant d) use ``short.pool`` + ``short.conv.conv``;
- ResNet-50/101 replace the backbone's BatchNorms by FrozenBatchNorm2d (buffers, no
  ``num_batches_tracked``); ResNet-18/34 keep ``nn.BatchNorm2d``;
- the encoder's sine position embedding is laid out width-major (``meshgrid(w, h, 'ij')``) while
  the tokens are height-major: identical for square maps, "transposed" for non-square ones;
- the decoder zeroes invalid anchor positions (``valid_mask``) only for the query selection
  (``enc_output``/heads); the decoder layers attend to the unmasked memory;
- with ``eval_spatial_size`` the eval forward uses the precomputed ``anchors``/``valid_mask``
  (persistent, in released checkpoints) and the encoder's ``pos_embed2`` (never in a state_dict),
  so the input must then have exactly that size.
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

# depth -> blocks per stage, bottleneck, frozen norms (freeze_norm and freeze_at=0), encoder
# hidden width, CSP expansion, encoder FFN width, decoder layers (configs/rtdetrv2/*.yml).
SETTINGS = {
    18: ((2, 2, 2, 2), False, False, 256, 0.5, 1024, 3),
    34: ((3, 4, 6, 3), False, False, 256, 0.5, 1024, 4),
    50: ((3, 4, 6, 3), True, True, 256, 1.0, 1024, 6),
    101: ((3, 4, 23, 3), True, True, 384, 1.0, 2048, 6),
}
PARAM_COUNTS = {18: 20_184_464, 34: 31_441_668, 50: 42_891_372, 101: 76_556_268}  # 80 classes
STRIDES, NUM_QUERIES, NUM_POINTS = (8, 16, 32), 300, (4, 4, 4)


def _act(name):
    return {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, None: nn.Identity}[name]()


def _module(**children) -> nn.Module:
    """A bare container (the official TransformerEncoder/Decoder, Blocks) used only for its keys."""
    module = nn.Module()
    for name, child in children.items():
        setattr(module, name, child)
    return module


def _proj(cin, cout):
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(cin, cout, 1, bias=False), norm=nn.BatchNorm2d(cout)))


class FrozenBatchNorm2d(nn.Module):
    def __init__(self, n, eps=1e-5):
        super().__init__()
        self.eps = eps
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((n,), fill))

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


class ConvNorm(nn.Module):
    def __init__(self, cin, cout, k, stride=1, act=None, frozen=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)
        self.norm = FrozenBatchNorm2d(cout) if frozen else nn.BatchNorm2d(cout)
        self.act = _act(act)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


# ----------------------------------------------------------------------------------- backbone
class ResBlock(nn.Module):
    """PResNet BasicBlock (18/34) or BottleNeck (50/101), variant d, in the official key order."""

    def __init__(self, cin, width, stride, first, bottleneck, frozen):
        super().__init__()
        cout, self.bottleneck, self.project = width * (4 if bottleneck else 1), bottleneck, first
        if first:  # stride 2: avg-pool then 1x1; stage 2 (stride 1): a plain 1x1, even 64 -> 64
            short = (nn.Sequential(OrderedDict(pool=nn.AvgPool2d(2, 2, 0, ceil_mode=True),
                                               conv=ConvNorm(cin, cout, 1, frozen=frozen)))
                     if stride == 2 else ConvNorm(cin, cout, 1, stride, frozen=frozen))
        if first and not bottleneck:
            self.short = short  # BasicBlock registers its shortcut first
        if bottleneck:
            self.branch2a = ConvNorm(cin, width, 1, 1, "relu", frozen)
            self.branch2b = ConvNorm(width, width, 3, stride, "relu", frozen)
            self.branch2c = ConvNorm(width, cout, 1, 1, None, frozen)
        else:
            self.branch2a = ConvNorm(cin, width, 3, stride, "relu", frozen)
            self.branch2b = ConvNorm(width, width, 3, 1, None, frozen)
        if first and bottleneck:
            self.short = short

    def forward(self, x):
        out = self.branch2b(self.branch2a(x))
        if self.bottleneck:
            out = self.branch2c(out)
        return F.relu(out + (self.short(x) if self.project else x))


class PResNet(nn.Module):
    def __init__(self, blocks, bottleneck, frozen):
        super().__init__()
        self.conv1 = nn.Sequential(OrderedDict(
            (name, ConvNorm(cin, cout, 3, stride, "relu", frozen))
            for name, cin, cout, stride in (("conv1_1", 3, 32, 2), ("conv1_2", 32, 32, 1), ("conv1_3", 32, 64, 1))))
        self.res_layers, cin = nn.ModuleList(), 64
        for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            self.res_layers.append(_module(blocks=nn.ModuleList(
                ResBlock(cin if j == 0 else width * (4 if bottleneck else 1), width,
                         2 if j == 0 and stage > 0 else 1, j == 0, bottleneck, frozen)
                for j in range(count))))
            cin = width * (4 if bottleneck else 1)
        if frozen:  # the configs pair freeze_norm=True with freeze_at=0 (the stem is frozen)
            self.conv1.requires_grad_(False)

    def forward(self, x):
        x, outs = F.max_pool2d(self.conv1(x), 3, 2, 1), []
        for stage, layer in enumerate(self.res_layers):
            for block in layer.blocks:
                x = block(x)
            if stage > 0:
                outs.append(x)
        return outs


# ----------------------------------------------------------------------------------- encoder
def sincos_2d(w, h, dim, temperature=10000.0):
    """[1, w*h, dim]: width-major like the official ``build_2d_sincos_position_embedding``."""
    gw, gh = torch.meshgrid(torch.arange(int(w), dtype=torch.float32),
                            torch.arange(int(h), dtype=torch.float32), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    ow, oh = gw.flatten()[:, None] * omega[None], gh.flatten()[:, None] * omega[None]
    return torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], 1)[None]


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=0.0, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x, pos):
        q = x + pos
        x = self.norm1(x + self.self_attn(q, q, value=x, need_weights=False)[0])
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class RepVggBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = ConvNorm(c, c, 3), ConvNorm(c, c, 1)

    def forward(self, x):
        return F.silu(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    def __init__(self, cin, cout, expansion):
        super().__init__()
        hidden = int(cout * expansion)
        self.conv1, self.conv2 = ConvNorm(cin, hidden, 1, act="silu"), ConvNorm(cin, hidden, 1, act="silu")
        self.bottlenecks = nn.Sequential(*(RepVggBlock(hidden) for _ in range(3)))
        self.conv3 = ConvNorm(hidden, cout, 1, act="silu") if hidden != cout else nn.Identity()

    def forward(self, x):
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class HybridEncoder(nn.Module):
    def __init__(self, in_channels, hidden, expansion, ffn, eval_spatial_size=None):
        super().__init__()
        self.hidden, self.eval_spatial_size = hidden, eval_spatial_size
        self.input_proj = nn.ModuleList(_proj(c, hidden) for c in in_channels)  # 'v2': conv/norm names
        self.encoder = nn.ModuleList([_module(layers=nn.ModuleList([EncoderLayer(hidden, 8, ffn)]))])
        self.lateral_convs = nn.ModuleList(ConvNorm(hidden, hidden, 1, act="silu") for _ in range(2))
        self.fpn_blocks = nn.ModuleList(CSPRepLayer(2 * hidden, hidden, expansion) for _ in range(2))
        self.downsample_convs = nn.ModuleList(ConvNorm(hidden, hidden, 3, 2, act="silu") for _ in range(2))
        self.pan_blocks = nn.ModuleList(CSPRepLayer(2 * hidden, hidden, expansion) for _ in range(2))
        if eval_spatial_size:
            h, w = eval_spatial_size
            self.register_buffer("pos_embed2", sincos_2d(w // 32, h // 32, hidden), persistent=False)

    def forward(self, feats):
        p = [proj(f) for proj, f in zip(self.input_proj, feats)]
        b, _, h, w = p[2].shape
        if self.training or not self.eval_spatial_size:
            pos = sincos_2d(w, h, self.hidden).to(p[2].device)
        else:
            pos = self.pos_embed2
        x = self.encoder[0].layers[0](p[2].flatten(2).permute(0, 2, 1), pos)
        p[2] = x.permute(0, 2, 1).reshape(b, self.hidden, h, w)
        inner = [p[2]]  # top-down FPN
        for k in range(2):
            inner[0] = high = self.lateral_convs[k](inner[0])
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.fpn_blocks[k](torch.cat([up, p[1 - k]], 1)))
        outs = [inner[0]]  # bottom-up PAN
        for k in range(2):
            outs.append(self.pan_blocks[k](torch.cat([self.downsample_convs[k](outs[-1]), inner[k + 1]], 1)))
        return outs


# ----------------------------------------------------------------------------------- decoder
def inverse_sigmoid(x, eps=1e-5):
    x = x.clip(min=0.0, max=1.0)
    return torch.log(x.clip(min=eps) / (1 - x).clip(min=eps))


def make_anchors(shapes, grid_size=0.05, eps=1e-2, device=None):
    """Official ``_generate_anchors`` (float32): logit anchors, +inf where not ``valid_mask``."""
    anchors = []
    for lvl, (h, w) in enumerate(shapes):
        gy, gx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        xy = (torch.stack([gx, gy], -1)[None] + 0.5) / torch.tensor([w, h], dtype=torch.float32, device=device)
        anchors.append(torch.cat([xy, torch.ones_like(xy) * grid_size * 2.0 ** lvl], -1).reshape(1, h * w, 4))
    anchors = torch.cat(anchors, 1)
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    return torch.where(valid, torch.log(anchors / (1 - anchors)), torch.inf), valid


class MLP(nn.Module):
    def __init__(self, *dims):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MSDeformableAttention(nn.Module):
    """RT-DETRv2 deformable attention ('default' grid_sample method, box references, offset_scale 0.5)."""

    def __init__(self, d=256, heads=8, points=NUM_POINTS):
        super().__init__()
        self.heads, self.points = heads, list(points)
        scale = [1 / n for n in points for _ in range(n)]
        self.register_buffer("num_points_scale", torch.tensor(scale, dtype=torch.float32))  # persistent
        total = heads * sum(points)
        self.sampling_offsets, self.attention_weights = nn.Linear(d, total * 2), nn.Linear(d, total)
        self.value_proj, self.output_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, query, ref, value, shapes):
        (b, lq, _), lv, m, n = query.shape, value.shape[1], self.heads, sum(self.points)
        c = value.shape[-1] // m
        value = self.value_proj(value).reshape(b, lv, m, c)
        offsets = self.sampling_offsets(query).reshape(b, lq, m, n, 2)
        attn = self.attention_weights(query).reshape(b, lq, m, n).softmax(-1)
        scale = self.num_points_scale.to(dtype=query.dtype).unsqueeze(-1)
        loc = ref[:, :, None, :, :2] + offsets * scale * ref[:, :, None, :, 2:] * 0.5  # ref [b, lq, 1, 4]
        grids = (2 * loc - 1).permute(0, 2, 1, 3, 4).flatten(0, 1).split(self.points, dim=-2)
        values = value.permute(0, 2, 3, 1).flatten(0, 1).split([h * w for h, w in shapes], dim=-1)
        sampled = [F.grid_sample(v.reshape(b * m, c, h, w), g, mode="bilinear", padding_mode="zeros",
                                 align_corners=False) for v, g, (h, w) in zip(values, grids, shapes)]
        attn = attn.permute(0, 2, 1, 3).reshape(b * m, 1, lq, n)
        out = (torch.cat(sampled, -1) * attn).sum(-1).reshape(b, m * c, lq).permute(0, 2, 1)
        return self.output_proj(out)


class DecoderLayer(nn.Module):
    def __init__(self, d=256, heads=8, ffn=1024):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=0.0, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.cross_attn = MSDeformableAttention(d, heads)
        self.norm2 = nn.LayerNorm(d)
        self.linear1, self.linear2, self.norm3 = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.LayerNorm(d)

    def forward(self, x, ref, memory, shapes, pos):
        q = x + pos
        x = self.norm1(x + self.self_attn(q, q, value=x, need_weights=False)[0])
        x = self.norm2(x + self.cross_attn(x + pos, ref, memory, shapes))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


class RTDETRTransformerv2(nn.Module):
    def __init__(self, num_classes, feat_channels, num_layers, eval_spatial_size=None, hidden=256):
        super().__init__()
        self.num_classes, self.eval_spatial_size = num_classes, eval_spatial_size
        self.input_proj = nn.ModuleList(_proj(c, hidden) for c in feat_channels)
        self.decoder = _module(layers=nn.ModuleList(DecoderLayer(hidden) for _ in range(num_layers)))
        self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden, padding_idx=num_classes)
        self.query_pos_head = MLP(4, 2 * hidden, hidden)
        self.enc_output = nn.Sequential(OrderedDict(proj=nn.Linear(hidden, hidden), norm=nn.LayerNorm(hidden)))
        self.enc_score_head = nn.Linear(hidden, num_classes)
        self.enc_bbox_head = MLP(hidden, hidden, hidden, 4)
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden, num_classes) for _ in range(num_layers))
        self.dec_bbox_head = nn.ModuleList(MLP(hidden, hidden, hidden, 4) for _ in range(num_layers))
        if eval_spatial_size:
            h, w = eval_spatial_size
            anchors, valid = make_anchors([(int(h / s), int(w / s)) for s in STRIDES])
            self.register_buffer("anchors", anchors)
            self.register_buffer("valid_mask", valid)

    def forward(self, feats):
        proj = [p(f) for p, f in zip(self.input_proj, feats)]
        shapes = [tuple(f.shape[2:]) for f in proj]
        memory = torch.cat([f.flatten(2).permute(0, 2, 1) for f in proj], 1)
        if self.training or not self.eval_spatial_size:
            anchors, valid = make_anchors(shapes, device=memory.device)
        else:
            anchors, valid = self.anchors, self.valid_mask
        # query selection on the valid-masked memory; the layers below see the unmasked one
        selected = self.enc_output(valid.to(memory.dtype) * memory)
        coords = self.enc_bbox_head(selected) + anchors
        index = self.enc_score_head(selected).max(-1).values.topk(NUM_QUERIES, dim=-1).indices[..., None]
        target = selected.gather(1, index.expand(-1, -1, selected.shape[-1]))
        ref = coords.gather(1, index.expand(-1, -1, 4)).sigmoid()
        for layer, bbox_head in zip(self.decoder.layers, self.dec_bbox_head):
            target = layer(target, ref.unsqueeze(2), memory, shapes, self.query_pos_head(ref))
            ref = (bbox_head(target) + inverse_sigmoid(ref)).sigmoid()
        return {"pred_logits": self.dec_score_head[-1](target), "pred_boxes": ref}


class RTDETR(nn.Module):
    def __init__(self, backbone, encoder, decoder):
        super().__init__()
        self.backbone, self.decoder, self.encoder = backbone, decoder, encoder  # official order

    def forward(self, images):
        return self.decoder(self.encoder(self.backbone(images)))


def build_reference(depth: int, num_classes: int = 80, eval_spatial_size=None) -> nn.Module:
    """The official ``rtdetrv2_r{depth}vd`` model (configs/rtdetrv2), in eval-mode arithmetic."""
    blocks, bottleneck, frozen, hidden, expansion, ffn, layers = SETTINGS[depth]
    channels = [c * (4 if bottleneck else 1) for c in (128, 256, 512)]
    size = tuple(eval_spatial_size) if eval_spatial_size else None
    return RTDETR(PResNet(blocks, bottleneck, frozen),
                  HybridEncoder(channels, hidden, expansion, ffn, size),
                  RTDETRTransformerv2(num_classes, [hidden] * 3, layers, size))


def released_checkpoint(model: nn.Module) -> dict:
    """What a released RT-DETRv2 ``.pth`` holds: the solver's ``ema`` entry (``ModelEMA.state_dict``:
    ``module`` + ``updates``) and ``last_epoch``; training checkpoints add ``model``, ``optimizer``,
    ``date`` and the schedulers. With ``eval_spatial_size`` the state_dict carries the decoder's
    ``anchors`` and ``valid_mask``; the encoder's ``pos_embed2`` is never saved."""
    return {"ema": {"module": model.state_dict(), "updates": 1000}, "last_epoch": 71}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every weight and norm statistic distinct random values, in place, so a wrong mapping
    cannot hide behind identity norms or zero-initialised heads. Works on the official model too
    (its norms are recognised by their ``running_var`` buffer); fixed buffers stay as they are."""
    g = torch.Generator().manual_seed(seed)

    def fill(t, scale, base=0.0):
        t.copy_((base + scale * torch.randn(t.shape, generator=g, dtype=torch.float64)).to(t.dtype))

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm) or hasattr(module, "running_var"):
                fill(module.weight, 0.1, 1.0)
                fill(module.bias, 0.1)
                if hasattr(module, "running_var"):
                    fill(module.running_mean, 0.1)
                    module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=g))
            else:
                for p in module.parameters(recurse=False):
                    fill(p, 0.1 if p.dim() == 1 else p[0].numel() ** -0.5)
    return model
